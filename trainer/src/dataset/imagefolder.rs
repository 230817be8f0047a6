//! ImageFolder classification datasets (the layout is `flywheel_types::dataset::imagefolder`'s).
//! Directories whose name is not one of the model's labels (e.g. `unlabelled` in a feedback
//! dataset) are skipped with a warning.

use flywheel_storage::Location;
use flywheel_types::dataset::imagefolder;

use super::{LabelMap, SampleRef};
use crate::error::{Result, TrainerError};

pub async fn read(location: &Location, map: &LabelMap) -> Result<Vec<SampleRef>> {
    let mut out = Vec::new();
    let mut skipped = std::collections::BTreeMap::<String, usize>::new();
    for (path, _) in location.list("").await? {
        let Some(dir) = imagefolder::label_of(&path) else { continue };
        match map.by_name(dir) {
            Some(class) => out.push(SampleRef {
                location: location.clone(),
                annotation_file: location.child_uri(&path),
                path,
                label: Some(class),
                boxes: Vec::new(),
            }),
            None => *skipped.entry(dir.to_string()).or_default() += 1,
        }
    }
    for (dir, n) in skipped {
        tracing::warn!(uri = %location.child_uri(&dir), images = n, "skipping a directory that is not one of the model's labels");
    }
    if out.is_empty() {
        return Err(TrainerError::dataset(location.uri(), "no images in label directories"));
    }
    Ok(out)
}
