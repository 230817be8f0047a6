//! COCO detection layout: `annotations.json` at the root (images, annotations with
//! `[x, y, width, height]` boxes in pixels, categories), images under `images/` (a `file_name`
//! that already starts with `images/` is taken relative to the root). Fields this code does not
//! know are kept when a document is read and written back.
//!
//! A dataset that grows one sample at a time (a feedback dataset) also holds one document per
//! sample under `annotations/` (`annotations/<id>.json`, one image): each review writes its own
//! objects and never rewrites a shared file, so concurrent writers cannot lose each other's
//! samples. Readers take `annotations.json` (when there is one) and merge every per-sample
//! document over it ([`assemble`]).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Counts, LabelledImage, LayoutError};

pub const ANNOTATIONS_FILE: &str = "annotations.json";
/// Where per-sample documents live.
pub const SAMPLES_DIR: &str = "annotations";

/// The per-sample document of sample `id`.
pub fn sample_path(id: &str) -> String {
    format!("{SAMPLES_DIR}/{id}.json")
}

/// The dataset's document: `index` (`annotations.json`, when there is one) with every
/// per-sample document of `samples` (path, bytes) merged over it in path order. Errors name
/// the object that cannot be read.
pub fn assemble<B: AsRef<[u8]>>(index: Option<&[u8]>, samples: &[(String, B)]) -> Result<CocoDocument, LayoutError> {
    let mut doc = match index {
        Some(bytes) => CocoDocument::parse(bytes)?,
        None => CocoDocument::default(),
    };
    let mut samples: Vec<&(String, B)> = samples.iter().filter(|(p, _)| p.ends_with(".json")).collect();
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, bytes) in samples {
        let sample: CocoDocument =
            serde_json::from_slice(bytes.as_ref()).map_err(|e| LayoutError(format!("{path}: {e}")))?;
        doc.merge(sample).map_err(|e| LayoutError(format!("{path}: {}", e.0)))?;
    }
    Ok(doc)
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoDocument {
    #[serde(default)]
    pub images: Vec<CocoImage>,
    #[serde(default)]
    pub annotations: Vec<CocoAnnotation>,
    #[serde(default)]
    pub categories: Vec<CocoCategory>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: i64,
    pub file_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    #[serde(default)]
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, width, height]` in pixels.
    #[serde(default)]
    pub bbox: Vec<f64>,
    #[serde(default)]
    pub iscrowd: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<f64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    pub id: i64,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supercategory: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A box as (category name, [x1, y1, x2, y2] in pixels).
pub type NamedBox<'a> = (&'a str, [f32; 4]);

impl CocoImage {
    /// The image's path relative to the dataset root.
    pub fn path(&self) -> String {
        if self.file_name.starts_with("images/") {
            self.file_name.clone()
        } else {
            format!("images/{}", self.file_name)
        }
    }
}

impl CocoDocument {
    /// An empty document whose categories are `labels`, numbered from 1.
    pub fn new(labels: &[String], description: &str) -> Self {
        let categories = labels
            .iter()
            .enumerate()
            .map(|(i, l)| CocoCategory { id: i as i64 + 1, name: l.clone(), supercategory: None, extra: Map::new() })
            .collect();
        let mut extra = Map::new();
        extra.insert("info".into(), serde_json::json!({ "description": description }));
        Self { images: Vec::new(), annotations: Vec::new(), categories, extra }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, LayoutError> {
        serde_json::from_slice(bytes).map_err(|e| LayoutError(format!("{ANNOTATIONS_FILE}: {e}")))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a COCO document serialises")
    }

    /// Images and annotations per category name.
    pub fn counts(&self) -> Result<Counts, LayoutError> {
        let names: BTreeMap<i64, &str> = self.categories.iter().map(|c| (c.id, c.name.as_str())).collect();
        let mut labels = BTreeMap::new();
        for a in &self.annotations {
            let name = names.get(&a.category_id).ok_or_else(|| {
                LayoutError(format!("{ANNOTATIONS_FILE}: annotation with unknown category_id {}", a.category_id))
            })?;
            *labels.entry(name.to_string()).or_insert(0) += 1;
        }
        Ok(Counts { samples: self.images.len() as u64, labels })
    }

    /// Every image's boxes as (category name, [x1, y1, x2, y2] in pixels), crowd annotations
    /// left out, checked: known category, finite positive box, a known image.
    pub fn boxes_by_image(&self) -> Result<BTreeMap<i64, Vec<NamedBox<'_>>>, LayoutError> {
        let names: BTreeMap<i64, &str> = self.categories.iter().map(|c| (c.id, c.name.as_str())).collect();
        let mut by_image: BTreeMap<i64, Vec<NamedBox<'_>>> = BTreeMap::new();
        for (i, a) in self.annotations.iter().enumerate() {
            if a.iscrowd != 0 {
                continue;
            }
            let bad = |reason: String| LayoutError(format!("annotation #{i} (image_id {}): {reason}", a.image_id));
            let name =
                *names.get(&a.category_id).ok_or_else(|| bad(format!("unknown category_id {}", a.category_id)))?;
            let [x, y, w, h] = <[f64; 4]>::try_from(a.bbox.as_slice())
                .map_err(|_| bad(format!("bbox must be [x, y, width, height], got {:?}", a.bbox)))?;
            if ![x, y, w, h].iter().all(|v| v.is_finite()) || w <= 0.0 || h <= 0.0 || x < 0.0 || y < 0.0 {
                return Err(bad(format!("invalid bbox {:?}", a.bbox)));
            }
            by_image.entry(a.image_id).or_default().push((name, [x as f32, y as f32, (x + w) as f32, (y + h) as f32]));
        }
        let known: HashSet<i64> = self.images.iter().map(|i| i.id).collect();
        if let Some(orphan) = by_image.keys().find(|id| !known.contains(id)) {
            return Err(LayoutError(format!("annotation refers to image_id {orphan}, which is not in images")));
        }
        Ok(by_image)
    }

    /// Adds `sample` (its image at `images/<id>.<ext>`), replacing an earlier write of the same
    /// image, so writing a sample twice leaves it once. Labels without a category get one.
    pub fn upsert(&mut self, sample: &LabelledImage<'_>) {
        let file_name = super::image_path(super::DatasetFormat::Coco, sample);
        if let Some(old) = self.images.iter().find(|i| i.path() == file_name).map(|i| i.id) {
            self.images.retain(|i| i.id != old);
            self.annotations.retain(|a| a.image_id != old);
        }
        let image_id = self.images.iter().map(|i| i.id).max().unwrap_or(0) + 1;
        self.images.push(CocoImage {
            id: image_id,
            file_name,
            width: Some(sample.width),
            height: Some(sample.height),
            extra: Map::new(),
        });
        let first_ann = self.annotations.iter().map(|a| a.id).max().unwrap_or(0) + 1;
        for (next_ann, (label, b)) in (first_ann..).zip(&sample.boxes) {
            let category_id = self.category_id(label);
            let (w, h) = ((b[2] - b[0]) as f64, (b[3] - b[1]) as f64);
            self.annotations.push(CocoAnnotation {
                id: next_ann,
                image_id,
                category_id,
                bbox: vec![b[0] as f64, b[1] as f64, w, h],
                iscrowd: 0,
                area: Some(w * h),
                extra: Map::new(),
            });
        }
    }

    /// Merges another document's images over this one: an image with the same path replaces
    /// this one's (with its annotations); categories are matched by name, and ids renumbered.
    pub fn merge(&mut self, other: CocoDocument) -> Result<(), LayoutError> {
        let names: BTreeMap<i64, String> = other.categories.iter().map(|c| (c.id, c.name.clone())).collect();
        for image in other.images {
            let path = image.path();
            if let Some(old) = self.images.iter().find(|i| i.path() == path).map(|i| i.id) {
                self.images.retain(|i| i.id != old);
                self.annotations.retain(|a| a.image_id != old);
            }
            let image_id = self.images.iter().map(|i| i.id).max().unwrap_or(0) + 1;
            for a in other.annotations.iter().filter(|a| a.image_id == image.id) {
                let name = names
                    .get(&a.category_id)
                    .ok_or_else(|| LayoutError(format!("annotation with unknown category_id {}", a.category_id)))?;
                let category_id = self.category_id(name);
                let id = self.annotations.iter().map(|a| a.id).max().unwrap_or(0) + 1;
                self.annotations.push(CocoAnnotation { id, image_id, category_id, ..a.clone() });
            }
            self.images.push(CocoImage { id: image_id, ..image });
        }
        Ok(())
    }

    fn category_id(&mut self, label: &str) -> i64 {
        if let Some(c) = self.categories.iter().find(|c| c.name == label) {
            return c.id;
        }
        let id = self.categories.iter().map(|c| c.id).max().unwrap_or(0) + 1;
        self.categories.push(CocoCategory { id, name: label.into(), supercategory: None, extra: Map::new() });
        id
    }
}
