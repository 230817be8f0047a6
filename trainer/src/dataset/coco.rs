//! COCO detection layout: `annotations.json` at the root, images under `images/` (a
//! `file_name` that already starts with `images/` is taken relative to the root).

use std::collections::HashMap;

use flywheel_storage::Location;
use serde::Deserialize;

use super::{GtBox, LabelMap, SampleRef};
use crate::error::{Result, TrainerError};

pub const ANNOTATIONS_FILE: &str = "annotations.json";

#[derive(Deserialize)]
struct Doc {
    images: Vec<Image>,
    #[serde(default)]
    annotations: Vec<Annotation>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct Image {
    id: i64,
    file_name: String,
}

#[derive(Deserialize)]
struct Annotation {
    image_id: i64,
    category_id: i64,
    bbox: Vec<f64>,
    #[serde(default)]
    iscrowd: i64,
}

#[derive(Deserialize)]
struct Category {
    id: i64,
    name: String,
}

pub async fn read(location: &Location, map: &LabelMap) -> Result<Vec<SampleRef>> {
    let file = location.child_uri(ANNOTATIONS_FILE);
    let bytes = location.get(ANNOTATIONS_FILE).await?;
    let doc: Doc = serde_json::from_slice(&bytes).map_err(|e| TrainerError::dataset(&file, e))?;
    let mut categories = HashMap::new();
    for c in &doc.categories {
        let class = map.by_name(&c.name).ok_or_else(|| TrainerError::dataset(&file, map.unknown(&c.name)))?;
        categories.insert(c.id, class);
    }
    let mut by_image: HashMap<i64, Vec<GtBox>> = HashMap::new();
    for (i, a) in doc.annotations.iter().enumerate() {
        if a.iscrowd != 0 {
            continue;
        }
        let bad = |reason: String| {
            TrainerError::dataset(&file, format!("annotation #{i} (image_id {}): {reason}", a.image_id))
        };
        let class =
            *categories.get(&a.category_id).ok_or_else(|| bad(format!("unknown category_id {}", a.category_id)))?;
        let [x, y, w, h] = <[f64; 4]>::try_from(a.bbox.as_slice())
            .map_err(|_| bad(format!("bbox must be [x, y, width, height], got {:?}", a.bbox)))?;
        if ![x, y, w, h].iter().all(|v| v.is_finite()) || w <= 0.0 || h <= 0.0 || x < 0.0 || y < 0.0 {
            return Err(bad(format!("invalid bbox {:?}", a.bbox)));
        }
        by_image.entry(a.image_id).or_default().push(GtBox {
            class,
            rect: [x as f32, y as f32, (x + w) as f32, (y + h) as f32],
            normalised: false,
        });
    }
    let known: std::collections::HashSet<i64> = doc.images.iter().map(|i| i.id).collect();
    if let Some(orphan) = by_image.keys().find(|id| !known.contains(id)) {
        return Err(TrainerError::dataset(
            &file,
            format!("annotation refers to image_id {orphan}, which is not in images"),
        ));
    }
    Ok(doc
        .images
        .into_iter()
        .map(|img| {
            let path =
                if img.file_name.starts_with("images/") { img.file_name } else { format!("images/{}", img.file_name) };
            SampleRef {
                location: location.clone(),
                path,
                annotation_file: file.clone(),
                label: None,
                boxes: by_image.remove(&img.id).unwrap_or_default(),
            }
        })
        .collect())
}
