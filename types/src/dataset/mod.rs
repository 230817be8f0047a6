//! Dataset layouts: how COCO, YOLO and ImageFolder datasets lie in storage, as plain code over
//! paths and bytes (no I/O). The operator counts with it, the trainer reads with it, the
//! inference server writes reviewed samples with it and the generator writes test data with it,
//! so the four agree on every path and field.

pub mod coco;
pub mod imagefolder;
pub mod yolo;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Task;

/// Dataset layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    Coco,
    Yolo,
    Imagefolder,
}

impl DatasetFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coco => "coco",
            Self::Yolo => "yolo",
            Self::Imagefolder => "imagefolder",
        }
    }

    /// The layout a task's samples are written in when nobody chose one.
    pub fn default_for(task: Task) -> Self {
        match task {
            Task::Detection => Self::Coco,
            Task::Classification => Self::Imagefolder,
        }
    }

    /// Whether this layout can hold `task`'s annotations: boxes (COCO, YOLO) or one label per
    /// image (ImageFolder).
    pub fn holds(self, task: Task) -> bool {
        matches!((task, self), (Task::Detection, Self::Coco | Self::Yolo) | (Task::Classification, Self::Imagefolder))
    }

    /// `holds`, as an error that says what would work.
    pub fn check_holds(self, task: Task) -> Result<(), LayoutError> {
        if self.holds(task) {
            return Ok(());
        }
        Err(LayoutError(format!(
            "a {} dataset cannot be in the {} layout: use imagefolder for classification, coco or yolo for detection",
            task.as_str(),
            self.as_str()
        )))
    }
}

/// What is wrong with a dataset's files, for a message that also names the file.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(pub String);

/// File extensions read as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp"];

pub fn is_image(path: &str) -> bool {
    path.rsplit_once('.').is_some_and(|(_, ext)| IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// Samples (images) and annotations per label: a DatasetVersion's status.
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    pub samples: u64,
    pub labels: BTreeMap<String, u64>,
}

/// A labelled image as a dataset stores it: boxes in the image's own pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledImage<'a> {
    /// Unique within the dataset; names the image's files.
    pub id: &'a str,
    /// Image file extension (`png`, `jpg`).
    pub ext: &'a str,
    pub width: u32,
    pub height: u32,
    /// Classification: the image's label.
    pub label: Option<&'a str>,
    /// Detection: (label, [x1, y1, x2, y2]) in pixels.
    pub boxes: Vec<(&'a str, [f32; 4])>,
}

/// Where `format` keeps the image file of `sample`.
pub fn image_path(format: DatasetFormat, sample: &LabelledImage<'_>) -> String {
    match format {
        DatasetFormat::Coco | DatasetFormat::Yolo => format!("images/{}.{}", sample.id, sample.ext),
        DatasetFormat::Imagefolder => {
            imagefolder::image_path(sample.label.unwrap_or(imagefolder::UNLABELLED), sample.id, sample.ext)
        }
    }
}

#[cfg(test)]
mod tests;
