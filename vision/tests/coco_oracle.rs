//! The detection metric against pycocotools' COCOeval on generated cases: noisy copies of the
//! ground truth, duplicates, wrong classes and false positives over several images and classes.

use std::process::Command;

use flywheel_vision::quality::{ImageBoxes, Predicted, Truth, detection_quality};
use serde_json::json;

/// A small deterministic generator (SplitMix64), so each case is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() * n as f64) as usize % n
    }
}

fn case(seed: u64) -> Vec<ImageBoxes<usize>> {
    let mut rng = Rng(seed);
    let classes = 3;
    (0..12)
        .map(|_| {
            let mut image = ImageBoxes { predicted: Vec::new(), truth: Vec::new() };
            for _ in 0..rng.below(6) {
                let (x, y) = (rng.next() * 200.0, rng.next() * 200.0);
                let (w, h) = (8.0 + rng.next() * 60.0, 8.0 + rng.next() * 60.0);
                let class = rng.below(classes);
                image.truth.push(Truth { class, bbox: [x as f32, y as f32, (x + w) as f32, (y + h) as f32] });
                // Found most of the time, with a jitter that spreads IoUs over 0.3 .. 1.
                for _ in 0..usize::from(rng.next() < 0.8) + usize::from(rng.next() < 0.15) {
                    let class = if rng.next() < 0.1 { rng.below(classes) } else { class };
                    let mut j = |v: f64, s: f64| (v + (rng.next() - 0.5) * s) as f32;
                    let bbox = [j(x, w * 0.3), j(y, h * 0.3), j(x + w, w * 0.3), j(y + h, h * 0.3)];
                    image.predicted.push(Predicted { class, bbox, score: rng.next() as f32 });
                }
            }
            for _ in 0..rng.below(3) {
                let (x, y) = (rng.next() * 200.0, rng.next() * 200.0);
                let bbox = [x as f32, y as f32, (x + 20.0) as f32, (y + 30.0) as f32];
                image.predicted.push(Predicted { class: rng.below(classes), bbox, score: rng.next() as f32 * 0.6 });
            }
            image
        })
        .collect()
}

/// (mAP@[.5:.95], mAP@.5, per-class AP@[.5:.95]) from pycocotools.
fn pycocotools(images: &[ImageBoxes<usize>]) -> (f64, f64, Vec<f64>) {
    let xywh = |b: &[f32; 4]| vec![b[0] as f64, b[1] as f64, (b[2] - b[0]) as f64, (b[3] - b[1]) as f64];
    let mut annotations = Vec::new();
    let mut results = Vec::new();
    for (i, image) in images.iter().enumerate() {
        for t in &image.truth {
            let b = xywh(&t.bbox);
            annotations.push(json!({"id": annotations.len() + 1, "image_id": i + 1, "category_id": t.class + 1,
                "bbox": b, "area": b[2] * b[3], "iscrowd": 0}));
        }
        for p in &image.predicted {
            results
                .push(json!({"image_id": i + 1, "category_id": p.class + 1, "bbox": xywh(&p.bbox), "score": p.score}));
        }
    }
    let gt = json!({
        "info": {},
        "images": (1..=images.len()).map(|i| json!({"id": i, "width": 300, "height": 300})).collect::<Vec<_>>(),
        "annotations": annotations,
        "categories": (1..=3).map(|c| json!({"id": c, "name": format!("c{c}")})).collect::<Vec<_>>(),
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gt.json"), gt.to_string()).unwrap();
    std::fs::write(dir.path().join("dt.json"), serde_json::Value::Array(results).to_string()).unwrap();
    let script = r#"
import contextlib, io, json, sys
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1] + "/gt.json")
    dt = gt.loadRes(sys.argv[1] + "/dt.json")
    e = COCOeval(gt, dt, "bbox")
    e.evaluate(); e.accumulate(); e.summarize()
p = e.eval["precision"][:, :, :, 0, -1]  # [T, R, K] at area "all", maxDets 100
per_class = [float(np.mean(p[:, :, k])) if (p[:, :, k] > -1).all() else None for k in range(p.shape[2])]
print(json.dumps({"map": e.stats[0], "map50": e.stats[1], "per_class": per_class}))
"#;
    let out = Command::new(flywheel_test_support::venv_bin("python"))
        .args(["-c", script])
        .arg(dir.path())
        .output()
        .expect("running the venv's python");
    assert!(out.status.success(), "pycocotools failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let per_class = v["per_class"].as_array().unwrap().iter().filter_map(|x| x.as_f64()).collect();
    (v["map"].as_f64().unwrap(), v["map50"].as_f64().unwrap(), per_class)
}

#[test]
fn detection_quality_equals_pycocotools() {
    for seed in 1..=6 {
        let images = case(seed);
        let ours = detection_quality(&images).expect("the cases have ground truth");
        let (map, map50, per_class) = pycocotools(&images);
        let ours_per_class: Vec<f64> = ours.per_class.values().map(|c| c.ap).collect();
        assert!((ours.map - map).abs() < 1e-6, "seed {seed}: mAP {} vs pycocotools {map}", ours.map);
        assert!((ours.map50 - map50).abs() < 1e-6, "seed {seed}: mAP@.5 {} vs pycocotools {map50}", ours.map50);
        assert_eq!(ours_per_class.len(), per_class.len(), "seed {seed}: classes with ground truth");
        for (a, b) in ours_per_class.iter().zip(&per_class) {
            assert!((a - b).abs() < 1e-6, "seed {seed}: per-class AP {ours_per_class:?} vs {per_class:?}");
        }
        assert!(ours.map50 > 0.2 && ours.map50 < 0.95, "seed {seed}: a case that tests something ({})", ours.map50);
    }
}
