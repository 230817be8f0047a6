//! The workspace's `flywheel-trainer generate`, as tests use it to make real models and
//! datasets (the binary next to the test executable, see `cluster::default_bin_dir`).

/// Runs `flywheel-trainer generate <args>` and returns what it prints (JSON: e.g. the
/// ModelVersion spec of a generated model); panics with its stderr when it fails.
pub fn generate(args: &[&str]) -> serde_json::Value {
    let bin = crate::cluster::default_bin_dir().expect("bin dir").join("flywheel-trainer");
    let out = std::process::Command::new(&bin)
        .arg("generate")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(out.status.success(), "generate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
