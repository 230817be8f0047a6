//! Dereference: the objects a DataPipeline names.

use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, ModelVersion};
use kube::{Api, ResourceExt};

use super::build::JobSettings;
use crate::context::Context;
use crate::controllers::trust::{self, SecretUse};
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

/// Pure: the Secrets a Job reading `extra` datasets and the `base` model would take storage
/// credentials from: the output's (the feedback or training dataset's), the datasets', the
/// base model's.
pub fn job_secret_uses(refs: &Refs, extra: &[&DatasetVersion], base: Option<&ModelVersion>) -> Vec<SecretUse> {
    let dataset = |role: &str, d: &DatasetVersion| {
        d.spec
            .credentials
            .as_ref()
            .map(|c| SecretUse::new(&c.secret_name, "DatasetVersion", role, &d.name_any(), "spec.credentials"))
    };
    // Outputs are written with the credentials of the feedback dataset, or the training data's.
    let output = match (&refs.feedback, &refs.training) {
        (Some(f), _) => dataset("feedback", f),
        (None, Some(t)) => dataset("training", t),
        (None, None) => None,
    };
    let model =
        base.and_then(|b| {
            b.spec.artifact.credentials.as_ref().map(|c| {
                SecretUse::new(&c.secret_name, "ModelVersion", "base", &b.name_any(), "spec.artifact.credentials")
            })
        });
    output.into_iter().chain(extra.iter().filter_map(|d| dataset("", d))).chain(model).collect()
}

/// Image, credentials and resources of a Job reading `extra` datasets and the `base` model.
/// Err (`ConflictingCredentials`) when they name two Secrets: a Job's container takes its
/// storage credentials from one.
pub fn job_settings(
    ctx: &Context,
    p: &DataPipeline,
    refs: &Refs,
    extra: &[&DatasetVersion],
    base: Option<&ModelVersion>,
) -> Result<JobSettings> {
    let secret = trust::one_secret(&job_secret_uses(refs, extra, base)).map_err(Error::ConflictingCredentials)?;
    Ok(JobSettings {
        image: ctx.settings.trainer_image.clone(),
        credential_secrets: secret.into_iter().collect(),
        resources: p.spec.continuous_training.as_ref().and_then(|c| c.resources.clone()),
    })
}

/// Before a Job is created: every Secret it gets exists and is labelled for Flywheel.
pub async fn check_job_secrets(ctx: &Context, p: &DataPipeline, settings: &JobSettings) -> Result<()> {
    let ns = p.namespace().unwrap_or_default();
    for secret in &settings.credential_secrets {
        ctx.credentials_secret(&ns, secret).await?;
    }
    Ok(())
}

/// Whether a ModelVersion exists and is Ready.
pub async fn model_ready(ctx: &Context, p: &DataPipeline, name: &str) -> Result<bool> {
    let models: Api<ModelVersion> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    Ok(models.get_opt(name).await?.and_then(|m| m.status).and_then(|s| s.phase)
        == Some(flywheel_api::model_version::ModelPhase::Ready))
}
