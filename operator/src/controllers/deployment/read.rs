//! Dereference: what a Deployment's reconcile reads from the cluster.

use flywheel_api::deployment::{Promotion, Role};
use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, ModelVersion};
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

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

/// The DataPipelines naming this Deployment: the one feeding it, and their promotion requests.
pub async fn pipelines(client: &kube::Client, d: &FlywheelDeployment) -> Result<Vec<DataPipeline>> {
    let api: Api<DataPipeline> = Api::namespaced(client.clone(), &d.namespace().unwrap_or_default());
    let name = d.name_any();
    Ok(api.list(&ListParams::default()).await?.items.into_iter().filter(|p| p.spec.deployment == name).collect())
}

/// The ModelVersions the history serves and the feedback dataset of the feeding pipeline.
pub async fn observe(
    client: &kube::Client,
    d: &FlywheelDeployment,
    history: &[Promotion],
    pipelines: Vec<DataPipeline>,
) -> Result<Observed> {
    let ns = d.namespace().unwrap_or_default();
    let models: Api<ModelVersion> = Api::namespaced(client.clone(), &ns);
    let champion_name = served::served(history, Role::Champion).unwrap_or_default();
    let shadow_name = served::served(history, Role::Shadow);
    let champion = models.get_opt(&champion_name).await?;
    let shadow = match &shadow_name {
        Some(name) => models.get_opt(name).await?,
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

/// Ready replicas from the apps/v1 Deployment; the pods' `/status` when any is ready.
pub async fn pods(client: &kube::Client, d: &FlywheelDeployment) -> Result<Pods> {
    let apps: Api<AppsDeployment> = Api::namespaced(client.clone(), &d.namespace().unwrap_or_default());
    let ready =
        apps.get_opt(&build::server_name(d)).await?.and_then(|a| a.status).and_then(|s| s.ready_replicas).unwrap_or(0);
    let statuses = if ready > 0 { monitoring::read_pods(client, d).await } else { Vec::new() };
    Ok(Pods { ready, statuses })
}
