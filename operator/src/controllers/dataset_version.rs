//! DatasetVersion: count samples and labels from storage; feedback datasets report the
//! number of reviewed samples (every sample in a feedback dataset was reviewed).

use std::sync::Arc;
use std::time::Duration;

use flywheel_api::dataset_version::{DatasetFormat, conditions};
use flywheel_api::validation;
use flywheel_api::{DatasetVersion, DatasetVersionStatus};
use flywheel_storage::Location;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::recorder::{Notice, StatusRecorder, publish};
use super::status::{apply_status, now};
use super::trust;
use crate::context::Context;
use crate::{Error, Result};
use flywheel_types::dataset::coco::{self, ANNOTATIONS_FILE};
use flywheel_types::dataset::{Counts, imagefolder, yolo};

pub const KIND: &str = "DatasetVersion";

/// Why a dataset has no count: a condition reason and its message.
#[derive(Clone, Debug, PartialEq)]
pub struct Uncounted {
    pub reason: &'static str,
    pub message: String,
}

impl Uncounted {
    fn invalid_dataset(message: String) -> Self {
        Self { reason: "InvalidDataset", message }
    }
}

/// Why a frozen version is refused once its spec changed.
pub const FROZEN_VERSION_CHANGED: &str = "FrozenVersionChanged";

/// Pure: a frozen version (`spec.manifest`) whose spec changed after it was created. (A CRD
/// validation rule could refuse the change itself, but API servers before 1.25 and server-side
/// applies of the CRD on them reject such rules; the check here works on every server.)
pub fn frozen_changed(ds: &DatasetVersion) -> Option<String> {
    let generation = ds.metadata.generation.unwrap_or(1);
    (ds.spec.manifest.is_some() && generation > 1).then(|| {
        format!(
            "DatasetVersion {} is a frozen version (spec.manifest) but its spec changed after it was created \
             (generation {generation}): a model trained on it could not be reproduced; delete and recreate it as it \
             was, or create a new version",
            ds.name_any()
        )
    })
}

/// What the reconcile does next for an outcome: refusals only a change of the spec fixes
/// wait for it; a Secret may be labelled at any time (Secrets are not watched).
fn next(ds: &DatasetVersion, counted: &Result<Counts, Uncounted>) -> Action {
    match counted {
        Err(Uncounted { reason: "InvalidSpec" | trust::LOCAL_FILES_NOT_ALLOWED | FROZEN_VERSION_CHANGED, .. }) => {
            Action::await_change()
        }
        Err(Uncounted { reason: trust::CREDENTIALS_NOT_ALLOWED, .. }) => Action::requeue(Duration::from_secs(30)),
        // Storage is not watched: feedback datasets grow with every review, so look often.
        // A frozen version (`manifest`) does not grow.
        _ => Action::requeue(Duration::from_secs(if ds.spec.feedback && ds.spec.manifest.is_none() { 5 } else { 120 })),
    }
}

/// Pure: what stops counting before anything is read: a spec that contradicts itself, then
/// a dataset on the operator's own file system.
pub fn check(ds: &DatasetVersion, allow_local_files: bool) -> Result<(), Uncounted> {
    validation::dataset_version(&ds.name_any(), &ds.spec)
        .map_err(|message| Uncounted { reason: "InvalidSpec", message })?;
    if let Some(message) = frozen_changed(ds) {
        return Err(Uncounted { reason: FROZEN_VERSION_CHANGED, message });
    }
    trust::local_file("spec.uri", &ds.spec.uri, allow_local_files)
        .map_err(|message| Uncounted { reason: trust::LOCAL_FILES_NOT_ALLOWED, message })
}

async fn count(ds: &DatasetVersion, root: &Location) -> Result<Result<Counts, String>> {
    Ok(match ds.spec.format {
        DatasetFormat::Coco => {
            // The index and the per-sample documents (a feedback dataset has only these).
            let index = root.get_opt(ANNOTATIONS_FILE).await?;
            let samples = root.get_all(coco::SAMPLES_DIR).await?;
            if index.is_none() && samples.is_empty() && !ds.spec.feedback {
                Err(format!("{} not found", root.child_uri(ANNOTATIONS_FILE)))
            } else {
                coco::assemble(index.as_deref(), &samples).and_then(|doc| doc.counts()).map_err(|e| e.0)
            }
        }
        DatasetFormat::Yolo => {
            let listing = object_paths(root).await?;
            let mut texts = Vec::new();
            for file in listing.iter().filter(|p| p.starts_with("labels/") && p.ends_with(".txt")) {
                let bytes = root.get(file).await?;
                texts.push((file.clone(), String::from_utf8_lossy(&bytes).into_owned()));
            }
            yolo::counts(&listing, texts.iter().map(|(f, t)| (f.as_str(), t.as_str())), &ds.spec.labels)
                .map_err(|e| e.0)
        }
        DatasetFormat::Imagefolder => Ok(imagefolder::counts(&object_paths(root).await?)),
    })
}

/// Paths of every object in the dataset, relative to its root, sorted.
async fn object_paths(root: &Location) -> Result<Vec<String>> {
    Ok(root.list("").await?.into_iter().map(|(path, _)| path).collect())
}

async fn open_and_count(ds: &DatasetVersion, ctx: &Context, ns: &str) -> Result<Result<Counts, String>> {
    let secret = ds.spec.credentials.as_ref().map(|c| c.secret_name.as_str());
    let options = ctx.secret_options(ns, secret).await?;
    let root = Location::open_with(ds.spec.uri.as_str(), options)?;
    let root = match &ds.spec.manifest {
        // A missing or unreadable manifest, or a changed object, is the dataset's fault.
        Some(manifest) => root.frozen(manifest).await?,
        None => root,
    };
    count(ds, &root).await
}

/// Pure: the status for a count (or the reason there is none), and the Event of a change of
/// `Ready`.
pub fn status_for(
    ds: &DatasetVersion,
    counted: &Result<Counts, Uncounted>,
    at: Timestamp,
) -> (DatasetVersionStatus, Vec<Notice>) {
    let mut status: DatasetVersionStatus = ds.status.clone().unwrap_or_default();
    let generation = ds.metadata.generation;
    if let Ok(counts) = counted {
        status.sample_count = Some(counts.samples);
        status.label_distribution = counts.labels.clone();
        status.reviewed_count = ds.spec.feedback.then_some(counts.samples);
    }
    let mut rec = StatusRecorder::new(&mut status.conditions, generation, at, "CountSamples");
    match counted {
        Ok(counts) => rec.ok(conditions::READY, "Counted", format!("{} samples", counts.samples)).announce(),
        Err(Uncounted { reason, message }) => rec.fail(conditions::READY, reason, message.clone()).announce(),
    };
    let notices = rec.into_notices();
    status.observed_generation = generation;
    (status, notices)
}

pub async fn reconcile(ds: Arc<DatasetVersion>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let ns = ds.namespace().unwrap_or_default();
    let counted = match check(&ds, ctx.settings.allow_local_files) {
        Err(refused) => Err(refused),
        Ok(()) => match open_and_count(&ds, &ctx, &ns).await {
            Err(e @ Error::SecretNotAllowed { .. }) => {
                Err(Uncounted { reason: trust::CREDENTIALS_NOT_ALLOWED, message: e.to_string() })
            }
            Err(e) if e.is_user_error() => Err(Uncounted::invalid_dataset(e.to_string())),
            Ok(result) => result.map_err(Uncounted::invalid_dataset),
            Err(e) => return Err(e),
        },
    };
    let (status, notices) = status_for(&ds, &counted, now());
    if Some(&status) != ds.status.as_ref() {
        let api: Api<DatasetVersion> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, &ds, &status).await?;
    }
    publish(&ctx, ds.as_ref(), notices).await;
    Ok(next(&ds, &counted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(feedback: bool) -> DatasetVersion {
        let mut ds: DatasetVersion = serde_yaml::from_str(&format!(
            "apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: fb, generation: 2}}\nspec: {{uri: 's3://b/fb/', format: coco, task: detection, labels: [circle], feedback: {feedback}}}"
        ))
        .unwrap();
        ds.metadata.generation = Some(2);
        ds
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_frozen_version_whose_spec_changed_is_refused() {
        let mut ds = dataset(true);
        ds.spec.manifest = Some(".flywheel/manifests/fb-r1.json".into());
        ds.metadata.generation = Some(1);
        assert_eq!(check(&ds, true), Ok(()));
        ds.metadata.generation = Some(2);
        let refused = check(&ds, true).unwrap_err();
        assert_eq!(refused.reason, FROZEN_VERSION_CHANGED);
        assert!(refused.message.contains("generation 2"), "{}", refused.message);
        assert_eq!(next(&ds, &Err(refused)), Action::await_change());
        ds.spec.manifest = None;
        assert_eq!(check(&ds, true), Ok(()), "a dataset that is not frozen may change");
    }

    #[test]
    fn a_count_makes_the_dataset_ready_and_feedback_counts_are_reviews() {
        let counts = || Counts { samples: 3, labels: [("circle".to_string(), 4)].into() };
        let (status, notices) = status_for(&dataset(true), &Ok(counts()), at(1));
        assert_eq!(
            (status.sample_count, status.reviewed_count, status.observed_generation),
            (Some(3), Some(3), Some(2))
        );
        assert_eq!(status.label_distribution, counts().labels);
        assert_eq!(notices.len(), 1);
        assert_eq!(
            (notices[0].warning, notices[0].reason.as_str(), notices[0].message.as_str(), notices[0].action),
            (false, "Counted", "3 samples", "CountSamples")
        );
        assert_eq!(status_for(&dataset(false), &Ok(counts()), at(1)).0.reviewed_count, None);
    }

    #[test]
    fn an_invalid_dataset_is_announced_once_and_keeps_its_last_count() {
        let mut ds = dataset(false);
        ds.status = Some(status_for(&ds, &Ok(Counts { samples: 7, ..Default::default() }), at(1)).0);
        let missing = |m: &str| Err(Uncounted::invalid_dataset(m.into()));
        let (status, notices) = status_for(&ds, &missing("s3://b/fb/annotations.json not found"), at(2));
        assert_eq!(status.sample_count, Some(7));
        assert_eq!((notices[0].warning, notices[0].reason.as_str()), (true, "InvalidDataset"));
        ds.status = Some(status);
        assert!(status_for(&ds, &missing("still missing"), at(3)).1.is_empty());
    }

    #[test]
    fn a_contradictory_or_local_dataset_is_refused_before_anything_is_read() {
        let mut ds = dataset(false);
        assert_eq!(check(&ds, false), Ok(()));
        ds.spec.format = DatasetFormat::Imagefolder;
        let refused = check(&ds, false).unwrap_err();
        assert_eq!(refused.reason, "InvalidSpec");
        assert!(refused.message.starts_with("spec.format"), "{}", refused.message);
        let (status, notices) = status_for(&ds, &Err(refused.clone()), at(1));
        let ready = flywheel_api::condition::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
        assert_eq!((notices[0].warning, notices[0].reason.as_str()), (true, "InvalidSpec"));
        assert_eq!(next(&ds, &Err(refused)), Action::await_change());

        let mut ds = dataset(true);
        ds.spec.uri = flywheel_api::StorageUri("file:///var/lib/secret-data/".into());
        let refused = check(&ds, false).unwrap_err();
        assert_eq!(refused.reason, "LocalFilesNotAllowed");
        assert!(refused.message.contains("--allow-local-files"), "{}", refused.message);
        assert_eq!(next(&ds, &Err(refused)), Action::await_change());
        assert_eq!(check(&ds, true), Ok(()));
        let unlabelled = Uncounted { reason: trust::CREDENTIALS_NOT_ALLOWED, message: String::new() };
        assert_eq!(next(&ds, &Err(unlabelled)), Action::requeue(Duration::from_secs(30)));
        assert_eq!(next(&ds, &Ok(Counts::default())), Action::requeue(Duration::from_secs(5)));
    }
}
