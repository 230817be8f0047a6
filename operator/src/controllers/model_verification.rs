//! ModelVersion verification: once the artifact's digest is known, a short Job runs the
//! inference server's `verify` command (the operator links no runtime) to load the model, check
//! its contract against the graph and run a probe image through pre-processing, the model and
//! the decoder. The Job writes its result to its termination message; the operator records it in
//! the status, and the ModelVersion is Ready only when it passed. The result is kept per digest
//! and contract, so an edit elsewhere in the spec does not verify again.

use std::collections::BTreeMap;

use flywheel_api::ModelVersion;
use flywheel_api::model_version::{ModelPhase, conditions};
use flywheel_api::serving::ServedModel;
use flywheel_api::{ModelVersionStatus, condition};
use flywheel_types::verification::{Verification as Report, contract_hash};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::deployment::build::{CREDENTIAL_KEYS, MODEL_CACHE_DIR};
use super::recorder::{Notice, StatusRecorder};
use crate::context::Context;
use crate::{Error, Result};

pub const LABEL_MODEL_VERSION: &str = "flywheel.dev/model-version";
/// Longest a verification may take (a large model on a slow store included).
const DEADLINE_SECONDS: i64 = 600;

/// Where a verification stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The Job is running (or about to).
    Running { job: String },
    /// The model was verified: passed or not, the report says.
    Done(Report),
    /// The Job could not produce a result (it crashed, timed out or its image did not start).
    JobFailed { job: String, message: String },
}

/// The model the Job verifies: what a Deployment would serve.
pub fn served(mv: &ModelVersion, digest: &str) -> ServedModel {
    let spec = &mv.spec;
    ServedModel {
        name: spec.model.clone(),
        version: mv.name_any(),
        uri: spec.artifact.uri.to_string(),
        sha256: digest.to_string(),
        task: spec.task,
        labels: spec.labels.clone(),
        input: spec.input.clone(),
        output: spec.output.clone(),
    }
}

/// The recorded report, when it covers this digest and contract.
pub fn cached<'s>(status: &'s ModelVersionStatus, model: &ServedModel) -> Option<&'s Report> {
    status.verification.as_ref().filter(|r| r.digest == model.sha256 && r.contract == contract_hash(model))
}

/// One Job per digest and contract: a restarted operator finds the same Job.
pub fn job_name(mv: &ModelVersion, model: &ServedModel) -> String {
    let (digest, contract) = (&model.sha256[..model.sha256.len().min(8)], contract_hash(model));
    let suffix = format!("-verify-{digest}-{}", &contract[..6]);
    let mut base = mv.name_any();
    base.truncate(63 - suffix.len());
    format!("{}{suffix}", base.trim_end_matches(['-', '.']))
}

/// Pure: the verification Job.
pub fn job(mv: &ModelVersion, model: &ServedModel, image: &str) -> Result<Job> {
    let model_json = serde_json::to_string(model).map_err(|e| Error::Serialization(e.to_string()))?;
    let mut env = vec![
        json!({"name": "FLYWHEEL_VERIFY_MODEL", "value": model_json}),
        json!({"name": "FLYWHEEL_VERIFY_REPORT", "value": "/dev/termination-log"}),
        json!({"name": "FLYWHEEL_MODEL_CACHE", "value": MODEL_CACHE_DIR}),
        json!({"name": "RAYON_NUM_THREADS", "value": "2"}),
    ];
    if let Some(secret) = &mv.spec.artifact.credentials {
        for key in CREDENTIAL_KEYS {
            env.push(json!({"name": key, "valueFrom": {"secretKeyRef": {"name": secret.secret_name, "key": key, "optional": true}}}));
        }
    }
    let mut volumes = vec![json!({"name": "model-cache", "emptyDir": {}})];
    let mut mounts = vec![json!({"name": "model-cache", "mountPath": MODEL_CACHE_DIR})];
    if let Some(claim) = model.uri.strip_prefix("pvc://").and_then(|r| r.split('/').next()).filter(|c| !c.is_empty()) {
        volumes.push(json!({"name": "artifact", "persistentVolumeClaim": {"claimName": claim, "readOnly": true}}));
        mounts.push(json!({"name": "artifact", "mountPath": format!("{}/{claim}", flywheel_storage::DEFAULT_PVC_ROOT), "readOnly": true}));
    }
    let labels = BTreeMap::from([
        (LABEL_MODEL_VERSION.to_string(), mv.name_any()),
        ("flywheel.dev/job-kind".to_string(), "verify".to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "flywheel-operator".to_string()),
    ]);
    let owner = mv.controller_owner_ref(&()).ok_or_else(|| Error::Serialization("ModelVersion has no uid".into()))?;
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(mv, model), "namespace": mv.namespace(), "labels": labels, "ownerReferences": [owner]},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "verify",
                        "image": image,
                        "args": ["verify"],
                        "env": env,
                        "volumeMounts": mounts,
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "allowPrivilegeEscalation": false},
                    }],
                    "volumes": volumes,
                },
            },
        },
    }))
    .map_err(|e| Error::Serialization(e.to_string()))
}

/// Pure: the report in a finished verification Pod's termination message, or why there is none.
pub fn report_of(pod: &Pod, model: &ServedModel) -> std::result::Result<Report, String> {
    let terminated = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .ok_or("the verification Pod has not terminated")?;
    let message = terminated.message.clone().unwrap_or_default();
    if terminated.exit_code != 0 {
        return Err(format!("the verifier exited with code {}: {message}", terminated.exit_code));
    }
    let report: Report = serde_json::from_str(message.trim())
        .map_err(|e| format!("the verifier's result is unreadable ({e}): {message}"))?;
    if report.digest != model.sha256 || report.contract != contract_hash(model) {
        return Err("the verifier's result is for another digest or contract".into());
    }
    Ok(report)
}

/// Starts the Job if needed and reads its result once it has finished. A finished Job stays
/// (owned by the ModelVersion, gone with it); the operator may create Jobs but not delete them.
pub async fn follow(ctx: &Context, mv: &ModelVersion, model: &ServedModel) -> Result<Outcome> {
    let ns = mv.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let name = job_name(mv, model);
    let Some(existing) = jobs.get_opt(&name).await? else {
        match jobs.create(&PostParams::default(), &job(mv, model, &ctx.settings.server_image)?).await {
            Ok(_) => {}
            // Created before (by us, before a restart): the deterministic name makes it the same.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Outcome::Running { job: name });
    };
    let status = existing.status.unwrap_or_default();
    let finished = status.succeeded.unwrap_or(0) > 0 || status.failed.unwrap_or(0) > 0;
    if !finished {
        return Ok(Outcome::Running { job: name });
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = pods.list(&ListParams::default().labels(&format!("job-name={name}"))).await?;
    let outcome = match listed.items.iter().map(|p| report_of(p, model)).find(Result::is_ok) {
        Some(Ok(report)) => Outcome::Done(report),
        _ => {
            let why = listed.items.first().map(|p| report_of(p, model).unwrap_err()).unwrap_or_else(|| {
                let reason =
                    status.conditions.iter().flatten().find(|c| c.type_ == "Failed").and_then(|c| c.message.clone());
                reason.unwrap_or_else(|| "the verification Job finished without a Pod".into())
            });
            Outcome::JobFailed { job: name.clone(), message: why }
        }
    };
    Ok(outcome)
}

/// Pure: the Event for a change of `Ready` after `outcome`.
pub fn notice_for(outcome: &Outcome) -> Notice {
    let (warning, reason, message) = match outcome {
        Outcome::Running { job } => (false, "Verifying", format!("Job {job} verifies the model")),
        Outcome::Done(r) if r.passed => {
            (false, "Ready", format!("the model passed verification ({} parameters)", r.parameters))
        }
        Outcome::Done(r) => (true, "VerificationFailed", r.message.clone().unwrap_or_default()),
        Outcome::JobFailed { job, message } => (true, "VerificationJobFailed", format!("Job {job}: {message}")),
    };
    Notice { warning, reason: reason.into(), action: "VerifyModel", message }
}

/// Pure: records `outcome` in the status (on top of a verified artifact). Returns whether
/// `Ready` changed.
pub fn record(
    status: &mut ModelVersionStatus,
    generation: Option<i64>,
    outcome: &Outcome,
    at: k8s_openapi::jiff::Timestamp,
) -> bool {
    let (phase, verified, reason, message) = match outcome {
        Outcome::Running { job } => (
            ModelPhase::Pending,
            condition::UNKNOWN,
            "Verifying",
            format!("Job {job} loads the model and runs a probe through it"),
        ),
        Outcome::Done(report) if report.passed => {
            status.verification = Some(report.clone());
            let latency = report.probe_latency_ms.map(|ms| format!(", probe {ms:.1} ms")).unwrap_or_default();
            let message = format!(
                "the model serves with its spec: {} nodes, {} parameters{latency}",
                report.ops.values().sum::<u32>(),
                report.parameters
            );
            (ModelPhase::Ready, condition::TRUE, "Verified", message)
        }
        Outcome::Done(report) => {
            status.verification = Some(report.clone());
            let why = report.message.clone().unwrap_or_else(|| "the verifier gave no reason".into());
            (ModelPhase::Failed, condition::FALSE, "VerificationFailed", why)
        }
        Outcome::JobFailed { job, message } => (
            ModelPhase::Failed,
            condition::FALSE,
            "VerificationJobFailed",
            format!("Job {job}: {message}; see its logs, and delete the Job to verify again"),
        ),
    };
    status.phase = Some(phase);
    let mut rec = StatusRecorder::new(&mut status.conditions, generation, at, "VerifyModel");
    rec.set(conditions::VERIFIED, verified, reason, message.clone());
    let ready = if phase == ModelPhase::Ready { condition::TRUE } else { condition::FALSE };
    rec.set(conditions::READY, ready, reason, message).changed()
}

#[cfg(test)]
mod tests;
