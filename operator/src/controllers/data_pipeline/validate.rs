//! Validate: what a DataPipeline's spec needs beyond the schema, and from the objects it names.

use flywheel_api::{DataPipeline, validation};
use kube::ResourceExt;

use super::read::Refs;
use crate::controllers::trust;

/// Pure: before anything is read, the spec alone (`flywheel_api::validation`), then an output
/// on the operator's own file system. Err is a condition reason and a message naming the field.
pub fn spec(p: &DataPipeline, allow_local_files: bool) -> Result<(), (&'static str, String)> {
    validation::data_pipeline(&p.spec).map_err(|message| ("InvalidSpec", message))?;
    match &p.spec.output_uri {
        Some(uri) => trust::local_file("spec.outputUri", uri, allow_local_files)
            .map_err(|message| (trust::LOCAL_FILES_NOT_ALLOWED, message)),
        None => Ok(()),
    }
}

/// Pure: what the spec needs of the objects it names: the feedback dataset is one
/// (`feedback: true`, not frozen) and holds the same task as the training data.
pub fn references(refs: &Refs) -> Result<(), String> {
    if let Some(f) = &refs.feedback {
        if !f.spec.feedback {
            return Err(format!(
                "spec.feedbackLoop.datasetVersion names DatasetVersion {:?}, which is not a feedback dataset (set \
                 its spec.feedback: true)",
                f.name_any()
            ));
        }
        if f.spec.manifest.is_some() {
            return Err(format!(
                "spec.feedbackLoop.datasetVersion names DatasetVersion {:?}, a frozen version (spec.manifest): reviews \
                 go to the feedback dataset it was frozen from ({})",
                f.name_any(),
                f.spec.parent.as_deref().unwrap_or("its spec.parent")
            ));
        }
        if let Some(t) = refs.training.as_ref().filter(|t| t.spec.task != f.spec.task) {
            return Err(format!(
                "spec.feedbackLoop.datasetVersion {:?} holds {} data but spec.trainingData.datasetVersion {:?} holds {}",
                f.name_any(),
                f.spec.task.as_str(),
                t.name_any(),
                t.spec.task.as_str()
            ));
        }
    }
    Ok(())
}

/// Where profiles and trained models go. Err when the pipeline writes something but has
/// nowhere to write it: only a change (of the spec or the operator's flags) fixes that.
pub fn output_base(p: &DataPipeline, refs: &Refs) -> Result<Option<String>, String> {
    let needs_output = p.spec.training_data.is_some() || p.spec.continuous_training.as_ref().is_some_and(|c| c.enabled);
    match (&refs.output_base, needs_output) {
        (Some(base), _) => Ok(Some(base.clone())),
        (None, false) => Ok(None),
        (None, true) => Err("spec.outputUri is not set and the operator has no --default-output-uri".to_string()),
    }
}
