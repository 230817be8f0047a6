//! The model contract: what a model predicts, how an image becomes its input tensor and how its
//! output tensors become shapes. The ModelVersion custom resource carries these types in its spec
//! and the serving config carries the same ones to the inference server, so the doc comments here
//! are also the CRD's field descriptions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a model does with an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Task {
    /// One label per image.
    #[default]
    Classification,
    /// Boxes with a label and a confidence each.
    Detection,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Detection => "detection",
        }
    }
}

/// Pre-processing: image → tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputSpec {
    /// Input width in pixels.
    #[schemars(range(min = 1, max = 8192))]
    pub width: u32,
    /// Input height in pixels.
    #[schemars(range(min = 1, max = 8192))]
    pub height: u32,
    /// Colour channels: 3 (RGB) or 1 (grey).
    #[serde(default = "default_channels")]
    #[schemars(range(min = 1, max = 3))]
    pub channels: u32,
    /// Tensor layout: `nchw` (default) or `nhwc`.
    #[serde(default)]
    pub layout: Layout,
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    #[serde(default = "default_mean")]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided after subtracting the mean.
    #[serde(default = "default_std")]
    pub std: Vec<f32>,
    /// How images are fitted to width x height: `stretch` (default) or `letterbox`
    /// (keep the aspect ratio, pad with grey).
    #[serde(default)]
    pub resize: ResizeMode,
}

fn default_channels() -> u32 {
    3
}
fn default_mean() -> Vec<f32> {
    vec![0.0, 0.0, 0.0]
}
fn default_std() -> Vec<f32> {
    vec![1.0, 1.0, 1.0]
}

/// Tensor memory layouts.
// Serving configs written before the layout was shared spelled it in capitals; they still read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Layout {
    #[default]
    #[serde(alias = "NCHW")]
    Nchw,
    #[serde(alias = "NHWC")]
    Nhwc,
}

/// Resize modes.
// Stretch scales each axis independently to the input size; letterbox scales to fit keeping the
// aspect ratio and pads with grey (114), as YOLO models expect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ResizeMode {
    #[default]
    Stretch,
    Letterbox,
}

/// Post-processing: output tensors → shapes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// Output decoder: `logits` (classification), `yolo` ([N, 4 + classes, anchors] or
    /// [N, anchors, 5 + classes]) or `boxesScores` (separate boxes and scores outputs).
    #[serde(default)]
    pub decoder: Decoder,
    /// IoU above which overlapping boxes of one class are suppressed (detection).
    #[serde(default = "default_iou")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub nms_iou_threshold: f64,
    /// Number of classes returned for classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub top_k: Option<u32>,
}

fn default_iou() -> f64 {
    0.45
}

impl OutputSpec {
    /// Classes returned per image by `/v1/predict` when `topK` is not set.
    pub const DEFAULT_TOP_K: u32 = 5;
    /// Boxes kept per image after non-maximum suppression.
    pub const MAX_DETECTIONS: usize = 100;

    /// `topK`, or its default.
    pub fn top_k(&self) -> usize {
        self.top_k.unwrap_or(Self::DEFAULT_TOP_K) as usize
    }
}

impl Default for OutputSpec {
    fn default() -> Self {
        Self { decoder: Decoder::default(), nms_iou_threshold: default_iou(), top_k: None }
    }
}

/// Output decoders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Decoder {
    #[default]
    Logits,
    Yolo,
    BoxesScores,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_defaults_are_the_identity_on_three_channels() {
        let spec: InputSpec = serde_yaml::from_str("{width: 32, height: 16}").unwrap();
        assert_eq!(spec.channels, 3);
        assert_eq!(spec.layout, Layout::Nchw);
        assert_eq!(spec.resize, ResizeMode::Stretch);
        assert_eq!(spec.mean, vec![0.0; 3]);
        assert_eq!(spec.std, vec![1.0; 3]);
    }

    #[test]
    fn layout_writes_lowercase_and_reads_both_spellings() {
        for (text, layout) in
            [("nchw", Layout::Nchw), ("NCHW", Layout::Nchw), ("nhwc", Layout::Nhwc), ("NHWC", Layout::Nhwc)]
        {
            assert_eq!(serde_yaml::from_str::<Layout>(text).unwrap(), layout);
        }
        assert_eq!(serde_json::to_string(&Layout::Nhwc).unwrap(), "\"nhwc\"");
        assert!(serde_yaml::from_str::<Layout>("Nchw").is_err());
    }

    #[test]
    fn task_names_match_their_serialisation() {
        for task in [Task::Classification, Task::Detection] {
            assert_eq!(serde_json::to_string(&task).unwrap(), format!("\"{}\"", task.as_str()));
        }
    }
}
