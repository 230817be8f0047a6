//! Supervised quality on reviewed samples: top-1 accuracy (classification) and mAP@0.5
//! (detection), computed by flywheel-vision's one definition of the metrics (the trainer's
//! offline figures use the same), with classes named by label.

use flywheel_vision::quality::{self, ImageBoxes, Predicted, Truth};

use crate::record::Shape;

/// (predictions, ground truth) per image.
pub type Pair<'a> = (&'a [Shape], &'a [Shape]);

/// Top-1 accuracy over the pairs whose ground truth names a class.
pub fn accuracy(pairs: &[Pair]) -> Option<f64> {
    let samples: Vec<(Vec<(&str, f32)>, &str)> = pairs
        .iter()
        .filter_map(|(pred, truth)| {
            let t = truth.first()?;
            Some((pred.iter().map(|p| (p.label.as_str(), p.confidence)).collect(), t.label.as_str()))
        })
        .collect();
    quality::accuracy(&samples).map(|a| a.top1)
}

/// COCO-style mAP@0.5 over the classes present in the ground truth.
pub fn map50(pairs: &[Pair]) -> Option<f64> {
    let images: Vec<ImageBoxes<&str>> = pairs
        .iter()
        .map(|(pred, truth)| ImageBoxes {
            predicted: pred
                .iter()
                .filter_map(|s| Some(Predicted { class: s.label.as_str(), bbox: s.bbox?, score: s.confidence }))
                .collect(),
            truth: truth.iter().filter_map(|s| Some(Truth { class: s.label.as_str(), bbox: s.bbox? })).collect(),
        })
        .collect();
    quality::map50(&images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(label: &str, conf: f32, bx: [f32; 4]) -> Shape {
        Shape { label: label.into(), class_id: 0, confidence: conf, bbox: Some(bx) }
    }

    #[test]
    fn perfect_detections_score_one() {
        let t = vec![b("a", 1.0, [0., 0., 10., 10.]), b("b", 1.0, [20., 20., 30., 30.])];
        let p = vec![b("a", 0.9, [0., 0., 10., 11.]), b("b", 0.8, [20., 20., 30., 30.])];
        assert_eq!(map50(&[(&p, &t)]), Some(1.0));
    }

    #[test]
    fn a_missed_box_halves_recall() {
        // Recall 0.5 at precision 1: COCO's 101 recall points 0, 0.01, .., 0.5 score.
        let t = vec![b("a", 1.0, [0., 0., 10., 10.]), b("a", 1.0, [50., 50., 60., 60.])];
        let p = vec![b("a", 0.9, [0., 0., 10., 10.]), b("a", 0.5, [80., 80., 90., 90.])];
        assert_eq!(map50(&[(&p, &t)]), Some(51.0 / 101.0));
    }

    #[test]
    fn accuracy_counts_top1() {
        let c = |l: &str, conf| Shape { label: l.into(), class_id: 0, confidence: conf, bbox: None };
        let (p1, t1) = (vec![c("cat", 0.9), c("dog", 0.1)], vec![c("cat", 1.0)]);
        let (p2, t2) = (vec![c("cat", 0.6)], vec![c("dog", 1.0)]);
        assert_eq!(accuracy(&[(&p1, &t1), (&p2, &t2)]), Some(0.5));
    }
}
