//! Champion and shadow quality on reviewed samples: what the promotion gate compares. One
//! definition for the inference server (its own review index) and the review service (all
//! replicas' reviews in SQL): top-1 accuracy (classification) or mAP@0.5 (detection) computed by
//! [`crate::quality`], over the samples both models predicted, classes named by label.

use flywheel_types::Task;
use flywheel_types::prediction::Shape;
use serde::{Deserialize, Serialize};

use crate::quality::{self, ImageBoxes, Predicted, Truth};

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

/// The metric's name for a task: `mAP50` or `accuracy`.
pub fn metric_name(task: Task) -> &'static str {
    match task {
        Task::Classification => "accuracy",
        Task::Detection => "mAP50",
    }
}

/// Champion and shadow quality on the same reviewed samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    /// `mAP50` (detection) or `accuracy` (classification).
    pub metric: String,
    /// Reviewed samples both scores are computed on.
    pub reviewed_samples: usize,
    /// None until a sample is scored, never 0 for "unknown".
    pub champion: Option<f64>,
    pub shadow: Option<f64>,
}

/// What one reviewed sample contributes: both models' shapes and the ground truth.
#[derive(Clone, Debug)]
pub struct Scored {
    pub champion: Vec<Shape>,
    pub shadow: Option<Vec<Shape>>,
    pub truth: Vec<Shape>,
}

/// The scores over `scored`; the shadow's only `with_shadow`.
pub fn quality(task: Task, scored: &[Scored], with_shadow: bool) -> Quality {
    let score = |pred: &dyn Fn(&Scored) -> Option<&[Shape]>| {
        let pairs: Vec<Pair> = scored.iter().filter_map(|s| Some((pred(s)?, s.truth.as_slice()))).collect();
        match task {
            Task::Classification => accuracy(&pairs),
            Task::Detection => map50(&pairs),
        }
    };
    Quality {
        metric: metric_name(task).to_string(),
        reviewed_samples: scored.len(),
        champion: score(&|s: &Scored| Some(s.champion.as_slice())),
        shadow: with_shadow.then(|| score(&|s: &Scored| s.shadow.as_deref())).flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(label: &str, conf: f32, bx: [f32; 4]) -> Shape {
        Shape { label: label.into(), class_id: 0, confidence: conf, bbox: Some(bx) }
    }

    fn c(label: &str, conf: f32) -> Shape {
        Shape { label: label.into(), class_id: 0, confidence: conf, bbox: None }
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
        let (p1, t1) = (vec![c("cat", 0.9), c("dog", 0.1)], vec![c("cat", 1.0)]);
        let (p2, t2) = (vec![c("cat", 0.6)], vec![c("dog", 1.0)]);
        assert_eq!(accuracy(&[(&p1, &t1), (&p2, &t2)]), Some(0.5));
    }

    #[test]
    fn both_models_are_scored_on_the_same_samples() {
        let scored = [
            Scored { champion: vec![c("cat", 0.9)], shadow: Some(vec![c("dog", 0.8)]), truth: vec![c("dog", 1.0)] },
            Scored { champion: vec![c("cat", 0.9)], shadow: Some(vec![c("cat", 0.8)]), truth: vec![c("cat", 1.0)] },
        ];
        let q = quality(Task::Classification, &scored, true);
        assert_eq!(
            q,
            Quality { metric: "accuracy".into(), reviewed_samples: 2, champion: Some(0.5), shadow: Some(1.0) }
        );
        assert_eq!(quality(Task::Classification, &scored, false).shadow, None);
        assert_eq!(quality(Task::Detection, &[], true).champion, None);
    }
}
