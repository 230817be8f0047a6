//! Where the control-plane binaries and cluster state live.

use std::path::{Path, PathBuf};

use crate::error::ClusterError;

/// Kubernetes version built from Debian's `kubernetes` source package by `install`.
pub const KUBERNETES_VERSION: &str = "1.20.2";
/// Cache key of that build: version plus our patch level (see scripts/control-plane.sh).
pub const CONTROL_PLANE_BUILD: &str = "1.20.2-flywheel.1";

/// `${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLYWHEEL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("flywheel")
}

/// Directory the install step fills with kube-apiserver and kube-controller-manager.
pub fn cached_control_plane_dir() -> PathBuf {
    cache_dir().join("control-plane").join(CONTROL_PLANE_BUILD).join("bin")
}

/// Paths of the three control-plane executables.
#[derive(Debug, Clone)]
pub struct ControlPlaneBinaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
}

impl ControlPlaneBinaries {
    /// KUBEBUILDER_ASSETS first (the envtest convention), then the install cache, then PATH.
    pub fn locate() -> Result<Self, ClusterError> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(assets));
        }
        dirs.push(cached_control_plane_dir());
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        let find = |name: &str| -> Result<PathBuf, ClusterError> {
            dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p)).ok_or_else(|| ClusterError::MissingBinary {
                name: name.to_string(),
                searched: dirs.iter().take(2).map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                    + " and PATH",
            })
        };
        Ok(Self {
            etcd: find("etcd")?,
            kube_apiserver: find("kube-apiserver")?,
            kube_controller_manager: find("kube-controller-manager")?,
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}
