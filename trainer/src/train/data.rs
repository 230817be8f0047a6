//! Samples → model inputs and targets (in input pixels), computed once per run. Each image is
//! pre-processed as soon as it is decoded and its full-resolution pixels are dropped, so a run
//! holds one model input per sample, whatever the images' resolution.

use flywheel_api::common::Task;
use flywheel_api::model_version::ModelVersionSpec;

use super::objective::Prepared;
use crate::dataset::{self, SampleRef};
use crate::error::{Result, TrainerError};

pub async fn prepare(refs: &[SampleRef], spec: &ModelVersionSpec) -> Result<Prepared> {
    if spec.task == Task::Classification
        && let Some(r) = refs.iter().find(|r| r.label.is_none())
    {
        return Err(TrainerError::dataset(r.uri(), "a classification sample needs a label"));
    }
    let input = spec.input.clone();
    let rows = dataset::load_images(refs, move |s| {
        let (values, placement) = flywheel_vision::to_input(&s.image, &input);
        let t = placement.box_transform();
        let boxes: Vec<(usize, [f32; 4])> = s.boxes.iter().map(|b| (b.class, t.to_input(b.rect))).collect();
        Ok((values, s.label.unwrap_or(0), boxes))
    })
    .await?;
    let mut p = Prepared { inputs: Vec::with_capacity(rows.len()), labels: Vec::new(), boxes: Vec::new() };
    for (values, label, boxes) in rows {
        p.inputs.push(values);
        p.labels.push(label);
        p.boxes.push(boxes);
    }
    Ok(p)
}
