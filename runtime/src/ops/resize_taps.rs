//! Resize along one axis by explicit tap weights, computed in f64 exactly as the ONNX reference
//! does: used for antialiased linear/cubic downscaling (the filter widens by 1/scale) and for
//! `tf_crop_and_resize` (source window from the roi input, extrapolation_value outside it).
//! The fast separable kernels in `resize.rs` cover every other mode.

use super::resize::{Coord, Nearest, Resize};
use candle_core::{DType, Result, Tensor};

/// Cubic convolution kernel with coefficient `a`.
fn cubic(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        (a + 2.0) * x * x * x - (a + 3.0) * x * x + 1.0
    } else if x < 2.0 {
        a * x * x * x - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

/// Tap weights for the fractional position `ratio` in (0, 1] (1 at integer positions).
fn coeffs(r: &Resize, ratio: f64, scale: f64) -> Vec<f64> {
    if let Some((a, _)) = r.cubic {
        if !r.antialias {
            return vec![cubic(ratio + 1.0, a), cubic(ratio, a), cubic(1.0 - ratio, a), cubic(2.0 - ratio, a)];
        }
        let s = scale.min(1.0);
        let start = (-2.0 / s).floor() as i64 + 1;
        let c: Vec<f64> = (start..2 - start).map(|i| cubic(s * (i as f64 - ratio), a)).collect();
        let sum: f64 = c.iter().sum();
        return c.into_iter().map(|v| v / sum).collect();
    }
    if r.linear {
        if !r.antialias {
            return vec![1.0 - ratio, ratio];
        }
        let s = scale.min(1.0);
        let start = (-1.0 / s).floor() as i64 + 1;
        let footprint = 2 - 2 * start;
        let c: Vec<f64> =
            (start..start + footprint).map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0)).collect();
        let sum: f64 = c.iter().sum();
        return c.into_iter().map(|v| v / sum).collect();
    }
    if ratio == 1.0 {
        return vec![0.0, 1.0];
    }
    let up = match r.nearest {
        Nearest::RoundPreferFloor => ratio > 0.5,
        Nearest::RoundPreferCeil => ratio >= 0.5,
        Nearest::Floor => false,
        Nearest::Ceil => true,
    };
    if up { vec![0.0, 1.0] } else { vec![1.0, 0.0] }
}

/// The roi window of one axis (tf_crop_and_resize). With a float32 roi the reference computes
/// `end - start` and `start * (in - 1)` in float32, which decides ties in nearest mode.
#[derive(Debug, Clone, Copy)]
pub struct Roi {
    pub start: f64,
    pub end: f64,
    pub f32: bool,
}

/// Source coordinate of output index `y` (None when tf_crop_and_resize extrapolates).
fn source(r: &Resize, y: f64, scale: f64, in_len: usize, out_len: usize, roi: Roi) -> Option<f64> {
    let in_f = in_len as f64;
    let out_f = scale * in_f;
    Some(match r.coord {
        Coord::AlignCorners => {
            if out_f == 1.0 {
                0.0
            } else {
                y * (in_f - 1.0) / (out_f - 1.0)
            }
        }
        Coord::Asymmetric => y / scale,
        Coord::TfCropAndResize => {
            let (s32, e32, n32) = (roi.start as f32, roi.end as f32, (in_len - 1) as f32);
            let (width, start) = if roi.f32 {
                ((e32 - s32) as f64, (s32 * n32) as f64)
            } else {
                (roi.end - roi.start, roi.start * (in_f - 1.0))
            };
            let x = if out_f == 1.0 {
                if roi.f32 { ((e32 - s32) * n32 / 2.0) as f64 } else { width * (in_f - 1.0) / 2.0 }
            } else {
                y * width * (in_f - 1.0) / (out_f - 1.0)
            };
            let x = x + start;
            if x < 0.0 || x > in_f - 1.0 {
                return None;
            }
            x
        }
        Coord::PytorchHalfPixel => {
            if out_f == 1.0 {
                -0.5
            } else {
                (y + 0.5) / scale - 0.5
            }
        }
        Coord::HalfPixel => (y + 0.5) / scale - 0.5,
        Coord::HalfPixelSymmetric => {
            let offset = in_f / 2.0 * (1.0 - out_len as f64 / out_f);
            offset + (y + 0.5) / scale - 0.5
        }
    })
}

/// Resize axis `d` of `x` to `out_len` with scale `scale` and (tf_crop_and_resize) `roi`.
pub fn resize_axis(x: &Tensor, d: usize, out_len: usize, scale: f64, r: &Resize, roi: Roi) -> Result<Tensor> {
    if x.track_op() {
        candle_core::bail!("training through antialiased or tf_crop_and_resize Resize is not supported");
    }
    let dims = x.dims().to_vec();
    let in_len = dims[d];
    let outer: usize = dims[..d].iter().product();
    let inner: usize = dims[d + 1..].iter().product();
    let v = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    // Per output index: (tap indices clamped into the input, weights) or None to extrapolate.
    let taps: Vec<Option<(Vec<usize>, Vec<f64>)>> = (0..out_len)
        .map(|i| {
            let xo = source(r, i as f64, scale, in_len, out_len, roi)?;
            let xi = xo.floor();
            let ratio = if xo == xi { 1.0 } else { xo - xi };
            let mut c = coeffs(r, ratio, scale);
            let n = c.len() as i64;
            // The n input positions nearest to xo, ties to the smaller index (reference semantics).
            let pad = (n + 1) / 2;
            let xp = xo + pad as f64;
            let p = xp.floor() as i64;
            let frac = xp - p as f64;
            let offset = if n % 2 == 0 {
                if frac == 0.0 { -(n / 2) } else { -(n / 2) + 1 }
            } else if frac <= 0.5 {
                -((n - 1) / 2)
            } else {
                -((n - 1) / 2) + 1
            };
            let idx: Vec<i64> = (0..n).map(|j| p + offset + j - pad).collect();
            if r.cubic.is_some_and(|(_, exclude)| exclude) {
                for (w, &k) in c.iter_mut().zip(&idx) {
                    if k < 0 || k >= in_len as i64 {
                        *w = 0.0;
                    }
                }
                let sum: f64 = c.iter().sum();
                let sum = if sum == 0.0 { 1.0 } else { sum };
                c.iter_mut().for_each(|w| *w /= sum);
            }
            Some((idx.into_iter().map(|k| k.clamp(0, in_len as i64 - 1) as usize).collect(), c))
        })
        .collect();
    let mut out = vec![0f64; outer * out_len * inner];
    for o in 0..outer {
        let src = &v[o * in_len * inner..(o + 1) * in_len * inner];
        for (i, t) in taps.iter().enumerate() {
            let dst = &mut out[(o * out_len + i) * inner..][..inner];
            match t {
                None => dst.fill(r.extrapolation),
                Some((idx, w)) => {
                    for (&k, &wk) in idx.iter().zip(w) {
                        for (dv, sv) in dst.iter_mut().zip(&src[k * inner..(k + 1) * inner]) {
                            *dv += wk * sv;
                        }
                    }
                }
            }
        }
    }
    let mut shape = dims;
    shape[d] = out_len;
    Tensor::from_vec(out, shape, x.device())?.to_dtype(x.dtype())
}
