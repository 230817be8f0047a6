//! `generate dataset --domain`: the source domain is unchanged, every shift moves the image
//! statistics (or boxes) the way docs/trainer.md says, every layout still reads back, and the
//! shift is visible to the drift monitor's KS statistic.

mod drift;
mod layouts;
mod model;
mod pinned;
mod shifts;

use std::path::{Path, PathBuf};

use flywheel_types::dataset::coco::{ANNOTATIONS_FILE, CocoDocument};
use image::RgbImage;

use crate::common::BIN;

/// Runs `flywheel-trainer generate dataset <args> --out <dir>` and returns `dir`.
pub fn generate(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let run = std::process::Command::new(BIN)
        .args(["generate", "dataset"])
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "generate dataset {args:?} failed: {}", String::from_utf8_lossy(&run.stderr));
    out
}

/// Runs the generator expecting a refusal; returns its stderr.
pub fn refused(dir: &Path, args: &[&str]) -> String {
    let run = std::process::Command::new(BIN)
        .args(["generate", "dataset"])
        .args(args)
        .arg("--out")
        .arg(dir.join("refused"))
        .output()
        .unwrap();
    assert!(!run.status.success(), "generate dataset {args:?} should have failed");
    String::from_utf8_lossy(&run.stderr).into_owned()
}

/// Every file under `root` as (path relative to root, bytes), sorted by path.
pub fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// The images of a generated dataset (every `.png`), sorted by path.
pub fn images(root: &Path) -> Vec<(String, RgbImage)> {
    files(root)
        .into_iter()
        .filter(|(p, _)| p.ends_with(".png"))
        .map(|(p, bytes)| (p, image::load_from_memory(&bytes).unwrap().to_rgb8()))
        .collect()
}

pub fn coco(root: &Path) -> CocoDocument {
    CocoDocument::parse(&std::fs::read(root.join(ANNOTATIONS_FILE)).unwrap()).unwrap()
}

/// Mean of `f` over the images.
pub fn mean_over(images: &[(String, RgbImage)], f: impl Fn(&RgbImage) -> f64) -> f64 {
    images.iter().map(|(_, img)| f(img)).sum::<f64>() / images.len() as f64
}

/// Mean absolute difference of horizontally adjacent pixel values (0..1): high-frequency energy.
pub fn edge_energy(img: &RgbImage) -> f64 {
    let (w, h) = img.dimensions();
    let mut sum = 0.0;
    for y in 0..h {
        for x in 1..w {
            let (a, b) = (img.get_pixel(x - 1, y), img.get_pixel(x, y));
            sum += (0..3).map(|c| (a[c] as f64 - b[c] as f64).abs()).sum::<f64>();
        }
    }
    sum / (3.0 * 255.0 * (w - 1) as f64 * h as f64)
}
