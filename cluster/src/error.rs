//! Errors of the local cluster.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "control-plane binary {name} not found (looked in {searched}). Install it once with \
         `cargo run -p flywheel-cluster -- install` or `bash scripts/control-plane.sh` (builds Kubernetes \
         1.20.2 from Debian source and caches it), or set KUBEBUILDER_ASSETS to a directory holding \
         kube-apiserver, etcd and kube-controller-manager"
    )]
    MissingBinary { name: String, searched: String },
    #[error("io error at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("could not start {what}: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("{what} exited before becoming ready ({status}); last log lines:\n{log_tail}")]
    EarlyExit { what: String, status: String, log_tail: String },
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("certificate generation failed: {0}")]
    Pki(String),
    #[error("no free loopback address block: {0}")]
    NoAddressBlock(String),
    #[error("kubeconfig error: {0}")]
    Kubeconfig(String),
    #[error("kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("control-plane install failed: {0}")]
    Install(String),
}

impl ClusterError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ClusterError {
        let path = path.into();
        move |source| ClusterError::Io { path, source }
    }
}
