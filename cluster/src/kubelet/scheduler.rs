//! The scheduler of a one-node cluster: every Pod without a node is bound to this kubelet's node
//! through the `pods/binding` subresource (which also sets the PodScheduled condition).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::KubeletContext;

pub async fn run(ctx: Arc<KubeletContext>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut stream = watcher(pods, config).boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => bind(&ctx, &pod).await,
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn bind(ctx: &KubeletContext, pod: &Pod) {
    if pod.metadata.deletion_timestamp.is_some() || pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
        return;
    }
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let binding = Binding {
        metadata: kube::api::ObjectMeta { name: Some(name.clone()), namespace: Some(ns.clone()), ..Default::default() },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(ctx.node_name.clone()),
            ..Default::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // A conflict means someone bound it first or it is gone; both are fine.
    match api.create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding).await {
        Ok(_) => tracing::debug!(%ns, %name, "bound pod"),
        Err(e) => tracing::debug!(%ns, %name, error = %e, "binding failed"),
    }
}
