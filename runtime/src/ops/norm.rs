//! Normalisation-style ops: LayerNormalization, InstanceNormalization, LRN, and the
//! DepthToSpace/SpaceToDepth rearrangements.

use super::{Op, norm_axis, opt, req};
use crate::error::LoadError;
use crate::proto::Attrs;
use candle_core::{Result, Tensor, bail};

#[derive(Debug, Clone)]
pub struct Lrn {
    pub size: usize,
    pub alpha: f64,
    pub beta: f64,
    pub bias: f64,
}

pub fn parse(a: &Attrs, _opset: i64) -> std::result::Result<Option<Op>, LoadError> {
    Ok(Some(match a.node.op_type.as_str() {
        "LayerNormalization" => {
            a.only(&["axis", "epsilon", "stash_type"])?;
            Op::LayerNorm { axis: a.int_or("axis", -1), eps: a.float_or("epsilon", 1e-5) as f64 }
        }
        "InstanceNormalization" => {
            a.only(&["epsilon"])?;
            Op::InstanceNorm { eps: a.float_or("epsilon", 1e-5) as f64 }
        }
        "LRN" => {
            a.only(&["size", "alpha", "beta", "bias"])?;
            let size = a.int("size").ok_or_else(|| a.err("missing size"))?;
            if size < 1 {
                return Err(a.err("size must be positive"));
            }
            Op::Lrn(Lrn {
                size: size as usize,
                alpha: a.float_or("alpha", 1e-4) as f64,
                beta: a.float_or("beta", 0.75) as f64,
                bias: a.float_or("bias", 1.0) as f64,
            })
        }
        op @ ("DepthToSpace" | "SpaceToDepth") => {
            a.only(&["blocksize", "mode"])?;
            let crd = match a.string_or("mode", "DCR").as_str() {
                "DCR" => false,
                "CRD" => true,
                m => return Err(a.err(format!("mode '{m}' is not supported (DCR or CRD)"))),
            };
            let block = a.int("blocksize").ok_or_else(|| a.err("missing blocksize"))? as usize;
            if op == "DepthToSpace" { Op::DepthToSpace { block, crd } } else { Op::SpaceToDepth { block, crd } }
        }
        _ => return Ok(None),
    }))
}

/// Returns Y and, for the optional outputs, Mean and InvStdDev (reduced dims kept as 1).
pub fn layer_norm(ins: &[Option<&Tensor>], axis: i64, eps: f64) -> Result<Vec<Tensor>> {
    let x = req(ins, 0)?;
    let ax = norm_axis(axis, x.rank())?;
    let dt = x.dtype();
    let xf = x.to_dtype(candle_core::DType::F32)?;
    let mut mean = xf.clone();
    for d in ax..x.rank() {
        mean = mean.mean_keepdim(d)?;
    }
    let centered = xf.broadcast_sub(&mean)?;
    let mut var = centered.sqr()?;
    for d in ax..x.rank() {
        var = var.mean_keepdim(d)?;
    }
    let inv = (var + eps)?.sqrt()?.recip()?;
    let mut y = centered.broadcast_mul(&inv)?.to_dtype(dt)?;
    y = y.broadcast_mul(req(ins, 1)?)?;
    if let Some(b) = opt(ins, 2) {
        y = y.broadcast_add(b)?;
    }
    Ok(vec![y, mean, inv])
}

pub fn instance_norm(ins: &[Option<&Tensor>], eps: f64) -> Result<Tensor> {
    let x = req(ins, 0)?;
    if x.rank() < 3 {
        bail!("InstanceNormalization needs a rank >= 3 input");
    }
    let mut mean = x.clone();
    for d in 2..x.rank() {
        mean = mean.mean_keepdim(d)?;
    }
    let centered = x.broadcast_sub(&mean)?;
    let mut var = centered.sqr()?;
    for d in 2..x.rank() {
        var = var.mean_keepdim(d)?;
    }
    let y = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    let mut shape = vec![1usize; x.rank()];
    shape[1] = x.dims()[1];
    y.broadcast_mul(&req(ins, 1)?.reshape(shape.as_slice())?)?.broadcast_add(&req(ins, 2)?.reshape(shape.as_slice())?)
}

pub fn lrn(p: &Lrn, x: &Tensor) -> Result<Tensor> {
    let c = x.dims()[1];
    let before = (p.size - 1) / 2;
    let after = p.size - 1 - before;
    let sq = x.sqr()?.pad_with_zeros(1, before, after)?;
    let mut sum = sq.narrow(1, 0, c)?;
    for i in 1..p.size {
        sum = (sum + sq.narrow(1, i, c)?)?;
    }
    let denom = sum.affine(p.alpha / p.size as f64, p.bias)?.powf(p.beta)?;
    x.div(&denom)
}

pub fn depth_to_space(x: &Tensor, b: usize, crd: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if c % (b * b) != 0 {
        bail!("channels {c} not divisible by blocksize^2");
    }
    let oc = c / (b * b);
    let y = if crd {
        x.reshape((n, oc, b, b, h, w))?.permute([0, 1, 4, 2, 5, 3])?
    } else {
        x.reshape((n, b, b, oc, h, w))?.permute([0, 3, 4, 1, 5, 2])?
    };
    y.contiguous()?.reshape((n, oc, h * b, w * b))
}

/// DCR orders the output channels (block row, block column, channel); CRD (channel, row, column).
pub fn space_to_depth(x: &Tensor, b: usize, crd: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h % b != 0 || w % b != 0 {
        bail!("spatial size not divisible by blocksize");
    }
    let perm = if crd { [0, 1, 3, 5, 2, 4] } else { [0, 3, 5, 1, 2, 4] };
    x.reshape((n, c, h / b, b, w / b, b))?.permute(perm)?.contiguous()?.reshape((n, c * b * b, h / b, w / b))
}

/// BatchNormalization in training mode (opset 14+): normalise with the mean and (biased)
/// variance over every axis but the channel one; also return the running statistics updated
/// with `momentum` (running * momentum + batch * (1 - momentum)). Written with candle ops, so it
/// stays differentiable.
pub fn batch_norm_training(ins: &[Option<&Tensor>], eps: f32, momentum: f32) -> Result<Vec<Tensor>> {
    let x = req(ins, 0)?;
    let (scale, bias, mean, var) = (req(ins, 1)?, req(ins, 2)?, req(ins, 3)?, req(ins, 4)?);
    if x.rank() < 2 {
        candle_core::bail!("BatchNormalization needs an input of rank 2 or more, got {:?}", x.dims());
    }
    let c = x.dims()[1];
    let per_channel = x.transpose(0, 1)?.contiguous()?.reshape((c, ()))?;
    let batch_mean = per_channel.mean_keepdim(1)?;
    let batch_var = per_channel.broadcast_sub(&batch_mean)?.sqr()?.mean_keepdim(1)?;
    let mut shape = vec![1usize; x.rank()];
    shape[1] = c;
    let bc = |t: &Tensor| t.reshape(shape.as_slice());
    let inv_std = (bc(&batch_var)? + eps as f64)?.sqrt()?.recip()?;
    let y = x
        .broadcast_sub(&bc(&batch_mean)?)?
        .broadcast_mul(&inv_std)?
        .broadcast_mul(&bc(scale)?)?
        .broadcast_add(&bc(bias)?)?;
    let m = momentum as f64;
    let running_mean = ((mean * m)? + (batch_mean.flatten_all()? * (1.0 - m))?)?;
    let running_var = ((var * m)? + (batch_var.flatten_all()? * (1.0 - m))?)?;
    Ok(vec![y, running_mean, running_var])
}
