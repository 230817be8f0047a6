//! Output decoders: classification logits → top-k classes, YOLO-style tensors → boxes with
//! per-class non-maximum suppression. The confidence threshold is applied here.

use serde::{Deserialize, Serialize};

use crate::backend::TensorF32;
use crate::error::ServerError;
use crate::preprocess::InverseTransform;
use crate::serving::OutputDecoder;

/// One predicted shape: a class (classification) or a box with a class (detection).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    pub label: String,
    pub class_id: usize,
    pub confidence: f32,
    /// [x1, y1, x2, y2] in original image pixels; absent for classification.
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
}

pub fn label_of(labels: &[String], id: usize) -> String {
    labels.get(id).cloned().unwrap_or_else(|| format!("class_{id}"))
}

/// Decodes the outputs of one image (batch dimension 1).
pub fn decode(
    decoder: &OutputDecoder,
    outputs: &[TensorF32],
    labels: &[String],
    threshold: f32,
    inv: &InverseTransform,
) -> Result<Vec<Shape>, ServerError> {
    let out = outputs
        .first()
        .ok_or_else(|| ServerError::Backend("model produced no output".into()))?;
    match decoder {
        OutputDecoder::Logits { apply_softmax, top_k } => {
            Ok(classify(&out.data, *apply_softmax, *top_k, labels, threshold))
        }
        OutputDecoder::Yolo { objectness, iou_threshold, max_detections } => {
            let boxes = yolo(out, *objectness, labels.len(), threshold)?;
            let kept = nms(boxes, *iou_threshold, *max_detections);
            Ok(kept
                .into_iter()
                .map(|d| Shape {
                    label: label_of(labels, d.class_id),
                    class_id: d.class_id,
                    confidence: d.score,
                    bbox: Some(inv.to_original(d.bbox)),
                })
                .collect())
        }
    }
}

pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn classify(logits: &[f32], apply_softmax: bool, top_k: usize, labels: &[String], threshold: f32) -> Vec<Shape> {
    let probs = if apply_softmax { softmax(logits) } else { logits.to_vec() };
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    idx.into_iter()
        .take(top_k.max(1))
        .filter(|&i| probs[i] >= threshold)
        .map(|i| Shape { label: label_of(labels, i), class_id: i, confidence: probs[i], bbox: None })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub class_id: usize,
    pub score: f32,
}

/// Reads [1, 4+C, A] / [1, A, 4+C] (or 5+C with objectness) into candidate boxes in input pixels.
fn yolo(out: &TensorF32, objectness: bool, classes: usize, threshold: f32) -> Result<Vec<Detection>, ServerError> {
    let dims: Vec<usize> = out.shape.iter().copied().skip_while(|_| false).collect();
    if dims.len() != 3 || dims[0] != 1 {
        return Err(ServerError::Backend(format!(
            "YOLO decoder expects an output of shape [1, D, A] or [1, A, D], got {dims:?}"
        )));
    }
    let head = if objectness { 5 } else { 4 };
    let (d1, d2) = (dims[1], dims[2]);
    // Which axis holds the box fields: the one matching 4/5 + classes, else the smaller one.
    let channels_first = if classes > 0 {
        if d1 == head + classes { true } else if d2 == head + classes { false } else {
            return Err(ServerError::Backend(format!(
                "YOLO output {dims:?} matches neither {head}+{classes} fields per anchor"
            )));
        }
    } else {
        d1 <= d2
    };
    let (fields, anchors) = if channels_first { (d1, d2) } else { (d2, d1) };
    if fields <= head {
        return Err(ServerError::Backend(format!("YOLO output {dims:?} has no class scores")));
    }
    let at = |f: usize, a: usize| if channels_first { out.data[f * anchors + a] } else { out.data[a * fields + f] };
    let mut dets = Vec::new();
    for a in 0..anchors {
        let obj = if objectness { at(4, a) } else { 1.0 };
        if obj < threshold {
            continue;
        }
        let (mut best, mut best_score) = (0, f32::NEG_INFINITY);
        for c in head..fields {
            let s = at(c, a);
            if s > best_score {
                best_score = s;
                best = c - head;
            }
        }
        let score = best_score * obj;
        if score.is_nan() || score < threshold {
            continue;
        }
        let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
        dets.push(Detection {
            bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            class_id: best,
            score,
        });
    }
    Ok(dets)
}

pub use flywheel_vision::{iou, nms};

impl flywheel_vision::Candidate for Detection {
    fn class(&self) -> usize {
        self.class_id
    }
    fn bbox(&self) -> &[f32; 4] {
        &self.bbox
    }
    fn score(&self) -> f32 {
        self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident() -> InverseTransform {
        InverseTransform { scale_x: 1.0, scale_y: 1.0, pad_x: 0.0, pad_y: 0.0, width: 100, height: 100 }
    }

    #[test]
    fn logits_give_thresholded_top_k() {
        let labels = vec!["cat".into(), "dog".into(), "fox".into()];
        let shapes = classify(&[0.0, 3.0, 1.0], true, 2, &labels, 0.2);
        assert_eq!(shapes.len(), 1);
        assert_eq!(shapes[0].label, "dog");
        assert!(shapes[0].confidence > 0.8);
    }

    #[test]
    fn yolo_v8_layout_with_nms() {
        // 2 classes, 3 anchors, channels first: [1, 6, 3].
        // anchors 0 and 1 overlap heavily (class 0), anchor 2 is class 1 elsewhere.
        let cx = [20.0, 21.0, 70.0];
        let cy = [20.0, 20.0, 70.0];
        let w = [10.0, 10.0, 20.0];
        let h = [10.0, 10.0, 20.0];
        let c0 = [0.9, 0.8, 0.1];
        let c1 = [0.0, 0.1, 0.7];
        let data: Vec<f32> = [cx, cy, w, h, c0, c1].concat();
        let t = TensorF32::new(vec![1, 6, 3], data).unwrap();
        let dec = OutputDecoder::Yolo { objectness: false, iou_threshold: 0.5, max_detections: 10 };
        let labels = vec!["a".into(), "b".into()];
        let shapes = decode(&dec, &[t], &labels, 0.25, &ident()).unwrap();
        assert_eq!(shapes.len(), 2);
        assert_eq!(shapes[0].label, "a");
        assert_eq!(shapes[0].bbox, Some([15.0, 15.0, 25.0, 25.0]));
        assert_eq!(shapes[1].label, "b");
    }

    #[test]
    fn yolo_v5_layout_uses_objectness() {
        // [1, 2 anchors, 5 + 1 class]
        let data = vec![10.0, 10.0, 4.0, 4.0, 0.9, 0.9, 50.0, 50.0, 4.0, 4.0, 0.1, 0.9];
        let t = TensorF32::new(vec![1, 2, 6], data).unwrap();
        let dec = OutputDecoder::Yolo { objectness: true, iou_threshold: 0.5, max_detections: 10 };
        let shapes = decode(&dec, &[t], &["x".into()], 0.5, &ident()).unwrap();
        assert_eq!(shapes.len(), 1);
        assert!((shapes[0].confidence - 0.81).abs() < 1e-5);
    }

    #[test]
    fn yolo_rejects_mismatched_outputs() {
        let t = TensorF32::new(vec![1, 7, 3], vec![0.0; 21]).unwrap();
        let dec = OutputDecoder::Yolo { objectness: false, iou_threshold: 0.5, max_detections: 10 };
        assert!(decode(&dec, &[t], &["x".into()], 0.5, &ident()).is_err());
    }
}
