//! YOLO-style outputs in training: flywheel-vision's layout detection and decoder (the ones the
//! inference server answers with), plus the differentiable view the losses read.

use candle_core::Tensor;

pub use flywheel_vision::decode::{Detection, YoloLayout as YoloFormat, decode_yolo as decode, xyxy};
pub use flywheel_vision::{iou, nms};

use crate::error::{Result, TrainerError};

/// The layout of a base model's `[N, D1, D2]` output for `classes` classes (objectness inferred).
pub fn detect(shape: &[usize], classes: usize) -> Result<YoloFormat> {
    YoloFormat::detect(shape, classes, None)
        .map_err(|e| TrainerError::Model { uri: "base model".into(), reason: e.to_string() })
}

/// The output as [N, anchors, fields] (differentiable).
pub fn canonical(format: &YoloFormat, out: &Tensor) -> Result<Tensor> {
    Ok(if format.channels_first { out.transpose(1, 2)?.contiguous()? } else { out.contiguous()? })
}
