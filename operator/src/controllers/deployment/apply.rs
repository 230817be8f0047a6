//! Apply: server-side apply with the operator's field manager (the Deployment's children go
//! through [`super::cache`], which skips unchanged ones; the review service's through this).

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;
use crate::context::FIELD_MANAGER;

/// Server-side apply of `obj` with the operator's field manager.
pub async fn apply<K>(client: &kube::Client, ns: &str, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj)).await?;
    Ok(())
}
