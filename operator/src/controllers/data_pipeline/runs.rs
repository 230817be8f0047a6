//! Training runs: read back from their Jobs, registered when they succeed, started when the
//! trigger and cooldown allow.

use flywheel_api::data_pipeline::{TrainingRun, conditions};
use flywheel_api::training::progress::{PROGRESS_FILE, Progress, RunProgress};
use flywheel_api::training::{RESULT_FILE, TrainResult};
use flywheel_api::{DataPipeline, DatasetVersion, ModelVersion};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use super::decide::{self, RunInfo, RunState};
use super::read::{Refs, check_job_secrets, dataset, job_settings, output_secret};
use super::{build, freeze};
use crate::context::{Context, FIELD_MANAGER};
use crate::controllers::recorder::StatusRecorder;
use crate::{Error, Result};

const MAX_RUN_HISTORY: usize = 20;

/// Creates a Job; false when it exists already.
pub async fn create_job(ctx: &Context, ns: &str, job: &Job) -> Result<bool> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(true),
        // Created before (by us, before a restart): the deterministic name makes this the same run.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The pipeline's runs, from its training Jobs, by number.
pub async fn read(ctx: &Context, p: &DataPipeline) -> Result<Vec<RunInfo>> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let selector = format!("{}={},{}=trainer", build::LABEL_PIPELINE, p.name_any(), build::LABEL_JOB_KIND);
    let mut runs: Vec<RunInfo> = jobs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .filter_map(build::run_from_job)
        .collect();
    runs.sort_by_key(|r| r.number);
    Ok(runs)
}

/// Pure: the status record of a run, before registration.
pub fn record_of(run: &RunInfo) -> TrainingRun {
    let (outcome, message) = match &run.state {
        RunState::Running => ("Running", String::new()),
        RunState::Succeeded => ("Succeeded", String::new()),
        RunState::Failed(m) => ("Failed", m.clone()),
    };
    TrainingRun {
        number: run.number,
        job: run.job.clone(),
        reviewed_at_trigger: run.reviewed_at_trigger,
        started: run.started.map(Time),
        finished: run.finished.map(Time),
        outcome: outcome.into(),
        model_version: None,
        message,
        progress: None,
    }
}

/// The records of all runs; a succeeded run's ModelVersion is registered (once).
pub async fn records(
    ctx: &Context,
    p: &DataPipeline,
    refs: &Refs,
    runs: &[RunInfo],
    output_base: Option<&str>,
) -> Vec<TrainingRun> {
    let models: Api<ModelVersion> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let mut history = Vec::new();
    for run in runs {
        let mut record = record_of(run);
        if run.state == RunState::Running {
            let secret = output_secret(refs);
            record.progress = progress(ctx, p, secret.as_deref(), run.number, output_base).await;
        }
        if run.state == RunState::Succeeded {
            match register(ctx, p, refs, run, output_base, &models).await {
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
    history
}

/// A running run's `progress.json`, summarised; `None` before the trainer wrote one, or when it
/// cannot be read (the next reconcile tries again: progress is informative, never a failure).
async fn progress(
    ctx: &Context,
    p: &DataPipeline,
    secret: Option<&str>,
    run: u32,
    output_base: Option<&str>,
) -> Option<RunProgress> {
    let output = build::output_uri(output_base?, p, &format!("runs/{run}"));
    let options = ctx.secret_options(&p.namespace().unwrap_or_default(), secret).await.ok()?;
    let location = flywheel_storage::Location::open_with(&format!("{output}{PROGRESS_FILE}"), options).ok()?;
    let bytes = location.get_opt("").await.ok()??;
    match serde_json::from_slice::<Progress>(&bytes) {
        Ok(progress) => Some(RunProgress::from(&progress)),
        Err(e) => {
            tracing::debug!(uri = %location.uri(), error = %e, "unreadable training progress");
            None
        }
    }
}

/// Pure: `TrainingSucceeded` from the last finished run, announced when it changes.
pub fn training_condition(rec: &mut StatusRecorder, history: &[TrainingRun]) {
    let Some(last) = history.iter().rev().find(|r| r.outcome != "Running") else { return };
    if last.outcome == "Succeeded" {
        let message = format!("run {} produced {}", last.number, last.model_version.clone().unwrap_or_default());
        rec.ok(conditions::TRAINING_SUCCEEDED, "Succeeded", message).announce();
    } else {
        let message = format!("run {} (Job {}) failed: {}", last.number, last.job, last.message);
        rec.fail(conditions::TRAINING_SUCCEEDED, "TrainingFailed", message).announce();
    }
}

/// What the status says about runs.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub current_run: Option<TrainingRun>,
    pub last_model_version: Option<String>,
    /// Finished runs, the last [`MAX_RUN_HISTORY`].
    pub run_history: Vec<TrainingRun>,
}

/// Pure: the status summary of the run records.
pub fn summarise(history: &[TrainingRun]) -> Summary {
    let mut run_history: Vec<TrainingRun> = history.iter().filter(|r| r.outcome != "Running").cloned().collect();
    let excess = run_history.len().saturating_sub(MAX_RUN_HISTORY);
    run_history.drain(..excess);
    Summary {
        current_run: history.iter().find(|r| r.outcome == "Running").cloned(),
        last_model_version: history.iter().rev().find_map(|r| r.model_version.clone()),
        run_history,
    }
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
    let location =
        flywheel_storage::Location::open_with(&format!("{output}{RESULT_FILE}"), options).map_err(|e| e.to_string())?;
    let bytes = location.get("").await.map_err(|e| format!("the Job succeeded but its result is unreadable: {e}"))?;
    let result: TrainResult =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: invalid result: {e}", location.uri()))?;
    let base = models
        .get_opt(&run.base_model)
        .await
        .map_err(|e| e.to_string())?
        .ok_or(format!("base ModelVersion {:?} no longer exists", run.base_model))?;
    // What the run's request named (frozen feedback versions included); older Jobs did not say.
    let datasets = if run.datasets.is_empty() { training_dataset_names(p) } else { run.datasets.clone() };
    let mv = build::trained_model_version(p, run, &base, datasets, &result, secret);
    models
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&mv))
        .await
        .map_err(|e| format!("registering ModelVersion {name}: {e}"))?;
    ctx.event(p, false, "ModelRegistered", "Register", format!("run {} registered ModelVersion {name}", run.number))
        .await;
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

/// What [`trigger`] did.
#[derive(Debug, PartialEq)]
pub enum Triggered {
    Started,
    NotYet,
    /// A run is due but only the user can make it possible: a condition reason and message
    /// for `Ready` (an invalid trigger, a missing base model or dataset, credentials).
    Refused(&'static str, String),
}

/// Starts the next run when continuous training is on and the trigger and cooldown allow.
pub async fn trigger(
    ctx: &Context,
    p: &DataPipeline,
    refs: &Refs,
    reviewed_total: u64,
    runs: &[RunInfo],
    output_base: Option<&str>,
    rec: &mut StatusRecorder<'_>,
) -> Result<Triggered> {
    let (Some(ct), Some(base_uri)) = (p.spec.continuous_training.as_ref().filter(|c| c.enabled), output_base) else {
        return Ok(Triggered::NotYet);
    };
    match decide::next_run(reviewed_total, runs, &ct.trigger, rec.at()) {
        Ok(Some(number)) => match start_run(ctx, p, refs, number, reviewed_total, base_uri).await {
            Ok(job) => {
                rec.notice(
                    false,
                    "TrainingStarted",
                    format!("run {number}: Job {job} after {reviewed_total} reviewed samples"),
                );
                Ok(Triggered::Started)
            }
            Err(e) if e.is_user_error() => Ok(Triggered::Refused(e.reason(), format!("run {number} not started: {e}"))),
            Err(e) => Err(e),
        },
        Ok(None) => Ok(Triggered::NotYet),
        Err(message) => Ok(Triggered::Refused("InvalidSpec", message)),
    }
}

async fn start_run(
    ctx: &Context,
    p: &DataPipeline,
    refs: &Refs,
    number: u32,
    reviewed_total: u64,
    base_uri: &str,
) -> Result<String> {
    let ns = p.namespace().unwrap_or_default();
    let ct = p.spec.continuous_training.as_ref().expect("checked by the caller");
    let base_name = ct
        .base_model_version
        .clone()
        .or_else(|| refs.deployment.status.as_ref().and_then(|s| s.champion.clone()))
        .unwrap_or_else(|| refs.deployment.spec.champion.model_version.clone());
    let models: Api<ModelVersion> = Api::namespaced(ctx.client.clone(), &ns);
    let base =
        models.get_opt(&base_name).await?.ok_or(Error::MissingReference { kind: "ModelVersion", name: base_name })?;
    let datasets: Api<DatasetVersion> = Api::namespaced(ctx.client.clone(), &ns);
    let mut train = Vec::new();
    for name in &train_dataset_names(p) {
        let ds = dataset(&datasets, name, "spec.continuousTraining.datasets.train").await?;
        // The growing feedback dataset is read as its frozen versions, this run's included.
        if ds.spec.feedback && ds.spec.manifest.is_none() {
            train.extend(freeze::versions(ctx, p, &ds, number).await?);
        } else {
            train.push(ds);
        }
    }
    let eval = match &ct.datasets.eval {
        Some(name) => Some(dataset(&datasets, name, "spec.continuousTraining.datasets.eval").await?),
        None => None,
    };
    let output = build::output_uri(base_uri, p, &format!("runs/{number}"));
    let request = build::train_request(
        p,
        &base,
        train.iter().map(build::named).collect(),
        eval.as_ref().map(build::named),
        output,
    );
    let all: Vec<&DatasetVersion> = train.iter().chain(eval.iter()).collect();
    let settings = job_settings(ctx, p, refs, &all, Some(&base))?;
    check_job_secrets(ctx, p, &settings).await?;
    let job = build::training_job(p, number, reviewed_total, &request, &settings)?;
    create_job(ctx, &ns, &job).await?;
    Ok(job.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_api::condition;
    use k8s_openapi::jiff::Timestamp;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn run(number: u32, state: RunState) -> RunInfo {
        RunInfo {
            number,
            job: format!("p-train-{number}"),
            reviewed_at_trigger: 5 * u64::from(number),
            base_model: "m".into(),
            datasets: Vec::new(),
            started: Some(ts(10)),
            finished: None,
            state,
        }
    }

    fn produced(number: u32) -> TrainingRun {
        TrainingRun { model_version: Some(format!("p-r{number}")), ..record_of(&run(number, RunState::Succeeded)) }
    }

    /// A context whose API server is never called (the storage read needs no Secret).
    fn offline_context() -> std::sync::Arc<Context> {
        let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let settings = crate::context::Settings {
            server_image: "s".into(),
            trainer_image: "t".into(),
            review_service_image: "r".into(),
            default_output_uri: None,
            namespace: None,
            allow_local_files: true,
            verify_models: false,
        };
        Context::new(client, crate::metrics::Metrics::default(), settings)
    }

    #[tokio::test]
    async fn a_running_runs_progress_is_read_from_where_its_trainer_writes_it() {
        let ctx = offline_context();
        let p: DataPipeline = serde_yaml::from_str(
            "apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {name: loop, namespace: ns}\nspec: {deployment: d}",
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("flywheel-progress-{}", std::process::id()));
        let base = format!("file://{}", dir.display());
        assert_eq!(progress(&ctx, &p, None, 3, Some(&base)).await, None, "nothing written yet");
        // Where the run's request points its trainer: <base>/<namespace>/<pipeline>/runs/<N>/.
        let run_dir = dir.join("ns/loop/runs/3");
        std::fs::create_dir_all(&run_dir).unwrap();
        let written = serde_json::json!({
            "state": "training", "epochs": 6, "metric": "mAP50", "judgedOn": "feedback",
            "baseMetrics": {"mAP50": 0.2}, "epoch": 2, "loss": 0.75, "metrics": {"mAP50": 0.4},
            "imagesPerSecond": 120.0, "etaSeconds": 18.0, "bestEpoch": 2, "stoppedEarly": false, "history": [],
        });
        std::fs::write(run_dir.join(PROGRESS_FILE), written.to_string()).unwrap();
        let read = progress(&ctx, &p, None, 3, Some(&base)).await.expect("the progress");
        assert_eq!((read.epoch, read.epochs, read.value, read.base_value), (2, 6, Some(0.4), Some(0.2)));
        assert_eq!((read.eta_seconds, read.best_epoch, read.state.as_str()), (Some(18.0), 2, "training"));
        std::fs::write(run_dir.join(PROGRESS_FILE), b"{ half").unwrap();
        assert_eq!(progress(&ctx, &p, None, 3, Some(&base)).await, None, "unreadable: no progress, no failure");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_say_how_each_run_went() {
        let failed = record_of(&run(2, RunState::Failed("OOMKilled".into())));
        assert_eq!(
            (failed.outcome.as_str(), failed.message.as_str(), failed.reviewed_at_trigger),
            ("Failed", "OOMKilled", 10)
        );
        assert_eq!(failed.started, Some(Time(ts(10))));
        assert_eq!(record_of(&run(3, RunState::Running)).outcome, "Running");
    }

    #[test]
    fn the_summary_keeps_the_current_run_the_newest_model_and_the_last_twenty() {
        let mut history: Vec<TrainingRun> = (1..=25).map(produced).collect();
        history.push(record_of(&run(26, RunState::Running)));
        let s = summarise(&history);
        assert_eq!(s.current_run.map(|r| r.number), Some(26));
        assert_eq!(s.last_model_version.as_deref(), Some("p-r25"));
        assert_eq!(s.run_history.len(), MAX_RUN_HISTORY);
        assert_eq!(s.run_history[0].number, 6);
    }

    #[test]
    fn training_succeeded_follows_the_last_finished_run_and_is_announced_on_change() {
        let mut conditions = Vec::new();
        let mut rec = StatusRecorder::new(&mut conditions, Some(1), ts(1), "Reconcile");
        training_condition(&mut rec, &[]);
        assert!(rec.notices().is_empty());
        training_condition(
            &mut rec,
            &[produced(1), record_of(&run(2, RunState::Failed("bad".into()))), record_of(&run(3, RunState::Running))],
        );
        training_condition(&mut rec, &[produced(1), record_of(&run(2, RunState::Failed("worse".into())))]);
        let notices = rec.into_notices();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(
            (notices[0].warning, notices[0].reason.as_str(), notices[0].message.as_str()),
            (true, "TrainingFailed", "run 2 (Job p-train-2) failed: bad")
        );
        let c = condition::find(&conditions, conditions::TRAINING_SUCCEEDED).unwrap();
        assert_eq!((c.status.as_str(), c.message.as_str()), ("False", "run 2 (Job p-train-2) failed: worse"));
    }
}
