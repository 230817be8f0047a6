//! Apply: server-side apply of a Deployment's children with the operator's field manager.

use flywheel_api::FlywheelDeployment;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build;
use super::desired::Children;
use crate::context::{Context, FIELD_MANAGER};
use crate::{Error, Result};

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

/// Creates the review-token Secret once; its random token is never rewritten.
async fn ensure_token_secret(ctx: &Context, d: &FlywheelDeployment, ns: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = build::token_secret_name(d);
    if api.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    let token = random_token().map_err(|e| Error::Serialization(format!("reading random bytes: {e}")))?;
    let mut secret = Secret::default();
    secret.metadata.name = Some(name);
    secret.metadata.labels = Some(build::labels(d));
    secret.metadata.owner_references = Some(vec![d.controller_owner_ref(&()).expect("stored object has a uid")]);
    secret.data = Some([("token".to_string(), ByteString(token.into_bytes()))].into());
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The review-token Secret (once), then the ConfigMap, apps/v1 Deployment, Service and HPA.
pub async fn children(ctx: &Context, d: &FlywheelDeployment, children: &Children) -> Result<()> {
    let ns = d.namespace().unwrap_or_default();
    let client = &ctx.client;
    ensure_token_secret(ctx, d, &ns).await?;
    apply(client, &ns, &children.config_map).await?;
    apply(client, &ns, &children.apps).await?;
    apply(client, &ns, &children.service).await?;
    if let Some(hpa) = &children.autoscaler {
        apply(client, &ns, hpa).await?;
    }
    Ok(())
}
