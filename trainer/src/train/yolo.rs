//! YOLO-style outputs: layout detection, decoding and non-maximum suppression, matching the
//! inference server's `yolo` decoder ([N, 4 + C, A] or [N, A, 4 + C] without objectness,
//! [N, A, 5 + C] with it; boxes as centre x, centre y, width, height in input pixels).

use candle_core::Tensor;

use crate::error::{Result, TrainerError};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YoloFormat {
    /// Fields along dimension 1 (channels first) rather than dimension 2.
    pub channels_first: bool,
    pub objectness: bool,
    pub classes: usize,
    pub anchors: usize,
}

impl YoloFormat {
    pub fn detect(shape: &[usize], classes: usize) -> Result<Self> {
        let bad = |why: &str| TrainerError::Model {
            uri: "base model".into(),
            reason: format!(
                "output shape {shape:?} is not a YOLO output for {classes} classes: {why}"
            ),
        };
        if shape.len() != 3 {
            return Err(bad("expected 3 dimensions"));
        }
        let (d1, d2) = (shape[1], shape[2]);
        let f = |channels_first, objectness, anchors| {
            Ok(Self {
                channels_first,
                objectness,
                classes,
                anchors,
            })
        };
        if d1 == 4 + classes {
            f(true, false, d2)
        } else if d2 == 5 + classes {
            f(false, true, d1)
        } else if d2 == 4 + classes {
            f(false, false, d1)
        } else {
            Err(bad(
                "expected [N, 4 + classes, anchors], [N, anchors, 4 + classes] or [N, anchors, 5 + classes]",
            ))
        }
    }

    pub fn fields(&self) -> usize {
        self.classes + if self.objectness { 5 } else { 4 }
    }

    pub fn class_offset(&self) -> usize {
        if self.objectness { 5 } else { 4 }
    }

    /// The output as [N, anchors, fields] (differentiable).
    pub fn canonical(&self, out: &Tensor) -> Result<Tensor> {
        Ok(if self.channels_first {
            out.transpose(1, 2)?.contiguous()?
        } else {
            out.contiguous()?
        })
    }
}

/// A box in input pixels [x1, y1, x2, y2] with class and score.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub class: usize,
    pub score: f32,
}

pub fn xyxy(cx: f32, cy: f32, w: f32, h: f32) -> [f32; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

/// Candidate boxes of one image from its canonical [anchors, fields] rows.
pub fn decode(fmt: &YoloFormat, rows: &[f32], threshold: f32) -> Vec<Detection> {
    let f = fmt.fields();
    let mut out = Vec::new();
    for row in rows.chunks_exact(f) {
        let obj = if fmt.objectness { row[4] } else { 1.0 };
        let (best, score) = row[fmt.class_offset()..].iter().enumerate().fold(
            (0, f32::NEG_INFINITY),
            |acc, (i, &s)| if s > acc.1 { (i, s) } else { acc },
        );
        let score = score * obj;
        if score >= threshold {
            out.push(Detection {
                bbox: xyxy(row[0], row[1], row[2], row[3]),
                class: best,
                score,
            });
        }
    }
    out
}

pub use flywheel_vision::{iou, nms};

impl flywheel_vision::Candidate for Detection {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_recognised() {
        let v8 = YoloFormat::detect(&[1, 7, 64], 3).unwrap();
        assert!(v8.channels_first && !v8.objectness && v8.anchors == 64);
        let v5 = YoloFormat::detect(&[1, 64, 8], 3).unwrap();
        assert!(!v5.channels_first && v5.objectness);
        assert!(YoloFormat::detect(&[1, 9, 9], 3).is_err());
    }

    #[test]
    fn decode_and_nms_keep_the_best_box() {
        let fmt = YoloFormat {
            channels_first: false,
            objectness: false,
            classes: 2,
            anchors: 3,
        };
        let rows = [
            10., 10., 4., 4., 0.9, 0.1, 10.5, 10., 4., 4., 0.8, 0.0, 30., 30., 4., 4., 0.1, 0.05,
        ];
        let kept = nms(decode(&fmt, &rows, 0.2), 0.5, 10);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].bbox, [8., 8., 12., 12.]);
    }
}
