//! Writes reviewed samples into the feedback dataset: ImageFolder (`<label>/<id>.<ext>`) for
//! classification, COCO (`images/<id>.<ext>` + `annotations.json`) for detection. Each write is
//! idempotent per prediction id, so retrying after a crash never duplicates a sample.

use bytes::Bytes;
use flywheel_storage::{Location, StorageError};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::postprocess::Shape;
use crate::serving::FeedbackFormat;

pub const COCO_FILE: &str = "annotations.json";

pub struct FeedbackWriter {
    pub location: Location,
    pub format: FeedbackFormat,
    labels: Vec<String>,
    /// The COCO document, loaded on first use; one writer at a time.
    coco: Mutex<Option<Value>>,
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
    pub fn new(location: Location, format: FeedbackFormat, labels: Vec<String>) -> Self {
        Self { location, format, labels, coco: Mutex::new(None) }
    }

    pub async fn write(&self, s: &Sample<'_>) -> Result<(), StorageError> {
        match self.format {
            FeedbackFormat::Imagefolder => {
                let label = s.shapes.first().map(|x| x.label.as_str()).unwrap_or("unlabelled");
                self.location.put(&format!("{}/{}.{}", safe(label), s.id, s.ext), s.image.clone()).await
            }
            FeedbackFormat::Coco => self.write_coco(s).await,
        }
    }

    async fn write_coco(&self, s: &Sample<'_>) -> Result<(), StorageError> {
        let file_name = format!("images/{}.{}", s.id, s.ext);
        self.location.put(&file_name, s.image.clone()).await?;
        let mut guard = self.coco.lock().await;
        if guard.is_none() {
            *guard = Some(match self.location.get_opt(COCO_FILE).await? {
                Some(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "feedback annotations.json is unreadable; starting a new one");
                    self.empty_coco()
                }),
                None => self.empty_coco(),
            });
        }
        let mut doc = guard.clone().expect("loaded above");
        upsert_coco(&mut doc, &self.labels, s, &file_name);
        self.location.put(COCO_FILE, Bytes::from(serde_json::to_vec(&doc).expect("json"))).await?;
        *guard = Some(doc);
        Ok(())
    }

    fn empty_coco(&self) -> Value {
        let cats: Vec<Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| json!({"id": i + 1, "name": l, "supercategory": "none"}))
            .collect();
        json!({"info": {"description": "flywheel reviewed samples"}, "images": [], "annotations": [], "categories": cats})
    }
}

fn safe(label: &str) -> String {
    label.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

/// Replaces (or adds) the image and annotations of one prediction id.
fn upsert_coco(doc: &mut Value, labels: &[String], s: &Sample<'_>, file_name: &str) {
    let arr =
        |doc: &mut Value, k: &str| -> Vec<Value> { doc.get(k).and_then(Value::as_array).cloned().unwrap_or_default() };
    let mut images = arr(doc, "images");
    let mut anns = arr(doc, "annotations");
    let mut cats = arr(doc, "categories");
    let old: Option<i64> = images
        .iter()
        .find(|i| i.get("flywheel_prediction_id").and_then(Value::as_str) == Some(s.id))
        .and_then(|i| i.get("id")?.as_i64());
    if let Some(old) = old {
        images.retain(|i| i.get("id").and_then(Value::as_i64) != Some(old));
        anns.retain(|a| a.get("image_id").and_then(Value::as_i64) != Some(old));
    }
    let next = |v: &[Value]| v.iter().filter_map(|x| x.get("id")?.as_i64()).max().unwrap_or(0) + 1;
    let image_id = next(&images);
    images.push(json!({"id": image_id, "file_name": file_name, "width": s.width, "height": s.height, "flywheel_prediction_id": s.id}));
    for shape in s.shapes {
        let Some(b) = shape.bbox else { continue };
        let cat_id = match cats.iter().find(|c| c.get("name").and_then(Value::as_str) == Some(&shape.label)) {
            Some(c) => c.get("id").and_then(Value::as_i64).unwrap_or(0),
            None => {
                let id = next(&cats).max(labels.len() as i64 + 1);
                cats.push(json!({"id": id, "name": shape.label, "supercategory": "none"}));
                id
            }
        };
        let (w, h) = (b[2] - b[0], b[3] - b[1]);
        let ann_id = next(&anns);
        anns.push(json!({"id": ann_id, "image_id": image_id, "category_id": cat_id, "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0}));
    }
    doc["images"] = Value::Array(images);
    doc["annotations"] = Value::Array(anns);
    doc["categories"] = Value::Array(cats);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_upsert_replaces_a_previous_write_of_the_same_id() {
        let labels = vec!["cat".to_string()];
        let mut doc = json!({"images": [], "annotations": [], "categories": [{"id": 1, "name": "cat"}]});
        let shapes = vec![Shape { label: "cat".into(), class_id: 0, confidence: 1.0, bbox: Some([1., 2., 11., 22.]) }];
        let s = Sample { id: "p1", ext: "png", image: Bytes::new(), width: 50, height: 40, shapes: &shapes };
        upsert_coco(&mut doc, &labels, &s, "images/p1.png");
        upsert_coco(&mut doc, &labels, &s, "images/p1.png");
        assert_eq!(doc["images"].as_array().unwrap().len(), 1);
        assert_eq!(doc["annotations"].as_array().unwrap().len(), 1);
        assert_eq!(doc["annotations"][0]["bbox"], json!([1.0, 2.0, 10.0, 20.0]));
        assert_eq!(doc["annotations"][0]["category_id"], json!(1));
    }
}
