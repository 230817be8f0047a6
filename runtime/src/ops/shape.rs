//! Shape manipulation: Reshape, Flatten, Transpose, Squeeze/Unsqueeze (opset-aware), Concat,
//! Split, Slice, Shape, Gather, Expand, Tile, Range, ConstantOfShape, Constant and Pad.

use super::{Op, Source, floats, ints, norm_axis, opt, req};
use crate::error::LoadError;
use crate::proto::Attrs;
use candle_core::{Device, Result, Shape, Tensor, bail};

#[derive(Debug, Clone)]
pub struct Split {
    pub axis: i64,
    pub split: Source<Vec<i64>>,
    pub num_outputs: Option<usize>,
}

/// Starts, ends and optional axes.
pub type SliceAttrs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);

#[derive(Debug, Clone)]
pub struct Slice {
    /// Opset < 10 keeps starts/ends/axes as attributes.
    pub attr: Option<SliceAttrs>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Debug, Clone)]
pub struct Pad {
    pub mode: PadMode,
    /// Opset < 11: pads and value attributes.
    pub attr: Option<(Vec<i64>, f32)>,
}

pub fn parse(a: &Attrs, opset: i64) -> std::result::Result<Option<Op>, LoadError> {
    Ok(Some(match a.node.op_type.as_str() {
        "Reshape" => {
            if opset < 5 {
                return Err(a.err("Reshape with a shape attribute (opset < 5) is not supported"));
            }
            a.only(&["allowzero"])?;
            Op::Reshape { allowzero: a.int_or("allowzero", 0) != 0 }
        }
        "Flatten" => {
            a.only(&["axis"])?;
            Op::Flatten { axis: a.int_or("axis", 1) }
        }
        "Transpose" => {
            a.only(&["perm"])?;
            Op::Transpose { perm: a.ints("perm") }
        }
        "Squeeze" | "Unsqueeze" => {
            let src = if opset < 13 {
                a.only(&["axes"])?;
                a.ints("axes").map_or(Source::Absent, Source::Attr)
            } else {
                a.only(&[])?;
                Source::Input(1)
            };
            if a.node.op_type == "Squeeze" {
                Op::Squeeze(src)
            } else {
                if matches!(src, Source::Absent) {
                    return Err(a.err("missing axes"));
                }
                Op::Unsqueeze(src)
            }
        }
        "Concat" => {
            a.only(&["axis"])?;
            Op::Concat { axis: a.int("axis").ok_or_else(|| a.err("missing axis"))? }
        }
        "Split" => {
            a.only(&["axis", "split", "num_outputs"])?;
            let split =
                if opset < 13 { a.ints("split").map_or(Source::Absent, Source::Attr) } else { Source::Input(1) };
            Op::Split(Split { axis: a.int_or("axis", 0), split, num_outputs: a.int("num_outputs").map(|n| n as usize) })
        }
        "Slice" => {
            if opset < 10 {
                a.only(&["starts", "ends", "axes"])?;
                let s = a.ints("starts").ok_or_else(|| a.err("missing starts"))?;
                let e = a.ints("ends").ok_or_else(|| a.err("missing ends"))?;
                Op::Slice(Slice { attr: Some((s, e, a.ints("axes"))) })
            } else {
                a.only(&[])?;
                Op::Slice(Slice { attr: None })
            }
        }
        "Shape" => {
            a.only(&["start", "end"])?;
            Op::Shape { start: a.int_or("start", 0), end: a.int("end") }
        }
        "Size" => Op::Size,
        "Gather" => {
            a.only(&["axis"])?;
            Op::Gather { axis: a.int_or("axis", 0) }
        }
        "Expand" => Op::Expand,
        "Tile" => Op::Tile,
        "Range" => Op::Range,
        "ConstantOfShape" => {
            a.only(&["value"])?;
            let v = a.tensor("value")?.unwrap_or(Tensor::new(&[0f32], &Device::Cpu).map_err(|e| a.err(e))?);
            Op::ConstantOfShape(v)
        }
        "Constant" => Op::Constant(constant_value(a)?),
        "Pad" => {
            a.only(&["mode", "pads", "value"])?;
            let mode = match a.string_or("mode", "constant").as_str() {
                "constant" => PadMode::Constant,
                "reflect" => PadMode::Reflect,
                "edge" => PadMode::Edge,
                "wrap" => PadMode::Wrap,
                m => return Err(a.err(format!("mode '{m}' is not supported"))),
            };
            let attr = if opset < 11 {
                Some((a.ints("pads").ok_or_else(|| a.err("missing pads"))?, a.float_or("value", 0.0)))
            } else {
                None
            };
            Op::Pad(Pad { mode, attr })
        }
        _ => return Ok(None),
    }))
}

fn constant_value(a: &Attrs) -> std::result::Result<Tensor, LoadError> {
    let dev = &Device::Cpu;
    let e = |err: candle_core::Error| a.err(err);
    if let Some(t) = a.tensor("value")? {
        return Ok(t);
    }
    if a.has("value_float") {
        return Tensor::new(a.float_or("value_float", 0.0), dev).map_err(e);
    }
    if let Some(v) = a.floats("value_floats") {
        return Tensor::new(v.as_slice(), dev).map_err(e);
    }
    if let Some(v) = a.int("value_int") {
        return Tensor::new(v, dev).map_err(e);
    }
    if let Some(v) = a.ints("value_ints") {
        return Tensor::new(v.as_slice(), dev).map_err(e);
    }
    Err(a.err("only tensor/float/int Constant values are supported"))
}

pub fn reshape(x: &Tensor, shape: &Tensor, allowzero: bool) -> Result<Tensor> {
    let spec = ints(shape)?;
    let mut dims = Vec::with_capacity(spec.len());
    let mut hole = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 => {
                if hole.replace(i).is_some() {
                    bail!("more than one -1 in shape {spec:?}")
                }
                dims.push(1);
            }
            0 if !allowzero => dims.push(
                *x.dims()
                    .get(i)
                    .ok_or_else(|| candle_core::Error::Msg(format!("shape {spec:?}: 0 copies a missing dim")))?,
            ),
            s if s < 0 => bail!("invalid shape {spec:?}"),
            s => dims.push(s as usize),
        }
    }
    if let Some(h) = hole {
        let known: usize = dims.iter().product();
        if known == 0 || !x.elem_count().is_multiple_of(known) {
            bail!("cannot reshape {:?} to {spec:?}", x.dims())
        }
        dims[h] = x.elem_count() / known;
    }
    x.reshape(dims)
}

pub fn flatten(x: &Tensor, axis: i64) -> Result<Tensor> {
    let r = x.rank() as i64;
    let ax = if axis < 0 { axis + r } else { axis };
    if ax < 0 || ax > r {
        bail!("axis {axis} out of range")
    }
    let d = x.dims();
    let outer: usize = d[..ax as usize].iter().product();
    x.reshape((outer, x.elem_count().checked_div(outer).unwrap_or(d[ax as usize..].iter().product())))
}

pub fn transpose(x: &Tensor, perm: Option<&[i64]>) -> Result<Tensor> {
    let perm: Vec<usize> = match perm {
        Some(p) => p.iter().map(|&a| norm_axis(a, x.rank())).collect::<Result<_>>()?,
        None => (0..x.rank()).rev().collect(),
    };
    if x.rank() <= 1 {
        return Ok(x.clone());
    }
    x.permute(perm)?.contiguous()
}

pub fn squeeze(x: &Tensor, axes: &Option<Vec<i64>>) -> Result<Tensor> {
    let dims = x.dims();
    let drop: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&a| norm_axis(a, x.rank())).collect::<Result<_>>()?,
        None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
    };
    for &d in &drop {
        if dims[d] != 1 {
            bail!("cannot squeeze axis {d} of size {}", dims[d])
        }
    }
    let keep: Vec<usize> = (0..dims.len()).filter(|i| !drop.contains(i)).map(|i| dims[i]).collect();
    x.reshape(keep)
}

pub fn unsqueeze(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    let out_rank = x.rank() + axes.len();
    let mut ins: Vec<usize> = axes.iter().map(|&a| norm_axis(a, out_rank)).collect::<Result<_>>()?;
    ins.sort_unstable();
    let mut dims = x.dims().to_vec();
    for a in ins {
        dims.insert(a, 1);
    }
    x.reshape(dims)
}

pub fn concat(ins: &[Option<&Tensor>], axis: i64) -> Result<Tensor> {
    let xs: Vec<&Tensor> = ins.iter().flatten().copied().collect();
    let first = xs.first().ok_or_else(|| candle_core::Error::Msg("no inputs".into()))?;
    let ax = norm_axis(axis, first.rank())?;
    let xs: Vec<&Tensor> = xs.into_iter().filter(|t| t.elem_count() > 0 || t.dims()[ax] != 0).collect();
    if xs.len() == 1 {
        return Ok(xs[0].clone());
    }
    Tensor::cat(&xs, ax)
}

pub fn split(s: &Split, ins: &[Option<&Tensor>], n_out: usize) -> Result<Vec<Tensor>> {
    let x = req(ins, 0)?;
    let ax = norm_axis(s.axis, x.rank())?;
    let len = x.dims()[ax];
    let sizes: Vec<usize> = match &s.split {
        Source::Attr(v) => v.iter().map(|&v| v as usize).collect(),
        Source::Input(i) if opt(ins, *i).is_some() => {
            ints(opt(ins, *i).unwrap())?.iter().map(|&v| v as usize).collect()
        }
        _ => {
            let n = s.num_outputs.unwrap_or(n_out);
            let chunk = len.div_ceil(n);
            (0..n).map(|i| chunk.min(len.saturating_sub(i * chunk))).collect()
        }
    };
    if sizes.iter().sum::<usize>() != len {
        bail!("split sizes {sizes:?} do not add up to {len}")
    }
    let mut start = 0;
    let mut out = Vec::new();
    for sz in sizes {
        out.push(x.narrow(ax, start, sz)?);
        start += sz;
    }
    Ok(out)
}

pub fn slice(s: &Slice, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = req(ins, 0)?;
    let (starts, ends, axes, steps) = match &s.attr {
        Some((st, en, ax)) => (st.clone(), en.clone(), ax.clone(), None),
        None => (
            ints(req(ins, 1)?)?,
            ints(req(ins, 2)?)?,
            opt(ins, 3).map(ints).transpose()?,
            opt(ins, 4).map(ints).transpose()?,
        ),
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&a| norm_axis(a, x.rank())).collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let mut y = x.clone();
    for (i, &ax) in axes.iter().enumerate() {
        let dim = x.dims()[ax] as i64;
        let step = steps.as_ref().map_or(1, |s| s[i]);
        if step == 0 {
            bail!("slice step 0")
        }
        let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let norm = |v: i64| if v < 0 { v + dim } else { v };
        let (start, end) = if step > 0 {
            (clamp(norm(starts[i]), 0, dim), clamp(norm(ends[i]), 0, dim))
        } else {
            (clamp(norm(starts[i]), 0, dim - 1), clamp(norm(ends[i]), -1, dim - 1))
        };
        let idx: Vec<i64> = if step > 0 {
            (start..end).step_by(step as usize).collect()
        } else {
            let mut v = Vec::new();
            let mut k = start;
            while k > end {
                v.push(k);
                k += step;
            }
            v
        };
        if step == 1 {
            y = y.narrow(ax, start as usize, (end - start).max(0) as usize)?;
        } else {
            let n = idx.len();
            y = y.contiguous()?.index_select(&Tensor::from_vec(idx, n, x.device())?, ax)?;
        }
    }
    Ok(y)
}

pub fn shape_of(x: &Tensor, start: i64, end: Option<i64>) -> Result<Tensor> {
    let r = x.rank() as i64;
    let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (fix(start), fix(end.unwrap_or(r)));
    let dims: Vec<i64> = if s < e { x.dims()[s..e].iter().map(|&d| d as i64).collect() } else { vec![] };
    let n = dims.len();
    Tensor::from_vec(dims, n, x.device())
}

pub fn gather(x: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor> {
    let ax = norm_axis(axis, x.rank())?;
    let dim = x.dims()[ax] as i64;
    let idx: Vec<i64> = ints(indices)?.into_iter().map(|i| if i < 0 { i + dim } else { i }).collect();
    if idx.iter().any(|&i| i < 0 || i >= dim) {
        bail!("gather index out of range for dim {dim}")
    }
    let n = idx.len();
    let sel = x.contiguous()?.index_select(&Tensor::from_vec(idx, n, x.device())?, ax)?;
    let mut dims = x.dims()[..ax].to_vec();
    dims.extend_from_slice(indices.dims());
    dims.extend_from_slice(&x.dims()[ax + 1..]);
    sel.reshape(dims)
}

pub fn expand(x: &Tensor, shape: &Tensor) -> Result<Tensor> {
    let target: Vec<usize> = ints(shape)?.iter().map(|&d| d as usize).collect();
    let s = x.shape().broadcast_shape_binary_op(&Shape::from(target), "expand")?;
    x.broadcast_as(s)?.contiguous()
}

pub fn tile(x: &Tensor, repeats: &Tensor) -> Result<Tensor> {
    let reps = ints(repeats)?;
    let mut y = x.clone();
    for (d, &r) in reps.iter().enumerate() {
        if r != 1 {
            let copies: Vec<&Tensor> = std::iter::repeat_n(&y, r as usize).collect();
            y = if copies.is_empty() { y.narrow(d, 0, 0)? } else { Tensor::cat(&copies, d)? };
        }
    }
    Ok(y)
}

pub fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<Tensor> {
    let (s, l, d) = (floats(start)?[0], floats(limit)?[0], floats(delta)?[0]);
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
    Tensor::from_vec(v, n, start.device())?.to_dtype(start.dtype())
}

pub fn constant_of_shape(shape: &Tensor, value: &Tensor) -> Result<Tensor> {
    let dims: Vec<usize> = ints(shape)?.iter().map(|&d| d as usize).collect();
    value.flatten_all()?.narrow(0, 0, 1)?.reshape(())?.broadcast_as(dims)?.contiguous()
}

pub fn pad(p: &Pad, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = req(ins, 0)?;
    let rank = x.rank();
    let (pads, value) = match &p.attr {
        Some((pads, v)) => (pads.clone(), *v as f64),
        None => (
            ints(req(ins, 1)?)?,
            opt(ins, 2).filter(|t| t.elem_count() > 0).map(|t| floats(t).map(|v| v[0])).transpose()?.unwrap_or(0.0),
        ),
    };
    let axes: Vec<usize> = match opt(ins, 3) {
        Some(a) => ints(a)?.iter().map(|&a| norm_axis(a, rank)).collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        bail!("pads has {} values for {} axes", pads.len(), axes.len())
    }
    let mut y = x.clone();
    for (i, &ax) in axes.iter().enumerate() {
        let (b, e) = (pads[i], pads[i + axes.len()]);
        if b == 0 && e == 0 {
            continue;
        }
        let len = y.dims()[ax] as i64;
        // Negative pads crop.
        let (cb, ce) = ((-b).max(0), (-e).max(0));
        if cb + ce > 0 {
            y = y.narrow(ax, cb as usize, (len - cb - ce).max(0) as usize)?;
        }
        let (b, e) = (b.max(0) as usize, e.max(0) as usize);
        if b + e == 0 {
            continue;
        }
        let len = y.dims()[ax];
        y = match p.mode {
            PadMode::Constant => {
                let mk = |n: usize| -> Result<Tensor> {
                    let mut d = y.dims().to_vec();
                    d[ax] = n;
                    Tensor::new(value, y.device())?.to_dtype(y.dtype())?.broadcast_as(d)?.contiguous()
                };
                let parts = [mk(b)?, y.clone(), mk(e)?];
                Tensor::cat(&parts, ax)?
            }
            mode => {
                if len == 0 {
                    bail!("cannot pad an empty axis in mode {mode:?}")
                }
                let l = len as i64;
                let src = |i: i64| -> i64 {
                    match mode {
                        PadMode::Edge => i.clamp(0, l - 1),
                        PadMode::Wrap => i.rem_euclid(l),
                        _ => {
                            if l == 1 {
                                return 0;
                            }
                            let period = 2 * (l - 1);
                            let m = i.rem_euclid(period);
                            if m < l { m } else { period - m }
                        }
                    }
                };
                let idx: Vec<i64> = (-(b as i64)..l + e as i64).map(src).collect();
                let n = idx.len();
                y.contiguous()?.index_select(&Tensor::from_vec(idx, n, y.device())?, ax)?
            }
        };
    }
    Ok(y)
}
