//! Output decoding: a served model's output tensors → labelled shapes in original image pixels,
//! with the confidence threshold applied. What to read is resolved once per loaded model
//! ([`OutputPlan`]): which output by name, whether scores are logits (the graph does not end in
//! Softmax/Sigmoid), how boxes are written. The decoders themselves are flywheel-vision's, which
//! the trainer's evaluation shares.

use flywheel_vision::decode::{Detection, YoloLayout, top_classes};
use flywheel_vision::detect::{BoxDecode, BoxesScores, Grid, decode_boxes_scores, decode_yolo_boxes};
use flywheel_vision::nms_with;

use crate::backend::{TensorF32, TensorInfo};
use crate::error::ServerError;
use crate::preprocess::InverseTransform;
use crate::record::{Shape, label_of};
use crate::serving::{ClassScores, Decoder, InputSpec, OutputSpec};

/// How one loaded model's outputs become shapes.
#[derive(Clone, Debug)]
pub struct OutputPlan {
    kind: Kind,
    labels: Vec<String>,
    iou: f32,
    max_detections: usize,
    class_agnostic: bool,
}

#[derive(Clone, Debug)]
enum Kind {
    Classify { output: usize, softmax: bool, top_k: usize },
    Yolo { output: usize, objectness: Option<bool>, boxes: BoxDecode },
    BoxesScores { boxes: usize, scores: usize, labels: Option<usize>, decode: BoxDecode },
}

/// Index of output `name`, or a message naming the outputs there are.
fn find(outputs: &[TensorInfo], name: &str, field: &str) -> Result<usize, String> {
    outputs.iter().position(|o| o.name == name).ok_or_else(|| {
        let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        format!("{field} names output {name:?}, but the model's outputs are {names:?}")
    })
}

impl OutputPlan {
    /// Resolves `spec` against the model's outputs; `output_op(i)` is the op that computes
    /// output `i` in the graph, if known.
    pub fn new(
        spec: &OutputSpec,
        input: &InputSpec,
        labels: &[String],
        outputs: &[TensorInfo],
        output_op: impl Fn(usize) -> Option<String>,
    ) -> Result<Self, String> {
        if outputs.is_empty() {
            return Err("the model has no outputs".into());
        }
        let main = match &spec.output {
            Some(name) => find(outputs, name, "output.output")?,
            None => 0,
        };
        let boxes = |spec: &OutputSpec| -> Result<BoxDecode, String> {
            let grid = match spec.strides.as_slice() {
                [] => None,
                strides => Some(Grid::new(strides, input.width, input.height).map_err(|e| e.0)?),
            };
            Ok(BoxDecode {
                format: spec.box_format(),
                normalized: spec.normalized_boxes.then_some((input.width as f32, input.height as f32)),
                grid,
            })
        };
        let kind = match spec.decoder {
            Decoder::Logits => {
                let softmax = match spec.class_scores {
                    Some(ClassScores::Logits) => true,
                    Some(ClassScores::Probabilities) => false,
                    // A graph that already ends in an activation must not get a second one.
                    None => !matches!(output_op(main).as_deref(), Some("Softmax" | "Sigmoid")),
                };
                Kind::Classify { output: main, softmax, top_k: spec.top_k() }
            }
            Decoder::Yolo => Kind::Yolo { output: main, objectness: spec.objectness, boxes: boxes(spec)? },
            Decoder::BoxesScores => Kind::BoxesScores {
                boxes: find(outputs, spec.boxes_output(), "output.boxesOutput")?,
                scores: find(outputs, spec.scores_output(), "output.scoresOutput")?,
                labels: spec.labels_output.as_deref().map(|n| find(outputs, n, "output.labelsOutput")).transpose()?,
                decode: boxes(spec)?,
            },
        };
        Ok(Self {
            kind,
            labels: labels.to_vec(),
            iou: spec.nms_iou_threshold as f32,
            max_detections: spec.max_detections(),
            class_agnostic: spec.class_agnostic_nms,
        })
    }

    /// Whether classification scores get a softmax.
    #[cfg(test)]
    pub fn applies_softmax(&self) -> bool {
        matches!(self.kind, Kind::Classify { softmax: true, .. })
    }

    /// Decodes the outputs of one image (batch dimension 1).
    pub fn decode(
        &self,
        outputs: &[TensorF32],
        threshold: f32,
        inv: &InverseTransform,
    ) -> Result<Vec<Shape>, ServerError> {
        let out = |i: usize| {
            outputs.get(i).ok_or_else(|| ServerError::Backend(format!("the model returned {} outputs", outputs.len())))
        };
        let dets = match &self.kind {
            Kind::Classify { output, softmax, top_k } => {
                let shapes = top_classes(&out(*output)?.data, *softmax, *top_k, threshold)
                    .into_iter()
                    .map(|(i, p)| Shape { label: label_of(&self.labels, i), class_id: i, confidence: p, bbox: None })
                    .collect();
                return Ok(shapes);
            }
            Kind::Yolo { output, objectness, boxes } => {
                let t = out(*output)?;
                let layout = yolo_layout(t, self.labels.len(), *objectness)?;
                boxes.check_anchors(layout.anchors).map_err(|e| ServerError::Backend(e.0))?;
                decode_yolo_boxes(&layout, &t.data, threshold, boxes)
            }
            Kind::BoxesScores { boxes, scores, labels, decode } => {
                let (b, s) = (out(*boxes)?, out(*scores)?);
                let labels = labels.map(out).transpose()?;
                let anchors = b.data.len() / 4;
                // [1, C, A] when the class axis comes first.
                let classes_first =
                    labels.is_none() && s.shape.len() == 3 && s.shape[2] == anchors && s.shape[1] != anchors;
                let one = BoxesScores {
                    boxes: &b.data,
                    scores: &s.data,
                    classes_first,
                    labels: labels.map(|l| l.data.as_slice()),
                };
                decode_boxes_scores(&one, self.labels.len(), threshold, decode)
                    .map_err(|e| ServerError::Backend(format!("boxesScores outputs: {e}")))?
            }
        };
        Ok(self.shapes(dets, inv))
    }

    /// Kept detections in original pixels. A box that lies wholly outside the image (in the
    /// letterbox padding) clips to zero width or height: it is dropped, as no reviewer could
    /// accept or draw it.
    fn shapes(&self, dets: Vec<Detection>, inv: &InverseTransform) -> Vec<Shape> {
        nms_with(dets, self.iou, self.max_detections, self.class_agnostic)
            .into_iter()
            .map(|d| (d.class, d.score, inv.to_original(d.bbox)))
            .filter(|(_, _, b)| b[2] > b[0] && b[3] > b[1])
            .map(|(class, score, b)| Shape {
                label: label_of(&self.labels, class),
                class_id: class,
                confidence: score,
                bbox: Some(b),
            })
            .collect()
    }
}

/// The YOLO layout of a `[1, D, A]` / `[1, A, D]` output.
fn yolo_layout(out: &TensorF32, classes: usize, objectness: Option<bool>) -> Result<YoloLayout, ServerError> {
    if out.shape.len() != 3 || out.shape[0] != 1 {
        return Err(ServerError::Backend(format!(
            "YOLO decoder expects an output of shape [1, D, A] or [1, A, D], got {:?}",
            out.shape
        )));
    }
    YoloLayout::detect(&out.shape, classes, objectness).map_err(|e| {
        // The class count is the usual mistake: say what the output would fit.
        let fields = *out.shape[1..].iter().min().expect("rank 3");
        ServerError::Backend(format!(
            "{e}; the output's {fields} fields per anchor fit {} labels (YOLOv8 layout) or {} with objectness \
             (YOLOv5): check the ModelVersion's labels",
            fields.saturating_sub(4),
            fields.saturating_sub(5)
        ))
    })
}

#[cfg(test)]
mod tests;
