//! Shifted datasets in every layout read back through `flywheel_types::dataset` (what the
//! operator counts with) and through the trainer's own reader (what training and profiling
//! read), with the counts the generator wrote. Shifts that leave the scene alone keep the
//! source domain's annotations for the same seed.

use std::collections::BTreeMap;
use std::path::Path;

use flywheel_api::dataset_version::DatasetVersionSpec;
use flywheel_api::training::NamedDataset;
use flywheel_types::dataset::{Counts, imagefolder, yolo};
use flywheel_vision::ImageStats;

use super::{coco, files};
use crate::common::BIN;

const COUNT: usize = 30;
/// Every shift but the object scale: the scenes (and so the annotations) are the source's.
const SAME_SCENES: &str = "texture,recolor:triangle,dark,warm,blur,noise";

/// Generates through the binary and returns the printed DatasetVersion spec.
fn generate_spec(dir: &Path, name: &str, task: &str, format: &str, domain: &str) -> DatasetVersionSpec {
    let out = dir.join(name);
    let count = COUNT.to_string();
    let run = std::process::Command::new(BIN)
        .args(["generate", "dataset", "--task", task, "--format", format, "--count", &count, "--seed", "21"])
        .args(["--domain", domain, "--severity", "0.7", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{task} {format} {domain}: {}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&run.stdout).unwrap()
}

/// Counts as the operator computes them from the files.
fn layout_counts(root: &Path, format: &str, labels: &[String]) -> Counts {
    let listing: Vec<String> = files(root).into_iter().map(|(p, _)| p).collect();
    match format {
        "coco" => {
            let doc = coco(root);
            doc.boxes_by_image().expect("valid boxes");
            doc.counts().unwrap()
        }
        "yolo" => {
            let texts: Vec<(String, String)> = listing
                .iter()
                .filter(|p| p.starts_with("labels/"))
                .map(|p| (p.clone(), std::fs::read_to_string(root.join(p)).unwrap()))
                .collect();
            assert_eq!(std::fs::read_to_string(root.join(yolo::CLASSES_FILE)).unwrap(), yolo::classes_file(labels));
            yolo::counts(&listing, texts.iter().map(|(p, t)| (p.as_str(), t.as_str())), labels).unwrap()
        }
        "imagefolder" => imagefolder::counts(&listing),
        other => panic!("{other}"),
    }
}

/// Reads the dataset the way `train` and `profile` do; returns (samples, boxes per label).
async fn trainer_counts(spec: &DatasetVersionSpec) -> (usize, BTreeMap<String, u64>, Vec<[f64; 5]>) {
    let ds = NamedDataset { name: "shifted".into(), spec: spec.clone() };
    let refs = flywheel_trainer::dataset::read_dataset(&ds, &spec.labels).await.unwrap();
    let mut per_label = BTreeMap::new();
    for r in &refs {
        let classes = r.label.into_iter().chain(r.boxes.iter().map(|b| b.class));
        for c in classes {
            *per_label.entry(spec.labels[c].clone()).or_insert(0) += 1;
        }
    }
    // Decoding checks every image and box (inside the image, positive size).
    let stats =
        flywheel_trainer::dataset::load_images(&refs, |s| Ok(ImageStats::compute(&s.image).values())).await.unwrap();
    (refs.len(), per_label, stats)
}

#[tokio::test]
async fn every_layout_of_a_shifted_dataset_reads_back_with_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let combos = [("detection", "coco"), ("detection", "yolo"), ("classification", "imagefolder")];
    let mut detection_counts = Vec::new();
    for (task, format) in combos {
        for domain in ["source", SAME_SCENES, "large,cool,texture", "small,recolor,noise"] {
            let name = format!("{task}-{format}-{domain}");
            let spec = generate_spec(dir.path(), &name, task, format, domain);
            let root = dir.path().join(&name);
            let counts = layout_counts(&root, format, &spec.labels);
            assert_eq!(counts.samples, COUNT as u64, "{name}");
            let (samples, per_label, stats) = trainer_counts(&spec).await;
            assert_eq!(samples, COUNT, "{name}");
            assert_eq!(per_label, counts.labels, "{name}: the trainer and the layout disagree");
            assert!(stats.iter().flatten().all(|v| (0.0..=1.0).contains(v)), "{name}");
            if task == "classification" {
                // Labels go round-robin.
                let expected: BTreeMap<String, u64> = spec.labels.iter().map(|l| (l.clone(), 10)).collect();
                assert_eq!(counts.labels, expected, "{name}");
            } else {
                assert!(counts.labels.values().sum::<u64>() >= COUNT as u64, "{name}: an image without boxes");
                detection_counts.push((format, domain, counts.labels));
            }
        }
    }
    // COCO and YOLO of the same seed and domain hold the same boxes; the shifts that keep the
    // scene keep the source's boxes too.
    let find = |format: &str, domain: &str| {
        detection_counts.iter().find(|(f, d, _)| *f == format && *d == domain).map(|(_, _, c)| c.clone()).unwrap()
    };
    for domain in ["source", SAME_SCENES, "large,cool,texture", "small,recolor,noise"] {
        assert_eq!(find("coco", domain), find("yolo", domain), "{domain}");
    }
    assert_eq!(find("coco", SAME_SCENES), find("coco", "source"));
    let source = coco(&dir.path().join("detection-coco-source"));
    let shifted = coco(&dir.path().join(format!("detection-coco-{SAME_SCENES}")));
    assert_eq!(shifted.annotations, source.annotations, "the same seed draws the same scenes");
    assert_eq!(shifted.images, source.images);
    let info = &shifted.extra["info"];
    assert_eq!(info["domain"], "texture,recolor:triangle,dark,warm,blur,noise");
    assert_eq!(info["severity"], 0.7);
    assert!(source.extra["info"].get("domain").is_none(), "the source domain's COCO info is unchanged");
}
