//! Supervised quality on reviewed samples: top-1 accuracy (classification) and mAP@0.5
//! (detection, all-point interpolated AP averaged over classes present in the ground truth).

use std::collections::BTreeSet;

use crate::postprocess::{Shape, iou};

/// (predictions, ground truth) per image.
pub type Pair<'a> = (&'a [Shape], &'a [Shape]);

pub fn accuracy(pairs: &[Pair]) -> Option<f64> {
    let scored: Vec<bool> = pairs
        .iter()
        .filter_map(|(pred, truth)| {
            let t = truth.first()?;
            Some(pred.iter().max_by(|a, b| a.confidence.total_cmp(&b.confidence)).is_some_and(|p| p.label == t.label))
        })
        .collect();
    if scored.is_empty() {
        return None;
    }
    Some(scored.iter().filter(|c| **c).count() as f64 / scored.len() as f64)
}

pub fn map50(pairs: &[Pair]) -> Option<f64> {
    let classes: BTreeSet<&str> = pairs.iter().flat_map(|(_, t)| t.iter().map(|s| s.label.as_str())).collect();
    if classes.is_empty() {
        return None;
    }
    let aps: Vec<f64> = classes.iter().map(|c| average_precision(pairs, c)).collect();
    Some(aps.iter().sum::<f64>() / aps.len() as f64)
}

fn average_precision(pairs: &[Pair], class: &str) -> f64 {
    let n_truth: usize = pairs.iter().map(|(_, t)| t.iter().filter(|s| s.label == class && s.bbox.is_some()).count()).sum();
    if n_truth == 0 {
        return 0.0;
    }
    // (score, image index, box)
    let mut preds: Vec<(f32, usize, [f32; 4])> = pairs
        .iter()
        .enumerate()
        .flat_map(|(i, (p, _))| p.iter().filter(|s| s.label == class).filter_map(move |s| Some((s.confidence, i, s.bbox?))))
        .collect();
    preds.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut used: Vec<Vec<bool>> = pairs.iter().map(|(_, t)| vec![false; t.len()]).collect();
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut curve = Vec::with_capacity(preds.len());
    for (_, img, b) in preds {
        let truth = pairs[img].1;
        let best = truth
            .iter()
            .enumerate()
            .filter(|(k, t)| t.label == class && !used[img][*k] && t.bbox.is_some())
            .map(|(k, t)| (k, iou(&b, &t.bbox.unwrap())))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((k, v)) if v >= 0.5 => {
                used[img][k] = true;
                tp += 1.0;
            }
            _ => fp += 1.0,
        }
        curve.push((tp / n_truth as f64, tp / (tp + fp)));
    }
    // All-point interpolation: precision envelope integrated over recall.
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for i in 0..curve.len() {
        let p_max = curve[i..].iter().map(|c| c.1).fold(0.0, f64::max);
        ap += (curve[i].0 - prev_recall) * p_max;
        prev_recall = curve[i].0;
    }
    ap
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
        let t = vec![b("a", 1.0, [0., 0., 10., 10.]), b("a", 1.0, [50., 50., 60., 60.])];
        let p = vec![b("a", 0.9, [0., 0., 10., 10.]), b("a", 0.5, [80., 80., 90., 90.])];
        assert_eq!(map50(&[(&p, &t)]), Some(0.5));
    }

    #[test]
    fn accuracy_counts_top1() {
        let c = |l: &str, conf| Shape { label: l.into(), class_id: 0, confidence: conf, bbox: None };
        let (p1, t1) = (vec![c("cat", 0.9), c("dog", 0.1)], vec![c("cat", 1.0)]);
        let (p2, t2) = (vec![c("cat", 0.6)], vec![c("dog", 1.0)]);
        assert_eq!(accuracy(&[(&p1, &t1), (&p2, &t2)]), Some(0.5));
    }
}
