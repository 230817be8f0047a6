//! What orders a review queue: whether champion and shadow disagree on an image, and the
//! champion's lowest confidence. One definition for every place that ranks predictions for
//! review (disagreements first, then the least confident).

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
