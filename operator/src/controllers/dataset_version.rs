//! DatasetVersion: count samples and labels from storage; feedback datasets report the
//! number of reviewed samples (every sample in a feedback dataset was reviewed).

use std::sync::Arc;
use std::time::Duration;

use flywheel_api::dataset_version::{DatasetFormat, conditions};
use flywheel_api::{DatasetVersion, DatasetVersionStatus};
use flywheel_storage::Location;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::recorder::{Notice, StatusRecorder, publish};
use super::status::{apply_status, now};
use crate::Result;
use crate::context::Context;
use flywheel_types::dataset::coco::{ANNOTATIONS_FILE, CocoDocument};
use flywheel_types::dataset::{Counts, imagefolder, yolo};

pub const KIND: &str = "DatasetVersion";

async fn count(ds: &DatasetVersion, root: &Location) -> Result<Result<Counts, String>> {
    if let Err(e) = ds.spec.format.check_holds(ds.spec.task) {
        return Ok(Err(e.0));
    }
    Ok(match ds.spec.format {
        DatasetFormat::Coco => match root.get(ANNOTATIONS_FILE).await {
            Ok(bytes) => CocoDocument::parse(&bytes).and_then(|doc| doc.counts()).map_err(|e| e.0),
            // A feedback dataset starts empty: no annotations file yet means zero samples.
            Err(flywheel_storage::StorageError::NotFound { .. }) if ds.spec.feedback => Ok(Counts::default()),
            Err(flywheel_storage::StorageError::NotFound { uri }) => Err(format!("{uri} not found")),
            Err(e) => return Err(e.into()),
        },
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
    count(ds, &root).await
}

/// Pure: the status for a count (or the reason there is none), and the Event of a change of
/// `Ready`.
pub fn status_for(
    ds: &DatasetVersion,
    counted: &Result<Counts, String>,
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
        Err(message) => rec.fail(conditions::READY, "InvalidDataset", message.clone()).announce(),
    };
    let notices = rec.into_notices();
    status.observed_generation = generation;
    (status, notices)
}

pub async fn reconcile(ds: Arc<DatasetVersion>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let ns = ds.namespace().unwrap_or_default();
    let counted = match open_and_count(&ds, &ctx, &ns).await {
        Err(e) if e.is_user_error() => Err(e.to_string()),
        other => other?,
    };
    let (status, notices) = status_for(&ds, &counted, now());
    if Some(&status) != ds.status.as_ref() {
        let api: Api<DatasetVersion> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, &ds, &status).await?;
    }
    publish(&ctx, ds.as_ref(), notices).await;
    // Storage is not watched: feedback datasets grow with every review, so look often.
    let period = if ds.spec.feedback { 5 } else { 120 };
    Ok(Action::requeue(Duration::from_secs(period)))
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
        let (status, notices) = status_for(&ds, &Err("s3://b/fb/annotations.json not found".into()), at(2));
        assert_eq!(status.sample_count, Some(7));
        assert_eq!((notices[0].warning, notices[0].reason.as_str()), (true, "InvalidDataset"));
        ds.status = Some(status);
        assert!(status_for(&ds, &Err("still missing".into()), at(3)).1.is_empty());
    }
}
