//! Dereference: what a Deployment's reconcile reads from the cluster.

use flywheel_api::deployment::{Promotion, Role};
use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, ModelVersion};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::cache::Cache;
use super::{build, monitoring, served};
use crate::Result;

/// The served models (by the history) and what feeds them.
pub struct Observed {
    pub champion_name: String,
    pub champion: Option<ModelVersion>,
    pub shadow_name: Option<String>,
    pub shadow: Option<ModelVersion>,
    /// The pipeline feeding this Deployment (the first naming it).
    pub pipeline: Option<DataPipeline>,
    /// Its feedback dataset, when the feedback loop is on.
    pub feedback: Option<DatasetVersion>,
}

/// The inference pods: ready replicas, and their `/status` when any is ready.
pub struct Pods {
    pub ready: i32,
    pub statuses: Vec<serde_json::Value>,
}

/// The DataPipelines naming this Deployment (from the watch's store), by name: the one feeding
/// it, and their promotion requests.
pub fn pipelines(cache: &Cache, d: &FlywheelDeployment) -> Vec<DataPipeline> {
    let (ns, name) = (d.namespace(), d.name_any());
    let mut pipelines: Vec<DataPipeline> = cache
        .pipelines
        .state_filter(|p| p.namespace() == ns && p.spec.deployment == name)
        .into_iter()
        .map(|p| p.as_ref().clone())
        .collect();
    pipelines.sort_by_key(|p| p.name_any());
    pipelines
}

/// The ModelVersions the history serves and the feedback dataset of the feeding pipeline.
pub async fn observe(
    client: &kube::Client,
    cache: &Cache,
    d: &FlywheelDeployment,
    history: &[Promotion],
    pipelines: Vec<DataPipeline>,
) -> Result<Observed> {
    let ns = d.namespace().unwrap_or_default();
    let champion_name = served::served(history, Role::Champion).unwrap_or_default();
    let shadow_name = served::served(history, Role::Shadow);
    let champion = cache.model(client, &ns, &champion_name).await?;
    let shadow = match &shadow_name {
        Some(name) => cache.model(client, &ns, name).await?,
        None => None,
    };
    let pipeline = pipelines.into_iter().next();
    let feedback_name = pipeline
        .as_ref()
        .and_then(|p| p.spec.feedback_loop.as_ref())
        .filter(|f| f.enabled)
        .map(|f| f.dataset_version.clone());
    let feedback = match &feedback_name {
        Some(name) => Api::<DatasetVersion>::namespaced(client.clone(), &ns).get_opt(name).await?,
        None => None,
    };
    Ok(Observed { champion_name, champion, shadow_name, shadow, pipeline, feedback })
}

/// Ready replicas from the apps/v1 Deployment (the watch's store: its changes trigger a
/// reconcile); the pods' `/status` when any is ready.
pub async fn pods(client: &kube::Client, cache: &Cache, d: &FlywheelDeployment) -> Pods {
    let key = ObjectRef::new(&build::server_name(d)).within(&d.namespace().unwrap_or_default());
    let ready = cache.apps.get(&key).and_then(|a| a.status.as_ref()?.ready_replicas).unwrap_or(0);
    let statuses = if ready > 0 { monitoring::read_pods(client, d).await } else { Vec::new() };
    Pods { ready, statuses }
}
