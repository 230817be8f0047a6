//! Applying YAML the way `kubectl apply --server-side` does: every document is resolved through
//! discovery and sent as a server-side apply patch with one field manager.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{Scope, pinned_kind};
use kube::{Api, Client, ResourceExt};

use crate::wait::{WaitError, wait_for};

pub const FIELD_MANAGER: &str = "flywheel-e2e";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("document {index} has no apiVersion/kind/metadata.name")]
    Incomplete { index: usize },
    #[error("{kind} {name}: {source}")]
    Kube { kind: String, name: String, source: kube::Error },
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Wait(#[from] WaitError),
}

impl ApplyError {
    /// The API server's rejection (status code and message), if that is what this is.
    pub fn api_status(&self) -> Option<&kube::core::Status> {
        match self {
            ApplyError::Kube { source: kube::Error::Api(status), .. } => Some(status),
            _ => None,
        }
    }
}

/// Splits multi-document YAML into objects, skipping empty documents.
pub fn parse_yaml_documents(yaml: &str) -> Result<Vec<DynamicObject>, ApplyError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ApplyError::Yaml(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject =
            serde_yaml::from_value(value).map_err(|e| ApplyError::Yaml(format!("document {index}: {e}")))?;
        if obj.types.is_none() || obj.metadata.name.is_none() {
            return Err(ApplyError::Incomplete { index });
        }
        out.push(obj);
    }
    Ok(out)
}

/// Server-side applies every document; namespaced objects without a namespace go to `namespace`.
pub async fn apply_yaml(
    client: &Client,
    namespace: Option<&str>,
    yaml: &str,
) -> Result<Vec<DynamicObject>, ApplyError> {
    let mut applied = Vec::new();
    for obj in parse_yaml_documents(yaml)? {
        applied.push(apply_object(client, namespace, obj).await?);
    }
    Ok(applied)
}

async fn apply_object(
    client: &Client,
    namespace: Option<&str>,
    obj: DynamicObject,
) -> Result<DynamicObject, ApplyError> {
    let types = obj.types.clone().expect("checked in parse");
    let name = obj.name_any();
    let kind = types.kind.clone();
    let err = |source| ApplyError::Kube { kind: kind.clone(), name: name.clone(), source };
    let (group, version) = match types.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), types.api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &types.kind);
    // Discovery can lag a freshly established CRD by a moment.
    let mut attempts = 0;
    let (resource, caps) = loop {
        match pinned_kind(client, &gvk).await {
            Ok(found) => break found,
            Err(e) if attempts < 25 && !gvk.group.is_empty() => {
                attempts += 1;
                tracing::debug!(error = %e, "kind not discoverable yet");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(err(e)),
        }
    };
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = obj.namespace().or(namespace.map(String::from)).unwrap_or_else(|| "default".into());
            Api::namespaced_with(client.clone(), &ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&obj)).await.map_err(err)
}

/// Applies every *.yaml / *.yml file of `dir` (sorted by name) and waits until each
/// CustomResourceDefinition is Established, so its kinds can be used right away.
pub async fn install_crds(client: &Client, dir: &Path) -> Result<Vec<String>, ApplyError> {
    let io = |source| ApplyError::Io { path: dir.display().to_string(), source };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut names = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|source| ApplyError::Io { path: file.display().to_string(), source })?;
        for obj in parse_yaml_documents(&text)? {
            if obj.types.as_ref().is_some_and(|t| t.kind == "CustomResourceDefinition") {
                names.push(create_or_replace_crd(client, obj).await?);
            } else {
                apply_object(client, None, obj).await?;
            }
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in &names {
        let established = |c: Option<&CustomResourceDefinition>| {
            c.and_then(|c| c.status.as_ref()?.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        };
        wait_for(&crds, name, established, 60).await?;
    }
    Ok(names)
}

/// kube-apiserver 1.20 mis-defaults a CustomResourceDefinition created through server-side
/// apply (it reports `preserveUnknownFields` and per-version schema errors for a valid v1 CRD),
/// so CRDs are created, or replaced at their current resourceVersion, instead.
async fn create_or_replace_crd(client: &Client, obj: DynamicObject) -> Result<String, ApplyError> {
    let name = obj.name_any();
    let err = |source| ApplyError::Kube { kind: "CustomResourceDefinition".into(), name: name.clone(), source };
    let value = serde_json::to_value(&obj).map_err(|e| ApplyError::Yaml(e.to_string()))?;
    let mut crd: CustomResourceDefinition =
        serde_json::from_value(value).map_err(|e| ApplyError::Yaml(format!("{name}: {e}")))?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.get_opt(&name).await.map_err(err)? {
        None => {
            api.create(&Default::default(), &crd).await.map_err(err)?;
        }
        Some(existing) => {
            crd.metadata.resource_version = existing.metadata.resource_version;
            api.replace(&name, &Default::default(), &crd).await.map_err(err)?;
        }
    }
    Ok(name)
}
