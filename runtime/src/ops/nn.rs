//! Convolution, transposed convolution, BatchNormalization, pooling, Gemm and MatMul.
//!
//! Inference uses the direct kernels in `crate::kernels`; when an input tracks gradients
//! (training) the same op is expressed with differentiable candle ops instead.

use super::fast::f32_data;
use super::{Op, opt, req};
use crate::error::LoadError;
use crate::kernels::{self, Activation, Window, pool::PoolKind};
use crate::proto::Attrs;
use candle_core::{DType, Result, Tensor, bail};

mod pool;
pub use pool::{global_pool, pool};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

fn parse_auto_pad(a: &Attrs) -> std::result::Result<AutoPad, LoadError> {
    Ok(match a.string_or("auto_pad", "NOTSET").as_str() {
        "NOTSET" => AutoPad::NotSet,
        "VALID" => AutoPad::Valid,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        o => return Err(a.err(format!("auto_pad '{o}' is not supported"))),
    })
}

/// Window attributes common to Conv and pooling (spatial rank 1 or 2; 3 for ConvTranspose and pooling).
#[derive(Debug, Clone)]
pub struct Geometry {
    pub auto_pad: AutoPad,
    pub kernel: Option<Vec<usize>>,
    pub strides: Option<Vec<usize>>,
    pub dilations: Option<Vec<usize>>,
    pub pads: Option<Vec<usize>>,
}

fn positive(a: &Attrs, name: &str) -> std::result::Result<Option<Vec<usize>>, LoadError> {
    match a.ints(name) {
        None => Ok(None),
        Some(v) => v
            .iter()
            .map(|&x| if x >= 0 { Ok(x as usize) } else { Err(a.err(format!("negative {name}"))) })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some),
    }
}

/// Window attributes of up to `max_rank` spatial dims (2 for Conv, 3 for ConvTranspose and pooling).
pub(super) fn parse_geometry(a: &Attrs, max_rank: usize) -> std::result::Result<Geometry, LoadError> {
    let g = Geometry {
        auto_pad: parse_auto_pad(a)?,
        kernel: positive(a, "kernel_shape")?,
        strides: positive(a, "strides")?,
        dilations: positive(a, "dilations")?,
        pads: positive(a, "pads")?,
    };
    for (name, v) in [("kernel_shape", &g.kernel), ("strides", &g.strides), ("dilations", &g.dilations)] {
        if let Some(v) = v {
            if v.len() > max_rank {
                let dims = if max_rank == 2 { "1-D and 2-D" } else { "1-D, 2-D and 3-D" };
                return Err(a.err(format!("{}-D {name} is not supported ({dims} only)", v.len())));
            }
            if name != "kernel_shape" && v.contains(&0) {
                return Err(a.err(format!("{name} must be positive")));
            }
        }
    }
    if g.pads.as_ref().is_some_and(|p| p.len() > 2 * max_rank) {
        return Err(a.err(format!("{}-D pads are not supported", g.pads.as_ref().map_or(0, |p| p.len() / 2))));
    }
    Ok(g)
}

impl Geometry {
    /// Resolve the 2-D window for input spatial sizes (h, w) and kernel (kh, kw).
    pub(super) fn window(&self, spatial: usize, h: usize, w: usize, kh: usize, kw: usize) -> Result<Window> {
        let get = |v: &Option<Vec<usize>>, i: usize| -> usize { v.as_ref().map_or(1, |v| v[i]) };
        let (sh, sw, dh, dw) = if spatial == 1 {
            (1, get(&self.strides, 0), 1, get(&self.dilations, 0))
        } else {
            (get(&self.strides, 0), get(&self.strides, 1), get(&self.dilations, 0), get(&self.dilations, 1))
        };
        let same = |input: usize, k: usize, s: usize, d: usize, upper: bool| -> (usize, usize) {
            let out = input.div_ceil(s);
            let total = ((out.saturating_sub(1)) * s + (k - 1) * d + 1).saturating_sub(input);
            let small = total / 2;
            if upper { (small, total - small) } else { (total - small, small) }
        };
        let (pt, pl, pb, pr) = match self.auto_pad {
            AutoPad::NotSet => match &self.pads {
                None => (0, 0, 0, 0),
                Some(p) if spatial == 1 => {
                    if p.len() != 2 {
                        bail!("pads must have 2 values for 1-D")
                    }
                    (0, p[0], 0, p[1])
                }
                Some(p) => {
                    if p.len() != 4 {
                        bail!("pads must have 4 values for 2-D")
                    }
                    (p[0], p[1], p[2], p[3])
                }
            },
            AutoPad::Valid => (0, 0, 0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let up = self.auto_pad == AutoPad::SameUpper;
                let (t, b) = if spatial == 1 { (0, 0) } else { same(h, kh, sh, dh, up) };
                let (l, r) = same(w, kw, sw, dw, up);
                (t, l, b, r)
            }
        };
        Ok(Window { kh, kw, sh, sw, dh, dw, pt, pl, pb, pr })
    }
}

#[derive(Debug, Clone)]
pub struct Conv {
    pub geom: Geometry,
    pub groups: usize,
    /// Activation fused by the planner (inference only).
    pub act: Activation,
    /// Set by the planner when the weights are constants: their packed form, kept across runs.
    pub packed: Option<std::sync::Arc<kernels::conv::Packed>>,
}

#[derive(Debug, Clone)]
pub struct ConvTranspose {
    pub geom: Geometry,
    pub groups: usize,
    pub output_padding: Option<Vec<usize>>,
    pub output_shape: Option<Vec<usize>>,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub geom: Geometry,
    pub kind: PoolKind,
    pub ceil: bool,
    /// Some(column_major) when MaxPool's Indices output is requested.
    pub indices: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Gemm {
    pub alpha: f64,
    pub beta: f64,
    pub trans_a: bool,
    pub trans_b: bool,
}

pub fn parse(a: &Attrs, opset: i64) -> std::result::Result<Option<Op>, LoadError> {
    Ok(Some(match a.node.op_type.as_str() {
        "Conv" => {
            a.only(&["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"])?;
            Op::Conv(Conv {
                geom: parse_geometry(a, 2)?,
                groups: a.int_or("group", 1).max(1) as usize,
                act: Activation::None,
                packed: None,
            })
        }
        "ConvTranspose" => {
            a.only(&[
                "auto_pad",
                "dilations",
                "group",
                "kernel_shape",
                "pads",
                "strides",
                "output_padding",
                "output_shape",
            ])?;
            Op::ConvTranspose(ConvTranspose {
                geom: parse_geometry(a, 3)?,
                groups: a.int_or("group", 1).max(1) as usize,
                output_padding: positive(a, "output_padding")?,
                output_shape: positive(a, "output_shape")?,
            })
        }
        "MaxPool" | "AveragePool" => {
            let max = a.node.op_type == "MaxPool";
            if max {
                a.only(&["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"])?;
            } else {
                a.only(&[
                    "auto_pad",
                    "ceil_mode",
                    "count_include_pad",
                    "dilations",
                    "kernel_shape",
                    "pads",
                    "strides",
                ])?;
            }
            let geom = parse_geometry(a, 3)?;
            if geom.kernel.is_none() {
                return Err(a.err("missing kernel_shape"));
            }
            let kind = if max {
                PoolKind::Max
            } else {
                PoolKind::Avg { count_include_pad: a.int_or("count_include_pad", 0) != 0 }
            };
            // MaxPool's optional second output: flat indices of the maxima (storage_order 1 = column-major).
            let indices =
                (max && a.node.output.get(1).is_some_and(|o| !o.is_empty())).then(|| a.int_or("storage_order", 0) != 0);
            Op::Pool(Pool { geom, kind, ceil: a.int_or("ceil_mode", 0) != 0, indices })
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            a.only(&[])?;
            Op::GlobalPool { max: a.node.op_type == "GlobalMaxPool" }
        }
        "BatchNormalization" => {
            a.only(&["epsilon", "momentum", "spatial", "training_mode", "is_test", "consumed_inputs"])?;
            if opset >= 14 && a.int_or("training_mode", 0) != 0 {
                // Normalise with the batch statistics; outputs 2 and 3 are the updated running statistics.
                return Ok(Some(Op::BatchNormTrain {
                    eps: a.float_or("epsilon", 1e-5),
                    momentum: a.float_or("momentum", 0.9),
                }));
            }
            if a.int_or("training_mode", 0) != 0 || a.node.output.iter().skip(1).any(|o| !o.is_empty()) {
                return Err(a.err(
                    "training-mode BatchNormalization before opset 14 (running statistics outputs) is not supported",
                ));
            }
            if opset < 9 && a.int_or("spatial", 1) == 0 {
                return Err(a.err("spatial=0 is not supported"));
            }
            Op::BatchNorm { eps: a.float_or("epsilon", 1e-5) }
        }
        "Gemm" => {
            a.only(&["alpha", "beta", "transA", "transB", "broadcast"])?;
            Op::Gemm(Gemm {
                alpha: a.float_or("alpha", 1.0) as f64,
                beta: a.float_or("beta", 1.0) as f64,
                trans_a: a.int_or("transA", 0) != 0,
                trans_b: a.int_or("transB", 0) != 0,
            })
        }
        "MatMul" => {
            a.only(&[])?;
            Op::MatMul
        }
        _ => return Ok(None),
    }))
}

fn f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// View a 1-D (N,C,W) or 2-D (N,C,H,W) input as 2-D; returns (n, c, h, w, spatial rank).
fn as_2d(x: &Tensor) -> Result<(usize, usize, usize, usize, usize)> {
    match x.dims() {
        &[n, c, w] => Ok((n, c, 1, w, 1)),
        &[n, c, h, w] => Ok((n, c, h, w, 2)),
        d => bail!("only 1-D and 2-D spatial inputs are supported, got shape {d:?}"),
    }
}

fn tracks(ts: &[Option<&Tensor>]) -> bool {
    ts.iter().flatten().any(|t| t.track_op())
}

pub fn conv(c: &Conv, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = req(ins, 0)?;
    let w = req(ins, 1)?;
    let b = opt(ins, 2);
    let (n, ch, h, wd, spatial) = as_2d(x)?;
    let wdims = w.dims().to_vec();
    if wdims.len() != spatial + 2 {
        bail!("weight rank {} does not match input rank {}", wdims.len(), x.rank());
    }
    let (m, cg) = (wdims[0], wdims[1]);
    let (kh, kw) = if spatial == 1 { (1, wdims[2]) } else { (wdims[2], wdims[3]) };
    if cg * c.groups != ch || m % c.groups != 0 {
        bail!("channels {ch} / group {} do not match weight shape {wdims:?}", c.groups);
    }
    let win = c.geom.window(spatial, h, wd, kh, kw)?;
    if tracks(ins) {
        if c.act != Activation::None {
            bail!("fused activation in training mode");
        }
        return conv_differentiable(x, w, b, c.groups, &win, spatial);
    }
    // Borrow the f32 data (no copies) for the kernel.
    let run = |xv: &[f32], wv: &[f32], bv: Option<&[f32]>| {
        let args = kernels::conv::ConvArgs {
            x: xv,
            n,
            c: ch,
            h,
            w: wd,
            weight: wv,
            m,
            bias: bv,
            groups: c.groups,
            win,
            act: c.act,
            packed: c.packed.as_deref(),
        };
        kernels::conv::conv2d(&args)
    };
    let (out, oh, ow) = f32_data(x, |xv| {
        f32_data(w, |wv| match b {
            Some(b) => f32_data(b, |bv| run(xv, wv, Some(bv))),
            None => Ok(run(xv, wv, None)),
        })
    })???;
    let y = if spatial == 1 {
        Tensor::from_vec(out, (n, m, ow), x.device())?
    } else {
        Tensor::from_vec(out, (n, m, oh, ow), x.device())?
    };
    y.to_dtype(x.dtype())
}

fn conv_differentiable(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    groups: usize,
    win: &Window,
    spatial: usize,
) -> Result<Tensor> {
    if spatial == 2 && (win.sh != win.sw || win.dh != win.dw) {
        bail!("training through a convolution with unequal strides/dilations is not supported");
    }
    let x4 = if spatial == 1 { x.unsqueeze(2)? } else { x.clone() };
    let w4 = if spatial == 1 { w.unsqueeze(2)? } else { w.clone() };
    let xp = x4.pad_with_zeros(2, win.pt, win.pb)?.pad_with_zeros(3, win.pl, win.pr)?;
    let mut y = xp.conv2d(&w4, 0, win.sw, win.dw, groups)?;
    if let Some(b) = b {
        y = y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?;
    }
    if spatial == 1 { y.squeeze(2) } else { Ok(y) }
}

pub fn conv_transpose(c: &ConvTranspose, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = req(ins, 0)?;
    let w = req(ins, 1)?;
    let b = opt(ins, 2);
    if tracks(ins) {
        bail!("training through ConvTranspose is not supported");
    }
    if x.rank() == 5 {
        return super::window_nd::conv_transpose(c, x, w, b);
    }
    let (n, ch, h, wd, spatial) = as_2d(x)?;
    let wdims = w.dims().to_vec();
    if wdims.len() != spatial + 2 || wdims[0] != ch || ch % c.groups != 0 {
        bail!("weight shape {wdims:?} does not match input {:?} with group {}", x.dims(), c.groups);
    }
    let m = wdims[1] * c.groups;
    let (kh, kw) = if spatial == 1 { (1, wdims[2]) } else { (wdims[2], wdims[3]) };
    let mut win = c.geom.window(spatial, h, wd, kh, kw)?;
    let sp =
        |v: &Option<Vec<usize>>, i: usize| -> usize { v.as_ref().map_or(0, |v| v[if spatial == 1 { 0 } else { i }]) };
    let full = |input: usize, k: usize, s: usize, d: usize, op: usize| s * (input - 1) + op + (k - 1) * d + 1;
    let (fh, fw) = (
        full(h, kh, win.sh, win.dh, if spatial == 1 { 0 } else { sp(&c.output_padding, 0) }),
        full(wd, kw, win.sw, win.dw, sp(&c.output_padding, 1)),
    );
    let same = matches!(c.geom.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
    let target = if let Some(os) = &c.output_shape {
        Some(if spatial == 1 { (1, os[0]) } else { (os[0], os[1]) })
    } else if same {
        Some((h * win.sh, wd * win.sw))
    } else {
        None
    };
    if target.is_some_and(|(oh, ow)| oh > fh || ow > fw) {
        // The output extends past the full transposed output (negative padding): N-D path.
        return super::window_nd::conv_transpose(c, x, w, b);
    }
    let (oh, ow) = if let Some((oh, ow)) = target {
        // Distribute the total padding implied by the requested output shape.
        let split = |total: usize| -> (usize, usize) {
            if c.geom.auto_pad == AutoPad::SameUpper {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            }
        };
        let (t, bt) = if spatial == 1 { (0, 0) } else { split(fh.saturating_sub(oh)) };
        let (l, r) = split(fw.saturating_sub(ow));
        win.pt = t;
        win.pb = bt;
        win.pl = l;
        win.pr = r;
        (oh, ow)
    } else {
        (fh.saturating_sub(win.pt + win.pb), fw.saturating_sub(win.pl + win.pr))
    };
    let xv = f32_vec(x)?;
    let wv = f32_vec(w)?;
    let bv = b.map(f32_vec).transpose()?;
    let args = kernels::conv::ConvTransposeArgs {
        x: &xv,
        n,
        c: ch,
        h,
        w: wd,
        weight: &wv,
        m,
        bias: bv.as_deref(),
        groups: c.groups,
        win,
        oh,
        ow,
    };
    let out = kernels::conv::conv_transpose2d(&args);
    let y = if spatial == 1 {
        Tensor::from_vec(out, (n, m, ow), x.device())?
    } else {
        Tensor::from_vec(out, (n, m, oh, ow), x.device())?
    };
    y.to_dtype(x.dtype())
}

/// Per-channel (scale, shift) of an inference BatchNormalization.
pub fn bn_affine(scale: &Tensor, bias: &Tensor, mean: &Tensor, var: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    let a = scale.broadcast_div(&(var + eps as f64)?.sqrt()?)?;
    let b = bias.broadcast_sub(&mean.broadcast_mul(&a)?)?;
    Ok((a, b))
}

pub fn batch_norm(ins: &[Option<&Tensor>], eps: f32) -> Result<Tensor> {
    let x = req(ins, 0)?;
    let (a, b) = bn_affine(req(ins, 1)?, req(ins, 2)?, req(ins, 3)?, req(ins, 4)?, eps)?;
    if let Some(y) = super::fast::channel_affine(x, &a, &b) {
        return y;
    }
    let mut shape = vec![1usize; x.rank()];
    if x.rank() > 1 {
        shape[1] = x.dims()[1];
    }
    x.broadcast_mul(&a.reshape(shape.as_slice())?)?.broadcast_add(&b.reshape(shape.as_slice())?)
}

/// A fused BatchNorm chain (see `plan::affine`): y = act(x * a[c] + b[c]).
pub fn channel_affine(ins: &[Option<&Tensor>], act: Activation, rank: Option<usize>) -> Result<Tensor> {
    let (x, a, b) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
    if rank.is_some_and(|r| r != x.rank()) {
        bail!("BatchNormalization fused with a per-channel Mul/Add for rank {rank:?} inputs got {:?}", x.dims());
    }
    if let Some(y) = super::fast::channel_affine_act(x, a, b, act) {
        return y;
    }
    let mut shape = vec![1usize; x.rank()];
    if x.rank() > 1 {
        shape[1] = x.dims()[1];
    }
    let y = x.broadcast_mul(&a.reshape(shape.as_slice())?)?.broadcast_add(&b.reshape(shape.as_slice())?)?;
    match super::fast::map_activation(&y, act) {
        Some(r) => r,
        None if act == Activation::None => Ok(y),
        None => bail!("activation {act:?} on a {:?} tensor", y.dtype()),
    }
}

pub fn gemm(g: &Gemm, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let a = req(ins, 0)?;
    let b = req(ins, 1)?;
    if let Some(y) = super::fast::gemm(a, b, opt(ins, 2), (g.trans_a, g.trans_b), g.alpha as f32, g.beta as f32) {
        return y;
    }
    let a = if g.trans_a { a.t()? } else { a.clone() };
    let b = if g.trans_b { b.t()? } else { b.clone() };
    let mut y = a.contiguous()?.matmul(&b.contiguous()?)?;
    if g.alpha != 1.0 {
        y = (y * g.alpha)?;
    }
    if let Some(c) = opt(ins, 2) {
        let c = if g.beta != 1.0 { (c * g.beta)? } else { c.clone() };
        y = y.broadcast_add(&c)?;
    }
    Ok(y)
}

pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let a1 = a.rank() == 1;
    let b1 = b.rank() == 1;
    let a2 = if a1 { a.unsqueeze(0)? } else { a.clone() };
    let b2 = if b1 { b.unsqueeze(1)? } else { b.clone() };
    let mut y = if a2.rank() == 2 && b2.rank() == 2 {
        a2.contiguous()?.matmul(&b2.contiguous()?)?
    } else {
        a2.broadcast_matmul(&b2)?
    };
    if a1 {
        y = y.squeeze(y.rank() - 2)?;
    }
    if b1 {
        y = y.squeeze(y.rank() - 1)?;
    }
    Ok(y)
}
