//! The model contract: what a model predicts, how an image becomes its input tensor and how its
//! output tensors become shapes. The ModelVersion custom resource carries these types in its spec
//! and the serving config carries the same ones to the inference server, so the doc comments here
//! are also the CRD's field descriptions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod check;
pub use check::check_contract;

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
    #[schemars(range(min = 1, max = 3), extend("enum" = [1, 3]))]
    pub channels: u32,
    /// Tensor layout: `nchw` (default) or `nhwc`.
    #[serde(default)]
    pub layout: Layout,
    /// Per-channel mean subtracted after scaling pixels to [0, 1]: one value per channel, or
    /// one for all.
    #[serde(default = "default_mean")]
    #[schemars(length(max = 3))]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided after subtracting the mean, each above 0: one
    /// value per channel, or one for all.
    #[serde(default = "default_std")]
    #[schemars(length(max = 3), transform = items_above_zero)]
    pub std: Vec<f32>,
    /// How images are fitted to width x height: `stretch` (default), `letterbox` (keep the
    /// aspect ratio, pad with grey) or `centerCrop` (scale so the input is `cropFraction` of the
    /// image's shorter side, keep the aspect ratio, cut out the centre).
    #[serde(default)]
    pub resize: ResizeMode,
    /// Channel order the model expects: `rgb` (default) or `bgr` (OpenCV- and Paddle-trained
    /// models).
    #[serde(default, skip_serializing_if = "ChannelOrder::is_rgb")]
    pub channel_order: ChannelOrder,
    /// Factor applied to 0..255 pixel values before the mean is subtracted: 1/255 when absent
    /// (values in 0..1), 1 keeps 0..255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = true))]
    pub pixel_scale: Option<f32>,
    /// `centerCrop`: the fraction of the resized image the crop keeps (0.875 when absent:
    /// resize to 256, crop 224, as torchvision evaluates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.1, max = 1.0))]
    pub crop_fraction: Option<f32>,
}

impl InputSpec {
    /// An input of `width` x `height` with every other field at its default.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            channels: default_channels(),
            layout: Layout::default(),
            mean: default_mean(),
            std: default_std(),
            resize: ResizeMode::default(),
            channel_order: ChannelOrder::default(),
            pixel_scale: None,
            crop_fraction: None,
        }
    }

    /// `pixelScale`, or 1/255.
    pub fn pixel_scale(&self) -> f32 {
        self.pixel_scale.unwrap_or(1.0 / 255.0)
    }

    /// `cropFraction`, or 0.875.
    pub fn crop_fraction(&self) -> f32 {
        self.crop_fraction.unwrap_or(0.875)
    }
}

/// Colour channel orders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

impl ChannelOrder {
    pub fn is_rgb(&self) -> bool {
        *self == Self::Rgb
    }
}

/// Schema: every item of an array is above 0 (`minimum: 0` with `exclusiveMinimum: true`, the
/// OpenAPI v3.0 form Kubernetes reads).
fn items_above_zero(schema: &mut schemars::Schema) {
    if let Some(items) = schema.get_mut("items").and_then(|i| i.as_object_mut()) {
        items.insert("minimum".into(), 0.0.into());
        items.insert("exclusiveMinimum".into(), true.into());
    }
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
// aspect ratio and pads with grey (114), as YOLO models expect; centerCrop scales to cover and
// cuts out the centre, as torchvision classifiers are evaluated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ResizeMode {
    #[default]
    Stretch,
    Letterbox,
    CenterCrop,
}

/// Post-processing: output tensors → shapes. Every field has a default that fits the most
/// common export; docs/models.md shows the settings per exporter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// Output decoder: `logits` (classification), `yolo` ([N, 4 + classes, anchors] or
    /// [N, anchors, 4 or 5 + classes]) or `boxesScores` (separate boxes and scores outputs).
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
    /// Classification: `logits` (softmax applied) or `probabilities` (used as they are). When
    /// absent, probabilities if the output comes out of a Softmax or Sigmoid node, else logits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_scores: Option<ClassScores>,
    /// The output tensor the `logits` and `yolo` decoders read; the model's first when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub output: Option<String>,
    /// YOLO: whether each anchor has an objectness field after its box; inferred from the
    /// output's shape when absent ([N, anchors, 5 + classes] has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectness: Option<bool>,
    /// YOLO: strides of a raw grid output (YOLOX without decoding in the graph, e.g.
    /// [8, 16, 32]): anchors are each stride's cells, row-major, with x/y offsets in cells and
    /// log width/height in strides. Empty: boxes are already decoded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 1)))]
    pub strides: Vec<u32>,
    /// boxesScores: the output holding [N, anchors, 4] boxes (default `boxes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub boxes_output: Option<String>,
    /// boxesScores: the output holding [N, anchors, classes] (or [N, classes, anchors]) scores,
    /// or [N, anchors] with `labelsOutput` (default `scores`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub scores_output: Option<String>,
    /// boxesScores: an output of class ids [N, anchors], for exports with NMS inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub labels_output: Option<String>,
    /// Box coordinates: `cxcywh` (centre, size), `xyxy` (corners) or `xywh` (corner, size);
    /// cxcywh for `yolo` and xyxy for `boxesScores` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_format: Option<BoxFormat>,
    /// Boxes are fractions of the input width and height rather than input pixels.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub normalized_boxes: bool,
    /// Suppress overlapping boxes across classes, not only within one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub class_agnostic_nms: bool,
    /// Boxes kept per image after non-maximum suppression (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_detections: Option<u32>,
}

fn default_iou() -> f64 {
    0.45
}

impl OutputSpec {
    /// Classes returned per image by `/v1/predict` when `topK` is not set.
    pub const DEFAULT_TOP_K: u32 = 5;
    /// Boxes kept per image after non-maximum suppression when `maxDetections` is not set.
    pub const MAX_DETECTIONS: usize = 100;

    /// `topK`, or its default.
    pub fn top_k(&self) -> usize {
        self.top_k.unwrap_or(Self::DEFAULT_TOP_K) as usize
    }

    /// `maxDetections`, or its default.
    pub fn max_detections(&self) -> usize {
        self.max_detections.map_or(Self::MAX_DETECTIONS, |n| n as usize)
    }

    /// `boxFormat`, or the decoder's default.
    pub fn box_format(&self) -> BoxFormat {
        self.box_format.unwrap_or(match self.decoder {
            Decoder::BoxesScores => BoxFormat::Xyxy,
            _ => BoxFormat::Cxcywh,
        })
    }

    /// `boxesOutput`, or its default.
    pub fn boxes_output(&self) -> &str {
        self.boxes_output.as_deref().unwrap_or("boxes")
    }

    /// `scoresOutput`, or its default.
    pub fn scores_output(&self) -> &str {
        self.scores_output.as_deref().unwrap_or("scores")
    }
}

impl Default for OutputSpec {
    fn default() -> Self {
        Self {
            decoder: Decoder::default(),
            nms_iou_threshold: default_iou(),
            top_k: None,
            class_scores: None,
            output: None,
            objectness: None,
            strides: Vec::new(),
            boxes_output: None,
            scores_output: None,
            labels_output: None,
            box_format: None,
            normalized_boxes: false,
            class_agnostic_nms: false,
            max_detections: None,
        }
    }
}

/// What a classifier's output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClassScores {
    /// Raw scores; the server applies softmax.
    Logits,
    /// Scores that are already probabilities (the graph ends in Softmax or Sigmoid).
    Probabilities,
}

/// Box coordinate conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BoxFormat {
    /// Centre x, centre y, width, height.
    Cxcywh,
    /// Left, top, right, bottom.
    Xyxy,
    /// Left, top, width, height.
    Xywh,
}

impl BoxFormat {
    /// Four coordinates in this format → [x1, y1, x2, y2].
    pub fn to_xyxy(self, v: [f32; 4]) -> [f32; 4] {
        match self {
            Self::Cxcywh => [v[0] - v[2] / 2.0, v[1] - v[3] / 2.0, v[0] + v[2] / 2.0, v[1] + v[3] / 2.0],
            Self::Xyxy => v,
            Self::Xywh => [v[0], v[1], v[0] + v[2], v[1] + v[3]],
        }
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
