//! YOLO layout: `images/<name>.<ext>` and `labels/<name>.txt` with one `class cx cy w h` line
//! per box (fractions of the image). Class ids index the DatasetVersion's labels. An image
//! without a label file has no boxes (a negative sample).

use std::collections::HashMap;

use flywheel_storage::Location;

use super::{GtBox, LabelMap, SampleRef, is_image};
use crate::error::{Result, TrainerError};

pub async fn read(location: &Location, map: &LabelMap) -> Result<Vec<SampleRef>> {
    let images: Vec<String> =
        location.list("images").await?.into_iter().map(|(p, _)| p).filter(|p| is_image(p)).collect();
    if images.is_empty() {
        return Err(TrainerError::dataset(location.child_uri("images/"), "no images found"));
    }
    let labels: HashMap<String, String> = location
        .list("labels")
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with(".txt"))
        .map(|p| (stem(p.trim_start_matches("labels/")), p))
        .collect();
    let mut out = Vec::with_capacity(images.len());
    for path in images {
        let key = stem(path.trim_start_matches("images/"));
        let (boxes, annotation_file) = match labels.get(&key) {
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

/// `images/a/b.png` and `labels/a/b.txt` pair up through `a/b`.
fn stem(rel: &str) -> String {
    rel.rsplit_once('.').map(|(s, _)| s).unwrap_or(rel).to_string()
}

pub fn parse(text: &str, map: &LabelMap) -> std::result::Result<Vec<GtBox>, String> {
    let mut boxes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| format!("line {}: {reason}: {line:?}", n + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(bad("expected `class cx cy w h`".into()));
        }
        let class: usize = fields[0].parse().map_err(|_| bad("class id is not a non-negative integer".into()))?;
        let mut v = [0f32; 4];
        for (k, f) in fields[1..].iter().enumerate() {
            v[k] = f.parse().map_err(|_| bad(format!("{f:?} is not a number")))?;
        }
        let [cx, cy, w, h] = v;
        if !v.iter().all(|x| x.is_finite() && (0.0..=1.0).contains(x)) || w <= 0.0 || h <= 0.0 {
            return Err(bad("coordinates must be fractions of the image in 0..1".into()));
        }
        let class = map.by_dataset_index(class).map_err(bad)?;
        boxes.push(GtBox { class, rect: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], normalised: true });
    }
    Ok(boxes)
}
