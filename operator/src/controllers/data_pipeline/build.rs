//! Pure builders of the DataPipeline controller: profiling and training Jobs, the
//! ModelVersion a successful run registers, and runs read back from Jobs.

use std::collections::{BTreeMap, BTreeSet};

use flywheel_api::data_pipeline::Trainer;
use flywheel_api::model_version::Provenance;
use flywheel_api::training::{NamedDataset, NamedModel, ProfileRequest, REQUEST_ENV, TrainRequest, TrainResult};
use flywheel_api::{DataPipeline, DatasetVersion, ModelVersion, StorageUri};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::decide::{RunInfo, RunState};
use crate::controllers::deployment::build::{CREDENTIAL_KEYS, credential_env};
use crate::{Error, Result};

pub const LABEL_PIPELINE: &str = "flywheel.dev/pipeline";
pub const LABEL_JOB_KIND: &str = "flywheel.dev/job-kind";
pub const LABEL_RUN: &str = "flywheel.dev/run";
pub const ANNOTATION_REVIEWED: &str = "flywheel.dev/reviewed-at-trigger";
pub const ANNOTATION_BASE_MODEL: &str = "flywheel.dev/base-model";
/// The DatasetVersions a training Job reads (comma-separated): its model's provenance.
pub const ANNOTATION_DATASETS: &str = "flywheel.dev/datasets";

/// Kubernetes names are at most 63 characters for Jobs (their Pods carry the name as a label).
fn bounded(name: String) -> String {
    if name.len() <= 63 {
        return name;
    }
    let digest = flywheel_storage::sha256_hex(name.as_bytes());
    format!("{}-{}", name[..54].trim_end_matches('-'), &digest[..8])
}

pub fn training_job_name(p: &DataPipeline, run: u32) -> String {
    bounded(format!("{}-train-{run}", p.name_any()))
}

pub fn profile_job_name(p: &DataPipeline, dataset: &DatasetVersion) -> String {
    let generation = dataset.metadata.generation.unwrap_or(0);
    bounded(format!("{}-profile-{}-g{generation}", p.name_any(), dataset.name_any()))
}

/// The ModelVersion a run registers.
pub fn model_version_name(p: &DataPipeline, run: u32) -> String {
    bounded(format!("{}-r{run}", p.name_any()))
}

/// `<outputUri>/<namespace>/<pipeline>/<leaf>/`.
pub fn output_uri(base: &str, p: &DataPipeline, leaf: &str) -> String {
    format!("{}/{}/{}/{leaf}/", base.trim_end_matches('/'), p.namespace().unwrap_or_default(), p.name_any())
}

pub fn named(ds: &DatasetVersion) -> NamedDataset {
    NamedDataset { name: ds.name_any(), spec: ds.spec.clone() }
}

/// What a Job's container needs besides its request: image, credentials, PVC mounts.
pub struct JobSettings {
    pub image: String,
    pub credential_secrets: BTreeSet<String>,
    pub resources: Option<ResourceRequirements>,
}

/// Environment variables the operator sets on every Job container; a trainer's `env` cannot
/// replace them.
pub fn reserved_env(name: &str) -> bool {
    name == REQUEST_ENV || CREDENTIAL_KEYS.contains(&name)
}

#[allow(clippy::too_many_arguments)] // one Job builder for profile and train Jobs
fn job(
    p: &DataPipeline,
    name: String,
    kind: &str,
    command: &str,
    request: &serde_json::Value,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    settings: &JobSettings,
    trainer: Option<&Trainer>,
) -> Result<Job> {
    let request_json = serde_json::to_string(request).map_err(|e| Error::Serialization(e.to_string()))?;
    let own_env = trainer.map(|t| t.env.as_slice()).unwrap_or_default();
    let mut env = vec![json!({"name": REQUEST_ENV, "value": request_json})];
    if !own_env.iter().any(|e| e.name == "RAYON_NUM_THREADS") {
        env.push(json!({"name": "RAYON_NUM_THREADS", "value": "2"}));
    }
    env.extend(settings.credential_secrets.iter().flat_map(|s| credential_env(s)));
    // A trainer's own variables, never the request or the credentials (validation refuses
    // those names; they are dropped here too so a Job never carries a second value).
    env.extend(own_env.iter().filter(|e| !reserved_env(&e.name)).map(|e| json!({"name": e.name, "value": e.value})));
    let mut container = json!({
        "name": kind,
        "image": &settings.image,
        "args": [command],
        "env": env,
        "volumeMounts": [],
        "resources": settings.resources.clone().unwrap_or_default(),
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "allowPrivilegeEscalation": false},
    });
    if let Some(t) = trainer {
        container["image"] = json!(t.image);
        container["args"] = json!(t.args);
        if !t.command.is_empty() {
            container["command"] = json!(t.command);
        }
        if let Some(resources) = &t.resources {
            container["resources"] = json!(resources);
        }
    }
    let claims: BTreeSet<String> = find_pvc_claims(request);
    let volumes: Vec<_> =
        claims.iter().map(|c| json!({"name": format!("pvc-{c}"), "persistentVolumeClaim": {"claimName": c}})).collect();
    let mounts: Vec<_> = claims
        .iter()
        .map(
            |c| json!({"name": format!("pvc-{c}"), "mountPath": format!("{}/{c}", flywheel_storage::DEFAULT_PVC_ROOT)}),
        )
        .collect();
    container["volumeMounts"] = json!(mounts);
    let mut all_labels = labels;
    all_labels.insert(LABEL_PIPELINE.into(), p.name_any());
    all_labels.insert(LABEL_JOB_KIND.into(), kind.into());
    all_labels.insert("app.kubernetes.io/managed-by".into(), "flywheel-operator".into());
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": p.namespace(),
            "labels": all_labels,
            "annotations": annotations,
            "ownerReferences": [p.controller_owner_ref(&()).expect("stored object has a uid")],
        },
        "spec": {
            "backoffLimit": 1,
            "template": {
                "metadata": {"labels": all_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }))
    .map_err(|e| Error::Serialization(e.to_string()))
}

/// Claim names of every pvc:// URI anywhere in a request.
fn find_pvc_claims(value: &serde_json::Value) -> BTreeSet<String> {
    let mut claims = BTreeSet::new();
    match value {
        serde_json::Value::String(s) => {
            if let Some(claim) = s.strip_prefix("pvc://").and_then(|r| r.split('/').next()).filter(|c| !c.is_empty()) {
                claims.insert(claim.to_string());
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| claims.extend(find_pvc_claims(v))),
        serde_json::Value::Object(map) => map.values().for_each(|v| claims.extend(find_pvc_claims(v))),
        _ => {}
    }
    claims
}

pub fn profile_job(p: &DataPipeline, dataset: &DatasetVersion, output: &str, settings: &JobSettings) -> Result<Job> {
    let request = ProfileRequest { dataset: named(dataset), output_uri: StorageUri(output.to_string()) };
    let request = serde_json::to_value(&request).map_err(|e| Error::Serialization(e.to_string()))?;
    let name = profile_job_name(p, dataset);
    job(p, name, "profile", "profile", &request, BTreeMap::new(), BTreeMap::new(), settings, None)
}

pub fn training_job(
    p: &DataPipeline,
    run: u32,
    reviewed_at_trigger: u64,
    request: &TrainRequest,
    settings: &JobSettings,
) -> Result<Job> {
    let value = serde_json::to_value(request).map_err(|e| Error::Serialization(e.to_string()))?;
    let labels = BTreeMap::from([(LABEL_RUN.to_string(), run.to_string())]);
    let annotations = BTreeMap::from([
        (ANNOTATION_REVIEWED.to_string(), reviewed_at_trigger.to_string()),
        (ANNOTATION_BASE_MODEL.to_string(), request.base_model.name.clone()),
        (ANNOTATION_DATASETS.to_string(), request_datasets(request).join(",")),
    ]);
    // `continuousTraining.trainer` replaces the built-in trainer's image, command, args and
    // resources; the request, credentials, mounts and result contract stay the same.
    let trainer = p.spec.continuous_training.as_ref().and_then(|c| c.trainer.as_ref());
    job(p, training_job_name(p, run), "trainer", "train", &value, labels, annotations, settings, trainer)
}

pub fn train_request(
    p: &DataPipeline,
    base: &ModelVersion,
    train: Vec<NamedDataset>,
    eval: Option<NamedDataset>,
    output: String,
) -> TrainRequest {
    let ct = p.spec.continuous_training.as_ref();
    TrainRequest {
        base_model: NamedModel { name: base.name_any(), spec: base.spec.clone() },
        train,
        eval,
        hyperparameters: ct.map(|c| c.hyperparameters.clone()).unwrap_or_default(),
        output_uri: StorageUri(output),
        max_regression: 0.05,
    }
}

/// A run as recorded on its Job, or None for a Job that is not a training run.
/// Every DatasetVersion a request reads, training sets then the evaluation set, each once.
pub fn request_datasets(request: &TrainRequest) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for d in request.train.iter().chain(request.eval.iter()) {
        if !names.contains(&d.name) {
            names.push(d.name.clone());
        }
    }
    names
}

pub fn run_from_job(job: &Job) -> Option<RunInfo> {
    let labels = job.metadata.labels.as_ref()?;
    let number: u32 = labels.get(LABEL_RUN)?.parse().ok()?;
    let annotations = job.metadata.annotations.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let failed = status.conditions.iter().flatten().find(|c| c.type_ == "Failed" && c.status == "True");
    let state = if status.succeeded.unwrap_or(0) > 0 {
        RunState::Succeeded
    } else if let Some(c) = failed {
        RunState::Failed(format!("{}: {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
    } else {
        RunState::Running
    };
    Some(RunInfo {
        number,
        job: job.name_any(),
        reviewed_at_trigger: annotations.get(ANNOTATION_REVIEWED).and_then(|v| v.parse().ok()).unwrap_or(0),
        base_model: annotations.get(ANNOTATION_BASE_MODEL).cloned().unwrap_or_default(),
        datasets: annotations
            .get(ANNOTATION_DATASETS)
            .map(|v| v.split(',').filter(|n| !n.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
        started: job.metadata.creation_timestamp.as_ref().map(|t| t.0),
        finished: status
            .completion_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| failed.and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0)),
        state,
    })
}

/// The ModelVersion a successful run registers: the base model's contract with the new
/// artifact, its provenance and its metrics.
pub fn trained_model_version(
    p: &DataPipeline,
    run: &RunInfo,
    base: &ModelVersion,
    datasets: Vec<String>,
    result: &TrainResult,
    credentials_secret: Option<String>,
) -> ModelVersion {
    let mut spec = base.spec.clone();
    spec.version = format!("{}-r{}", base.spec.version, run.number);
    spec.artifact.uri = result.model_uri.clone();
    spec.artifact.sha256 = Some(result.sha256.clone());
    spec.artifact.credentials = credentials_secret.map(|secret_name| flywheel_api::CredentialsRef { secret_name });
    spec.provenance = Some(Provenance {
        parent: Some(base.name_any()),
        dataset_versions: datasets,
        pipeline: Some(p.name_any()),
        job: Some(run.job.clone()),
        hyperparameters: p.spec.continuous_training.as_ref().map(|c| c.hyperparameters.to_map()).unwrap_or_default(),
    });
    spec.metrics = result.metrics.clone();
    let mut mv = ModelVersion::new(&model_version_name(p, run.number), spec);
    mv.metadata.namespace = p.namespace();
    mv.metadata.labels = Some(BTreeMap::from([
        (LABEL_PIPELINE.to_string(), p.name_any()),
        (LABEL_RUN.to_string(), run.number.to_string()),
    ]));
    mv
}
