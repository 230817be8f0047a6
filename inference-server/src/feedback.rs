//! Writes reviewed samples into the feedback dataset in its DatasetVersion's layout (COCO, YOLO
//! or ImageFolder, as `flywheel_types::dataset` defines them). Each write is idempotent per
//! prediction id, so retrying after a crash never duplicates a sample. A COCO index that cannot
//! be read stops the writer with an error: it is never replaced, which would drop its samples.

use bytes::Bytes;
use flywheel_storage::Location;
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
            DatasetFormat::Imagefolder => self.location.put(&image_path, s.image.clone()).await?,
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
