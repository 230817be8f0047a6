//! DataPipeline: profile the training data, count reviews, start exactly one training Job
//! per trigger, register what it produced, and place it per the continuous-deployment policy.
//!
//! Runs are read back from their Jobs on every reconcile (the Job name is derived from the
//! run number), so an operator that crashes between creating a Job and writing status finds
//! the Job again instead of creating a second one; the registered ModelVersion has a
//! deterministic name too, so registering twice is a no-op.
//!
//! The reconcile runs in named steps: [`read`] the objects the spec names → [`validate`] →
//! [`profile`] → [`review_service`] → [`runs`] (read back, register, summarise) → [`place`] (decide, pure) →
//! [`runs::trigger`] → status, then the promotion request, then the Events. Promotions are
//! asked of the Deployment controller, never written into the Deployment.

pub mod build;
pub mod decide;
pub mod freeze;
pub mod place;
pub mod profile;
pub mod read;
pub mod review_service;
pub mod runs;
pub mod validate;

#[cfg(test)]
mod build_tests;
#[cfg(test)]
mod review_service_tests;

use std::sync::Arc;
use std::time::Duration;

use flywheel_api::DataPipeline;
use flywheel_api::data_pipeline::conditions;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::recorder::{StatusRecorder, publish};
use super::status::{apply_status, now};
use crate::Result;
use crate::context::Context;

pub const KIND: &str = "DataPipeline";

pub async fn reconcile(p: Arc<DataPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let at = now();

    // Validate, read, validate what was read: what only a change can fix waits with a condition.
    if let Err((reason, message)) = validate::spec(&p, ctx.settings.allow_local_files) {
        return invalid(&ctx, &p, reason, message, at).await.map(|()| Action::await_change());
    }
    // Referenced objects may be created or changed later: look again, slowly.
    let later = || Action::requeue(Duration::from_secs(30));
    let refs = match read::refs(&p, &ctx).await {
        Ok(refs) => refs,
        Err(e) if e.is_user_error() => return invalid(&ctx, &p, e.reason(), e.to_string(), at).await.map(|()| later()),
        Err(e) => return Err(e),
    };
    if let Err(message) = validate::references(&refs) {
        return invalid(&ctx, &p, "InvalidSpec", message, at).await.map(|()| later());
    }
    let output_base = match validate::output_base(&p, &refs) {
        Ok(base) => base,
        Err(message) => return invalid(&ctx, &p, "InvalidSpec", message, at).await.map(|()| Action::await_change()),
    };
    let mut status = p.status.clone().unwrap_or_default();
    let mut rec = StatusRecorder::new(&mut status.conditions, p.metadata.generation, at, "Reconcile");
    // Why a Job this reconcile should create cannot be (set into `Ready` at the end).
    let mut refused = None;

    // Profiling, reviews, runs.
    match profile::profile(&ctx, &p, &refs, output_base.as_deref(), &mut rec).await {
        Ok(Some(statistics)) => {
            status.reference_statistics_uri = Some(statistics);
            status.unsupervised_metrics_available = true;
        }
        Ok(None) => {}
        Err(e) if e.is_user_error() => refused = Some((e.reason(), format!("profiling not started: {e}"))),
        Err(e) => return Err(e),
    }
    // The review service: the loop's one owner of reviews, and the gate's figures.
    status.review_service = review_service::reconcile(&ctx, &p, &refs, &mut rec).await?;
    let reviewed_total =
        refs.feedback.as_ref().and_then(|f| f.status.as_ref()).and_then(|s| s.reviewed_count).unwrap_or(0);
    let runs = runs::read(&ctx, &p).await?;
    status.reviewed_total = Some(reviewed_total);
    status.reviewed_since_last_training = Some(decide::reviewed_since_last_run(reviewed_total, &runs));
    let records = runs::records(&ctx, &p, &refs, &runs, output_base.as_deref()).await;
    ctx.metrics.observe_pipeline(&p, &records);
    runs::training_condition(&mut rec, &records);
    let runs::Summary { current_run, last_model_version, run_history } = runs::summarise(&records);
    (status.current_run, status.last_model_version, status.run_history) =
        (current_run, last_model_version, run_history);

    // Placement of the newest model, the promotion gate.
    let produced = match &status.last_model_version {
        Some(name) => Some(place::Produced { name, ready: read::model_ready(&ctx, &p, name).await? }),
        None => None,
    };
    let reviewed = status.review_service.as_ref().and_then(|r| r.quality.as_ref());
    let decision = place::decide(&p, &refs.deployment, produced, reviewed, at);
    status.candidate_model_version = decision.candidate.clone();
    place::record(&mut rec, &decision);

    // Trigger.
    let started = match runs::trigger(&ctx, &p, &refs, reviewed_total, &runs, output_base.as_deref(), &mut rec).await? {
        runs::Triggered::Started => true,
        runs::Triggered::NotYet => false,
        runs::Triggered::Refused(reason, message) => {
            refused = refused.or(Some((reason, message)));
            false
        }
    };
    match refused {
        Some((reason, message)) => rec.fail(conditions::READY, reason, message).announce_reason(),
        None => rec.ok(conditions::READY, "Valid", "references resolved").changed(),
    };
    let notices = rec.into_notices();
    status.phase = Some(phase(started, status.current_run.is_some(), status.candidate_model_version.is_some()).into());
    status.observed_generation = p.metadata.generation;

    // Status, then the promotion request (guarded by the resourceVersion the status write left).
    let api: Api<DataPipeline> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let written = if Some(&status) != p.status.as_ref() { Some(apply_status(&api, &p, &status).await?) } else { None };
    place::ask(&ctx, written.as_ref().unwrap_or(&p), decision.request.as_ref()).await?;
    publish(&ctx, p.as_ref(), notices).await;
    // Reviews arrive in storage without touching this object: poll.
    Ok(Action::requeue(Duration::from_secs(5)))
}

/// The phase: a run in progress wins, then a candidate waiting for approval, then a run
/// started just now (its Job has no record yet).
fn phase(started: bool, running: bool, candidate: bool) -> &'static str {
    match (running, candidate, started) {
        (true, _, _) => "Training",
        (false, true, _) => "WaitingForApproval",
        (false, false, true) => "Training",
        (false, false, false) => "Collecting",
    }
}

/// Records a spec (or what it names) that only the user can fix in `Ready`, announced when
/// the status or the reason changes; the rest of the status stays as it is.
async fn invalid(ctx: &Context, p: &DataPipeline, reason: &str, message: String, at: Timestamp) -> Result<()> {
    let mut status = p.status.clone().unwrap_or_default();
    let mut rec = StatusRecorder::new(&mut status.conditions, p.metadata.generation, at, "Validate");
    rec.fail(conditions::READY, reason, message).announce_reason();
    let notices = rec.into_notices();
    status.observed_generation = p.metadata.generation;
    if Some(&status) != p.status.as_ref() {
        let api: Api<DataPipeline> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
        apply_status(&api, p, &status).await?;
    }
    publish(ctx, p, notices).await;
    Ok(())
}
