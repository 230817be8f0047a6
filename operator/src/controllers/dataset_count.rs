//! Pure counting of samples and labels in the three dataset layouts.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Samples (images) and annotations per label.
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    pub samples: u64,
    pub labels: BTreeMap<String, u64>,
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp"];

pub fn is_image(path: &str) -> bool {
    path.rsplit_once('.').is_some_and(|(_, ext)| IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

#[derive(Deserialize)]
struct Coco {
    #[serde(default)]
    images: Vec<serde_json::Value>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
    #[serde(default)]
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    category_id: i64,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: i64,
    name: String,
}

/// COCO: `annotations.json` with images, annotations and categories.
pub fn count_coco(annotations_json: &[u8]) -> Result<Counts, String> {
    let coco: Coco = serde_json::from_slice(annotations_json).map_err(|e| format!("annotations.json: {e}"))?;
    let names: BTreeMap<i64, &str> = coco.categories.iter().map(|c| (c.id, c.name.as_str())).collect();
    let mut labels = BTreeMap::new();
    for a in &coco.annotations {
        let name = names
            .get(&a.category_id)
            .ok_or_else(|| format!("annotations.json: annotation with unknown category_id {}", a.category_id))?;
        *labels.entry(name.to_string()).or_insert(0) += 1;
    }
    Ok(Counts { samples: coco.images.len() as u64, labels })
}

/// YOLO: `images/*` and `labels/<stem>.txt` with one `class cx cy w h` line per box.
pub fn count_yolo<'a>(
    listing: &[String],
    label_files: impl IntoIterator<Item = (&'a str, &'a str)>,
    names: &[String],
) -> Result<Counts, String> {
    let samples = listing.iter().filter(|p| p.starts_with("images/") && is_image(p)).count() as u64;
    let mut labels = BTreeMap::new();
    for (file, text) in label_files {
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let class: usize = line
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("{file}:{}: expected 'class cx cy w h'", n + 1))?;
            let name = names.get(class).ok_or_else(|| format!("{file}:{}: class {class} has no label", n + 1))?;
            *labels.entry(name.clone()).or_insert(0) += 1;
        }
    }
    Ok(Counts { samples, labels })
}

/// ImageFolder: `<label>/<image>`.
pub fn count_imagefolder(listing: &[String]) -> Counts {
    let mut counts = Counts::default();
    for path in listing.iter().filter(|p| is_image(p)) {
        if let Some((label, _)) = path.split_once('/') {
            counts.samples += 1;
            *counts.labels.entry(label.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_counts_images_and_annotations_by_name() {
        let json =
            br#"{"images":[{"id":1},{"id":2}],"annotations":[{"category_id":1},{"category_id":2},{"category_id":1}],
            "categories":[{"id":1,"name":"circle"},{"id":2,"name":"square"}]}"#;
        let counts = count_coco(json).unwrap();
        assert_eq!(counts.samples, 2);
        assert_eq!(counts.labels["circle"], 2);
        assert_eq!(counts.labels["square"], 1);
        assert!(count_coco(br#"{"annotations":[{"category_id":9}]}"#).unwrap_err().contains("category_id 9"));
        assert!(count_coco(b"not json").is_err());
    }

    #[test]
    fn yolo_counts_boxes_by_class_index() {
        let listing = vec!["images/a.png".to_string(), "images/b.jpg".into(), "labels/a.txt".into(), "notes.md".into()];
        let names = vec!["circle".to_string(), "square".into()];
        let counts =
            count_yolo(&listing, [("labels/a.txt", "0 .5 .5 .1 .1\n1 .2 .2 .1 .1\n\n0 .1 .1 .1 .1\n")], &names)
                .unwrap();
        assert_eq!(counts.samples, 2);
        assert_eq!(counts.labels["circle"], 2);
        assert_eq!(counts.labels["square"], 1);
        let err = count_yolo(&listing, [("labels/a.txt", "7 .5 .5 .1 .1")], &names).unwrap_err();
        assert!(err.contains("labels/a.txt:1") && err.contains("class 7"), "{err}");
    }

    #[test]
    fn imagefolder_counts_one_label_per_directory() {
        let listing = vec!["circle/1.png".to_string(), "circle/2.PNG".into(), "square/1.jpg".into(), "README".into()];
        let counts = count_imagefolder(&listing);
        assert_eq!(counts.samples, 3);
        assert_eq!(counts.labels["circle"], 2);
        assert_eq!(counts.labels["square"], 1);
    }
}
