//! What a served model predicted, as the inference server answers it and writes it into the
//! prediction log, and as review and quality code read it back. One definition, so the writer
//! of the log and every reader agree on its JSON.
//!
//! Prediction log layout under its URI (every object written with one atomic put):
//!   images/YYYY-MM-DD/<id>.<png|jpg>        the input image, written before its record
//!   records/YYYY-MM-DD/<time>-<uuid>.jsonl  one JSON [`PredictionRecord`] per line
//!   reviews/<id>.json                       the review of a prediction (created exactly once)

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::Task;

/// One predicted shape: a class (classification) or a box with a class (detection).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    pub label: String,
    pub class_id: usize,
    pub confidence: f32,
    /// [x1, y1, x2, y2] in original image pixels; absent for classification.
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
}

/// The label of class `id`, or `class_<id>` when the model's label list is shorter.
pub fn label_of(labels: &[String], id: usize) -> String {
    labels.get(id).cloned().unwrap_or_else(|| format!("class_{id}"))
}

/// One model's answer for one image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelOutput {
    pub model: String,
    pub version: String,
    pub shapes: Vec<Shape>,
    pub latency_ms: f64,
}

/// One logged prediction: the champion's answer and, when the shadow ran on it, the shadow's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PredictionRecord {
    pub id: String,
    pub time: DateTime<Utc>,
    pub deployment: String,
    pub task: Task,
    /// Image path relative to the log root; absent for tensor (OIP) requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub width: u32,
    pub height: u32,
    pub champion: ModelOutput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ModelOutput>,
}

/// Where the log keeps the image of prediction `id` taken at `time`.
pub fn image_path(id: &str, time: DateTime<Utc>, ext: &str) -> String {
    format!("images/{}/{id}.{ext}", time.format("%Y-%m-%d"))
}

/// A new records object's path for a batch written at `time` (`unique` keeps concurrent
/// writers apart).
pub fn records_path(time: DateTime<Utc>, unique: &str) -> String {
    format!("records/{}/{}-{unique}.jsonl", time.format("%Y-%m-%d"), time.format("%H%M%S%.6f"))
}

/// Where the review of prediction `id` is kept.
pub fn review_path(id: &str) -> String {
    format!("reviews/{id}.json")
}
