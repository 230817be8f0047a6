//! COCO detection datasets (the layout is `flywheel_types::dataset::coco`'s: `annotations.json`
//! and per-sample documents under `annotations/`): the boxes mapped onto the model's classes.

use flywheel_storage::Location;
use flywheel_types::dataset::coco::{self, ANNOTATIONS_FILE};

use super::{GtBox, LabelMap, SampleRef};
use crate::error::{Result, TrainerError};

pub async fn read(location: &Location, map: &LabelMap) -> Result<Vec<SampleRef>> {
    let file = location.child_uri(ANNOTATIONS_FILE);
    // The index and the per-sample documents (a feedback dataset may have only these).
    let index = location.get_opt(ANNOTATIONS_FILE).await?;
    let samples = location.get_all(coco::SAMPLES_DIR).await?;
    if index.is_none() && samples.is_empty() {
        location.get(ANNOTATIONS_FILE).await?; // the not-found error, naming the file
    }
    let doc = coco::assemble(index.as_deref(), &samples).map_err(|e| TrainerError::dataset(&file, e))?;
    let mut by_image = doc.boxes_by_image().map_err(|e| TrainerError::dataset(&file, e))?;
    let mut samples = Vec::with_capacity(doc.images.len());
    for img in &doc.images {
        let boxes = by_image
            .remove(&img.id)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, rect)| {
                let class = map.by_name(name).ok_or_else(|| TrainerError::dataset(&file, map.unknown(name)))?;
                Ok(GtBox { class, rect, normalised: false })
            })
            .collect::<Result<Vec<_>>>()?;
        samples.push(SampleRef {
            location: location.clone(),
            path: img.path(),
            annotation_file: file.clone(),
            label: None,
            boxes,
        });
    }
    Ok(samples)
}
