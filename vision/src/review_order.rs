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
}
