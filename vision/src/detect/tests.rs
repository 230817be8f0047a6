use super::*;

#[test]
fn box_formats_and_fractions_become_input_pixel_corners() {
    let d = BoxDecode { format: BoxFormat::Xywh, normalized: Some((100.0, 50.0)), grid: None };
    assert_eq!(d.apply(0, [0.1, 0.2, 0.5, 0.4]), [10.0, 10.0, 60.0, 30.0]);
    let d = BoxDecode { format: BoxFormat::Xyxy, ..Default::default() };
    assert_eq!(d.apply(0, [1.0, 2.0, 3.0, 4.0]), [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(BoxDecode::default().apply(0, [10.0, 10.0, 4.0, 2.0]), [8.0, 9.0, 12.0, 11.0]);
}

#[test]
fn a_yolox_grid_decodes_offsets_and_log_sizes_per_stride() {
    // 32x16 input, strides 8 and 16: 4x2 + 2x1 = 10 cells.
    let grid = Grid::new(&[8, 16], 32, 16).unwrap();
    assert_eq!(grid.len(), 10);
    let d = BoxDecode { grid: Some(grid), ..Default::default() };
    // Anchor 5 is stride 8, column 1, row 1: centre (1.5 * 8, 1.5 * 8), size 8.
    assert_eq!(d.apply(5, [0.5, 0.5, 0.0, 0.0]), [8.0, 8.0, 16.0, 16.0]);
    // Anchor 9 is stride 16, column 1, row 0; log size ln 2 doubles it.
    let b = d.apply(9, [0.5, 0.5, 2f32.ln(), 0.0]);
    assert!((b[0] - 8.0).abs() < 1e-4 && (b[2] - 40.0).abs() < 1e-4 && b[1] == 0.0 && b[3] == 16.0, "{b:?}");
    assert!(d.check_anchors(10).is_ok());
    assert!(d.check_anchors(84).unwrap_err().0.contains("10 grid cells"));
    assert!(Grid::new(&[7], 32, 16).is_err());
}

#[test]
fn boxes_and_class_scores_either_way_round() {
    let boxes = [0.0, 0.0, 10.0, 10.0, 20.0, 20.0, 30.0, 30.0];
    let xyxy = BoxDecode { format: BoxFormat::Xyxy, ..Default::default() };
    // [A=2, C=3]
    let scores = [0.1, 0.8, 0.1, 0.05, 0.1, 0.2];
    let out = BoxesScores { boxes: &boxes, scores: &scores, classes_first: false, labels: None };
    let dets = decode_boxes_scores(&out, 3, 0.5, &xyxy).unwrap();
    assert_eq!(dets, vec![Detection { bbox: [0.0, 0.0, 10.0, 10.0], class: 1, score: 0.8 }]);
    // The same scores as [C=3, A=2].
    let t = [0.1, 0.05, 0.8, 0.1, 0.1, 0.2];
    let out = BoxesScores { boxes: &boxes, scores: &t, classes_first: true, labels: None };
    assert_eq!(decode_boxes_scores(&out, 3, 0.5, &xyxy).unwrap().len(), 1);
    let short = BoxesScores { boxes: &boxes, scores: &scores[..5], classes_first: false, labels: None };
    assert!(decode_boxes_scores(&short, 3, 0.5, &xyxy).unwrap_err().0.contains("class scores"));
}

#[test]
fn exports_with_nms_inside_give_a_label_per_box() {
    let boxes = [0.0, 0.0, 10.0, 10.0, 20.0, 20.0, 30.0, 30.0];
    let out = BoxesScores { boxes: &boxes, scores: &[0.9, 0.2], classes_first: false, labels: Some(&[2.0, 1.0]) };
    let xyxy = BoxDecode { format: BoxFormat::Xyxy, ..Default::default() };
    let dets = decode_boxes_scores(&out, 3, 0.5, &xyxy).unwrap();
    assert_eq!(dets, vec![Detection { bbox: [0.0, 0.0, 10.0, 10.0], class: 2, score: 0.9 }]);
}

#[test]
fn class_agnostic_nms_suppresses_across_classes() {
    let a = Detection { bbox: [0.0, 0.0, 10.0, 10.0], class: 0, score: 0.9 };
    let b = Detection { bbox: [0.0, 0.0, 10.0, 11.0], class: 1, score: 0.8 };
    assert_eq!(crate::nms_with(vec![a.clone(), b.clone()], 0.5, 10, false).len(), 2);
    assert_eq!(crate::nms_with(vec![a, b], 0.5, 10, true).len(), 1);
}
