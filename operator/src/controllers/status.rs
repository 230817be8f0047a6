//! Writing status: server-side apply of the whole status with the operator's field manager,
//! guarded by the object's resourceVersion so a concurrent writer makes us retry instead of
//! being overwritten.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;
use crate::context::FIELD_MANAGER;

/// Applies `status` to the status subresource of `obj`. Returns the object written, whose
/// resourceVersion guards the next write of the same reconcile.
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": obj.name_any(), "resourceVersion": obj.resource_version() },
        "status": status,
    });
    Ok(api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?)
}

/// Current time as a Kubernetes timestamp.
pub fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}
