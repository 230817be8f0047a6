//! ImageFolder: one directory per label, `<label>/<any name>.<ext>`. Files at the root are not
//! samples.

use super::{Counts, is_image};

/// The directory of images whose label is not known (never read as a class).
pub const UNLABELLED: &str = "unlabelled";

/// The label an image path files its image under, if it is a sample at all.
pub fn label_of(path: &str) -> Option<&str> {
    let (dir, _) = path.split_once('/')?;
    is_image(path).then_some(dir)
}

/// `<label>/<id>.<ext>`, with the label made safe as a directory name.
pub fn image_path(label: &str, id: &str, ext: &str) -> String {
    format!("{}/{id}.{ext}", safe_dir_name(label))
}

fn safe_dir_name(label: &str) -> String {
    label.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

/// Counts from a listing of the dataset's paths.
pub fn counts(listing: &[String]) -> Counts {
    let mut counts = Counts::default();
    for label in listing.iter().filter_map(|p| label_of(p)) {
        counts.samples += 1;
        *counts.labels.entry(label.to_string()).or_insert(0) += 1;
    }
    counts
}
