//! What is optimised and measured for each task: cross-entropy and accuracy for
//! classification; box (L1) + class (BCE) [+ objectness (BCE)] losses and mAP@0.5 for YOLO-style
//! detection.
//!
//! Detection targets are assigned from the model's own (detached) predictions, so any
//! YOLO-style head works without knowing its grid: each ground-truth box takes the anchors
//! whose predicted centre lies inside it, best IoU first (up to `TOP_K`), or else the anchor
//! with the nearest predicted centre.

use candle_core::{D, Tensor};

use flywheel_vision::quality::{self, ImageBoxes, Predicted, Truth};

use super::yolo::{self, Detection, YoloFormat};
use crate::error::Result;

const TOP_K: usize = 3;
const BOX_WEIGHT: f64 = 5.0;
const PROB_EPS: f64 = 1e-6;
/// Score threshold and NMS settings used for mAP.
const EVAL_THRESHOLD: f32 = 0.001;
const EVAL_MAX_DETECTIONS: usize = 100;

/// Pre-processed samples: model inputs and targets in input pixels.
pub struct Prepared {
    pub inputs: Vec<Vec<f32>>,
    pub labels: Vec<usize>,
    pub boxes: Vec<Vec<(usize, [f32; 4])>>,
}

impl Prepared {
    pub fn len(&self) -> usize {
        self.inputs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Objective {
    Classification { classes: usize, probabilities: bool },
    Detection { format: YoloFormat, input_size: (f32, f32), nms_iou: f32 },
}

impl Objective {
    pub fn metric_name(&self) -> &'static str {
        match self {
            Objective::Classification { .. } => "accuracy",
            Objective::Detection { .. } => "mAP50",
        }
    }

    /// Mean loss of a batch (differentiable).
    pub fn loss(&self, output: &Tensor, batch: &[usize], data: &Prepared) -> Result<Tensor> {
        match *self {
            Objective::Classification { classes, probabilities } => {
                let logp = if probabilities {
                    output.clamp(PROB_EPS, 1.0)?.log()?
                } else {
                    let max = output.max_keepdim(D::Minus1)?.detach();
                    let z = output.broadcast_sub(&max)?;
                    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
                    z.broadcast_sub(&lse)?
                };
                let mut onehot = vec![0f32; batch.len() * classes];
                for (row, &i) in batch.iter().enumerate() {
                    onehot[row * classes + data.labels[i]] = 1.0;
                }
                let onehot = Tensor::from_vec(onehot, (batch.len(), classes), output.device())?;
                Ok((logp * onehot)?.sum_all()?.affine(-1.0 / batch.len() as f64, 0.0)?)
            }
            Objective::Detection { format, input_size, .. } => detection_loss(&format, input_size, output, batch, data),
        }
    }

    /// The eval metric over outputs of every eval sample (in order): top-1 accuracy or COCO-style
    /// mAP@0.5, as flywheel-vision defines them for the server's reviewed-quality gauges too.
    pub fn metric(&self, outputs: &[Tensor], data: &Prepared) -> Result<f64> {
        match *self {
            Objective::Classification { .. } => {
                let mut samples = Vec::new();
                for o in outputs {
                    for scores in o.to_vec2::<f32>()? {
                        let truth = data.labels[samples.len()];
                        samples.push((scores.into_iter().enumerate().collect(), truth));
                    }
                }
                Ok(quality::accuracy(&samples).map_or(0.0, |a| a.top1))
            }
            Objective::Detection { format, nms_iou, .. } => {
                let mut images = Vec::new();
                for o in outputs {
                    for dets in detections(&format, o, EVAL_THRESHOLD, nms_iou)? {
                        let truth = &data.boxes[images.len()];
                        images.push(ImageBoxes {
                            predicted: dets
                                .into_iter()
                                .map(|d| Predicted { class: d.class, bbox: d.bbox, score: d.score })
                                .collect(),
                            truth: truth.iter().map(|&(class, bbox)| Truth { class, bbox }).collect(),
                        });
                    }
                }
                Ok(quality::detection_quality(&images).map_or(0.0, |q| q.map50))
            }
        }
    }
}

fn bce_sum(p: &Tensor, target: &Tensor) -> Result<Tensor> {
    let p = p.clamp(PROB_EPS, 1.0 - PROB_EPS)?;
    let pos = (target * p.log()?)?;
    let neg = (target.affine(-1.0, 1.0)? * p.affine(-1.0, 1.0)?.log()?)?;
    Ok((pos + neg)?.sum_all()?.neg()?)
}

fn detection_loss(
    fmt: &YoloFormat,
    size: (f32, f32),
    output: &Tensor,
    batch: &[usize],
    data: &Prepared,
) -> Result<Tensor> {
    let out = yolo::canonical(fmt, output)?; // [B, A, F]
    let (b, a, f) = out.dims3()?;
    let values = out.detach().to_vec3::<f32>()?;
    let c = fmt.classes;
    let mut cls_t = vec![0f32; b * a * c];
    let mut box_t = vec![0f32; b * a * 4];
    let mut mask = vec![0f32; b * a];
    let mut positives = 0usize;
    for (row, &i) in batch.iter().enumerate() {
        for (anchor, class, gt) in assign(&values[row], &data.boxes[i]) {
            let k = row * a + anchor;
            mask[k] = 1.0;
            cls_t[k * c + class] = 1.0;
            box_t[k * 4..k * 4 + 4].copy_from_slice(&[
                (gt[0] + gt[2]) / 2.0,
                (gt[1] + gt[3]) / 2.0,
                gt[2] - gt[0],
                gt[3] - gt[1],
            ]);
            positives += 1;
        }
    }
    let dev = output.device();
    let norm = positives.max(1) as f64;
    let cls_t = Tensor::from_vec(cls_t, (b, a, c), dev)?;
    let box_t = Tensor::from_vec(box_t, (b, a, 4), dev)?;
    let mask_t = Tensor::from_vec(mask, (b, a, 1), dev)?;
    let off = fmt.class_offset();
    let cls_p = out.narrow(2, off, f - off)?;
    let mut loss = (bce_sum(&cls_p, &cls_t)? / norm)?;
    // Box L1 in fractions of the input size, on positive anchors only.
    let scale = Tensor::from_vec(vec![1.0 / size.0, 1.0 / size.1, 1.0 / size.0, 1.0 / size.1], (1, 1, 4), dev)?;
    let diff = (out.narrow(2, 0, 4)? - box_t)?.abs()?.broadcast_mul(&scale)?.broadcast_mul(&mask_t)?;
    loss = (loss + (diff.sum_all()? * (BOX_WEIGHT / norm))?)?;
    if fmt.objectness {
        let obj_p = out.narrow(2, 4, 1)?;
        loss = (loss + (bce_sum(&obj_p, &mask_t)? / norm)?)?;
    }
    Ok((loss / b as f64)?)
}

/// (anchor, class, ground-truth box) pairs of one image; `rows` are canonical [A][F] values.
fn assign(rows: &[Vec<f32>], gts: &[(usize, [f32; 4])]) -> Vec<(usize, usize, [f32; 4])> {
    let mut owner: Vec<Option<(usize, f32)>> = vec![None; rows.len()];
    for (g, (_, gt)) in gts.iter().enumerate() {
        let (gcx, gcy) = ((gt[0] + gt[2]) / 2.0, (gt[1] + gt[3]) / 2.0);
        let mut inside: Vec<(usize, f32)> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r[0] >= gt[0] && r[0] <= gt[2] && r[1] >= gt[1] && r[1] <= gt[3])
            .map(|(k, r)| (k, yolo::iou(&yolo::xyxy(r[0], r[1], r[2], r[3]), gt)))
            .collect();
        if inside.is_empty() {
            let nearest = rows
                .iter()
                .enumerate()
                .map(|(k, r)| (k, (r[0] - gcx).powi(2) + (r[1] - gcy).powi(2)))
                .min_by(|x, y| x.1.total_cmp(&y.1));
            inside.extend(nearest.map(|(k, _)| (k, 0.0)));
        }
        inside.sort_by(|x, y| y.1.total_cmp(&x.1));
        for (k, quality) in inside.into_iter().take(TOP_K) {
            // An anchor claimed by two boxes goes to the one it overlaps more.
            if owner[k].is_none_or(|(_, q)| quality > q) {
                owner[k] = Some((g, quality));
            }
        }
    }
    owner.into_iter().enumerate().filter_map(|(k, o)| o.map(|(g, _)| (k, gts[g].0, gts[g].1))).collect()
}

/// Detections per image after NMS, from the raw `[N, D1, D2]` output (the metric's, and
/// `profile`'s for the confidence and box-size features).
pub fn detections(fmt: &YoloFormat, output: &Tensor, threshold: f32, nms_iou: f32) -> Result<Vec<Vec<Detection>>> {
    let mut out = Vec::new();
    for rows in output.to_vec3::<f32>()? {
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        out.push(yolo::nms(yolo::decode(fmt, &flat, threshold), nms_iou, EVAL_MAX_DETECTIONS));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_take_the_anchors_whose_centres_they_contain() {
        // Three anchors: centres at (5,5), (15,5), (50,50).
        let rows = vec![vec![5., 5., 8., 8., 0.5], vec![15., 5., 8., 8., 0.5], vec![50., 50., 8., 8., 0.5]];
        let got = assign(&rows, &[(0, [0., 0., 10., 10.]), (0, [45., 45., 48., 48.])]);
        let anchors: Vec<usize> = got.iter().map(|g| g.0).collect();
        assert_eq!(anchors, vec![0, 2]);
    }
}
