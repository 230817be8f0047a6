//! Kubeconfig files: one for the admin user (tests, CLI, controller-manager) and one per Pod
//! (service-account token from the TokenRequest API).

use std::path::Path;

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::ClusterError;

/// Renders a single-context kubeconfig that authenticates with a bearer token.
pub fn render(server: &str, ca_pem: &str, user: &str, token: &str, namespace: Option<&str>) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let ns = namespace.map(|n| format!("\n    namespace: {n}")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: flywheel-local\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: \
         flywheel-local\n  context:\n    cluster: flywheel-local\n    user: {user}{ns}\ncurrent-context: flywheel-local\n"
    )
}

/// Writes `contents` to `path` atomically (temp file + rename), readable by the owner only.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), ClusterError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(ClusterError::io(&tmp))?;
        f.write_all(contents.as_bytes()).map_err(ClusterError::io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(ClusterError::io(path))
}

/// A kube client for a kubeconfig file.
pub async fn client_from_file(path: &Path) -> Result<kube::Client, ClusterError> {
    let text = std::fs::read_to_string(path).map_err(ClusterError::io(path))?;
    client_from_yaml(&text).await
}

pub async fn client_from_yaml(text: &str) -> Result<kube::Client, ClusterError> {
    let kc = Kubeconfig::from_yaml(text).map_err(|e| ClusterError::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| ClusterError::Kubeconfig(e.to_string()))?;
    kube::Client::try_from(config).map_err(ClusterError::Kube)
}
