//! COCO detection datasets (the layout is `flywheel_types::dataset::coco`'s): the annotation
//! file's boxes mapped onto the model's classes.

use flywheel_storage::Location;
use flywheel_types::dataset::coco::{ANNOTATIONS_FILE, CocoDocument};

use super::{GtBox, LabelMap, SampleRef};
use crate::error::{Result, TrainerError};

pub async fn read(location: &Location, map: &LabelMap) -> Result<Vec<SampleRef>> {
    let file = location.child_uri(ANNOTATIONS_FILE);
    let bytes = location.get(ANNOTATIONS_FILE).await?;
    let doc = CocoDocument::parse(&bytes).map_err(|e| TrainerError::dataset(&file, e))?;
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
