//! YOLO detection datasets (the layout is `flywheel_types::dataset::yolo`'s): label files
//! paired with their images, class ids mapped through the DatasetVersion's labels onto the
//! model's classes.

use std::collections::HashMap;

use flywheel_storage::Location;
use flywheel_types::dataset::yolo;

use super::{GtBox, LabelMap, SampleRef};
use crate::error::{Result, TrainerError};

pub async fn read(location: &Location, map: &LabelMap) -> Result<Vec<SampleRef>> {
    let images: Vec<String> =
        location.list("images").await?.into_iter().map(|(p, _)| p).filter(|p| yolo::is_sample(p)).collect();
    if images.is_empty() {
        return Err(TrainerError::dataset(location.child_uri("images/"), "no images found"));
    }
    let labels: HashMap<String, String> = location
        .list("labels")
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with(".txt"))
        .map(|p| (yolo::pair_key(&p).to_string(), p))
        .collect();
    let mut out = Vec::with_capacity(images.len());
    for path in images {
        let (boxes, annotation_file) = match labels.get(yolo::pair_key(&path)) {
            Some(label_path) => {
                let file = location.child_uri(label_path);
                let text = location.get(label_path).await?;
                let text = std::str::from_utf8(&text).map_err(|e| TrainerError::dataset(&file, e))?;
                (parse(text, map).map_err(|reason| TrainerError::dataset(&file, reason))?, file)
            }
            None => (Vec::new(), location.child_uri(&path)),
        };
        out.push(SampleRef { location: location.clone(), path, annotation_file, label: None, boxes });
    }
    Ok(out)
}

/// A label file's boxes as the model's classes; errors name the line.
pub fn parse(text: &str, map: &LabelMap) -> std::result::Result<Vec<GtBox>, String> {
    yolo::parse(text)
        .map_err(|e| e.0)?
        .into_iter()
        .map(|b| {
            let class = map.by_dataset_index(b.class).map_err(|reason| format!("line {}: {reason}", b.line))?;
            Ok(GtBox { class, rect: b.rect, normalised: true })
        })
        .collect()
}
