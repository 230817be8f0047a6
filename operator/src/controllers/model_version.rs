//! ModelVersion: verify that the artifact exists (and matches its sha256) in storage, then that
//! the model serves with its spec (a verification Job, see `model_verification`).

use std::sync::Arc;
use std::time::Duration;

use flywheel_api::condition::{self, FALSE, TRUE};
use flywheel_api::model_version::{ModelPhase, conditions};
use flywheel_api::validation;
use flywheel_api::{ModelVersion, ModelVersionStatus};
use flywheel_storage::StorageError;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::recorder::{Notice, StatusRecorder, publish};
use super::status::{apply_status, now};
use super::{model_verification, trust};
use crate::context::Context;
use crate::{Error, Result};

pub const KIND: &str = "ModelVersion";

/// The outcome of checking an artifact, before it is written into status.
#[derive(Debug, PartialEq)]
pub enum Verification {
    /// The spec contradicts itself (e.g. a std of 0): nothing is fetched until it changes.
    InvalidSpec(String),
    /// The operator may not read the artifact for this object: a `file://` URI without
    /// `--allow-local-files` ([`trust::LOCAL_FILES_NOT_ALLOWED`]), or a credentials Secret without
    /// the `flywheel.dev/credentials` label ([`trust::CREDENTIALS_NOT_ALLOWED`]).
    Refused {
        reason: &'static str,
        message: String,
    },
    Verified {
        digest: String,
        size: u64,
    },
    Missing(String),
    DigestMismatch {
        expected: String,
        actual: String,
    },
    Unreachable(String),
}

/// Pure: the new status for a verification outcome. Returns the status and whether the
/// Ready condition changed (worth an Event).
pub fn status_for(
    mv: &ModelVersion,
    verification: &Verification,
    at: k8s_openapi::jiff::Timestamp,
) -> (ModelVersionStatus, bool) {
    let mut status = mv.status.clone().unwrap_or_default();
    let generation = mv.metadata.generation;
    let (phase, verified, reason, message) = match verification {
        Verification::Verified { digest, size } => {
            status.digest = Some(digest.clone());
            status.size_bytes = Some(*size);
            (ModelPhase::Ready, TRUE, "Verified", format!("artifact found, {size} bytes, sha256 {digest}"))
        }
        Verification::InvalidSpec(msg) => (ModelPhase::Failed, FALSE, "InvalidSpec", msg.clone()),
        Verification::Refused { reason, message } => (ModelPhase::Failed, FALSE, *reason, message.clone()),
        Verification::Missing(msg) => (ModelPhase::Failed, FALSE, "ArtifactNotFound", msg.clone()),
        Verification::DigestMismatch { expected, actual } => (
            ModelPhase::Failed,
            FALSE,
            "DigestMismatch",
            format!("artifact sha256 is {actual}, spec.artifact.sha256 expects {expected}"),
        ),
        Verification::Unreachable(msg) => {
            (status.phase.unwrap_or(ModelPhase::Pending), condition::UNKNOWN, "StorageUnreachable", msg.clone())
        }
    };
    status.phase = Some(phase);
    let mut rec = StatusRecorder::new(&mut status.conditions, generation, at, "VerifyArtifact");
    rec.set(conditions::ARTIFACT_VERIFIED, verified, reason, message.clone());
    let ready = if phase == ModelPhase::Ready { TRUE } else { FALSE };
    let changed = rec.set(conditions::READY, ready, reason, message).changed();
    status.observed_generation = generation;
    (status, changed)
}

/// Pure: the Event announcing a change of `Ready` after a verification.
pub fn notice_for(verification: &Verification) -> Notice {
    let (warning, reason, message) = match verification {
        Verification::Verified { digest, .. } => (false, "Ready", format!("artifact verified, sha256 {digest}")),
        Verification::InvalidSpec(m) => (true, "InvalidSpec", m.clone()),
        Verification::Refused { reason, message } => (true, *reason, message.clone()),
        Verification::Missing(m) => (true, "ArtifactNotFound", m.clone()),
        Verification::DigestMismatch { actual, .. } => (true, "DigestMismatch", format!("artifact sha256 is {actual}")),
        Verification::Unreachable(m) => (true, "StorageUnreachable", m.clone()),
    };
    Notice { warning, reason: reason.into(), action: "VerifyArtifact", message }
}

async fn verify(mv: &ModelVersion, ctx: &Context) -> Result<Verification> {
    let ns = mv.namespace().unwrap_or_default();
    let secret = mv.spec.artifact.credentials.as_ref().map(|c| c.secret_name.as_str());
    let options = ctx.secret_options(&ns, secret).await?;
    let location = flywheel_storage::Location::open_with(mv.spec.artifact.uri.as_str(), options)?;
    Ok(match location.sha256("").await {
        Ok((digest, size)) => match &mv.spec.artifact.sha256 {
            Some(expected) if *expected != digest => {
                Verification::DigestMismatch { expected: expected.clone(), actual: digest }
            }
            _ => Verification::Verified { digest, size },
        },
        Err(StorageError::NotFound { uri }) => Verification::Missing(format!("no artifact at {uri}")),
        Err(e @ StorageError::InvalidUri { .. }) => return Err(e.into()),
        Err(e) => Verification::Unreachable(e.to_string()),
    })
}

pub async fn reconcile(mv: Arc<ModelVersion>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let status = mv.status.clone().unwrap_or_default();
    let up_to_date = status.observed_generation == mv.metadata.generation
        && condition::is_true(&status.conditions, conditions::READY);
    if up_to_date {
        // Artifacts are immutable per generation; re-check rarely in case storage lost it.
        return Ok(Action::requeue(Duration::from_secs(600)));
    }
    // The digest is known for this generation: do not read the artifact again while the
    // verification Job runs.
    let known = status.observed_generation == mv.metadata.generation
        && condition::is_true(&status.conditions, conditions::ARTIFACT_VERIFIED);
    let verification = match (known, &status.digest, status.size_bytes) {
        (true, Some(digest), Some(size)) => Verification::Verified { digest: digest.clone(), size },
        _ => artifact(&mv, &ctx).await?,
    };
    let (mut new_status, mut changed) = status_for(&mv, &verification, now());
    let mut notice = notice_for(&verification);
    let mut outcome = None;
    if let Verification::Verified { digest, .. } = &verification
        && ctx.settings.verify_models
    {
        let model = model_verification::served(&mv, digest);
        let o = match model_verification::cached(&status, &model) {
            Some(report) => model_verification::Outcome::Done(report.clone()),
            None => model_verification::follow(&ctx, &mv, &model).await?,
        };
        model_verification::record(&mut new_status, mv.metadata.generation, &o, now());
        notice = model_verification::notice_for(&o);
        outcome = Some(o);
    }
    let ready = |s: &ModelVersionStatus| {
        condition::find(&s.conditions, conditions::READY).map(|c| (c.status.clone(), c.reason.clone()))
    };
    changed = changed || ready(&status) != ready(&new_status);
    let api: Api<ModelVersion> = Api::namespaced(ctx.client.clone(), &mv.namespace().unwrap_or_default());
    apply_status(&api, &mv, &new_status).await?;
    if changed {
        publish(&ctx, mv.as_ref(), vec![notice]).await;
    }
    use model_verification::Outcome;
    Ok(match (verification, outcome) {
        (_, Some(Outcome::Running { .. })) => Action::requeue(Duration::from_secs(2)),
        (_, Some(Outcome::JobFailed { .. })) => Action::requeue(Duration::from_secs(60)),
        (_, Some(Outcome::Done(report))) if !report.passed => Action::await_change(),
        (Verification::Verified { .. }, _) => Action::requeue(Duration::from_secs(600)),
        // The file may be uploaded later or storage may come back: look again with backoff.
        (Verification::Missing(_) | Verification::Unreachable(_), _) => Action::requeue(Duration::from_secs(15)),
        // Labelling the Secret does not touch this object (Secrets are not watched): look again.
        (Verification::Refused { reason: trust::CREDENTIALS_NOT_ALLOWED, .. }, _) => {
            Action::requeue(Duration::from_secs(30))
        }
        (Verification::DigestMismatch { .. } | Verification::InvalidSpec(_) | Verification::Refused { .. }, _) => {
            Action::await_change()
        }
    })
}

/// The artifact's digest, or why it cannot be read.
async fn artifact(mv: &ModelVersion, ctx: &Context) -> Result<Verification> {
    Ok(match check(mv, ctx.settings.allow_local_files) {
        Some(refusal) => refusal,
        None => match verify(mv, ctx).await {
            Ok(v) => v,
            Err(e @ Error::SecretNotAllowed { .. }) => {
                Verification::Refused { reason: trust::CREDENTIALS_NOT_ALLOWED, message: e.to_string() }
            }
            Err(e) if e.is_user_error() => Verification::Missing(e.to_string()),
            Err(e) => return Err(e),
        },
    })
}

/// Pure: what stops verification before anything is read: a spec that contradicts itself
/// (`flywheel_api::validation`), then an artifact on the operator's own file system.
pub fn check(mv: &ModelVersion, allow_local_files: bool) -> Option<Verification> {
    if let Err(message) = validation::model_version(&mv.spec) {
        return Some(Verification::InvalidSpec(message));
    }
    trust::local_file("spec.artifact.uri", &mv.spec.artifact.uri, allow_local_files)
        .err()
        .map(|message| Verification::Refused { reason: trust::LOCAL_FILES_NOT_ALLOWED, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_api::ModelVersionSpec;

    fn model() -> ModelVersion {
        let spec: ModelVersionSpec = serde_yaml::from_str(
            "model: m\nversion: v1\ntask: detection\nlabels: [a]\nartifact: {uri: 's3://b/m.onnx'}\ninput: {width: 8, height: 8}",
        )
        .unwrap();
        let mut mv = ModelVersion::new("m-v1", spec);
        mv.metadata.generation = Some(3);
        mv
    }

    fn at(s: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn verified_artifact_makes_the_model_ready() {
        let (status, changed) = status_for(&model(), &Verification::Verified { digest: "ab".into(), size: 9 }, at(1));
        assert!(changed);
        assert_eq!(status.phase, Some(ModelPhase::Ready));
        assert_eq!(status.digest.as_deref(), Some("ab"));
        assert_eq!(status.size_bytes, Some(9));
        assert_eq!(status.observed_generation, Some(3));
        assert!(condition::is_true(&status.conditions, conditions::ARTIFACT_VERIFIED));
        assert!(condition::is_true(&status.conditions, conditions::READY));
    }

    #[test]
    fn missing_artifact_fails_with_the_reason() {
        let (status, _) = status_for(&model(), &Verification::Missing("no artifact at s3://b/m.onnx".into()), at(1));
        assert_eq!(status.phase, Some(ModelPhase::Failed));
        let ready = condition::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!(ready.status, FALSE);
        assert_eq!(ready.reason, "ArtifactNotFound");
        assert!(ready.message.contains("s3://b/m.onnx"));
    }

    #[test]
    fn a_contradictory_spec_fails_before_anything_is_fetched() {
        let mut mv = model();
        mv.spec.output.decoder = flywheel_api::model_version::Decoder::Yolo;
        assert_eq!(check(&mv, false), None, "a sound spec on s3:// is verified");
        mv.spec.input.std = vec![0.5, 0.0, 0.5];
        let verification = check(&mv, false).unwrap();
        let (status, changed) = status_for(&mv, &verification, at(1));
        assert!(changed);
        assert_eq!(status.phase, Some(ModelPhase::Failed));
        let ready = condition::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), (FALSE, "InvalidSpec"));
        assert!(ready.message.starts_with("spec.input.std holds 0"), "{}", ready.message);
        mv.spec.input.std = vec![1.0];
        mv.spec.labels = vec!["a".into(), "a".into()];
        assert!(matches!(check(&mv, false), Some(Verification::InvalidSpec(m)) if m.starts_with("spec.labels")));
    }

    #[test]
    fn a_local_artifact_is_refused_unless_local_files_are_allowed() {
        let mut mv = model();
        mv.spec.output.decoder = flywheel_api::model_version::Decoder::Yolo;
        mv.spec.artifact.uri = flywheel_api::StorageUri("file:///etc/shadow".into());
        let refused = check(&mv, false).unwrap();
        let (status, _) = status_for(&mv, &refused, at(1));
        assert_eq!(status.phase, Some(ModelPhase::Failed));
        let ready = condition::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!(ready.reason, "LocalFilesNotAllowed");
        assert!(ready.message.contains("--allow-local-files"), "{}", ready.message);
        assert_eq!(status.digest, None, "nothing about the file is revealed");
        let n = notice_for(&refused);
        assert_eq!((n.warning, n.reason.as_str()), (true, "LocalFilesNotAllowed"));
        assert_eq!(check(&mv, true), None);
    }

    #[test]
    fn an_unlabelled_secret_fails_the_model_naming_the_label() {
        let message = Error::SecretNotAllowed { name: "storage".into() }.to_string();
        let refused = Verification::Refused { reason: trust::CREDENTIALS_NOT_ALLOWED, message };
        let (status, _) = status_for(&model(), &refused, at(1));
        let ready = condition::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!((status.phase, ready.reason.as_str()), (Some(ModelPhase::Failed), "CredentialsNotAllowed"));
        assert!(ready.message.contains("flywheel.dev/credentials=true"), "{}", ready.message);
    }

    #[test]
    fn digest_mismatch_names_both_digests() {
        let v = Verification::DigestMismatch { expected: "aa".into(), actual: "bb".into() };
        let (status, _) = status_for(&model(), &v, at(1));
        let verified = condition::find(&status.conditions, conditions::ARTIFACT_VERIFIED).unwrap();
        assert_eq!(verified.reason, "DigestMismatch");
        assert!(verified.message.contains("aa") && verified.message.contains("bb"));
    }

    #[test]
    fn unreachable_storage_keeps_a_verified_model_ready() {
        let mut mv = model();
        let (ready_status, _) = status_for(&mv, &Verification::Verified { digest: "ab".into(), size: 1 }, at(1));
        mv.status = Some(ready_status);
        let (status, changed) = status_for(&mv, &Verification::Unreachable("timeout".into()), at(2));
        assert_eq!(status.phase, Some(ModelPhase::Ready));
        assert_eq!(
            condition::find(&status.conditions, conditions::ARTIFACT_VERIFIED).unwrap().status,
            condition::UNKNOWN
        );
        assert!(!changed, "a verified model stays Ready while storage is briefly unreachable");
        assert!(condition::is_true(&status.conditions, conditions::READY));
    }

    #[test]
    fn events_name_what_verification_found() {
        let n = notice_for(&Verification::Verified { digest: "ab".into(), size: 1 });
        assert_eq!(
            (n.warning, n.reason.as_str(), n.message.as_str(), n.action),
            (false, "Ready", "artifact verified, sha256 ab", "VerifyArtifact")
        );
        let n = notice_for(&Verification::DigestMismatch { expected: "aa".into(), actual: "bb".into() });
        assert_eq!(
            (n.warning, n.reason.as_str(), n.message.as_str()),
            (true, "DigestMismatch", "artifact sha256 is bb")
        );
    }
}
