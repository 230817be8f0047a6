//! Writes reviewed samples into the feedback dataset in its DatasetVersion's layout (COCO, YOLO
//! or ImageFolder, as `flywheel_types::dataset` defines them). Each write is idempotent per
//! prediction id, so retrying after a crash never duplicates a sample. A COCO index that cannot
//! be read stops the writer with an error: it is never replaced, which would drop its samples.

use bytes::Bytes;
use flywheel_storage::{Location, StorageError};
use flywheel_types::dataset::coco::{ANNOTATIONS_FILE, CocoDocument};
use flywheel_types::dataset::{self, DatasetFormat, LabelledImage, yolo};
use tokio::sync::Mutex;

use crate::error::ServerError;
use crate::record::Shape;

pub struct FeedbackWriter {
    pub location: Location,
    pub format: DatasetFormat,
    /// The dataset's labels (YOLO class ids index them).
    labels: Vec<String>,
    /// The COCO document, loaded on first use; one writer at a time.
    coco: Mutex<Option<CocoDocument>>,
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
        Self { location, format, labels, coco: Mutex::new(None) }
    }

    pub async fn write(&self, s: &Sample<'_>) -> Result<(), ServerError> {
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
                let text = yolo::label_file(&labelled, &self.labels).map_err(|e| ServerError::bad_request(e.0))?;
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

    async fn write_coco(&self, sample: &LabelledImage<'_>) -> Result<(), ServerError> {
        let mut guard = self.coco.lock().await;
        let mut doc = match guard.take() {
            Some(doc) => doc,
            None => match self.location.get_opt(ANNOTATIONS_FILE).await? {
                Some(bytes) => CocoDocument::parse(&bytes).map_err(|e| {
                    ServerError::Storage(format!(
                        "the feedback dataset's index {} is unreadable ({e}); it was left as it is: \
                         repair or move it to accept reviews again",
                        self.location.child_uri(ANNOTATIONS_FILE)
                    ))
                })?,
                None => CocoDocument::new(&self.labels, "flywheel reviewed samples"),
            },
        };
        doc.upsert(sample);
        // On a failed put the guard stays empty: the next write reads the stored index again.
        self.location.put(ANNOTATIONS_FILE, Bytes::from(doc.to_bytes())).await?;
        *guard = Some(doc);
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
