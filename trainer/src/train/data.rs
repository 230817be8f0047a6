//! Decoded samples → model inputs and targets (in input pixels), computed once per run.

use flywheel_api::common::Task;
use flywheel_api::model_version::ModelVersionSpec;

use super::objective::Prepared;
use crate::dataset::Sample;
use crate::error::{Result, TrainerError};

pub async fn prepare(samples: Vec<Sample>, spec: &ModelVersionSpec) -> Result<Prepared> {
    let task = spec.task;
    for s in &samples {
        if task == Task::Classification && s.label.is_none() {
            return Err(TrainerError::dataset(&s.uri, "a classification sample needs a label"));
        }
    }
    let input = spec.input.clone();
    tokio::task::spawn_blocking(move || {
        let mut p = Prepared { inputs: Vec::with_capacity(samples.len()), labels: Vec::new(), boxes: Vec::new() };
        for s in &samples {
            let (values, placement) = flywheel_vision::to_input(&s.image, &input);
            let t = placement.box_transform();
            p.inputs.push(values);
            p.labels.push(s.label.unwrap_or(0));
            p.boxes.push(s.boxes.iter().map(|b| (b.class, t.to_input(b.rect))).collect());
        }
        p
    })
    .await
    .map_err(|e| TrainerError::Training(e.to_string()))
}
