//! Freeze: when training run N starts, the reviewed samples of the feedback dataset that no
//! earlier version holds become DatasetVersion `<feedback>-r<N>`: a manifest of their objects
//! and SHA-256 digests (written once, in the dataset, by `flywheel_storage::manifest`) and a
//! DatasetVersion naming it, whose spec must never change (a changed one is refused, see
//! `dataset_version::frozen_changed`). The run trains on
//! every frozen version up to its own, never on the growing dataset, so re-running it reads
//! the same samples and the ModelVersion it registers names data that cannot change.

use std::collections::BTreeMap;

use flywheel_api::{DataPipeline, DatasetVersion, DatasetVersionSpec};
use flywheel_storage::Location;
use flywheel_storage::manifest::{self, Manifest};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};

use super::build::{LABEL_PIPELINE, LABEL_RUN};
use crate::context::Context;
use crate::{Error, Result};

/// The frozen version of `feedback` that run `run` adds.
pub fn frozen_name(feedback: &str, run: u32) -> String {
    format!("{feedback}-r{run}")
}

/// Pure: the DatasetVersion of run `run`'s frozen version of `feedback`: the feedback
/// dataset's storage, layout and labels, limited to the manifest at `manifest`.
pub fn frozen_version(p: &DataPipeline, feedback: &DatasetVersion, run: u32, manifest: String) -> DatasetVersion {
    let labels = BTreeMap::from([
        (LABEL_PIPELINE.to_string(), p.name_any()),
        (LABEL_RUN.to_string(), run.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "flywheel-operator".to_string()),
    ]);
    let spec = DatasetVersionSpec {
        parent: Some(feedback.name_any()),
        feedback: true,
        manifest: Some(manifest),
        ..feedback.spec.clone()
    };
    DatasetVersion {
        metadata: ObjectMeta {
            name: Some(frozen_name(&feedback.name_any(), run)),
            namespace: feedback.namespace(),
            labels: Some(labels),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// Freezes run `run`'s version of `feedback` (once: a manifest or DatasetVersion that exists
/// is kept as it is) and returns every frozen version of `feedback` up to run `run`, oldest
/// first. A run that finds no new sample adds no version.
pub async fn versions(
    ctx: &Context,
    p: &DataPipeline,
    feedback: &DatasetVersion,
    run: u32,
) -> Result<Vec<DatasetVersion>> {
    let ns = feedback.namespace().unwrap_or_default();
    let secret = feedback.spec.credentials.as_ref().map(|c| c.secret_name.as_str());
    let root = Location::open_with(feedback.spec.uri.as_str(), ctx.secret_options(&ns, secret).await?)?;
    let name = frozen_name(&feedback.name_any(), run);
    let frozen: Manifest = manifest::freeze(&root, &name, &feedback.name_any(), feedback.spec.format).await?;
    let api: Api<DatasetVersion> = Api::namespaced(ctx.client.clone(), &ns);
    if !frozen.samples.is_empty() {
        let version = frozen_version(p, feedback, run, manifest::manifest_path(&name));
        match api.create(&PostParams::default(), &version).await {
            Ok(_) => {
                let message = format!(
                    "run {run}: froze {} reviewed samples of {} into DatasetVersion {name}",
                    frozen.samples.len(),
                    feedback.name_any()
                );
                ctx.event(p, false, "FeedbackFrozen", "Freeze", message).await;
            }
            // Created by an earlier attempt of this run: the same manifest.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut out = Vec::new();
    for n in 1..=run {
        let candidate = frozen_name(&feedback.name_any(), n);
        if let Some(v) = api.get_opt(&candidate).await?
            && v.spec.manifest.is_some()
            && v.spec.parent.as_deref() == Some(feedback.name_any().as_str())
        {
            if let Some(message) = crate::controllers::dataset_version::frozen_changed(&v) {
                return Err(Error::InvalidSpec(message));
            }
            out.push(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_version_is_the_feedback_dataset_limited_to_its_manifest() {
        let p: DataPipeline = serde_yaml::from_str(
            "apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {name: loop, namespace: ns}\nspec: {deployment: d}",
        )
        .unwrap();
        let fb: DatasetVersion = serde_yaml::from_str(
            "apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {name: fb, namespace: ns}\nspec: {uri: 's3://b/fb/', format: coco, task: detection, labels: [a], feedback: true, credentials: {secretName: s3}}",
        )
        .unwrap();
        let v = frozen_version(&p, &fb, 2, manifest::manifest_path("fb-r2"));
        assert_eq!(v.name_any(), "fb-r2");
        assert_eq!(v.namespace().as_deref(), Some("ns"));
        assert_eq!(v.labels().get(LABEL_RUN).map(String::as_str), Some("2"));
        assert_eq!(v.spec.manifest.as_deref(), Some(".flywheel/manifests/fb-r2.json"));
        assert_eq!(v.spec.parent.as_deref(), Some("fb"));
        assert_eq!((v.spec.uri.as_str(), v.spec.feedback), ("s3://b/fb/", true));
        assert_eq!(v.spec.credentials, fb.spec.credentials);
        assert!(flywheel_api::validation::dataset_version("fb-r2", &v.spec).is_ok());
    }
}
