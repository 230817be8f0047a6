//! Output decoders: classification logits → top-k classes, YOLO-style tensors → boxes with
//! per-class non-maximum suppression (flywheel-vision's decoders, which the trainer's evaluation
//! shares), mapped back to original pixels and labelled. The confidence threshold is applied here.

use flywheel_vision::decode::{Detection, YoloLayout, decode_yolo, top_classes};

use crate::backend::TensorF32;
use crate::error::ServerError;
use crate::preprocess::InverseTransform;
use crate::record::{Shape, label_of};
use crate::serving::{Decoder, OutputSpec};

/// Decodes the outputs of one image (batch dimension 1).
pub fn decode(
    spec: &OutputSpec,
    outputs: &[TensorF32],
    labels: &[String],
    threshold: f32,
    inv: &InverseTransform,
) -> Result<Vec<Shape>, ServerError> {
    let out = outputs.first().ok_or_else(|| ServerError::Backend("model produced no output".into()))?;
    match spec.decoder {
        // Logits, softmax applied.
        Decoder::Logits => Ok(classify(&out.data, true, spec.top_k(), labels, threshold)),
        // Decoded boxes without objectness ([1, 4 + C, A] or [1, A, 4 + C]), NMS per class.
        Decoder::Yolo => {
            let boxes = yolo(out, false, labels.len(), threshold)?;
            let kept = nms(boxes, spec.nms_iou_threshold as f32, OutputSpec::MAX_DETECTIONS);
            Ok(kept
                .into_iter()
                .map(|d| Shape {
                    label: label_of(labels, d.class),
                    class_id: d.class,
                    confidence: d.score,
                    bbox: Some(inv.to_original(d.bbox)),
                })
                .collect())
        }
        Decoder::BoxesScores => Err(ServerError::Backend("the boxesScores decoder is not served".into())),
    }
}

fn classify(scores: &[f32], apply_softmax: bool, top_k: usize, labels: &[String], threshold: f32) -> Vec<Shape> {
    top_classes(scores, apply_softmax, top_k, threshold)
        .into_iter()
        .map(|(i, p)| Shape { label: label_of(labels, i), class_id: i, confidence: p, bbox: None })
        .collect()
}

/// Candidate boxes in input pixels of a `[1, D, A]` / `[1, A, D]` output.
fn yolo(out: &TensorF32, objectness: bool, classes: usize, threshold: f32) -> Result<Vec<Detection>, ServerError> {
    if out.shape.len() != 3 || out.shape[0] != 1 {
        return Err(ServerError::Backend(format!(
            "YOLO decoder expects an output of shape [1, D, A] or [1, A, D], got {:?}",
            out.shape
        )));
    }
    let layout =
        YoloLayout::detect(&out.shape, classes, Some(objectness)).map_err(|e| ServerError::Backend(e.to_string()))?;
    Ok(decode_yolo(&layout, &out.data, threshold))
}

pub use flywheel_vision::decode::softmax;
pub use flywheel_vision::{iou, nms};

#[cfg(test)]
mod tests {
    use super::*;

    fn ident() -> InverseTransform {
        InverseTransform::identity(100, 100)
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
        let dec = OutputSpec { decoder: Decoder::Yolo, nms_iou_threshold: 0.5, top_k: None };
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
        let dets = yolo(&t, true, 1, 0.5).unwrap();
        assert_eq!(dets.len(), 1);
        assert!((dets[0].score - 0.81).abs() < 1e-5);
    }

    #[test]
    fn yolo_rejects_mismatched_outputs() {
        let t = TensorF32::new(vec![1, 7, 3], vec![0.0; 21]).unwrap();
        let dec = OutputSpec { decoder: Decoder::Yolo, nms_iou_threshold: 0.5, top_k: None };
        assert!(decode(&dec, &[t], &["x".into()], 0.5, &ident()).is_err());
    }
}
