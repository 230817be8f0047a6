//! Validate: what a DataPipeline's spec needs beyond the objects it names.

use flywheel_api::DataPipeline;

use super::read::Refs;

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
