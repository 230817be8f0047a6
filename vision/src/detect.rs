//! Detection outputs beyond one decoded YOLO tensor: how an anchor's four box values become
//! corners in input pixels (box format, fractions of the input, YOLOX-style raw grids), and
//! separate boxes/scores(/labels) outputs as SSD, RetinaNet and NMS-included exports write them.

use flywheel_types::BoxFormat;

use crate::decode::{Detection, YoloLayout};

/// A detection output this module cannot read, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DetectError(pub String);

/// The cell (column, row, stride) of every anchor of a raw grid output, stride by stride,
/// row-major within a stride (YOLOX's order).
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    cells: Vec<(f32, f32, f32)>,
}

impl Grid {
    /// The grid of an input of `width` x `height` at `strides`.
    pub fn new(strides: &[u32], width: u32, height: u32) -> Result<Self, DetectError> {
        let mut cells = Vec::new();
        for &s in strides {
            if s == 0 || !width.is_multiple_of(s) || !height.is_multiple_of(s) {
                return Err(DetectError(format!("stride {s} does not divide the {width}x{height} input")));
            }
            for row in 0..height / s {
                for col in 0..width / s {
                    cells.push((col as f32, row as f32, s as f32));
                }
            }
        }
        Ok(Self { cells })
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

/// How an anchor's four box values become [x1, y1, x2, y2] in input pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxDecode {
    pub format: BoxFormat,
    /// Boxes are fractions of this input (width, height).
    pub normalized: Option<(f32, f32)>,
    /// Raw grid values (cell offsets, log sizes), decoded per anchor.
    pub grid: Option<Grid>,
}

impl Default for BoxDecode {
    /// Centre and size in input pixels: YOLOv5/v8 outputs.
    fn default() -> Self {
        Self { format: BoxFormat::Cxcywh, normalized: None, grid: None }
    }
}

impl BoxDecode {
    /// Checks that a grid, if any, has one cell per anchor.
    pub fn check_anchors(&self, anchors: usize) -> Result<(), DetectError> {
        match &self.grid {
            Some(g) if g.len() != anchors => Err(DetectError(format!(
                "the strides give {} grid cells for this input, the output has {anchors} anchors",
                g.len()
            ))),
            _ => Ok(()),
        }
    }

    pub fn apply(&self, anchor: usize, v: [f32; 4]) -> [f32; 4] {
        let v = match &self.grid {
            Some(g) => {
                let (col, row, s) = g.cells[anchor];
                // YOLOX: centre = (offset + cell) * stride, size = exp(log size) * stride.
                [(v[0] + col) * s, (v[1] + row) * s, v[2].exp() * s, v[3].exp() * s]
            }
            None => v,
        };
        let v = match self.normalized {
            Some((w, h)) => [v[0] * w, v[1] * h, v[2] * w, v[3] * h],
            None => v,
        };
        self.format.to_xyxy(v)
    }
}

/// Candidates of one image of a YOLO-style output (`layout.len()` values) whose score (best
/// class × objectness) reaches `threshold`, boxes decoded by `boxes`. NaN scores never pass.
pub fn decode_yolo_boxes(layout: &YoloLayout, data: &[f32], threshold: f32, boxes: &BoxDecode) -> Vec<Detection> {
    let (fields, anchors) = (layout.fields(), layout.anchors);
    let at = |f: usize, a: usize| if layout.channels_first { data[f * anchors + a] } else { data[a * fields + f] };
    let mut out = Vec::new();
    for a in 0..anchors {
        let obj = if layout.objectness { at(4, a) } else { 1.0 };
        // Written so that a NaN objectness is skipped too.
        if obj.is_nan() || obj < threshold {
            continue;
        }
        let (mut best, mut best_score) = (0, f32::NEG_INFINITY);
        for c in layout.class_offset()..fields {
            let s = at(c, a);
            if s > best_score {
                best_score = s;
                best = c - layout.class_offset();
            }
        }
        let score = best_score * obj;
        if score >= threshold {
            let bbox = boxes.apply(a, [at(0, a), at(1, a), at(2, a), at(3, a)]);
            out.push(Detection { bbox, class: best, score });
        }
    }
    out
}

/// One image's separate detection outputs.
pub struct BoxesScores<'a> {
    /// `[A, 4]` box values.
    pub boxes: &'a [f32],
    /// Per-class scores `[A, C]` (or `[C, A]` when `classes_first`), or one score per box when
    /// `labels` is given.
    pub scores: &'a [f32],
    pub classes_first: bool,
    /// Class ids `[A]` (exports with NMS inside).
    pub labels: Option<&'a [f32]>,
}

/// Candidates of one image's boxes + scores outputs at `threshold`, for `classes` classes.
pub fn decode_boxes_scores(
    out: &BoxesScores<'_>,
    classes: usize,
    threshold: f32,
    boxes: &BoxDecode,
) -> Result<Vec<Detection>, DetectError> {
    if !out.boxes.len().is_multiple_of(4) {
        return Err(DetectError(format!("{} box values are not a whole number of boxes", out.boxes.len())));
    }
    let anchors = out.boxes.len() / 4;
    boxes.check_anchors(anchors)?;
    let b =
        |a: usize| boxes.apply(a, [out.boxes[4 * a], out.boxes[4 * a + 1], out.boxes[4 * a + 2], out.boxes[4 * a + 3]]);
    let mut dets = Vec::new();
    if let Some(labels) = out.labels {
        if labels.len() != anchors || out.scores.len() != anchors {
            return Err(DetectError(format!(
                "{anchors} boxes need as many labels and scores, got {} and {}",
                labels.len(),
                out.scores.len()
            )));
        }
        for (a, (&score, &label)) in out.scores.iter().zip(labels).enumerate() {
            if score >= threshold && label >= 0.0 && label.fract() == 0.0 {
                dets.push(Detection { bbox: b(a), class: label as usize, score });
            }
        }
        return Ok(dets);
    }
    if classes == 0 || out.scores.len() != anchors * classes {
        return Err(DetectError(format!(
            "{anchors} boxes need {anchors} x {classes} class scores, got {}",
            out.scores.len()
        )));
    }
    let at =
        |a: usize, c: usize| if out.classes_first { out.scores[c * anchors + a] } else { out.scores[a * classes + c] };
    for a in 0..anchors {
        let (mut best, mut best_score) = (0, f32::NEG_INFINITY);
        for c in 0..classes {
            if at(a, c) > best_score {
                best_score = at(a, c);
                best = c;
            }
        }
        if best_score >= threshold {
            dets.push(Detection { bbox: b(a), class: best, score: best_score });
        }
    }
    Ok(dets)
}

#[cfg(test)]
mod tests;
