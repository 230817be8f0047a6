//! `install`: builds (or reuses) kube-apiserver and kube-controller-manager from Debian's
//! `kubernetes` source package. The build recipe is scripts/control-plane.sh, embedded here so
//! the binary works from any directory; the script takes a lock so concurrent callers build once.

use std::process::Command;

use crate::error::ClusterError;
use crate::paths::ControlPlaneBinaries;

const SCRIPT: &str = include_str!("../../scripts/control-plane.sh");

/// Runs the build script (progress goes to stderr) and returns the located binaries.
pub fn install() -> Result<ControlPlaneBinaries, ClusterError> {
    if std::env::var_os("KUBEBUILDER_ASSETS").is_some()
        && let Ok(found) = ControlPlaneBinaries::locate()
        && found.kube_apiserver.starts_with(std::env::var_os("KUBEBUILDER_ASSETS").unwrap_or_default())
    {
        return Ok(found);
    }
    let status = Command::new("bash")
        .arg("-c")
        .arg(SCRIPT)
        .arg("control-plane.sh")
        .status()
        .map_err(|e| ClusterError::Install(format!("running bash: {e}")))?;
    if !status.success() {
        return Err(ClusterError::Install(format!("scripts/control-plane.sh failed ({status}); see the output above")));
    }
    ControlPlaneBinaries::locate()
}
