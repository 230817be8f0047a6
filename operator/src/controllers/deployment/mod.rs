//! Deployment (flywheel.dev): owns the inference server's apps/v1 Deployment, Service,
//! serving ConfigMap, review-token Secret and optional HPA.
//!
//! A champion that is not Ready is refused with a condition and the children are left as
//! they are, so the previous model keeps serving. Threshold and shadow changes only change
//! the ConfigMap: the pod template does not reference it by hash, and the pods reload the
//! mounted file, so nothing restarts.
//!
//! The reconcile runs in named steps: [`read`] (promotion requests, served models, what feeds
//! them; from the watches' stores, see [`cache`]) → [`validate`] → build the children
//! ([`desired`], pure) → apply (only the children that changed, [`Cache::apply_children`]) →
//! status ([`report`], pure, then one status write when it changed, and the Events). The
//! controller is the one writer of `status.promotionHistory` (see [`promotion`]).

pub mod apply;
pub mod build;
pub mod cache;
pub mod desired;
pub mod monitoring;
pub mod promotion;
pub mod read;
pub mod report;
pub mod served;
pub mod validate;

#[cfg(test)]
mod build_tests;

use std::sync::Arc;

use flywheel_api::FlywheelDeployment;
use flywheel_api::validation;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::recorder::publish;
use super::status::{apply_status, now};
use super::trust;
use crate::{Error, Result};

pub use cache::{Cache, Env};
pub use validate::unservable;

pub const KIND: &str = "Deployment";

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

pub async fn reconcile(d: Arc<FlywheelDeployment>, ctx: Arc<Env>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    ctx.cache.ready().await?;
    let at = now();
    let mut status = d.status.clone().unwrap_or_default();
    let api: Api<FlywheelDeployment> = Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());

    // A spec that contradicts itself changes nothing (not even the history) and waits.
    if let Err(message) = validation::deployment(&d.name_any(), &d.spec) {
        let notices = report::invalid_spec(&mut status, d.metadata.generation, message, at);
        if Some(&status) != d.status.as_ref() {
            apply_status(&api, &d, &status).await?;
        }
        publish(&ctx, d.as_ref(), notices).await;
        return Ok(Action::await_change());
    }

    // Read: the pipelines' promotion requests, then the spec, decide the served models.
    let pipelines = read::pipelines(&ctx.cache, &d);
    let requests = promotion::apply_requests(&d.name_any(), &pipelines, &mut status.promotion_history);
    for message in &requests.invalid {
        tracing::warn!(deployment = %d.name_any(), %message, "ignoring a promotion request");
    }
    let spec_changes = served::apply_spec(&d.spec, &mut status.promotion_history, Time(at));
    let observed = read::observe(&ctx.client, &ctx.cache, &d, &status.promotion_history, pipelines).await?;

    // Validate, build (pure), apply: a champion that cannot serve, or credentials that
    // cannot be given, change no child.
    let mut verdict = validate::validate(&observed);
    if let Some(secret) = &verdict.secret {
        verdict.credentials = match ctx.credentials_secret(&d.namespace().unwrap_or_default(), secret).await {
            Ok(_) => None,
            Err(e @ Error::SecretNotAllowed { .. }) => Some((trust::CREDENTIALS_NOT_ALLOWED.into(), e.to_string())),
            Err(e @ Error::MissingReference { .. }) => Some(("SecretNotFound".into(), e.to_string())),
            Err(e) => return Err(e),
        };
    }
    let children = desired::children(&d, &observed, &verdict, &ctx.settings.server_image)?;
    if let Some(children) = &children {
        ctx.cache.apply_children(&ctx, &d, children).await?;
    }

    // Status.
    let pods = read::pods(&ctx.client, &ctx.cache, &d).await;
    let mut notices = report::history_notices(&requests.promoted, &spec_changes);
    notices.extend(report::record(
        &mut status,
        d.metadata.generation,
        &observed,
        &verdict,
        children.as_ref(),
        &pods,
        at,
    ));
    if Some(&status) != d.status.as_ref() {
        apply_status(&api, &d, &status).await?;
    }
    for p in &requests.promoted {
        ctx.metrics.promoted(&d, p.role, p.model_version.as_deref());
    }
    publish(&ctx, d.as_ref(), notices).await;
    Ok(Action::requeue(report::requeue(&verdict, pods.ready)))
}
