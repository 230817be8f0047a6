//! YOLO: `images/<name>.<ext>` and `labels/<name>.txt` with one `class cx cy w h` line per box
//! (fractions of the image). Class ids index the DatasetVersion's labels; an image without a
//! label file has no boxes (a negative sample).

use std::collections::BTreeMap;

use super::{Counts, LabelledImage, LayoutError, is_image};

/// The class names, one per line in class-id order (the darknet convention).
pub const CLASSES_FILE: &str = "classes.txt";

pub fn classes_file(labels: &[String]) -> String {
    labels.join("\n")
}

/// One box of a label file: a class index and [x1, y1, x2, y2] as fractions of the image.
#[derive(Clone, Debug, PartialEq)]
pub struct YoloBox {
    pub class: usize,
    pub rect: [f32; 4],
    /// Line of the label file (from 1), for messages about the box.
    pub line: usize,
}

/// The key that pairs `images/a/b.png` with `labels/a/b.txt`: `a/b`.
pub fn pair_key(path: &str) -> &str {
    let rel = path.strip_prefix("images/").or_else(|| path.strip_prefix("labels/")).unwrap_or(path);
    rel.rsplit_once('.').map(|(s, _)| s).unwrap_or(rel)
}

/// The label file of an image path.
pub fn label_path(image_path: &str) -> String {
    format!("labels/{}.txt", pair_key(image_path))
}

/// Whether a listed path is one of the dataset's images.
pub fn is_sample(path: &str) -> bool {
    path.starts_with("images/") && is_image(path)
}

/// Parses a label file; errors name the line.
pub fn parse(text: &str) -> Result<Vec<YoloBox>, LayoutError> {
    let mut boxes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: &str| LayoutError(format!("line {}: {reason}: {line:?}", n + 1));
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(bad("expected `class cx cy w h`"));
        }
        let class: usize = fields[0].parse().map_err(|_| bad("class id is not a non-negative integer"))?;
        let mut v = [0f32; 4];
        for (k, f) in fields[1..].iter().enumerate() {
            v[k] = f.parse().map_err(|_| bad(&format!("{f:?} is not a number")))?;
        }
        let [cx, cy, w, h] = v;
        if !v.iter().all(|x| x.is_finite() && (0.0..=1.0).contains(x)) || w <= 0.0 || h <= 0.0 {
            return Err(bad("coordinates must be fractions of the image in 0..1"));
        }
        boxes.push(YoloBox { class, rect: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], line: n + 1 });
    }
    Ok(boxes)
}

/// The label file of `sample`, with class ids from `labels` (the dataset's label list).
pub fn label_file(sample: &LabelledImage<'_>, labels: &[String]) -> Result<String, LayoutError> {
    let (w, h) = (sample.width.max(1) as f32, sample.height.max(1) as f32);
    let mut text = String::new();
    for (label, r) in &sample.boxes {
        let class = labels
            .iter()
            .position(|l| l == label)
            .ok_or_else(|| LayoutError(format!("label {label:?} is not one of the dataset's labels {labels:?}")))?;
        let (cx, cy) = ((r[0] + r[2]) / 2.0 / w, (r[1] + r[3]) / 2.0 / h);
        let (bw, bh) = ((r[2] - r[0]) / w, (r[3] - r[1]) / h);
        text.push_str(&format!("{class} {cx:.6} {cy:.6} {bw:.6} {bh:.6}\n"));
    }
    Ok(text)
}

/// Counts from a listing of the dataset's paths and the text of its label files; `names` are
/// the DatasetVersion's labels. Errors name the file and line.
pub fn counts<'a>(
    listing: &[String],
    label_files: impl IntoIterator<Item = (&'a str, &'a str)>,
    names: &[String],
) -> Result<Counts, LayoutError> {
    let samples = listing.iter().filter(|p| is_sample(p)).count() as u64;
    let mut labels = BTreeMap::new();
    for (file, text) in label_files {
        for b in parse(text).map_err(|e| LayoutError(format!("{file}: {e}")))? {
            let name = names.get(b.class).ok_or_else(|| {
                LayoutError(format!(
                    "{file}:{}: class {} has no label (the dataset lists {})",
                    b.line,
                    b.class,
                    names.len()
                ))
            })?;
            *labels.entry(name.clone()).or_insert(0) += 1;
        }
    }
    Ok(Counts { samples, labels })
}
