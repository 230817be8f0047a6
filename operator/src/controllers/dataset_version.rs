//! DatasetVersion: count samples and labels from storage; feedback datasets report the
//! number of reviewed samples (every sample in a feedback dataset was reviewed).

use std::sync::Arc;
use std::time::Duration;

use flywheel_api::condition::{self, FALSE, TRUE};
use flywheel_api::dataset_version::{DatasetFormat, conditions};
use flywheel_api::{DatasetVersion, DatasetVersionStatus};
use flywheel_storage::Location;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::dataset_count::{Counts, count_coco, count_imagefolder, count_yolo};
use super::status::{apply_status, now};
use crate::context::Context;
use crate::Result;

pub const KIND: &str = "DatasetVersion";

async fn count(ds: &DatasetVersion, root: &Location) -> Result<Result<Counts, String>> {
    Ok(match ds.spec.format {
        DatasetFormat::Coco => match root.get("annotations.json").await {
            Ok(bytes) => count_coco(&bytes),
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
            count_yolo(&listing, texts.iter().map(|(f, t)| (f.as_str(), t.as_str())), &ds.spec.labels)
        }
        DatasetFormat::Imagefolder => Ok(count_imagefolder(&object_paths(root).await?)),
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

pub async fn reconcile(ds: Arc<DatasetVersion>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let ns = ds.namespace().unwrap_or_default();
    let counted = match open_and_count(&ds, &ctx, &ns).await {
        Err(e) if e.is_user_error() => Err(e.to_string()),
        other => other?,
    };

    let mut status: DatasetVersionStatus = ds.status.clone().unwrap_or_default();
    let generation = ds.metadata.generation;
    let changed = match &counted {
        Ok(counts) => {
            status.sample_count = Some(counts.samples);
            status.label_distribution = counts.labels.clone();
            status.reviewed_count = ds.spec.feedback.then_some(counts.samples);
            let message = format!("{} samples", counts.samples);
            condition::set_condition(&mut status.conditions, conditions::READY, TRUE, "Counted", message, generation, now())
        }
        Err(message) => condition::set_condition(
            &mut status.conditions,
            conditions::READY,
            FALSE,
            "InvalidDataset",
            message.clone(),
            generation,
            now(),
        ),
    };
    status.observed_generation = generation;
    if Some(&status) != ds.status.as_ref() {
        let api: Api<DatasetVersion> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, &ds, &status).await?;
    }
    if changed {
        match &counted {
            Ok(c) => ctx.event(ds.as_ref(), false, "Counted", "CountSamples", format!("{} samples", c.samples)).await,
            Err(m) => ctx.event(ds.as_ref(), true, "InvalidDataset", "CountSamples", m.clone()).await,
        }
    }
    // Storage is not watched: feedback datasets grow with every review, so look often.
    let period = if ds.spec.feedback { 5 } else { 120 };
    Ok(Action::requeue(Duration::from_secs(period)))
}

