//! Reductions (opset-aware: axes as attribute before opset 13/18, as input after) and ArgMax/ArgMin.

use super::{Op, Source, ints, norm_axis, opt, req};
use crate::error::LoadError;
use crate::proto::Attrs;
use candle_core::{DType, Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    L1,
    L2,
    SumSquare,
    LogSum,
    LogSumExp,
}

#[derive(Debug, Clone)]
pub struct Reduce {
    pub kind: Kind,
    pub axes: Source<Vec<i64>>,
    pub keepdims: bool,
    pub noop_with_empty_axes: bool,
}

#[derive(Debug, Clone)]
pub struct ArgReduce {
    pub max: bool,
    pub axis: i64,
    pub keepdims: bool,
    /// select_last_index: ties resolve to the last occurrence.
    pub last: bool,
}

pub fn parse(a: &Attrs, opset: i64) -> std::result::Result<Option<Op>, LoadError> {
    let op = a.node.op_type.as_str();
    let kind = match op {
        "ReduceMean" => Kind::Mean,
        "ReduceSum" => Kind::Sum,
        "ReduceMax" => Kind::Max,
        "ReduceMin" => Kind::Min,
        "ReduceProd" => Kind::Prod,
        "ReduceL2" => Kind::L2,
        "ReduceSumSquare" => Kind::SumSquare,
        "ReduceL1" => Kind::L1,
        "ReduceLogSum" => Kind::LogSum,
        "ReduceLogSumExp" => Kind::LogSumExp,
        "ArgMax" | "ArgMin" => {
            a.only(&["axis", "keepdims", "select_last_index"])?;
            return Ok(Some(Op::ArgReduce(ArgReduce {
                max: op == "ArgMax",
                axis: a.int_or("axis", 0),
                keepdims: a.int_or("keepdims", 1) != 0,
                last: a.int_or("select_last_index", 0) != 0,
            })));
        }
        _ => return Ok(None),
    };
    // ReduceSum takes axes as an input from opset 13, the others from opset 18.
    let axes_as_input = if kind == Kind::Sum { opset >= 13 } else { opset >= 18 };
    let axes = if axes_as_input {
        a.only(&["keepdims", "noop_with_empty_axes"])?;
        Source::Input(1)
    } else {
        a.only(&["axes", "keepdims"])?;
        a.ints("axes").map_or(Source::Absent, Source::Attr)
    };
    Ok(Some(Op::Reduce(Reduce {
        kind,
        axes,
        keepdims: a.int_or("keepdims", 1) != 0,
        noop_with_empty_axes: a.int_or("noop_with_empty_axes", 0) != 0,
    })))
}

pub fn reduce(r: &Reduce, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = req(ins, 0)?;
    let axes = match &r.axes {
        Source::Attr(v) => Some(v.clone()),
        Source::Input(i) => opt(ins, *i).map(ints).transpose()?,
        Source::Absent => None,
    };
    let axes = axes.filter(|v| !v.is_empty());
    let mut dims: Vec<usize> = match axes {
        Some(v) => v.iter().map(|&a| norm_axis(a, x.rank())).collect::<Result<_>>()?,
        None if r.noop_with_empty_axes => return Ok(x.clone()),
        None => (0..x.rank()).collect(),
    };
    dims.sort_unstable();
    dims.dedup();
    if x.elem_count() == 0 {
        return empty_reduce(r, x, &dims);
    }
    let mut y = match r.kind {
        Kind::SumSquare | Kind::L2 => x.sqr()?,
        Kind::L1 => x.abs()?,
        Kind::LogSumExp => x.exp()?,
        _ => x.clone(),
    };
    for &d in &dims {
        y = match r.kind {
            Kind::Mean => y.mean_keepdim(d)?,
            Kind::Sum | Kind::SumSquare | Kind::L2 | Kind::L1 | Kind::LogSum | Kind::LogSumExp => y.sum_keepdim(d)?,
            Kind::Max => y.max_keepdim(d)?,
            Kind::Min => y.min_keepdim(d)?,
            Kind::Prod => {
                let n = y.dims()[d];
                let mut acc = y.narrow(d, 0, 1)?;
                for i in 1..n {
                    acc = (acc * y.narrow(d, i, 1)?)?;
                }
                acc
            }
        };
    }
    match r.kind {
        Kind::L2 => y = y.sqrt()?,
        Kind::LogSum | Kind::LogSumExp => y = y.log()?,
        _ => {}
    }
    if !r.keepdims {
        for &d in dims.iter().rev() {
            y = y.squeeze(d)?;
        }
    }
    Ok(y)
}

pub fn arg_reduce(r: &ArgReduce, x: &Tensor) -> Result<Tensor> {
    let d = norm_axis(r.axis, x.rank())?;
    let n = x.dims()[d];
    // For the last index among ties, search the reversed axis and map the index back.
    let src = if r.last {
        let rev: Vec<i64> = (0..n as i64).rev().collect();
        x.contiguous()?.index_select(&Tensor::from_vec(rev, n, x.device())?, d)?
    } else {
        x.clone()
    };
    let y = if r.max { src.argmax_keepdim(d)? } else { src.argmin_keepdim(d)? };
    let mut y = y.to_dtype(DType::I64)?;
    if r.last {
        y = y.affine(-1.0, (n - 1) as f64)?;
    }
    if r.keepdims { Ok(y) } else { y.squeeze(d) }
}

/// Reductions over an empty set yield the identity of the reduction (0, 1, -inf, +inf).
fn empty_reduce(r: &Reduce, x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let identity = match r.kind {
        Kind::Sum | Kind::SumSquare | Kind::L2 | Kind::L1 => 0.0,
        Kind::LogSum | Kind::LogSumExp => f64::NEG_INFINITY,
        Kind::Prod => 1.0,
        Kind::Max => {
            if x.dtype().is_float() {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        }
        Kind::Min => {
            if x.dtype().is_float() {
                f64::INFINITY
            } else {
                255.0
            }
        }
        Kind::Mean => f64::NAN,
    };
    let mut shape: Vec<usize> = Vec::new();
    for (i, &n) in x.dims().iter().enumerate() {
        if dims.contains(&i) {
            if r.keepdims {
                shape.push(1);
            }
        } else {
            shape.push(n);
        }
    }
    Tensor::new(identity, x.device())?.to_dtype(x.dtype())?.broadcast_as(shape)?.contiguous()
}
