//! Evaluation metrics: top-1 accuracy and mAP at IoU 0.5 (all-point interpolated average
//! precision per class, averaged over the classes present in the ground truth).

use super::yolo::{Detection, iou};

pub fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
}

/// `images`: per image, (detections, ground truth boxes as (class, [x1, y1, x2, y2])).
pub fn map50(images: &[(Vec<Detection>, Vec<(usize, [f32; 4])>)], classes: usize) -> f64 {
    let mut aps = Vec::new();
    for c in 0..classes {
        let n_gt: usize = images
            .iter()
            .map(|(_, gt)| gt.iter().filter(|(k, _)| *k == c).count())
            .sum();
        if n_gt == 0 {
            continue;
        }
        let mut dets: Vec<(f32, usize, [f32; 4])> = images
            .iter()
            .enumerate()
            .flat_map(|(i, (d, _))| {
                d.iter()
                    .filter(|x| x.class == c)
                    .map(move |x| (x.score, i, x.bbox))
            })
            .collect();
        dets.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut used: Vec<Vec<bool>> = images.iter().map(|(_, gt)| vec![false; gt.len()]).collect();
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut curve = Vec::with_capacity(dets.len());
        for (_, i, bbox) in dets {
            let gt = &images[i].1;
            let best = gt
                .iter()
                .enumerate()
                .filter(|(_, (k, _))| *k == c)
                .map(|(j, (_, g))| (j, iou(&bbox, g)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((j, o)) if o >= 0.5 && !used[i][j] => {
                    used[i][j] = true;
                    tp += 1;
                }
                _ => fp += 1,
            }
            curve.push((tp as f64 / n_gt as f64, tp as f64 / (tp + fp) as f64));
        }
        aps.push(average_precision(&curve));
    }
    if aps.is_empty() {
        0.0
    } else {
        aps.iter().sum::<f64>() / aps.len() as f64
    }
}

/// Area under the precision envelope of (recall, precision) points in detection order.
fn average_precision(curve: &[(f64, f64)]) -> f64 {
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for (k, &(r, _)) in curve.iter().enumerate() {
        if r > prev_recall {
            let envelope = curve[k..].iter().map(|&(_, p)| p).fold(0.0, f64::max);
            ap += (r - prev_recall) * envelope;
            prev_recall = r;
        }
    }
    ap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { bbox, class, score }
    }

    #[test]
    fn perfect_detections_score_one_and_misses_halve_it() {
        let gt = vec![(0, [0., 0., 10., 10.]), (0, [20., 20., 30., 30.])];
        let perfect = vec![(
            vec![
                det(0, 0.9, [0., 0., 10., 10.]),
                det(0, 0.8, [20., 20., 30., 30.]),
            ],
            gt.clone(),
        )];
        assert!((map50(&perfect, 1) - 1.0).abs() < 1e-9);
        let half = vec![(vec![det(0, 0.9, [0., 0., 10., 10.])], gt)];
        assert!((map50(&half, 1) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn wrong_class_or_place_scores_zero() {
        let gt = vec![(1, [0., 0., 10., 10.])];
        let imgs = vec![(
            vec![
                det(0, 0.9, [0., 0., 10., 10.]),
                det(1, 0.9, [50., 50., 60., 60.]),
            ],
            gt,
        )];
        assert_eq!(map50(&imgs, 2), 0.0);
    }

    #[test]
    fn accuracy_counts_matches() {
        assert_eq!(accuracy(&[0, 1, 2, 2], &[0, 1, 1, 2]), 0.75);
    }
}
