//! The records a prediction produces: the answer returned to the caller and the log item
//! written for review. The log's record types are the shared ones in `flywheel-types`.

use bytes::Bytes;

pub use flywheel_types::prediction::{ModelOutput, PredictionRecord, Shape, image_path, label_of};

/// One image's answer, as `/v1/predict` returns it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePrediction {
    pub id: String,
    pub width: u32,
    pub height: u32,
    pub shapes: Vec<Shape>,
}

/// A record on its way to the prediction log, with the image bytes it names (if any).
pub struct LogItem {
    pub record: PredictionRecord,
    pub image: Option<Bytes>,
}

/// The file extension the log stores an image under.
pub fn image_ext(format: image::ImageFormat) -> &'static str {
    if format == image::ImageFormat::Png { "png" } else { "jpg" }
}
