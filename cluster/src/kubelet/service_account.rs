//! Service-account credentials for a Pod: a token from the TokenRequest API bound to the Pod
//! (invalid once the Pod is gone), written as a kubeconfig the process finds through KUBECONFIG.
//! The Pod therefore gets exactly the RBAC its service account is granted.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::KubeletContext;
use crate::kubeconfig;

/// Token lifetime; the Pod-bound token is revoked with the Pod anyway.
const EXPIRATION_SECONDS: i64 = 24 * 3600;

/// Writes `dir/kubeconfig` for the Pod's service account; returns its path.
pub async fn write_kubeconfig(ctx: &KubeletContext, pod: &Pod, dir: &Path) -> Result<PathBuf, String> {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        metadata: Default::default(),
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(EXPIRATION_SECONDS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.metadata.uid.clone(),
            }),
        },
        status: None,
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns);
    let issued: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token request for service account {ns}/{sa}: {e}"))?;
    let token =
        issued.status.map(|s| s.token).ok_or_else(|| format!("token request for {ns}/{sa} returned no token"))?;
    let user = format!("system:serviceaccount:{ns}:{sa}");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join("kubeconfig");
    kubeconfig::write_atomic(&path, &kubeconfig::render(&ctx.server, &ctx.ca_pem, &user, &token, Some(&ns)))
        .map_err(|e| e.to_string())?;
    Ok(path)
}
