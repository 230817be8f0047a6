//! Writes reviewed samples into the feedback dataset in its DatasetVersion's layout (COCO, YOLO
//! or ImageFolder, as `flywheel_types::dataset` defines them), each sample as its own objects:
//! no write reads or rewrites a shared file, so writers running at once cannot drop each
//! other's samples, and an existing `annotations.json` is never touched. Each write is
//! idempotent per prediction id, so retrying after a crash never duplicates a sample. A COCO
//! index that cannot be read stops the writer with an error until it is repaired: samples
//! written next to it would be part of a dataset nobody can read.

use bytes::Bytes;
use flywheel_types::dataset::coco::{ANNOTATIONS_FILE, CocoDocument, sample_path};
use flywheel_types::dataset::{self, DatasetFormat, LabelledImage, yolo};
use flywheel_types::prediction::Shape;

use crate::{Location, StorageError};

/// Why a sample was not written.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// The sample cannot be expressed in the dataset's format (e.g. a label the dataset lacks).
    #[error("{0}")]
    BadSample(String),
    /// The feedback dataset's COCO index exists but cannot be read.
    #[error(
        "the feedback dataset's index {uri} is unreadable ({reason}); it was left as it is: repair or move it to \
         accept reviews again"
    )]
    UnreadableIndex { uri: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct FeedbackWriter {
    pub location: Location,
    pub format: DatasetFormat,
    /// The dataset's labels (YOLO class ids index them).
    labels: Vec<String>,
    /// A COCO index was found readable (or absent) once.
    index_checked: std::sync::atomic::AtomicBool,
}

pub struct Sample<'a> {
    pub id: &'a str,
    pub ext: &'a str,
    pub image: Bytes,
    pub width: u32,
    pub height: u32,
    pub shapes: &'a [Shape],
}

impl FeedbackWriter {
    pub fn new(location: Location, format: DatasetFormat, labels: Vec<String>) -> Self {
        Self { location, format, labels, index_checked: Default::default() }
    }

    pub async fn write(&self, s: &Sample<'_>) -> Result<(), FeedbackError> {
        let labelled = LabelledImage {
            id: s.id,
            ext: s.ext,
            width: s.width,
            height: s.height,
            label: s.shapes.first().map(|x| x.label.as_str()),
            boxes: s.shapes.iter().filter_map(|x| Some((x.label.as_str(), x.bbox?))).collect(),
        };
        let image_path = dataset::image_path(self.format, &labelled);
        match self.format {
            DatasetFormat::Imagefolder => {
                // A retried review may carry another label than an attempt that stopped after
                // its write: the image must end up under one label only.
                for other in self.labels.iter().filter(|l| Some(l.as_str()) != labelled.label) {
                    let stale = LabelledImage { label: Some(other.as_str()), ..labelled.clone() };
                    match self.location.delete(&dataset::image_path(self.format, &stale)).await {
                        Ok(()) | Err(StorageError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.location.put(&image_path, s.image.clone()).await?
            }
            DatasetFormat::Yolo => {
                let text = yolo::label_file(&labelled, &self.labels).map_err(|e| FeedbackError::BadSample(e.0))?;
                self.location.put(&image_path, s.image.clone()).await?;
                self.location.put(&yolo::label_path(&image_path), Bytes::from(text)).await?;
            }
            DatasetFormat::Coco => {
                self.location.put(&image_path, s.image.clone()).await?;
                self.write_coco(&labelled).await?;
            }
        }
        Ok(())
    }

    /// COCO: the sample's own document, `annotations/<id>.json` (see `dataset::coco`).
    async fn write_coco(&self, sample: &LabelledImage<'_>) -> Result<(), FeedbackError> {
        self.check_coco_index().await?;
        let mut doc = CocoDocument::new(&self.labels, "flywheel reviewed sample");
        doc.upsert(sample);
        self.location.put(&sample_path(sample.id), Bytes::from(doc.to_bytes())).await?;
        Ok(())
    }

    /// An existing `annotations.json` must be readable (checked until it has been once).
    async fn check_coco_index(&self) -> Result<(), FeedbackError> {
        if self.index_checked.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(bytes) = self.location.get_opt(ANNOTATIONS_FILE).await? {
            CocoDocument::parse(&bytes).map_err(|e| FeedbackError::UnreadableIndex {
                uri: self.location.child_uri(ANNOTATIONS_FILE),
                reason: e.to_string(),
            })?;
        }
        self.index_checked.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(label: &str) -> Shape {
        Shape { label: label.into(), class_id: 0, confidence: 1.0, bbox: None }
    }

    #[tokio::test]
    async fn an_imagefolder_sample_written_again_with_another_label_is_filed_once() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::open(&format!("file://{}", dir.path().display())).unwrap();
        let labels = vec!["cat".to_string(), "dog".to_string()];
        let writer = FeedbackWriter::new(loc, DatasetFormat::Imagefolder, labels);
        let sample =
            |shapes| Sample { id: "p1", ext: "png", image: Bytes::from_static(b"png"), width: 4, height: 4, shapes };
        let (cat, dog) = ([shape("cat")], [shape("dog")]);
        writer.write(&sample(&cat)).await.unwrap();
        // The review is retried (its marker was never written) with another label.
        writer.write(&sample(&dog)).await.unwrap();
        assert!(!dir.path().join("cat/p1.png").exists(), "the first label's copy must go");
        assert!(dir.path().join("dog/p1.png").exists());
    }
}
