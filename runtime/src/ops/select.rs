//! Selection ops: TopK and NonMaxSuppression (what detectors exported with NMS in the graph use).
//!
//! Both follow onnxruntime and the ONNX reference implementation exactly: TopK breaks ties by the
//! lower index whether it takes the largest or the smallest values; NonMaxSuppression visits boxes
//! per batch and class by descending score (ties: lower box index first), keeps a box whose IoU
//! with every box already kept for that class is not above `iou_threshold`, and computes the IoU
//! in f32 with the same operations, so boxes on the threshold go the same way.

use super::narrow::Held;
use super::{Op, Source, floats, ints, norm_axis, opt, req};
use crate::error::LoadError;
use crate::proto::Attrs;
use candle_core::{DType, Result, Tensor, bail};
use std::cmp::Ordering;

#[derive(Debug, Clone)]
pub struct TopK {
    /// `k` attribute before opset 10, input 1 (`K`, one int64) from opset 10.
    pub k: Source<i64>,
    pub axis: i64,
    pub largest: bool,
    /// The element type when it is held in another dtype (int8, uint16, uint64; set at load by
    /// the type pass): uint64 is ordered as unsigned although held as its i64 bit pattern.
    pub held: Option<Held>,
}

#[derive(Debug, Clone)]
pub struct Nms {
    /// Boxes as (x_center, y_center, width, height) instead of two corners (y1, x1, y2, x2).
    pub center_point_box: bool,
}

pub fn parse(a: &Attrs, opset: i64) -> std::result::Result<Option<Op>, LoadError> {
    Ok(Some(match a.node.op_type.as_str() {
        "TopK" => {
            let k = if opset < 10 {
                a.only(&["axis", "k"])?;
                Source::Attr(a.int("k").ok_or_else(|| a.err("missing attribute k"))?)
            } else {
                if opset < 11 {
                    a.only(&["axis"])?;
                } else {
                    // sorted = 0 leaves the order unspecified: sorted output conforms as well.
                    a.only(&["axis", "largest", "sorted"])?;
                }
                Source::Input(1)
            };
            Op::TopK(TopK { k, axis: a.int_or("axis", -1), largest: a.int_or("largest", 1) != 0, held: None })
        }
        "NonMaxSuppression" => {
            a.only(&["center_point_box"])?;
            let center_point_box = match a.int_or("center_point_box", 0) {
                0 => false,
                1 => true,
                v => return Err(a.err(format!("center_point_box must be 0 or 1, got {v}"))),
            };
            Op::Nms(Nms { center_point_box })
        }
        _ => return Ok(None),
    }))
}

/// NaN orders above every number (as numpy sorts); -0 equals +0.
fn cmp_f64(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// For every lane along the axis of a row-major `[outer, n, inner]` array, the indices of its `k`
/// best values, best first (largest or smallest; ties by the lower index), laid out `[outer, k, inner]`.
fn top_indices<T: Copy>(
    v: &[T],
    (outer, n, inner): (usize, usize, usize),
    k: usize,
    largest: bool,
    cmp: impl Fn(T, T) -> Ordering,
) -> Vec<i64> {
    let mut out = vec![0i64; outer * k * inner];
    if k == 0 {
        return out;
    }
    let mut lane: Vec<usize> = Vec::with_capacity(n);
    for o in 0..outer {
        for i in 0..inner {
            let key = |j: usize| v[(o * n + j) * inner + i];
            let before = |a: &usize, b: &usize| {
                let c = cmp(key(*a), key(*b));
                if largest { c.reverse() } else { c }.then(a.cmp(b))
            };
            lane.clear();
            lane.extend(0..n);
            if k < n {
                lane.select_nth_unstable_by(k - 1, before);
                lane.truncate(k);
            }
            lane.sort_unstable_by(before);
            for (r, &j) in lane.iter().enumerate() {
                out[(o * k + r) * inner + i] = j as i64;
            }
        }
    }
    out
}

/// Values (the input's type) and Indices (int64) of the `k` largest or smallest elements along the axis, sorted.
pub fn top_k(t: &TopK, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = req(ins, 0)?;
    let k = match &t.k {
        Source::Attr(k) => *k,
        Source::Input(i) => match ints(req(ins, *i)?)?.as_slice() {
            [k] => *k,
            v => bail!("TopK: K must hold exactly one value, got {} values", v.len()),
        },
        Source::Absent => bail!("TopK: no K"),
    };
    if x.rank() == 0 {
        bail!("TopK needs an input of rank at least 1");
    }
    let axis = norm_axis(t.axis, x.rank())?;
    let dims = x.dims();
    let n = dims[axis];
    if k < 0 || k as usize > n {
        bail!("TopK: k = {k} is outside [0, {n}] (axis {axis} of shape {dims:?})");
    }
    let k = k as usize;
    let lanes = (dims[..axis].iter().product(), n, dims[axis + 1..].iter().product());
    let order = if x.dtype().is_float() {
        top_indices(&floats(x)?, lanes, k, t.largest, cmp_f64)
    } else {
        let v: Vec<i128> = match t.held {
            Some(h) => h.read(x)?,
            None => ints(x)?.into_iter().map(i128::from).collect(),
        };
        top_indices(&v, lanes, k, t.largest, |a: i128, b| a.cmp(&b))
    };
    let mut shape = dims.to_vec();
    shape[axis] = k;
    let indices = Tensor::from_vec(order, shape.as_slice(), x.device())?;
    let values = if k == 0 {
        Tensor::zeros(shape.as_slice(), x.dtype(), x.device())?
    } else {
        x.contiguous()?.gather(&indices, axis)?
    };
    Ok(vec![values, indices])
}

/// `std::max` / Python's `max` on two floats (NaN handling included).
fn max2(a: f32, b: f32) -> f32 {
    if a < b { b } else { a }
}

fn min2(a: f32, b: f32) -> f32 {
    if b < a { b } else { a }
}

/// (min, max) of two coordinates.
fn ordered(a: f32, b: f32) -> (f32, f32) {
    if a >= b { (b, a) } else { (a, b) }
}

/// A box as (x_min, x_max, y_min, y_max), computed as onnxruntime does.
fn corners(b: &[f32], center_point_box: bool) -> [f32; 4] {
    if center_point_box {
        let (w, h) = (b[2] / 2.0, b[3] / 2.0);
        [b[0] - w, b[0] + w, b[1] - h, b[1] + h]
    } else {
        let (x0, x1) = ordered(b[1], b[3]);
        let (y0, y1) = ordered(b[0], b[2]);
        [x0, x1, y0, y1]
    }
}

/// Whether box `a` suppresses box `b`: IoU strictly above the threshold (onnxruntime's SuppressByIOU).
fn suppresses(a: &[f32; 4], b: &[f32; 4], iou_threshold: f32) -> bool {
    let (ix0, ix1) = (max2(a[0], b[0]), min2(a[1], b[1]));
    if ix1 <= ix0 {
        return false;
    }
    let (iy0, iy1) = (max2(a[2], b[2]), min2(a[3], b[3]));
    if iy1 <= iy0 {
        return false;
    }
    let inter = (ix1 - ix0) * (iy1 - iy0);
    if inter <= 0.0 {
        return false;
    }
    let area_a = (a[1] - a[0]) * (a[3] - a[2]);
    let area_b = (b[1] - b[0]) * (b[3] - b[2]);
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > iou_threshold
}

/// The first value of an optional scalar input; an empty tensor counts as absent.
fn scalar(ins: &[Option<&Tensor>], i: usize) -> Result<Option<f64>> {
    match opt(ins, i).filter(|t| t.elem_count() > 0) {
        Some(t) => Ok(Some(floats(t)?[0])),
        None => Ok(None),
    }
}

/// selected_indices, int64 `[num_selected, 3]` of (batch_index, class_index, box_index).
pub fn non_max_suppression(p: &Nms, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let (boxes, scores) = (req(ins, 0)?, req(ins, 1)?);
    let (&[batches, spatial, four], &[s_batches, classes, s_spatial]) = (boxes.dims(), scores.dims()) else {
        bail!("NonMaxSuppression: boxes {:?} and scores {:?} must both have rank 3", boxes.dims(), scores.dims());
    };
    if four != 4 || s_batches != batches || s_spatial != spatial {
        bail!(
            "NonMaxSuppression: boxes {:?} must be [num_batches, spatial_dimension, 4] and scores {:?} \
             [num_batches, num_classes, spatial_dimension]",
            boxes.dims(),
            scores.dims()
        );
    }
    let max_per_class = match opt(ins, 2).filter(|t| t.elem_count() > 0) {
        Some(t) => ints(t)?[0].max(0) as usize,
        None => 0,
    };
    let iou_threshold = scalar(ins, 3)?.unwrap_or(0.0) as f32;
    if !(0.0..=1.0).contains(&iou_threshold) {
        bail!("NonMaxSuppression: iou_threshold must be in [0, 1], got {iou_threshold}");
    }
    let score_threshold = scalar(ins, 4)?.map(|v| v as f32);
    let mut selected: Vec<i64> = Vec::new();
    if max_per_class > 0 && spatial > 0 {
        let b: Vec<f32> = boxes.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let s: Vec<f32> = scores.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let mut candidates: Vec<usize> = Vec::with_capacity(spatial);
        let mut kept: Vec<usize> = Vec::new();
        for batch in 0..batches {
            let c: Vec<[f32; 4]> = b[batch * spatial * 4..][..spatial * 4]
                .chunks_exact(4)
                .map(|b| corners(b, p.center_point_box))
                .collect();
            for class in 0..classes {
                let sc = &s[(batch * classes + class) * spatial..][..spatial];
                candidates.clear();
                candidates.extend((0..spatial).filter(|&j| score_threshold.is_none_or(|t| sc[j] > t)));
                candidates.sort_unstable_by(|&i, &j| cmp_f64(sc[j] as f64, sc[i] as f64).then(i.cmp(&j)));
                kept.clear();
                for &j in &candidates {
                    if kept.len() >= max_per_class {
                        break;
                    }
                    if kept.iter().all(|&q| !suppresses(&c[j], &c[q], iou_threshold)) {
                        kept.push(j);
                        selected.extend([batch as i64, class as i64, j as i64]);
                    }
                }
            }
        }
    }
    let n = selected.len() / 3;
    Tensor::from_vec(selected, (n, 3), boxes.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn top(x: &Tensor, k: i64, axis: i64, largest: bool) -> (Tensor, Vec<i64>) {
        let t = TopK { k: Source::Attr(k), axis, largest, held: None };
        let mut out = top_k(&t, &[Some(x)]).unwrap();
        let idx = out.pop().unwrap().flatten_all().unwrap().to_vec1::<i64>().unwrap();
        (out.pop().unwrap(), idx)
    }

    #[test]
    fn top_k_breaks_ties_by_the_lower_index() {
        let x = Tensor::new(&[3f32, 7.0, 3.0, 7.0, 1.0, 3.0], &Device::Cpu).unwrap();
        let (v, i) = top(&x, 3, 0, true);
        assert_eq!(v.to_vec1::<f32>().unwrap(), vec![7.0, 7.0, 3.0]);
        assert_eq!(i, vec![1, 3, 0]);
        let (v, i) = top(&x, 4, -1, false);
        assert_eq!(v.to_vec1::<f32>().unwrap(), vec![1.0, 3.0, 3.0, 3.0]);
        assert_eq!(i, vec![4, 0, 2, 5]);
        // Along the first axis of a matrix: each column separately.
        let m = Tensor::new(&[[2i64, 5], [9, 5], [2, 5]], &Device::Cpu).unwrap();
        let (v, i) = top(&m, 2, 0, true);
        assert_eq!(v.to_vec2::<i64>().unwrap(), vec![vec![9, 5], vec![2, 5]]);
        assert_eq!(i, vec![1, 0, 0, 1]);
    }

    #[test]
    fn top_k_orders_uint64_as_unsigned() {
        let x = Held::U64.write(vec![1, u64::MAX as i128, 1 << 63, 5], &4.into(), &Device::Cpu).unwrap();
        let t = TopK { k: Source::Attr(2), axis: 0, largest: true, held: Some(Held::U64) };
        let out = top_k(&t, &[Some(&x)]).unwrap();
        assert_eq!(Held::U64.read(&out[0]).unwrap(), vec![u64::MAX as i128, 1 << 63]);
        assert_eq!(out[1].to_vec1::<i64>().unwrap(), vec![1, 2]);
    }

    fn nms(boxes: &[[f32; 4]], scores: &[f32], center: bool, max: i64, iou: f32, score: Option<f32>) -> Vec<Vec<i64>> {
        let dev = &Device::Cpu;
        let b = Tensor::from_vec(boxes.concat(), (1, boxes.len(), 4), dev).unwrap();
        let s = Tensor::new(scores, dev).unwrap().reshape((1, 1, scores.len())).unwrap();
        let (m, i) = (Tensor::new(&[max], dev).unwrap(), Tensor::new(&[iou], dev).unwrap());
        let st = score.map(|v| Tensor::new(&[v], dev).unwrap());
        let out = non_max_suppression(
            &Nms { center_point_box: center },
            &[Some(&b), Some(&s), Some(&m), Some(&i), st.as_ref()],
        )
        .unwrap();
        out.to_vec2::<i64>().unwrap()
    }

    #[test]
    fn nms_with_center_point_boxes() {
        // (x_center, y_center, width, height). Box 1 (the best score) overlaps box 0 with IoU 0.6
        // (3 / 5) and contains box 2 (IoU 0.5 = 2 / 4); box 2 overlaps box 0 with IoU 0.2; box 3 is apart.
        let boxes = [[1.0f32, 1.0, 2.0, 2.0], [1.5, 1.0, 2.0, 2.0], [2.0, 1.0, 1.0, 2.0], [10.0, 10.0, 1.0, 1.0]];
        let scores = [0.9f32, 0.95, 0.8, 0.1];
        let sel = |iou, score| nms(&boxes, &scores, true, 10, iou, score);
        // A box whose IoU equals the threshold is kept.
        assert_eq!(sel(0.5, None), vec![vec![0, 0, 1], vec![0, 0, 2], vec![0, 0, 3]]);
        assert_eq!(sel(0.6, None), vec![vec![0, 0, 1], vec![0, 0, 0], vec![0, 0, 2], vec![0, 0, 3]]);
        // The score threshold is strict.
        assert_eq!(sel(0.49, Some(0.1)), vec![vec![0, 0, 1]]);
        // The same boxes as corners (y1, x1, y2, x2), some given in the other order.
        let corners = [[0.0f32, 0.0, 2.0, 2.0], [2.0, 0.5, 0.0, 2.5], [0.0, 2.5, 2.0, 1.5], [9.5, 9.5, 10.5, 10.5]];
        assert_eq!(nms(&corners, &scores, false, 10, 0.5, None), sel(0.5, None));
        assert_eq!(nms(&corners, &scores, false, 2, 0.6, None), vec![vec![0, 0, 1], vec![0, 0, 0]]);
    }

    #[test]
    fn nms_equal_scores_take_the_lower_box_index() {
        let boxes = [[0.0f32, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]];
        assert_eq!(nms(&boxes, &[0.5, 0.7, 0.7], false, 5, 0.5, None), vec![vec![0, 0, 1]]);
        assert_eq!(nms(&boxes, &[0.5, 0.7, 0.7], false, 0, 0.5, None), Vec::<Vec<i64>>::new());
    }
}
