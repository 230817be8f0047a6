use super::*;
use crate::serving::{BoxFormat, Layout, ResizeMode};

fn ident() -> InverseTransform {
    InverseTransform::identity(100, 100)
}

fn input() -> InputSpec {
    InputSpec {
        channels: 3,
        layout: Layout::Nchw,
        mean: vec![],
        std: vec![],
        resize: ResizeMode::Stretch,
        ..InputSpec::new(100, 100)
    }
}

fn info(names: &[&str]) -> Vec<TensorInfo> {
    names.iter().map(|n| TensorInfo { name: n.to_string(), datatype: "FP32", shape: vec![] }).collect()
}

fn plan(spec: OutputSpec, labels: &[&str], outputs: &[&str], op: Option<&str>) -> OutputPlan {
    let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    OutputPlan::new(&spec, &input(), &labels, &info(outputs), |_| op.map(str::to_string)).unwrap()
}

fn yolo_spec() -> OutputSpec {
    OutputSpec { decoder: Decoder::Yolo, nms_iou_threshold: 0.5, ..Default::default() }
}

#[test]
fn logits_give_thresholded_top_k() {
    let p =
        plan(OutputSpec { top_k: Some(2), ..Default::default() }, &["cat", "dog", "fox"], &["logits"], Some("Gemm"));
    assert!(p.applies_softmax());
    let t = TensorF32::new(vec![1, 3], vec![0.0, 3.0, 1.0]).unwrap();
    let shapes = p.decode(&[t], 0.2, &ident()).unwrap();
    assert_eq!(shapes.len(), 1);
    assert_eq!(shapes[0].label, "dog");
    assert!(shapes[0].confidence > 0.8);
}

#[test]
fn a_graph_ending_in_softmax_is_not_given_a_second_one() {
    let p = plan(OutputSpec::default(), &["cat", "dog"], &["probs"], Some("Softmax"));
    assert!(!p.applies_softmax());
    let t = TensorF32::new(vec![1, 2], vec![0.3, 0.7]).unwrap();
    let shapes = p.decode(&[t], 0.0, &ident()).unwrap();
    assert_eq!((shapes[0].label.as_str(), shapes[0].confidence), ("dog", 0.7));
    // Declared probabilities win over the graph; declared logits too.
    let declared = OutputSpec { class_scores: Some(ClassScores::Logits), ..Default::default() };
    assert!(plan(declared, &["a"], &["probs"], Some("Softmax")).applies_softmax());
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
    let shapes = plan(yolo_spec(), &["a", "b"], &["output0"], None).decode(&[t], 0.25, &ident()).unwrap();
    assert_eq!(shapes.len(), 2);
    assert_eq!(shapes[0].label, "a");
    assert_eq!(shapes[0].bbox, Some([15.0, 15.0, 25.0, 25.0]));
    assert_eq!(shapes[1].label, "b");
}

#[test]
fn a_box_in_the_letterbox_padding_is_dropped_not_clipped_to_nothing() {
    // A 100x50 image letterboxed into 100x100: rows 0..25 and 75..100 are padding.
    let inv = InverseTransform { scale_x: 1.0, scale_y: 1.0, pad_x: 0.0, pad_y: 25.0, width: 100, height: 50 };
    // Anchor 0 inside the image, anchor 1 wholly in the top padding.
    let data: Vec<f32> = [[50.0, 50.0], [50.0, 10.0], [20.0, 20.0], [20.0, 8.0], [0.9, 0.8]].concat();
    let t = TensorF32::new(vec![1, 5, 2], data).unwrap();
    let shapes = plan(yolo_spec(), &["a"], &["output0"], None).decode(&[t], 0.25, &inv).unwrap();
    assert_eq!(shapes.len(), 1, "{shapes:?}");
    assert_eq!(shapes[0].bbox, Some([40.0, 15.0, 60.0, 35.0]));
}

#[test]
fn yolo_v5_layout_uses_objectness_from_the_shape() {
    // [1, 2 anchors, 5 + 1 class]
    let data = vec![10.0, 10.0, 4.0, 4.0, 0.9, 0.9, 50.0, 50.0, 4.0, 4.0, 0.1, 0.9];
    let t = TensorF32::new(vec![1, 2, 6], data).unwrap();
    let shapes = plan(yolo_spec(), &["a"], &["output0"], None).decode(&[t], 0.5, &ident()).unwrap();
    assert_eq!(shapes.len(), 1);
    assert!((shapes[0].confidence - 0.81).abs() < 1e-5);
}

#[test]
fn yolo_rejects_mismatched_outputs() {
    let t = TensorF32::new(vec![1, 7, 3], vec![0.0; 21]).unwrap();
    assert!(plan(yolo_spec(), &["x"], &["output0"], None).decode(&[t], 0.5, &ident()).is_err());
}

#[test]
fn outputs_are_found_by_name_and_a_wrong_name_says_what_there_is() {
    let spec = OutputSpec { decoder: Decoder::BoxesScores, box_format: Some(BoxFormat::Xyxy), ..Default::default() };
    let p = plan(spec.clone(), &["a", "b"], &["scores", "boxes"], None);
    let scores = TensorF32::new(vec![1, 1, 2], vec![0.1, 0.9]).unwrap();
    let boxes = TensorF32::new(vec![1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let shapes = p.decode(&[scores, boxes], 0.5, &ident()).unwrap();
    assert_eq!((shapes[0].label.as_str(), shapes[0].bbox), ("b", Some([1.0, 2.0, 3.0, 4.0])));
    let err = OutputPlan::new(&spec, &input(), &["a".to_string()], &info(&["dets", "logits"]), |_| None).unwrap_err();
    assert!(err.contains("boxesOutput") && err.contains("\"boxes\"") && err.contains("dets"), "{err}");
}

#[test]
fn max_detections_and_class_agnostic_nms_apply() {
    // Two overlapping boxes of different classes and one apart.
    let rows = [10., 10., 4., 4., 0.9, 0.1, 10.5, 10., 4., 4., 0.1, 0.8, 60., 60., 4., 4., 0.7, 0.0];
    let t = || TensorF32::new(vec![1, 3, 6], rows.to_vec()).unwrap();
    let p = plan(yolo_spec(), &["a", "b"], &["o"], None);
    assert_eq!(p.decode(&[t()], 0.5, &ident()).unwrap().len(), 3);
    let agnostic = plan(OutputSpec { class_agnostic_nms: true, ..yolo_spec() }, &["a", "b"], &["o"], None);
    assert_eq!(agnostic.decode(&[t()], 0.5, &ident()).unwrap().len(), 2);
    let one = plan(OutputSpec { max_detections: Some(1), ..yolo_spec() }, &["a", "b"], &["o"], None);
    assert_eq!(one.decode(&[t()], 0.5, &ident()).unwrap().len(), 1);
}
