//! Output decoding shared by the inference server (answers) and the trainer (evaluation and
//! profiling): classification scores → top-k classes, YOLO-style tensors → candidate boxes.
//! Non-maximum suppression is [`crate::nms`].
//!
//! YOLO layouts, per image: `[4 + C, A]` (YOLOv8/YOLO11: fields first, no objectness),
//! `[A, 4 + C]` (fields last, no objectness) and `[A, 5 + C]` (YOLOv5/YOLOv7: objectness after
//! the box); boxes are centre x, centre y, width, height in input pixels.

use crate::boxes::Candidate;

/// A YOLO output this decoder cannot read, with the shape it got.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("output shape {shape:?} is not a YOLO output for {classes} classes: {reason}")]
pub struct LayoutError {
    pub shape: Vec<usize>,
    pub classes: usize,
    pub reason: String,
}

/// Where a YOLO output keeps its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YoloLayout {
    /// Fields along dimension 1 (`[N, fields, anchors]`) rather than dimension 2.
    pub channels_first: bool,
    /// A fifth field, objectness, multiplies every class score.
    pub objectness: bool,
    pub classes: usize,
    pub anchors: usize,
}

impl YoloLayout {
    /// The layout of an `[N, D1, D2]` output for `classes` classes. `objectness` says whether the
    /// model has an objectness field; `None` infers it: fields first means none, `5 + C` fields
    /// last means one, `4 + C` fields last means none. With no classes known, the smaller axis
    /// holds the fields.
    pub fn detect(shape: &[usize], classes: usize, objectness: Option<bool>) -> Result<Self, LayoutError> {
        let bad = |reason: &str| LayoutError { shape: shape.to_vec(), classes, reason: reason.to_string() };
        let &[_, d1, d2] = shape else {
            return Err(bad("expected 3 dimensions [N, fields, anchors] or [N, anchors, fields]"));
        };
        let layout = |channels_first: bool, objectness: bool| {
            let (fields, anchors) = if channels_first { (d1, d2) } else { (d2, d1) };
            let head = if objectness { 5 } else { 4 };
            if fields <= head {
                return Err(bad("no class scores"));
            }
            Ok(Self { channels_first, objectness, classes: fields - head, anchors })
        };
        match objectness {
            Some(obj) => {
                let fields = classes + if obj { 5 } else { 4 };
                if classes == 0 {
                    layout(d1 <= d2, obj)
                } else if d1 == fields {
                    layout(true, obj)
                } else if d2 == fields {
                    layout(false, obj)
                } else {
                    Err(bad(&format!("neither axis has {fields} fields per anchor")))
                }
            }
            None if d1 == 4 + classes => layout(true, false),
            None if d2 == 5 + classes => layout(false, true),
            None if d2 == 4 + classes => layout(false, false),
            None => {
                Err(bad("expected [N, 4 + classes, anchors], [N, anchors, 4 + classes] or [N, anchors, 5 + classes]"))
            }
        }
    }

    /// Values per anchor.
    pub fn fields(&self) -> usize {
        self.classes + self.class_offset()
    }

    /// Index of the first class score among an anchor's fields.
    pub fn class_offset(&self) -> usize {
        if self.objectness { 5 } else { 4 }
    }

    /// Values of one image.
    pub fn len(&self) -> usize {
        self.fields() * self.anchors
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A candidate box in input pixels [x1, y1, x2, y2] with its best class and score.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub class: usize,
    pub score: f32,
}

impl Candidate for Detection {
    fn class(&self) -> usize {
        self.class
    }
    fn bbox(&self) -> &[f32; 4] {
        &self.bbox
    }
    fn score(&self) -> f32 {
        self.score
    }
}

/// Centre x, centre y, width, height → [x1, y1, x2, y2].
pub fn xyxy(cx: f32, cy: f32, w: f32, h: f32) -> [f32; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

/// Candidate boxes of one image (`layout.len()` values in the layout's order) whose score (best
/// class score × objectness) reaches `threshold`, boxes as centre and size in input pixels. NaN
/// scores never pass. Other box conventions: [`crate::detect::decode_yolo_boxes`].
pub fn decode_yolo(layout: &YoloLayout, data: &[f32], threshold: f32) -> Vec<Detection> {
    debug_assert!(data.len() >= layout.len(), "one image of the layout");
    crate::detect::decode_yolo_boxes(layout, data, threshold, &crate::detect::BoxDecode::default())
}

/// Softmax of one row of logits.
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// The `top_k` (at least one) best classes of one image's scores as (class, probability), best
/// first, keeping those at or above `threshold`. `apply_softmax` turns logits into probabilities.
pub fn top_classes(scores: &[f32], apply_softmax: bool, top_k: usize, threshold: f32) -> Vec<(usize, f32)> {
    let probs = if apply_softmax { softmax(scores) } else { scores.to_vec() };
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    idx.into_iter().take(top_k.max(1)).filter(|&i| probs[i] >= threshold).map(|i| (i, probs[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nms;

    #[test]
    fn layouts_are_recognised() {
        let v8 = YoloLayout::detect(&[1, 7, 64], 3, None).unwrap();
        assert!(v8.channels_first && !v8.objectness && v8.anchors == 64);
        let v5 = YoloLayout::detect(&[1, 64, 8], 3, None).unwrap();
        assert!(!v5.channels_first && v5.objectness);
        assert!(YoloLayout::detect(&[1, 9, 9], 3, None).is_err());
        // Declared objectness: the axis with 5 + C fields, either way round.
        let declared = YoloLayout::detect(&[1, 8, 64], 3, Some(true)).unwrap();
        assert!(declared.channels_first && declared.objectness);
        assert!(YoloLayout::detect(&[1, 64, 8], 3, Some(false)).is_err());
        assert!(YoloLayout::detect(&[1, 64], 3, None).is_err());
    }

    #[test]
    fn fields_first_boxes_with_nms() {
        // 2 classes, 3 anchors, fields first: anchors 0 and 1 overlap (class 0), 2 is class 1.
        let data: Vec<f32> = [
            [20.0, 21.0, 70.0],
            [20.0, 20.0, 70.0],
            [10.0, 10.0, 20.0],
            [10.0, 10.0, 20.0],
            [0.9, 0.8, 0.1],
            [0.0, 0.1, 0.7],
        ]
        .concat();
        let layout = YoloLayout::detect(&[1, 6, 3], 2, Some(false)).unwrap();
        let kept = nms(decode_yolo(&layout, &data, 0.25), 0.5, 10);
        assert_eq!(kept.len(), 2);
        assert_eq!((kept[0].class, kept[0].bbox), (0, [15.0, 15.0, 25.0, 25.0]));
        assert_eq!(kept[1].class, 1);
    }

    #[test]
    fn fields_last_boxes_keep_the_best_of_an_overlap() {
        let rows = [10., 10., 4., 4., 0.9, 0.1, 10.5, 10., 4., 4., 0.8, 0.0, 30., 30., 4., 4., 0.1, 0.05];
        let layout = YoloLayout::detect(&[1, 3, 6], 2, None).unwrap();
        assert!(!layout.channels_first && !layout.objectness);
        let kept = nms(decode_yolo(&layout, &rows, 0.2), 0.5, 10);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].bbox, [8., 8., 12., 12.]);
    }

    #[test]
    fn objectness_scales_scores_and_gates_anchors() {
        // [1, 2 anchors, 5 + 1 class]
        let data = [10.0, 10.0, 4.0, 4.0, 0.9, 0.9, 50.0, 50.0, 4.0, 4.0, 0.1, 0.9];
        let layout = YoloLayout::detect(&[1, 2, 6], 1, Some(true)).unwrap();
        let dets = decode_yolo(&layout, &data, 0.5);
        assert_eq!(dets.len(), 1);
        assert!((dets[0].score - 0.81).abs() < 1e-5);
        let nan = [10.0, 10.0, 4.0, 4.0, f32::NAN, 0.9];
        assert!(decode_yolo(&YoloLayout::detect(&[1, 1, 6], 1, Some(true)).unwrap(), &nan, 0.1).is_empty());
    }

    #[test]
    fn top_classes_are_thresholded_probabilities() {
        let top = top_classes(&[0.0, 3.0, 1.0], true, 2, 0.2);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, 1);
        assert!(top[0].1 > 0.8);
        assert_eq!(top_classes(&[0.2, 0.7, 0.1], false, 0, 0.0), vec![(1, 0.7)]);
    }
}
