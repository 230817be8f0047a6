//! Deployment (flywheel.dev): owns the inference server's apps/v1 Deployment, Service,
//! serving ConfigMap, review-token Secret and optional HPA.
//!
//! A champion that is not Ready is refused with a condition and the children are left as
//! they are, so the previous model keeps serving. Threshold and shadow changes only change
//! the ConfigMap: the pod template does not reference it by hash, and the pods reload the
//! mounted file, so nothing restarts.

pub mod build;
pub mod monitoring;
pub mod served;

#[cfg(test)]
mod build_tests;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flywheel_api::condition::{self, FALSE, TRUE};
use flywheel_api::deployment::{Role, conditions};
use flywheel_api::model_version::ModelPhase;
use flywheel_api::{DataPipeline, DatasetVersion, DeploymentStatus, FlywheelDeployment, ModelVersion};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::status::{apply_status, now};
use crate::context::{Context, FIELD_MANAGER};
use crate::{Error, Result};

pub const KIND: &str = "Deployment";

/// Why a referenced ModelVersion cannot be served, or None when it can.
pub fn unservable(name: &str, mv: Option<&ModelVersion>) -> Option<(String, String)> {
    let Some(mv) = mv else {
        return Some(("ModelVersionNotFound".into(), format!("ModelVersion {name:?} does not exist")));
    };
    let status = mv.status.clone().unwrap_or_default();
    if status.phase == Some(ModelPhase::Ready) && status.digest.is_some() {
        return None;
    }
    let why = condition::find(&status.conditions, flywheel_api::model_version::conditions::READY)
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "not verified yet".into());
    Some(("ModelVersionNotReady".into(), format!("ModelVersion {name:?} is not Ready ({why})")))
}

/// Whether the Deployment names the ModelVersion `name`, in its spec or as a served model.
pub fn references(d: &FlywheelDeployment, name: &str) -> bool {
    let spec = d.spec.champion.model_version == name || d.spec.shadow.as_ref().is_some_and(|s| s.model_version == name);
    let served = d.status.as_ref().is_some_and(|s| {
        s.champion.as_deref() == Some(name)
            || s.shadow.as_deref() == Some(name)
            || s.promotion_history.iter().any(|p| p.model_version.as_deref() == Some(name))
    });
    spec || served
}

async fn apply<K>(client: &kube::Client, ns: &str, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
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

pub async fn reconcile(d: Arc<FlywheelDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let ns = d.namespace().unwrap_or_default();
    let client = &ctx.client;
    let models: Api<ModelVersion> = Api::namespaced(client.clone(), &ns);
    let at = now();

    // Read: served models (spec + promotions), the pipeline feeding this Deployment.
    let mut status: DeploymentStatus = d.status.clone().unwrap_or_default();
    let spec_changes = served::apply_spec(&d.spec, &mut status.promotion_history, Time(at));
    let champion_name = served::served(&status.promotion_history, Role::Champion).unwrap_or_default();
    let shadow_name = served::served(&status.promotion_history, Role::Shadow);
    let champion = models.get_opt(&champion_name).await?;
    let shadow = match &shadow_name {
        Some(name) => models.get_opt(name).await?,
        None => None,
    };
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns);
    let pipeline = pipelines.list(&ListParams::default()).await?.items.into_iter().find(|p| p.spec.deployment == d.name_any());
    let feedback_name = pipeline
        .as_ref()
        .and_then(|p| p.spec.feedback_loop.as_ref())
        .filter(|f| f.enabled)
        .map(|f| f.dataset_version.clone());
    let feedback = match &feedback_name {
        Some(name) => Api::<DatasetVersion>::namespaced(client.clone(), &ns).get_opt(name).await?,
        None => None,
    };

    // Validate: never replace a serving model with one that cannot serve.
    let generation = d.metadata.generation;
    let champion_problem = unservable(&champion_name, champion.as_ref());
    let shadow_problem = shadow_name.as_ref().and_then(|name| unservable(name, shadow.as_ref()));
    let mut transitions = Vec::new();
    match &champion_problem {
        Some((reason, message)) => {
            if condition::set_condition(&mut status.conditions, conditions::CHAMPION_READY, FALSE, reason, message.clone(), generation, at) {
                transitions.push((true, reason.clone(), message.clone()));
            }
        }
        None => {
            let message = format!("serving {champion_name}");
            if condition::set_condition(&mut status.conditions, conditions::CHAMPION_READY, TRUE, "Ready", message.clone(), generation, at) {
                transitions.push((false, "ChampionReady".into(), message));
            }
        }
    }
    match (&shadow_name, &shadow_problem) {
        (Some(_), Some((reason, message))) => {
            if condition::set_condition(&mut status.conditions, conditions::SHADOW_READY, FALSE, reason, message.clone(), generation, at) {
                transitions.push((true, reason.clone(), message.clone()));
            }
        }
        (Some(name), None) => {
            condition::set_condition(&mut status.conditions, conditions::SHADOW_READY, TRUE, "Ready", format!("shadowing with {name}"), generation, at);
        }
        (None, _) => {
            condition::set_condition(&mut status.conditions, conditions::SHADOW_READY, FALSE, "NoShadow", "no shadow configured", generation, at);
        }
    }

    if champion_problem.is_none() {
        // Build and apply. A shadow that is not ready is left out rather than blocking the champion.
        let shadow_ready = shadow.as_ref().filter(|_| shadow_problem.is_none());
        let inputs = build::Inputs {
            champion: champion.as_ref().expect("checked above"),
            shadow: shadow_ready,
            shadow_sample_rate: d.spec.shadow.as_ref().map_or(1.0, |s| s.sample_rate),
            feedback: feedback.as_ref(),
            reference_statistics_uri: pipeline.as_ref().and_then(|p| p.status.as_ref()).and_then(|s| s.reference_statistics_uri.clone()),
            server_image: &ctx.settings.server_image,
        };
        let config = build::serving_config(&d, &inputs)?;
        let mut secrets = BTreeSet::new();
        secrets.extend(inputs.champion.spec.artifact.credentials.iter().map(|c| c.secret_name.clone()));
        secrets.extend(shadow_ready.and_then(|s| s.spec.artifact.credentials.as_ref()).map(|c| c.secret_name.clone()));
        secrets.extend(feedback.as_ref().and_then(|f| f.spec.credentials.as_ref()).map(|c| c.secret_name.clone()));
        ensure_token_secret(&ctx, &d, &ns).await?;
        apply(client, &ns, &build::config_map(&d, &config)?).await?;
        apply(client, &ns, &build::apps_deployment(&d, &config, &secrets, &ctx.settings.server_image)?).await?;
        apply(client, &ns, &build::service(&d)?).await?;
        if let Some(hpa) = build::autoscaler(&d)? {
            apply(client, &ns, &hpa).await?;
        }
        let shadow_now = shadow_ready.map(|s| s.name_any());
        if status.champion.as_deref() != Some(&champion_name) || status.shadow != shadow_now {
            // Figures of the previous pair must not decide about the new one.
            status.monitoring = None;
        }
        status.champion = Some(champion_name.clone());
        status.shadow = shadow_now;
        status.endpoint = Some(build::endpoint(&d));
    }

    // Status: ready replicas from the apps/v1 Deployment.
    let apps: Api<AppsDeployment> = Api::namespaced(client.clone(), &ns);
    let ready = apps
        .get_opt(&build::server_name(&d))
        .await?
        .and_then(|a| a.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    status.ready_replicas = Some(ready);
    if ready > 0 {
        let statuses = monitoring::read_pods(client, &d).await;
        let summary = monitoring::summarise(&statuses);
        if !monitoring::same_figures(summary.as_ref(), status.monitoring.as_ref()) {
            status.monitoring = summary.map(|m| flywheel_api::deployment::MonitoringSummary { time: Some(Time(at)), ..m });
        }
        if !statuses.is_empty() {
            let (loaded, reason, message) = match monitoring::load_errors(&statuses).as_slice() {
                [] => (TRUE, "Loaded", "the inference pods loaded the served models".to_string()),
                errors => (FALSE, "LoadFailed", format!("the previous models keep serving: {}", errors.join("; "))),
            };
            if condition::set_condition(&mut status.conditions, conditions::MODELS_LOADED, loaded, reason, message.clone(), generation, at)
                && loaded == FALSE
            {
                transitions.push((true, "ModelLoadFailed".into(), message));
            }
        }
    }
    let (ready_status, reason, message) = match (&champion_problem, ready) {
        (Some((reason, message)), _) => (FALSE, reason.as_str(), message.clone()),
        (None, 0) => (FALSE, "NoReadyReplicas", "waiting for inference pods to become ready".to_string()),
        (None, n) => (TRUE, "Serving", format!("{n} ready replicas serving {champion_name}")),
    };
    condition::set_condition(&mut status.conditions, conditions::READY, ready_status, reason, message, generation, at);
    status.observed_generation = generation;

    if Some(&status) != d.status.as_ref() {
        let api: Api<FlywheelDeployment> = Api::namespaced(client.clone(), &ns);
        apply_status(&api, &d, &status).await?;
    }
    for change in spec_changes {
        let note = format!(
            "{:?} set to {} by the spec (was {})",
            change.role,
            change.model_version.as_deref().unwrap_or("none"),
            change.previous.as_deref().unwrap_or("none")
        );
        ctx.event(d.as_ref(), false, "SpecChanged", "Promote", note).await;
    }
    for (warning, reason, message) in transitions {
        ctx.event(d.as_ref(), warning, &reason, "Reconcile", message).await;
    }
    // Models become Ready without touching this object (poll while the champion is not);
    // pod readiness arrives through the owned apps/v1 Deployment's watch; monitoring figures
    // move with reviews, so refresh them every 15 s while serving. Nothing to poll at 0 replicas.
    let requeue = match (&champion_problem, ready) {
        (Some(_), _) => 5,
        (None, 0) => 60,
        (None, _) => 15,
    };
    Ok(Action::requeue(Duration::from_secs(requeue)))
}
