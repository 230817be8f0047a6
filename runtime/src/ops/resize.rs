//! Resize (opset 10+) and Upsample (opset 7-9): nearest, linear and cubic modes, applied axis by
//! axis (all are separable). Antialiased downscaling and tf_crop_and_resize go through the
//! explicit-tap path in `resize_taps.rs`.

use super::{Op, ints, opt, req};
use crate::error::LoadError;
use crate::proto::Attrs;
use candle_core::{DType, Result, Tensor, bail};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Debug, Clone)]
pub struct Resize {
    pub linear: bool,
    /// Cubic interpolation with coefficient A (cubic_coeff_a) and exclude_outside.
    pub cubic: Option<(f64, bool)>,
    /// keep_aspect_ratio_policy: None = stretch, Some(true) = not_larger, Some(false) = not_smaller.
    pub keep_aspect: Option<bool>,
    pub coord: Coord,
    pub nearest: Nearest,
    /// Upsample opset 7 keeps scales as an attribute.
    pub attr_scales: Option<Vec<f32>>,
    /// Input indices of scales and sizes.
    pub scales_input: Option<usize>,
    pub sizes_input: Option<usize>,
    pub axes: Option<Vec<i64>>,
    /// Antialiased linear/cubic filter (widened by 1/scale when downscaling).
    pub antialias: bool,
    /// Output value outside the roi window (tf_crop_and_resize).
    pub extrapolation: f64,
    /// Input index of the roi (opset 11+).
    pub roi_input: Option<usize>,
}

pub fn parse(a: &Attrs, opset: i64) -> std::result::Result<Option<Op>, LoadError> {
    let op = a.node.op_type.as_str();
    if op == "Upsample" {
        a.only(&["mode", "scales", "height_scale", "width_scale"])?;
        let linear = match a.string_or("mode", "nearest").as_str() {
            "nearest" => false,
            "linear" | "bilinear" => true,
            m => return Err(a.err(format!("mode '{m}' is not supported"))),
        };
        let attr_scales = a.floats("scales");
        if attr_scales.is_none() && a.node.input.len() < 2 {
            return Err(a.err("missing scales"));
        }
        return Ok(Some(Op::Resize(Resize {
            linear,
            cubic: None,
            keep_aspect: None,
            coord: Coord::Asymmetric,
            nearest: Nearest::Floor,
            scales_input: if attr_scales.is_none() { Some(1) } else { None },
            attr_scales,
            sizes_input: None,
            axes: None,
            antialias: false,
            extrapolation: 0.0,
            roi_input: None,
        })));
    }
    if op != "Resize" {
        return Ok(None);
    }
    a.only(&[
        "mode",
        "coordinate_transformation_mode",
        "nearest_mode",
        "cubic_coeff_a",
        "exclude_outside",
        "extrapolation_value",
        "antialias",
        "axes",
        "keep_aspect_ratio_policy",
    ])?;
    let mode = a.string_or("mode", "nearest");
    let linear = match mode.as_str() {
        "nearest" | "cubic" => false,
        "linear" => true,
        m => return Err(a.err(format!("mode '{m}' is not supported (nearest, linear and cubic are)"))),
    };
    let cubic =
        (mode == "cubic").then(|| (a.float_or("cubic_coeff_a", -0.75) as f64, a.int_or("exclude_outside", 0) != 0));
    let antialias = a.int_or("antialias", 0) != 0;
    if antialias && !linear && cubic.is_none() {
        return Err(a.err("antialias=1 is only defined for modes 'linear' and 'cubic'"));
    }
    if a.int_or("exclude_outside", 0) != 0 && cubic.is_none() {
        return Err(a.err("exclude_outside=1 is only supported with mode 'cubic'"));
    }
    let keep_aspect = match a.string_or("keep_aspect_ratio_policy", "stretch").as_str() {
        "stretch" => None,
        "not_larger" => Some(true),
        "not_smaller" => Some(false),
        p => return Err(a.err(format!("keep_aspect_ratio_policy '{p}' is not supported"))),
    };
    let default_coord = if opset < 11 { "asymmetric" } else { "half_pixel" };
    let coord = match a.string_or("coordinate_transformation_mode", default_coord).as_str() {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_crop_and_resize" if opset >= 11 => {
            if a.node.input.get(1).is_none_or(|r| r.is_empty()) {
                return Err(a.err("coordinate_transformation_mode 'tf_crop_and_resize' needs the roi input"));
            }
            Coord::TfCropAndResize
        }
        m => return Err(a.err(format!("coordinate_transformation_mode '{m}' is not supported"))),
    };
    let nearest = match a.string_or("nearest_mode", if opset < 11 { "floor" } else { "round_prefer_floor" }).as_str() {
        "round_prefer_floor" => Nearest::RoundPreferFloor,
        "round_prefer_ceil" => Nearest::RoundPreferCeil,
        "floor" => Nearest::Floor,
        "ceil" => Nearest::Ceil,
        m => return Err(a.err(format!("nearest_mode '{m}' is not supported"))),
    };
    // Opset 10: (X, scales). Opset 11+: (X, roi, scales, sizes).
    let (scales_input, sizes_input) = if opset < 11 { (Some(1), None) } else { (Some(2), Some(3)) };
    Ok(Some(Op::Resize(Resize {
        linear,
        cubic,
        keep_aspect,
        coord,
        nearest,
        attr_scales: None,
        scales_input,
        sizes_input,
        axes: a.ints("axes"),
        antialias,
        extrapolation: a.float_or("extrapolation_value", 0.0) as f64,
        roi_input: (opset >= 11).then_some(1),
    })))
}

pub fn resize(r: &Resize, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = req(ins, 0)?;
    let rank = x.rank();
    let axes: Vec<usize> = match &r.axes {
        Some(v) => v.iter().map(|&a| super::norm_axis(a, rank)).collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    let scales_t = r.scales_input.and_then(|i| opt(ins, i)).filter(|t| t.elem_count() > 0);
    let sizes_t = r.sizes_input.and_then(|i| opt(ins, i)).filter(|t| t.elem_count() > 0);
    let mut scales = vec![1f64; rank];
    let mut sizes: Vec<usize> = x.dims().to_vec();
    if let Some(s) = &r.attr_scales {
        if s.len() != rank {
            bail!("scales has {} values for rank {rank}", s.len())
        }
        for d in 0..rank {
            scales[d] = s[d] as f64;
            sizes[d] = (x.dims()[d] as f64 * scales[d]).floor() as usize;
        }
    } else if let Some(s) = scales_t {
        // Scales are float32 in the model: keep that precision for the output size.
        let s: Vec<f32> = s.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        if s.len() != axes.len() {
            bail!("scales has {} values for {} axes", s.len(), axes.len())
        }
        for (i, &d) in axes.iter().enumerate() {
            scales[d] = s[i] as f64;
            sizes[d] = (x.dims()[d] as f32 * s[i]).floor() as usize;
        }
    } else if let Some(s) = sizes_t {
        let s = ints(s)?;
        if s.len() != axes.len() {
            bail!("sizes has {} values for {} axes", s.len(), axes.len())
        }
        match r.keep_aspect {
            None => {
                for (i, &d) in axes.iter().enumerate() {
                    sizes[d] = s[i] as usize;
                    scales[d] = s[i] as f64 / x.dims()[d] as f64;
                }
            }
            Some(not_larger) => {
                // One scale for all axes; sizes rounded from it (numpy rounds half to even).
                let ratios = axes.iter().enumerate().map(|(i, &d)| s[i] as f32 / x.dims()[d] as f32);
                let scale = if not_larger { ratios.fold(f32::INFINITY, f32::min) } else { ratios.fold(0f32, f32::max) };
                for &d in &axes {
                    sizes[d] = (scale * x.dims()[d] as f32).round_ties_even() as usize;
                    scales[d] = scale as f64;
                }
            }
        }
    } else {
        bail!("Resize needs scales or sizes");
    }
    if r.antialias || r.coord == Coord::TfCropAndResize {
        return resize_by_taps(x, r, &axes, &sizes, &scales, ins);
    }
    let changed: Vec<usize> = (0..rank).filter(|&d| sizes[d] != x.dims()[d] || scales[d] != 1.0).collect();
    if r.cubic.is_none()
        && rank >= 2
        && changed.iter().all(|&d| d >= rank - 2)
        && !x.track_op()
        && let Some(y) = resize_hw_fast(x, &sizes, &scales, r)?
    {
        return Ok(y);
    }
    let mut y = x.clone();
    for d in 0..rank {
        if sizes[d] != x.dims()[d] || scales[d] != 1.0 {
            y = resize_axis(&y, d, sizes[d], scales[d], r)?;
        }
    }
    Ok(y)
}

/// Antialias / tf_crop_and_resize: every axis through the explicit-tap path, kept in f64 between
/// axes like the reference; an axis is skipped only when nothing changes along it.
fn resize_by_taps(
    x: &Tensor,
    r: &Resize,
    axes: &[usize],
    sizes: &[usize],
    scales: &[f64],
    ins: &[Option<&Tensor>],
) -> Result<Tensor> {
    let roi_t = r.roi_input.and_then(|i| opt(ins, i)).filter(|t| t.elem_count() > 0);
    let roi_f32 = roi_t.is_some_and(|t| t.dtype() == DType::F32);
    if r.coord == Coord::TfCropAndResize && roi_t.is_some_and(|t| !matches!(t.dtype(), DType::F32 | DType::F64)) {
        bail!("tf_crop_and_resize needs a float32 or float64 roi");
    }
    let roi = roi_t.map(super::floats).transpose()?;
    if r.coord == Coord::TfCropAndResize && roi.as_ref().is_none_or(|v| v.len() != 2 * axes.len()) {
        bail!("tf_crop_and_resize needs a roi of {} values (start and end per axis)", 2 * axes.len());
    }
    let mut y = x.to_dtype(DType::F64)?;
    for (k, &d) in axes.iter().enumerate() {
        let window = match (&roi, r.coord) {
            (Some(v), Coord::TfCropAndResize) => {
                super::resize_taps::Roi { start: v[k], end: v[axes.len() + k], f32: roi_f32 }
            }
            _ => super::resize_taps::Roi { start: 0.0, end: 1.0, f32: false },
        };
        let unit = window.start.abs() < 1e-9 && (window.end - 1.0).abs() < 1e-9;
        if (scales[d] - 1.0).abs() < 1e-9 && sizes[d] == x.dims()[d] && unit {
            continue;
        }
        y = super::resize_taps::resize_axis(&y, d, sizes[d], scales[d], r, window)?;
    }
    y.to_dtype(x.dtype())
}

fn source_coord(r: &Resize, out_i: usize, in_len: usize, out_len: usize, scale: f64) -> f64 {
    let x = out_i as f64;
    match r.coord {
        Coord::HalfPixel => (x + 0.5) / scale - 0.5,
        Coord::HalfPixelSymmetric => {
            let adj = out_len as f64 / (scale * in_len as f64);
            let center = in_len as f64 / 2.0;
            let offset = center * (1.0 - adj);
            offset + (x + 0.5) / scale - 0.5
        }
        Coord::PytorchHalfPixel => {
            if out_len > 1 {
                (x + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        // The output length here is in*scale as a real number (the ONNX reference), not the rounded size.
        Coord::AlignCorners => {
            let out_f = scale * in_len as f64;
            if out_f == 1.0 || out_len <= 1 { 0.0 } else { x * (in_len as f64 - 1.0) / (out_f - 1.0) }
        }
        Coord::Asymmetric => x / scale,
        // Never reached: tf_crop_and_resize is routed to `resize_by_taps` before any fast path.
        Coord::TfCropAndResize => x / scale,
    }
}

/// Source taps (i0, i1, weight of i1) of every output index along one axis.
fn axis_taps(r: &Resize, in_len: usize, out_len: usize, scale: f64) -> Vec<(usize, usize, f32)> {
    (0..out_len)
        .map(|i| {
            let c = source_coord(r, i, in_len, out_len, scale);
            if !r.linear {
                let n = match r.nearest {
                    Nearest::Floor => c.floor(),
                    Nearest::Ceil => c.ceil(),
                    Nearest::RoundPreferFloor => {
                        if c.fract() == 0.5 {
                            c.floor()
                        } else {
                            c.round()
                        }
                    }
                    Nearest::RoundPreferCeil => {
                        if c.fract() == 0.5 {
                            c.ceil()
                        } else {
                            c.round()
                        }
                    }
                };
                let n = n.clamp(0.0, in_len as f64 - 1.0) as usize;
                return (n, n, 0.0);
            }
            let c = c.clamp(0.0, in_len as f64 - 1.0);
            let lo = c.floor() as usize;
            (lo, (lo + 1).min(in_len - 1), (c - lo as f64) as f32)
        })
        .collect()
}

/// Direct kernel for resizing the last two axes of a contiguous f32 tensor (inference).
fn resize_hw_fast(x: &Tensor, sizes: &[usize], scales: &[f64], r: &Resize) -> Result<Option<Tensor>> {
    use rayon::prelude::*;
    let rank = x.rank();
    let (h, w) = (x.dims()[rank - 2], x.dims()[rank - 1]);
    let (oh, ow) = (sizes[rank - 2], sizes[rank - 1]);
    if h == 0 || w == 0 || oh == 0 || ow == 0 {
        return Ok(None);
    }
    let ys = axis_taps(r, h, oh, scales[rank - 2]);
    let xs = axis_taps(r, w, ow, scales[rank - 1]);
    let planes = x.elem_count() / (h * w);
    let out = super::fast::with_f32(x, |v| {
        let mut out = vec![0f32; planes * oh * ow];
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, o)| {
            let src = &v[p * h * w..(p + 1) * h * w];
            for (oy, &(y0, y1, wy)) in ys.iter().enumerate() {
                let (r0, r1) = (&src[y0 * w..(y0 + 1) * w], &src[y1 * w..(y1 + 1) * w]);
                for (ox, &(x0, x1, wx)) in xs.iter().enumerate() {
                    let top = r0[x0] + (r0[x1] - r0[x0]) * wx;
                    let bottom = r1[x0] + (r1[x1] - r1[x0]) * wx;
                    o[oy * ow + ox] = top + (bottom - top) * wy;
                }
            }
        });
        out
    });
    let Some(out) = out else { return Ok(None) };
    Ok(Some(Tensor::from_vec(out, sizes, x.device())?))
}

fn resize_axis(x: &Tensor, d: usize, out_len: usize, scale: f64, r: &Resize) -> Result<Tensor> {
    let x = &x.contiguous()?;
    let in_len = x.dims()[d];
    let dev = x.device();
    if let Some((a, exclude)) = r.cubic {
        return resize_axis_cubic(x, d, in_len, out_len, scale, r, a, exclude);
    }
    if !r.linear {
        let idx: Vec<u32> = (0..out_len)
            .map(|i| {
                let c = source_coord(r, i, in_len, out_len, scale);
                let n = match r.nearest {
                    Nearest::Floor => c.floor(),
                    Nearest::Ceil => c.ceil(),
                    Nearest::RoundPreferFloor => {
                        if c.fract() == 0.5 {
                            c.floor()
                        } else {
                            c.round()
                        }
                    }
                    Nearest::RoundPreferCeil => {
                        if c.fract() == 0.5 {
                            c.ceil()
                        } else {
                            c.round()
                        }
                    }
                };
                n.clamp(0.0, in_len as f64 - 1.0) as u32
            })
            .collect();
        return x.index_select(&Tensor::from_vec(idx, out_len, dev)?, d);
    }
    let mut i0 = Vec::with_capacity(out_len);
    let mut i1 = Vec::with_capacity(out_len);
    let mut w1 = Vec::with_capacity(out_len);
    for i in 0..out_len {
        let c = source_coord(r, i, in_len, out_len, scale).clamp(0.0, in_len as f64 - 1.0);
        let lo = c.floor() as usize;
        let hi = (lo + 1).min(in_len - 1);
        i0.push(lo as u32);
        i1.push(hi as u32);
        w1.push(c - lo as f64);
    }
    let a = x.index_select(&Tensor::from_vec(i0, out_len, dev)?, d)?;
    let b = x.index_select(&Tensor::from_vec(i1, out_len, dev)?, d)?;
    let mut wshape = vec![1usize; x.rank()];
    wshape[d] = out_len;
    let w = Tensor::from_vec(w1, wshape.as_slice(), dev)?.to_dtype(x.dtype())?;
    // a + (b - a) * w
    a.broadcast_add(&(b - &a)?.broadcast_mul(&w)?)
}

/// Keys cubic convolution weights for the 4 taps at floor(c)-1 .. floor(c)+2.
fn cubic_weights(t: f64, a: f64) -> [f64; 4] {
    let w = |x: f64| -> f64 {
        let x = x.abs();
        if x <= 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
        } else {
            0.0
        }
    };
    [w(t + 1.0), w(t), w(1.0 - t), w(2.0 - t)]
}

#[allow(clippy::too_many_arguments)]
fn resize_axis_cubic(
    x: &Tensor,
    d: usize,
    in_len: usize,
    out_len: usize,
    scale: f64,
    r: &Resize,
    a: f64,
    exclude: bool,
) -> Result<Tensor> {
    let dev = x.device();
    let mut idx: [Vec<_>; 4] = std::array::from_fn(|_| Vec::with_capacity(out_len));
    let mut wts: [Vec<_>; 4] = std::array::from_fn(|_| Vec::with_capacity(out_len));
    for i in 0..out_len {
        let c = source_coord(r, i, in_len, out_len, scale);
        let base = c.floor();
        let mut w = cubic_weights(c - base, a);
        let taps: Vec<i64> = (0..4).map(|j| base as i64 - 1 + j as i64).collect();
        if exclude {
            for j in 0..4 {
                if taps[j] < 0 || taps[j] >= in_len as i64 {
                    w[j] = 0.0;
                }
            }
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
        }
        for j in 0..4 {
            // Taps outside the input repeat the edge value.
            idx[j].push(taps[j].clamp(0, in_len as i64 - 1));
            wts[j].push(w[j]);
        }
    }
    let mut wshape = vec![1usize; x.rank()];
    wshape[d] = out_len;
    let mut acc: Option<Tensor> = None;
    for j in 0..4 {
        let sel = x.index_select(&Tensor::from_vec(idx[j].clone(), out_len, dev)?, d)?;
        let w = Tensor::from_vec(wts[j].clone(), wshape.as_slice(), dev)?.to_dtype(x.dtype())?;
        let term = sel.broadcast_mul(&w)?;
        acc = Some(match acc {
            None => term,
            Some(s) => (s + term)?,
        });
    }
    acc.ok_or_else(|| candle_core::Error::Msg("no taps".into()))
}
