//! Writes the CRD YAML under `crds/` (and the chart's copy) from the Rust types.

use std::path::{Path, PathBuf};

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("operator/ has a parent").to_path_buf()
}

/// Directories that hold a copy of the generated CRDs.
pub fn crd_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.join("crds")];
    let chart = root.join("charts/flywheel/crds");
    if chart.parent().is_some_and(Path::exists) {
        dirs.push(chart);
    }
    dirs
}

/// The generated files: (file name, YAML).
pub fn rendered() -> Vec<(&'static str, String)> {
    flywheel_api::crds().iter().map(|(name, crd)| (*name, flywheel_api::crd_yaml(crd))).collect()
}

/// Writes every CRD atomically (temp file then rename) into `dir`.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, yaml) in rendered() {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, &path)?;
        written.push(path);
    }
    Ok(written)
}
