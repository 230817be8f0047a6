//! DataPipeline: profile the training data, count reviews, start exactly one training Job
//! per trigger, register what it produced, and place it per the continuous-deployment policy.
//!
//! Runs are read back from their Jobs on every reconcile (the Job name is derived from the
//! run number), so an operator that crashes between creating a Job and writing status finds
//! the Job again instead of creating a second one; the registered ModelVersion has a
//! deterministic name too, so registering twice is a no-op.

pub mod build;
pub mod decide;

#[cfg(test)]
mod build_tests;

use std::sync::Arc;
use std::time::Duration;

use flywheel_api::condition::{self, FALSE, TRUE};
use flywheel_api::data_pipeline::{TrainingRun, conditions};
use flywheel_api::deployment::{Promotion, Role};
use flywheel_api::model_version::ModelPhase;
use flywheel_api::training::{REFERENCE_STATISTICS_FILE, RESULT_FILE, TrainResult};
use flywheel_api::{DataPipeline, DataPipelineStatus, DatasetVersion, FlywheelDeployment, ModelVersion};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use self::build::JobSettings;
use self::decide::{Placement, RunInfo, RunState};
use super::deployment::served;
use super::status::{apply_status, now};
use crate::context::{Context, FIELD_MANAGER};
use crate::{Error, Result};

pub const KIND: &str = "DataPipeline";
const MAX_RUN_HISTORY: usize = 20;

struct Refs {
    deployment: FlywheelDeployment,
    training: Option<DatasetVersion>,
    feedback: Option<DatasetVersion>,
    output_base: Option<String>,
}

async fn dataset(api: &Api<DatasetVersion>, name: &str, field: &str) -> Result<DatasetVersion> {
    api.get_opt(name).await?.ok_or_else(|| Error::InvalidSpec(format!("{field}: DatasetVersion {name:?} does not exist")))
}

async fn read_refs(p: &DataPipeline, ctx: &Context, ns: &str) -> Result<Refs> {
    let deployments: Api<FlywheelDeployment> = Api::namespaced(ctx.client.clone(), ns);
    let deployment = deployments
        .get_opt(&p.spec.deployment)
        .await?
        .ok_or_else(|| Error::InvalidSpec(format!("spec.deployment: Deployment {:?} does not exist", p.spec.deployment)))?;
    let datasets: Api<DatasetVersion> = Api::namespaced(ctx.client.clone(), ns);
    let training = match &p.spec.training_data {
        Some(t) => Some(dataset(&datasets, &t.dataset_version, "spec.trainingData").await?),
        None => None,
    };
    let feedback = match p.spec.feedback_loop.as_ref().filter(|f| f.enabled) {
        Some(f) => Some(dataset(&datasets, &f.dataset_version, "spec.feedbackLoop").await?),
        None => None,
    };
    let output_base = p.spec.output_uri.as_ref().map(|u| u.to_string()).or_else(|| ctx.settings.default_output_uri.clone());
    Ok(Refs { deployment, training, feedback, output_base })
}

fn output_secret(refs: &Refs) -> Option<String> {
    refs.feedback
        .as_ref()
        .or(refs.training.as_ref())
        .and_then(|d| d.spec.credentials.as_ref())
        .map(|c| c.secret_name.clone())
}

fn job_settings(ctx: &Context, p: &DataPipeline, refs: &Refs, extra: &[&DatasetVersion], base: Option<&ModelVersion>) -> JobSettings {
    let mut secrets: std::collections::BTreeSet<String> = output_secret(refs).into_iter().collect();
    secrets.extend(extra.iter().filter_map(|d| d.spec.credentials.as_ref()).map(|c| c.secret_name.clone()));
    secrets.extend(base.and_then(|b| b.spec.artifact.credentials.as_ref()).map(|c| c.secret_name.clone()));
    JobSettings {
        image: ctx.settings.trainer_image.clone(),
        credential_secrets: secrets,
        resources: p.spec.continuous_training.as_ref().and_then(|c| c.resources.clone()),
    }
}

async fn create_job(ctx: &Context, ns: &str, job: &Job) -> Result<bool> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(true),
        // Created before (by us, before a restart): the deterministic name makes this the same run.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Appends promotions to the Deployment's status, guarded by its resourceVersion.
async fn promote(ctx: &Context, d: &FlywheelDeployment, changes: &[(Role, Option<String>)], reason: &str, message: &str) -> Result<()> {
    let mut history = d.status.as_ref().map(|s| s.promotion_history.clone()).unwrap_or_default();
    for (role, model) in changes {
        history.push(Promotion {
            time: Time(now()),
            role: *role,
            previous: served::served(&history, *role),
            model_version: model.clone(),
            reason: reason.into(),
            message: message.into(),
        });
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": d.resource_version()},
        "status": {"promotionHistory": history},
    });
    let api: Api<FlywheelDeployment> = Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    for (role, model) in changes {
        ctx.metrics.promoted(d, *role, model.as_deref());
        let note = format!("{role:?} is now {} ({reason}{}{message})", model.as_deref().unwrap_or("none"), if message.is_empty() { "" } else { ": " });
        ctx.event(d, false, "Promoted", "Promote", note).await;
    }
    Ok(())
}

pub async fn reconcile(p: Arc<DataPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let ns = p.namespace().unwrap_or_default();
    let generation = p.metadata.generation;
    let at = now();
    let mut status: DataPipelineStatus = p.status.clone().unwrap_or_default();
    let api: Api<DataPipeline> = Api::namespaced(ctx.client.clone(), &ns);

    // Read + validate.
    let refs = match read_refs(&p, &ctx, &ns).await {
        Ok(refs) => refs,
        Err(e) if e.is_user_error() => {
            let message = e.to_string();
            let changed = condition::set_condition(&mut status.conditions, conditions::READY, FALSE, "InvalidSpec", message.clone(), generation, at);
            status.observed_generation = generation;
            apply_status(&api, &p, &status).await?;
            if changed {
                ctx.event(p.as_ref(), true, "InvalidSpec", "Validate", message).await;
            }
            // Referenced objects may be created later: look again, slowly.
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        Err(e) => return Err(e),
    };
    let mut events: Vec<(bool, String, String)> = Vec::new();
    let needs_output = p.spec.training_data.is_some() || p.spec.continuous_training.as_ref().is_some_and(|c| c.enabled);
    let output_base = match (&refs.output_base, needs_output) {
        (Some(base), _) => Some(base.clone()),
        (None, false) => None,
        (None, true) => {
            let message = "spec.outputUri is not set and the operator has no --default-output-uri".to_string();
            if condition::set_condition(&mut status.conditions, conditions::READY, FALSE, "InvalidSpec", message.clone(), generation, at) {
                ctx.event(p.as_ref(), true, "InvalidSpec", "Validate", message).await;
            }
            status.observed_generation = generation;
            apply_status(&api, &p, &status).await?;
            return Ok(Action::await_change());
        }
    };
    condition::set_condition(&mut status.conditions, conditions::READY, TRUE, "Valid", "references resolved", generation, at);

    // Profiling: one Job per generation of the training dataset.
    if let (Some(training), Some(base)) = (&refs.training, &output_base) {
        let output = build::output_uri(base, &p, "profile");
        let job = build::profile_job(&p, training, &output, &job_settings(&ctx, &p, &refs, &[training], None))?;
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        let existing = jobs.get_opt(&job.name_any()).await?;
        match existing.as_ref().and_then(|j| j.status.clone()) {
            None => {
                if create_job(&ctx, &ns, &job).await? {
                    events.push((false, "ProfilingStarted".into(), format!("Job {} profiles {}", job.name_any(), training.name_any())));
                }
                condition::set_condition(&mut status.conditions, conditions::PROFILING_COMPLETE, FALSE, "Running", format!("Job {} is profiling", job.name_any()), generation, at);
            }
            Some(s) if s.succeeded.unwrap_or(0) > 0 => {
                status.reference_statistics_uri = Some(format!("{output}{REFERENCE_STATISTICS_FILE}"));
                status.unsupervised_metrics_available = true;
                if condition::set_condition(&mut status.conditions, conditions::PROFILING_COMPLETE, TRUE, "Profiled", "reference statistics ready: drift and outlier metrics available", generation, at) {
                    events.push((false, "ProfilingComplete".into(), format!("reference statistics at {output}{REFERENCE_STATISTICS_FILE}")));
                }
            }
            Some(s) if s.conditions.iter().flatten().any(|c| c.type_ == "Failed" && c.status == "True") => {
                let message = format!("profiling Job {} failed; see its logs", job.name_any());
                if condition::set_condition(&mut status.conditions, conditions::PROFILING_COMPLETE, FALSE, "ProfilingFailed", message.clone(), generation, at) {
                    events.push((true, "ProfilingFailed".into(), message));
                }
            }
            Some(_) => {}
        }
    }

    // Reviews.
    let reviewed_total = refs.feedback.as_ref().and_then(|f| f.status.as_ref()).and_then(|s| s.reviewed_count).unwrap_or(0);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{}={},{}=trainer", build::LABEL_PIPELINE, p.name_any(), build::LABEL_JOB_KIND);
    let mut runs: Vec<RunInfo> = jobs.list(&ListParams::default().labels(&selector)).await?.items.iter().filter_map(build::run_from_job).collect();
    runs.sort_by_key(|r| r.number);
    status.reviewed_total = Some(reviewed_total);
    status.reviewed_since_last_training = Some(decide::reviewed_since_last_run(reviewed_total, &runs));

    // Finished runs: register, then place.
    let models: Api<ModelVersion> = Api::namespaced(ctx.client.clone(), &ns);
    let mut history: Vec<TrainingRun> = Vec::new();
    for run in &runs {
        let mut record = TrainingRun {
            number: run.number,
            job: run.job.clone(),
            reviewed_at_trigger: run.reviewed_at_trigger,
            started: run.started.map(Time),
            finished: run.finished.map(Time),
            outcome: match &run.state {
                RunState::Running => "Running",
                RunState::Succeeded => "Succeeded",
                RunState::Failed(_) => "Failed",
            }
            .into(),
            model_version: None,
            message: match &run.state {
                RunState::Failed(m) => m.clone(),
                _ => String::new(),
            },
        };
        if run.state == RunState::Succeeded {
            match register(&ctx, &p, &refs, run, output_base.as_deref(), &models).await {
                Ok(Some(mv)) => record.model_version = Some(mv.name_any()),
                Ok(None) => {}
                Err(message) => {
                    record.outcome = "Failed".into();
                    record.message = message;
                }
            }
        }
        history.push(record);
    }
    ctx.metrics.observe_pipeline(&p, &history);
    let last_finished = history.iter().rev().find(|r| r.outcome != "Running").cloned();
    if let Some(last) = &last_finished {
        let (ok, reason, message) = if last.outcome == "Succeeded" {
            (TRUE, "Succeeded", format!("run {} produced {}", last.number, last.model_version.clone().unwrap_or_default()))
        } else {
            (FALSE, "TrainingFailed", format!("run {} (Job {}) failed: {}", last.number, last.job, last.message))
        };
        if condition::set_condition(&mut status.conditions, conditions::TRAINING_SUCCEEDED, ok, reason, message.clone(), generation, at) {
            events.push((ok == FALSE, reason.into(), message));
        }
    }
    status.current_run = history.iter().find(|r| r.outcome == "Running").cloned();
    status.last_model_version = history.iter().rev().find_map(|r| r.model_version.clone());
    status.run_history = history.iter().filter(|r| r.outcome != "Running").cloned().collect();
    let excess = status.run_history.len().saturating_sub(MAX_RUN_HISTORY);
    status.run_history.drain(..excess);

    // Place the newest produced model once it is Ready.
    status.candidate_model_version = None;
    if let Some(name) = &status.last_model_version {
        let ready = models.get_opt(name).await?.and_then(|m| m.status).and_then(|s| s.phase) == Some(ModelPhase::Ready);
        let dep_history = refs.deployment.status.as_ref().map(|s| s.promotion_history.clone()).unwrap_or_default();
        match decide::placement(p.spec.continuous_deployment.policy) {
            Placement::Candidate => status.candidate_model_version = Some(name.clone()),
            Placement::Promote(role) if ready && !decide::already_promoted(&dep_history, role, name) => {
                promote(&ctx, &refs.deployment, &[(role, Some(name.clone()))], "ContinuousDeployment", &format!("policy {:?}", p.spec.continuous_deployment.policy)).await?;
                condition::set_condition(&mut status.conditions, conditions::PROMOTED, TRUE, "ContinuousDeployment", format!("{name} is the {role:?}"), generation, at);
            }
            Placement::Promote(_) => {}
        }
    }

    // Promotion gate: a shadow that beats the champion on reviewed data becomes champion.
    if let Some(gate) = &p.spec.continuous_deployment.promotion_gate {
        let d_status = refs.deployment.status.clone().unwrap_or_default();
        // The history, not status.shadow, says what is served now: right after a promotion
        // status.shadow and the monitoring figures still describe the old pair.
        let shadow = served::served(&d_status.promotion_history, Role::Shadow).filter(|s| d_status.shadow.as_ref() == Some(s));
        if let (Some(shadow), Some(justification)) = (&shadow, decide::gate_says_promote(gate, d_status.monitoring.as_ref())) {
            promote(&ctx, &refs.deployment, &[(Role::Champion, Some(shadow.clone())), (Role::Shadow, None)], "PromotionGate", &justification).await?;
            condition::set_condition(&mut status.conditions, conditions::PROMOTED, TRUE, "PromotionGate", format!("{shadow} promoted to champion: {justification}"), generation, at);
        }
    }

    // Trigger.
    let mut phase = "Collecting";
    if let (Some(ct), Some(base_uri)) = (p.spec.continuous_training.as_ref().filter(|c| c.enabled), &output_base) {
        match decide::next_run(reviewed_total, &runs, &ct.trigger, at) {
            Ok(Some(number)) => {
                let job = start_run(&ctx, &p, &refs, number, reviewed_total, base_uri).await?;
                events.push((false, "TrainingStarted".into(), format!("run {number}: Job {} after {reviewed_total} reviewed samples", job)));
                phase = "Training";
            }
            Ok(None) => {}
            Err(message) => {
                condition::set_condition(&mut status.conditions, conditions::READY, FALSE, "InvalidSpec", message.clone(), generation, at);
                events.push((true, "InvalidSpec".into(), message));
            }
        }
    }
    if status.current_run.is_some() {
        phase = "Training";
    } else if status.candidate_model_version.is_some() {
        phase = "WaitingForApproval";
    }
    status.phase = Some(phase.into());
    status.observed_generation = generation;

    if Some(&status) != p.status.as_ref() {
        apply_status(&api, &p, &status).await?;
    }
    for (warning, reason, message) in events {
        ctx.event(p.as_ref(), warning, &reason, "Reconcile", message).await;
    }
    // Reviews arrive in storage without touching this object: poll.
    Ok(Action::requeue(Duration::from_secs(5)))
}

/// Registers the ModelVersion of a succeeded run from its result.json. Err is a message
/// for a run whose outputs are unusable.
async fn register(
    ctx: &Context,
    p: &DataPipeline,
    refs: &Refs,
    run: &RunInfo,
    output_base: Option<&str>,
    models: &Api<ModelVersion>,
) -> Result<Option<ModelVersion>, String> {
    let name = build::model_version_name(p, run.number);
    if let Ok(Some(existing)) = models.get_opt(&name).await {
        return Ok(Some(existing));
    }
    let base_uri = output_base.ok_or("no output URI")?;
    let output = build::output_uri(base_uri, p, &format!("runs/{}", run.number));
    let secret = output_secret(refs);
    let ns = p.namespace().unwrap_or_default();
    let options = ctx.secret_options(&ns, secret.as_deref()).await.map_err(|e| e.to_string())?;
    let location = flywheel_storage::Location::open_with(&format!("{output}{RESULT_FILE}"), options).map_err(|e| e.to_string())?;
    let bytes = location.get("").await.map_err(|e| format!("the Job succeeded but its result is unreadable: {e}"))?;
    let result: TrainResult = serde_json::from_slice(&bytes).map_err(|e| format!("{}: invalid result: {e}", location.uri()))?;
    let base = models.get_opt(&run.base_model).await.map_err(|e| e.to_string())?.ok_or(format!("base ModelVersion {:?} no longer exists", run.base_model))?;
    let datasets = training_dataset_names(p);
    let mv = build::trained_model_version(p, run, &base, datasets, &result, secret);
    models
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&mv))
        .await
        .map_err(|e| format!("registering ModelVersion {name}: {e}"))?;
    ctx.event(p, false, "ModelRegistered", "Register", format!("run {} registered ModelVersion {name}", run.number)).await;
    Ok(Some(mv))
}

/// DatasetVersions a run trains on: the explicit list, or training data + feedback.
fn train_dataset_names(p: &DataPipeline) -> Vec<String> {
    let explicit = p.spec.continuous_training.as_ref().map(|c| c.datasets.train.clone()).unwrap_or_default();
    if !explicit.is_empty() {
        return explicit;
    }
    let training = p.spec.training_data.iter().map(|t| t.dataset_version.clone());
    let feedback = p.spec.feedback_loop.iter().filter(|f| f.enabled).map(|f| f.dataset_version.clone());
    training.chain(feedback).collect()
}

/// Every DatasetVersion a run reads, for provenance.
fn training_dataset_names(p: &DataPipeline) -> Vec<String> {
    let mut names = train_dataset_names(p);
    names.extend(p.spec.continuous_training.as_ref().and_then(|c| c.datasets.eval.clone()));
    names.dedup();
    names
}

async fn start_run(ctx: &Context, p: &DataPipeline, refs: &Refs, number: u32, reviewed_total: u64, base_uri: &str) -> Result<String> {
    let ns = p.namespace().unwrap_or_default();
    let ct = p.spec.continuous_training.as_ref().expect("checked by the caller");
    let base_name = ct
        .base_model_version
        .clone()
        .or_else(|| refs.deployment.status.as_ref().and_then(|s| s.champion.clone()))
        .unwrap_or_else(|| refs.deployment.spec.champion.model_version.clone());
    let models: Api<ModelVersion> = Api::namespaced(ctx.client.clone(), &ns);
    let base = models.get_opt(&base_name).await?.ok_or(Error::MissingReference { kind: "ModelVersion", name: base_name })?;
    let datasets: Api<DatasetVersion> = Api::namespaced(ctx.client.clone(), &ns);
    let mut train = Vec::new();
    for name in &train_dataset_names(p) {
        train.push(dataset(&datasets, name, "spec.continuousTraining.datasets.train").await?);
    }
    let eval = match &ct.datasets.eval {
        Some(name) => Some(dataset(&datasets, name, "spec.continuousTraining.datasets.eval").await?),
        None => None,
    };
    let output = build::output_uri(base_uri, p, &format!("runs/{number}"));
    let request = build::train_request(p, &base, train.iter().map(build::named).collect(), eval.as_ref().map(build::named), output);
    let all: Vec<&DatasetVersion> = train.iter().chain(eval.iter()).collect();
    let job = build::training_job(p, number, reviewed_total, &request, &job_settings(ctx, p, refs, &all, Some(&base)))?;
    create_job(ctx, &ns, &job).await?;
    Ok(job.name_any())
}
