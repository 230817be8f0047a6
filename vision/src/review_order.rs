//! What orders a review queue: whether champion and shadow disagree on an image, the label the
//! champion is least sure of, and a position fixed by the prediction's id (`queue_order`: a
//! stratified sample, the review service's queue and the efficacy benchmark's product order);
//! and what a reviewer's decision makes ground truth of.

use std::collections::HashMap;

use flywheel_types::Task;
use flywheel_types::prediction::Shape;

use crate::iou;

/// Champion `a` and shadow `b` disagree: another top class, or boxes that do not pair up one to
/// one by label at IoU 0.5.
pub fn disagree(task: Task, a: &[Shape], b: &[Shape]) -> bool {
    match task {
        Task::Classification => a.first().map(|s| &s.label) != b.first().map(|s| &s.label),
        Task::Detection => {
            a.len() != b.len()
                || a.iter().any(|x| {
                    !b.iter().any(|y| {
                        y.label == x.label && matches!((x.bbox, y.bbox), (Some(p), Some(q)) if iou(&p, &q) >= 0.5)
                    })
                })
        }
    }
}

/// The lowest confidence among `shapes`, 0 when there are none (nothing found is the least
/// confident answer).
pub fn lowest_confidence(shapes: &[Shape]) -> f32 {
    shapes.iter().map(|s| s.confidence).fold(None, |m: Option<f32>, c| Some(m.map_or(c, |m| m.min(c)))).unwrap_or(0.0)
}

/// The stratum the queue samples a prediction in: the label of the champion's least confident
/// shape, "" when it found nothing.
pub fn stratum(shapes: &[Shape]) -> &str {
    shapes.iter().min_by(|a, b| a.confidence.total_cmp(&b.confidence)).map_or("", |s| s.label.as_str())
}

/// A pseudo-random position in 0..1 fixed by the prediction's id (FNV-1a, then the SplitMix64
/// finaliser): the same on every run and database, unrelated to time or confidence.
pub fn spread(id: &str) -> f64 {
    let mut z = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    // The top 53 bits: exact in an f64 (and a database's DOUBLE PRECISION), below 1.
    ((z ^ (z >> 31)) >> 11) as f64 / 2f64.powi(53)
}

/// What the review queue orders a prediction by, computed once at ingest.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueKey {
    pub disagreement: bool,
    pub stratum: String,
    pub spread: f64,
}

impl QueueKey {
    pub fn new(task: Task, id: &str, champion: &[Shape], shadow: Option<&[Shape]>) -> Self {
        QueueKey {
            disagreement: shadow.is_some_and(|s| disagree(task, champion, s)),
            stratum: stratum(champion).to_string(),
            spread: spread(id),
        }
    }
}

/// Indices of `keys` in review order, a stratified sample: each part (disagreement or not, and
/// the stratum) contributes in proportion to its size, in `spread` order within it. A
/// prediction's turn is `(rank in its part by spread + 0.5) / part size`; ties go to the lower
/// spread, then the input order. So any prefix of the queue holds each part about as often as
/// the whole queue does, as a random sample would but exactly, and neither the least confident
/// nor the disagreements come first: under drift the champion's errors are confident (a whole
/// class taken for another), its least confident images are a few atypical ones, and reviewing
/// only its disagreements teaches nothing of the images it still gets right; both needed more
/// reviews than random order (docs/trainer.md, "Efficacy benchmark"). The review service's SQL
/// is the same order (`review-service/src/store.rs`).
pub fn queue_order(keys: &[QueueKey]) -> Vec<usize> {
    let mut by_spread: Vec<usize> = (0..keys.len()).collect();
    by_spread.sort_by(|&a, &b| keys[a].spread.total_cmp(&keys[b].spread));
    let mut size: HashMap<(bool, &str), usize> = HashMap::new();
    for k in keys {
        *size.entry((k.disagreement, k.stratum.as_str())).or_default() += 1;
    }
    let mut seen: HashMap<(bool, &str), usize> = HashMap::new();
    let mut turn = vec![0.0; keys.len()];
    for &i in &by_spread {
        let part = (keys[i].disagreement, keys[i].stratum.as_str());
        let r = seen.entry(part).or_default();
        turn[i] = (*r as f64 + 0.5) / size[&part] as f64;
        *r += 1;
    }
    let mut order = by_spread;
    order.sort_by(|&a, &b| turn[a].total_cmp(&turn[b]).then(keys[a].spread.total_cmp(&keys[b].spread)));
    order
}

/// Most shapes one review may hold.
pub const MAX_REVIEW_SHAPES: usize = 1000;

/// The ground truth a reviewer's decision makes of a `width`x`height` prediction: accepting
/// (`corrected` None) takes the champion's shapes, a correction its own shapes, which must name
/// known labels (when `labels` is not empty; their class ids are set from it) and, for
/// detection, boxes inside the image; classification keeps one label. Every shape gets
/// confidence 1. `Err` is a message for the reviewer (a bad request).
pub fn ground_truth(
    task: Task,
    labels: &[String],
    (width, height): (u32, u32),
    champion: &[Shape],
    corrected: Option<&[Shape]>,
) -> Result<Vec<Shape>, String> {
    if corrected.is_some_and(|s| s.len() > MAX_REVIEW_SHAPES) {
        return Err(format!("a review holds at most {MAX_REVIEW_SHAPES} shapes"));
    }
    let mut shapes = corrected.unwrap_or(champion).to_vec();
    if task == Task::Classification {
        shapes.truncate(1);
        if shapes.is_empty() {
            return Err("a classification review needs one label".into());
        }
    }
    let (w, h) = (width as f32, height as f32);
    for s in &mut shapes {
        if !labels.is_empty() {
            s.class_id = labels
                .iter()
                .position(|l| l == &s.label)
                .ok_or_else(|| format!("unknown label {:?}; known labels: {labels:?}", s.label))?;
        }
        s.confidence = 1.0;
        match (task, s.bbox) {
            (Task::Detection, None) => return Err("detection shapes need a box [x1, y1, x2, y2]".into()),
            (Task::Detection, Some(b)) => {
                let ok = b.iter().all(|v| v.is_finite())
                    && b[0] >= 0.0
                    && b[1] >= 0.0
                    && b[0] < b[2]
                    && b[1] < b[3]
                    && b[2] <= w + 0.5
                    && b[3] <= h + 0.5;
                if !ok {
                    return Err(format!("box {b:?} is not inside the {w}x{h} image with x1<x2, y1<y2"));
                }
            }
            (Task::Classification, _) => s.bbox = None,
        }
    }
    Ok(shapes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(label: &str, conf: f32, bx: [f32; 4]) -> Shape {
        Shape { label: label.into(), class_id: 0, confidence: conf, bbox: Some(bx) }
    }

    #[test]
    fn boxes_agree_when_they_pair_up_by_label_and_overlap() {
        let a = [b("cat", 0.9, [0., 0., 10., 10.]), b("dog", 0.4, [20., 20., 30., 30.])];
        let same = [b("dog", 0.5, [20., 20., 30., 31.]), b("cat", 0.8, [0., 0., 10., 11.])];
        assert!(!disagree(Task::Detection, &a, &same));
        let moved = [b("cat", 0.9, [5., 5., 15., 15.]), b("dog", 0.4, [20., 20., 30., 30.])];
        assert!(disagree(Task::Detection, &a, &moved));
        assert!(disagree(Task::Detection, &a, &a[..1]));
        assert_eq!(lowest_confidence(&a), 0.4);
        assert_eq!(lowest_confidence(&[]), 0.0);
    }

    #[test]
    fn the_queue_samples_each_part_in_proportion_to_its_size() {
        let key = |d: bool, s: &str, spread: f64| QueueKey { disagreement: d, stratum: s.into(), spread };
        let keys = [
            key(false, "cat", 0.1),
            key(false, "cat", 0.2),
            key(false, "cat", 0.3),
            key(false, "cat", 0.4),
            key(true, "cat", 0.9),
            key(false, "dog", 0.8),
            key(false, "", 0.6),
            key(false, "dog", 0.7),
        ];
        // Turns (rank + 0.5) / size: cat 1/8, 3/8, 5/8, 7/8; dog 1/4, 3/4; nothing found and the
        // disagreement 1/2 (the lower spread first): two cats to each dog, although every dog's
        // spread is above every cat's, and the least confident (nothing found) and the
        // disagreement in the middle, as their parts' sizes have it.
        assert_eq!(queue_order(&keys), [0, 7, 1, 6, 4, 2, 5, 3]);
        // Ties (the same turn) go to the lower spread, then keep the input order.
        assert_eq!(queue_order(&[key(false, "a", 0.5), key(false, "b", 0.4)]), [1, 0]);
        assert_eq!(queue_order(&[key(false, "a", 0.5), key(false, "b", 0.5)]), [0, 1]);
        let champion = [b("dog", 0.9, [0., 0., 10., 10.]), b("cat", 0.3, [20., 20., 30., 30.])];
        assert_eq!(QueueKey::new(Task::Detection, "p1", &champion, None), key(false, "cat", spread("p1")));
        assert!(QueueKey::new(Task::Detection, "p1", &champion, Some(&champion[..1])).disagreement);
        assert_eq!(stratum(&[]), "");
    }

    #[test]
    fn spread_is_fixed_by_the_id_and_covers_the_unit_interval() {
        assert_eq!(spread("0190-a"), spread("0190-a"));
        let v: Vec<f64> = (0..1000).map(|i| spread(&format!("0190abcd-{i:04}"))).collect();
        assert!(v.iter().all(|s| (0.0..1.0).contains(s)));
        // Sequential ids (UUIDv7 differ in their last characters) still spread evenly.
        for q in 0..4 {
            let n = v.iter().filter(|s| (q as f64 / 4.0..(q + 1) as f64 / 4.0).contains(*s)).count();
            assert!((200..300).contains(&n), "quarter {q}: {n}");
        }
    }

    #[test]
    fn a_decision_becomes_ground_truth_only_with_known_labels_and_boxes_inside_the_image() {
        let labels = vec!["cat".to_string(), "dog".to_string()];
        let dog = |b| vec![Shape { label: "dog".into(), class_id: 0, confidence: 0.3, bbox: Some(b) }];
        let champion = dog([1.0, 1.0, 5.0, 5.0]);
        let accepted = ground_truth(Task::Detection, &labels, (8, 8), &champion, None).unwrap();
        assert_eq!((accepted[0].class_id, accepted[0].confidence), (1, 1.0));
        assert!(ground_truth(Task::Detection, &labels, (8, 8), &champion, Some(&dog([1.0, 1.0, 20.0, 5.0]))).is_err());
        let horse = [Shape { label: "horse".into(), class_id: 0, confidence: 1.0, bbox: None }];
        assert!(ground_truth(Task::Classification, &labels, (8, 8), &champion, Some(&horse)).is_err());
        let two = [dog([1.0, 1.0, 5.0, 5.0]), dog([2.0, 2.0, 6.0, 6.0])].concat();
        let one = ground_truth(Task::Classification, &labels, (8, 8), &champion, Some(&two)).unwrap();
        assert_eq!((one.len(), one[0].bbox), (1, None));
        assert!(ground_truth(Task::Classification, &labels, (8, 8), &[], None).is_err());
    }
}
