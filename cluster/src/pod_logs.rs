//! Where the process kubelet keeps Pod files: `<state dir>/kubelet/pods/<ns>_<name>_<uid>/`
//! with `logs/<container>/<run>.log` (run 0, 1, ... = restart count), like /var/log/pods.

use std::path::{Path, PathBuf};

/// Directories of Pods named `namespace/name` under a cluster state dir, oldest first.
pub fn pod_dirs(state_dir: &Path, namespace: &str, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{namespace}_{name}_");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(state_dir.join("kubelet").join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    dirs.sort_by_key(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok());
    dirs
}

/// Log files of one container of the newest Pod with that name, one per run, oldest first.
pub fn container_log_files(state_dir: &Path, namespace: &str, pod: &str, container: &str) -> Vec<PathBuf> {
    let Some(dir) = pod_dirs(state_dir, namespace, pod).pop() else {
        return Vec::new();
    };
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir.join("logs").join(container))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.path().file_stem()?.to_str()?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Output of the latest run of a container (stdout and stderr interleaved), if it ran.
pub fn container_log(state_dir: &Path, namespace: &str, pod: &str, container: &str) -> Option<String> {
    let file = container_log_files(state_dir, namespace, pod, container).pop()?;
    std::fs::read_to_string(file).ok()
}
