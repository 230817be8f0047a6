//! Dereference: the objects a DataPipeline names.

use std::collections::BTreeSet;

use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, ModelVersion};
use kube::{Api, ResourceExt};

use super::build::JobSettings;
use crate::context::Context;
use crate::{Error, Result};

/// What the pipeline's spec names, read at the start of the reconcile.
pub struct Refs {
    pub deployment: FlywheelDeployment,
    pub training: Option<DatasetVersion>,
    pub feedback: Option<DatasetVersion>,
    /// `spec.outputUri`, or the operator's default.
    pub output_base: Option<String>,
}

/// A DatasetVersion the spec names at `field`; a missing one is an invalid spec.
pub async fn dataset(api: &Api<DatasetVersion>, name: &str, field: &str) -> Result<DatasetVersion> {
    api.get_opt(name)
        .await?
        .ok_or_else(|| Error::InvalidSpec(format!("{field}: DatasetVersion {name:?} does not exist")))
}

pub async fn refs(p: &DataPipeline, ctx: &Context) -> Result<Refs> {
    let ns = p.namespace().unwrap_or_default();
    let deployments: Api<FlywheelDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    let deployment = deployments.get_opt(&p.spec.deployment).await?.ok_or_else(|| {
        Error::InvalidSpec(format!("spec.deployment: Deployment {:?} does not exist", p.spec.deployment))
    })?;
    let datasets: Api<DatasetVersion> = Api::namespaced(ctx.client.clone(), &ns);
    let training = match &p.spec.training_data {
        Some(t) => Some(dataset(&datasets, &t.dataset_version, "spec.trainingData").await?),
        None => None,
    };
    let feedback = match p.spec.feedback_loop.as_ref().filter(|f| f.enabled) {
        Some(f) => Some(dataset(&datasets, &f.dataset_version, "spec.feedbackLoop").await?),
        None => None,
    };
    let output_base =
        p.spec.output_uri.as_ref().map(|u| u.to_string()).or_else(|| ctx.settings.default_output_uri.clone());
    Ok(Refs { deployment, training, feedback, output_base })
}

/// The credentials Secret of the storage the pipeline writes to.
pub fn output_secret(refs: &Refs) -> Option<String> {
    refs.feedback
        .as_ref()
        .or(refs.training.as_ref())
        .and_then(|d| d.spec.credentials.as_ref())
        .map(|c| c.secret_name.clone())
}

/// Image, credentials and resources of a Job reading `extra` datasets and the `base` model.
pub fn job_settings(
    ctx: &Context,
    p: &DataPipeline,
    refs: &Refs,
    extra: &[&DatasetVersion],
    base: Option<&ModelVersion>,
) -> JobSettings {
    let mut secrets: BTreeSet<String> = output_secret(refs).into_iter().collect();
    secrets.extend(extra.iter().filter_map(|d| d.spec.credentials.as_ref()).map(|c| c.secret_name.clone()));
    secrets.extend(base.and_then(|b| b.spec.artifact.credentials.as_ref()).map(|c| c.secret_name.clone()));
    JobSettings {
        image: ctx.settings.trainer_image.clone(),
        credential_secrets: secrets,
        resources: p.spec.continuous_training.as_ref().and_then(|c| c.resources.clone()),
    }
}

/// Whether a ModelVersion exists and is Ready.
pub async fn model_ready(ctx: &Context, p: &DataPipeline, name: &str) -> Result<bool> {
    let models: Api<ModelVersion> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    Ok(models.get_opt(name).await?.and_then(|m| m.status).and_then(|s| s.phase)
        == Some(flywheel_api::model_version::ModelPhase::Ready))
}
