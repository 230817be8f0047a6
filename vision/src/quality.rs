//! Quality metrics, one definition for the trainer's offline evaluation and the server's live
//! gauges, so a ModelVersion's recorded mAP and the reviewed-sample mAP of the same model are the
//! same figure.
//!
//! Detection follows the COCO evaluation (pycocotools' `COCOeval`, bounding boxes, area range
//! "all"): per image and class, predictions in descending score order (at most
//! [`MAX_DETECTIONS`] per image and class) are matched greedily to the unmatched ground-truth box
//! of highest IoU at or above the threshold; precision is made monotone and sampled at the 101
//! recall points 0, 0.01, …, 1; AP is their mean. mAP averages AP over the classes that have
//! ground truth, at IoU 0.5 (`map50`) and over the ten thresholds 0.50, 0.55, …, 0.95 (`map`).
//! Classification reports top-1 and top-5 accuracy.

use std::collections::BTreeMap;

use crate::boxes::iou;

/// Predictions kept per image and class, as COCO's `maxDets` of 100.
pub const MAX_DETECTIONS: usize = 100;

/// The ten IoU thresholds of COCO's mAP@[.5:.95].
pub const IOU_THRESHOLDS: [f64; 10] = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];

/// A predicted box; `class` is whatever names a class for the caller (an index or a label).
#[derive(Clone, Debug, PartialEq)]
pub struct Predicted<K> {
    pub class: K,
    /// [x1, y1, x2, y2], in the same coordinates as the ground truth.
    pub bbox: [f32; 4],
    pub score: f32,
}

/// A ground-truth box.
#[derive(Clone, Debug, PartialEq)]
pub struct Truth<K> {
    pub class: K,
    pub bbox: [f32; 4],
}

/// One image's predictions and ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBoxes<K> {
    pub predicted: Vec<Predicted<K>>,
    pub truth: Vec<Truth<K>>,
}

/// Average precision of one class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassAp {
    /// Mean over the ten IoU thresholds.
    pub ap: f64,
    /// At IoU 0.5.
    pub ap50: f64,
    /// Ground-truth boxes of the class.
    pub truths: usize,
}

/// COCO-style detection quality.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectionQuality<K: Ord> {
    /// mAP@[.5:.95].
    pub map: f64,
    /// mAP@.5.
    pub map50: f64,
    /// Every class with ground truth.
    pub per_class: BTreeMap<K, ClassAp>,
}

/// Detection quality over `images`; `None` when no image has a ground-truth box.
pub fn detection_quality<K: Ord + Clone>(images: &[ImageBoxes<K>]) -> Option<DetectionQuality<K>> {
    let mut classes: BTreeMap<K, usize> = BTreeMap::new();
    for t in images.iter().flat_map(|i| &i.truth) {
        *classes.entry(t.class.clone()).or_default() += 1;
    }
    if classes.is_empty() {
        return None;
    }
    let per_class: BTreeMap<K, ClassAp> = classes
        .into_iter()
        .map(|(class, truths)| {
            let aps = IOU_THRESHOLDS.map(|t| class_ap(images, &class, truths, t));
            let ap = aps.iter().sum::<f64>() / aps.len() as f64;
            (class, ClassAp { ap, ap50: aps[0], truths })
        })
        .collect();
    let n = per_class.len() as f64;
    Some(DetectionQuality {
        map: per_class.values().map(|c| c.ap).sum::<f64>() / n,
        map50: per_class.values().map(|c| c.ap50).sum::<f64>() / n,
        per_class,
    })
}

/// mAP@.5 alone, as [`detection_quality`] computes it but at one threshold instead of ten (the
/// live figure a server recomputes as reviews arrive); `None` without ground truth.
pub fn map50<K: Ord + Clone>(images: &[ImageBoxes<K>]) -> Option<f64> {
    let mut classes: BTreeMap<K, usize> = BTreeMap::new();
    for t in images.iter().flat_map(|i| &i.truth) {
        *classes.entry(t.class.clone()).or_default() += 1;
    }
    if classes.is_empty() {
        return None;
    }
    let n = classes.len() as f64;
    Some(classes.iter().map(|(class, &truths)| class_ap(images, class, truths, IOU_THRESHOLDS[0])).sum::<f64>() / n)
}

/// AP of `class` at one IoU threshold: COCO's 101-point interpolated precision.
fn class_ap<K: PartialEq>(images: &[ImageBoxes<K>], class: &K, truths: usize, threshold: f64) -> f64 {
    // (score, true positive) of every kept prediction, images in order, each by descending score:
    // the order a stable sort by score then keeps for ties, as COCOeval's mergesort does.
    let mut scored: Vec<(f32, bool)> = Vec::new();
    for image in images {
        let gts: Vec<&[f32; 4]> = image.truth.iter().filter(|t| &t.class == class).map(|t| &t.bbox).collect();
        let mut preds: Vec<&Predicted<K>> = image.predicted.iter().filter(|p| &p.class == class).collect();
        preds.sort_by(|a, b| b.score.total_cmp(&a.score));
        preds.truncate(MAX_DETECTIONS);
        let mut matched = vec![false; gts.len()];
        for p in preds {
            // The unmatched truth of highest IoU at or above the threshold; a later one wins a
            // tie, as in COCOeval.
            let mut best: Option<(usize, f64)> = None;
            for (g, gt) in gts.iter().enumerate() {
                let overlap = iou(&p.bbox, gt) as f64;
                if matched[g] || overlap < best.map_or(threshold.min(1.0 - 1e-10), |b| b.1) {
                    continue;
                }
                best = Some((g, overlap));
            }
            if let Some((g, _)) = best {
                matched[g] = true;
            }
            scored.push((p.score, best.is_some()));
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut recall = Vec::with_capacity(scored.len());
    let mut precision = Vec::with_capacity(scored.len());
    for (_, hit) in scored {
        if hit {
            tp += 1.0
        } else {
            fp += 1.0
        }
        recall.push(tp / truths as f64);
        // COCOeval adds machine epsilon to the denominator; it is never zero here, and without
        // it perfect predictions score exactly 1.
        precision.push(tp / (tp + fp));
    }
    // Precision envelope: the best precision at this recall or any higher one.
    for i in (1..precision.len()).rev() {
        precision[i - 1] = precision[i - 1].max(precision[i]);
    }
    let points = 101;
    let sum: f64 = (0..points)
        .map(|k| {
            let r = k as f64 / (points - 1) as f64;
            let at = recall.partition_point(|&x| x < r);
            precision.get(at).copied().unwrap_or(0.0)
        })
        .sum();
    sum / points as f64
}

/// Classification accuracy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accuracy {
    /// The top-scored class is the true one.
    pub top1: f64,
    /// The true class is among the five top-scored ones.
    pub top5: f64,
    /// Samples scored.
    pub samples: usize,
}

/// Accuracy over (class scores, true class) per sample; `None` without samples. Scores need not
/// be sorted or complete (a sample with no scores counts as wrong); ties keep the given order.
pub fn accuracy<K: PartialEq>(samples: &[(Vec<(K, f32)>, K)]) -> Option<Accuracy> {
    if samples.is_empty() {
        return None;
    }
    let (mut top1, mut top5) = (0usize, 0usize);
    for (scores, truth) in samples {
        let mut ranked: Vec<&(K, f32)> = scores.iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        if let Some(rank) = ranked.iter().position(|(k, _)| k == truth) {
            top1 += usize::from(rank == 0);
            top5 += usize::from(rank < 5);
        }
    }
    let n = samples.len() as f64;
    Some(Accuracy { top1: top1 as f64 / n, top5: top5 as f64 / n, samples: samples.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(predicted: &[(usize, f32, [f32; 4])], truth: &[(usize, [f32; 4])]) -> ImageBoxes<usize> {
        ImageBoxes {
            predicted: predicted.iter().map(|&(class, score, bbox)| Predicted { class, bbox, score }).collect(),
            truth: truth.iter().map(|&(class, bbox)| Truth { class, bbox }).collect(),
        }
    }

    #[test]
    fn exact_boxes_score_one_at_every_threshold() {
        let q = detection_quality(&[image(
            &[(0, 0.9, [0., 0., 10., 10.]), (1, 0.8, [20., 20., 30., 30.])],
            &[(0, [0., 0., 10., 10.]), (1, [20., 20., 30., 30.])],
        )])
        .unwrap();
        assert!((q.map - 1.0).abs() < 1e-9 && (q.map50 - 1.0).abs() < 1e-9, "{q:?}");
        assert_eq!(q.per_class.len(), 2);
    }

    #[test]
    fn half_recall_samples_51_of_101_recall_points() {
        // One of two boxes found, with precision 1: recall 0 .. 0.5 is covered.
        let q = detection_quality(&[image(
            &[(0, 0.9, [0., 0., 10., 10.]), (0, 0.5, [80., 80., 90., 90.])],
            &[(0, [0., 0., 10., 10.]), (0, [50., 50., 60., 60.])],
        )])
        .unwrap();
        assert!((q.map50 - 51.0 / 101.0).abs() < 1e-9, "{q:?}");
    }

    #[test]
    fn map50_alone_agrees_with_the_full_figures() {
        let images = [
            image(
                &[(0, 0.9, [0., 0., 10., 10.]), (1, 0.8, [20., 20., 31., 30.]), (0, 0.3, [50., 50., 60., 60.])],
                &[(0, [0., 0., 10., 10.]), (1, [20., 20., 30., 30.])],
            ),
            image(&[(1, 0.7, [0., 0., 5., 5.])], &[(1, [40., 40., 50., 50.])]),
        ];
        assert_eq!(map50(&images), Some(detection_quality(&images).unwrap().map50));
        assert_eq!(map50::<usize>(&[]), None);
    }

    #[test]
    fn a_loose_box_counts_at_low_thresholds_only() {
        // IoU 100/121 ≈ 0.826: a hit at 0.50 .. 0.80, a miss at 0.85 .. 0.95.
        let q = detection_quality(&[image(&[(0, 0.9, [0., 0., 11., 11.])], &[(0, [0., 0., 10., 10.])])]).unwrap();
        assert!((q.map50 - 1.0).abs() < 1e-9);
        assert!((q.map - 0.7).abs() < 1e-9, "{q:?}");
    }

    #[test]
    fn a_truth_box_is_matched_once_and_wrong_classes_miss() {
        let q = detection_quality(&[image(
            &[(0, 0.9, [0., 0., 10., 10.]), (0, 0.8, [0., 0., 10., 10.]), (1, 0.7, [0., 0., 10., 10.])],
            &[(0, [0., 0., 10., 10.])],
        )])
        .unwrap();
        // Class 0: the duplicate is a false positive after full recall, so AP stays 1; class 1
        // has no ground truth and is not averaged.
        assert_eq!(q.per_class.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert!((q.map50 - 1.0).abs() < 1e-9);
        let none = detection_quality(&[image(&[(1, 0.7, [0., 0., 10., 10.])], &[(0, [0., 0., 10., 10.])])]).unwrap();
        assert_eq!(none.map50, 0.0);
        let elsewhere = detection_quality(&[image(&[(0, 0.9, [50., 50., 60., 60.])], &[(0, [0., 0., 10., 10.])])]);
        assert_eq!(elsewhere.unwrap().map, 0.0);
        assert!(detection_quality(&[image(&[(1, 0.7, [0., 0., 1., 1.])], &[])]).is_none());
    }

    #[test]
    fn top1_and_top5_accuracy() {
        let s = |scores: &[f32], truth| (scores.iter().copied().enumerate().collect::<Vec<_>>(), truth);
        let samples = vec![
            s(&[0.1, 0.9, 0.0], 1),
            s(&[0.9, 0.05, 0.05], 2),
            s(&[0.3, 0.2, 0.1, 0.05, 0.04, 0.01, 0.3], 5),
            (vec![], 0),
        ];
        let a = accuracy(&samples).unwrap();
        assert_eq!((a.top1, a.top5, a.samples), (0.25, 0.5, 4));
        assert!(accuracy::<usize>(&[]).is_none());
    }
}
