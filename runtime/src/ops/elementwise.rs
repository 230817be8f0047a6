//! Element-wise ops with numpy broadcasting, activations, Cast, Where and Softmax (opset-aware).

use super::lowbit::E8m0Round;
use super::narrow::{CastHeld, Held};
use super::{Op, norm_axis, opt, req};
use crate::error::LoadError;
use crate::proto::{Attrs, dtype_of};
use candle_core::{D, DType, Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Neg,
    Abs,
    Reciprocal,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    Erf,
    Not,
    Sign,
    Sin,
    Cos,
    LeakyRelu(f32),
    Elu(f32),
    Selu(f32, f32),
    HardSigmoid(f32, f32),
    HardSwish,
    Gelu {
        tanh: bool,
    },
    Softplus,
    Mish,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variadic {
    Sum,
    Mean,
    Max,
    Min,
}

#[derive(Debug, Clone)]
pub struct Clip {
    /// Opset < 11 keeps min/max as attributes.
    pub attr: Option<(f32, f32)>,
}

pub fn parse(a: &Attrs, opset: i64) -> std::result::Result<Option<Op>, LoadError> {
    let op = a.node.op_type.as_str();
    let un = |u| Ok(Some(Op::Unary(u)));
    let plain = [
        "Relu",
        "Sigmoid",
        "Tanh",
        "Exp",
        "Log",
        "Sqrt",
        "Neg",
        "Abs",
        "Reciprocal",
        "Floor",
        "Ceil",
        "Round",
        "Erf",
        "Not",
        "Sign",
        "Sin",
        "Cos",
        "HardSwish",
        "Softplus",
        "Mish",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Equal",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "And",
        "Or",
        "Sum",
        "Mean",
        "Max",
        "Min",
        "Where",
        "Identity",
        "PRelu",
    ];
    if plain.contains(&op) {
        // Opset < 7 broadcast/consumed_inputs attributes change semantics: refuse them.
        a.only(&[])?;
    }
    match op {
        "Relu" => un(Unary::Relu),
        "Sigmoid" => un(Unary::Sigmoid),
        "Tanh" => un(Unary::Tanh),
        "Exp" => un(Unary::Exp),
        "Log" => un(Unary::Log),
        "Sqrt" => un(Unary::Sqrt),
        "Neg" => un(Unary::Neg),
        "Abs" => un(Unary::Abs),
        "Reciprocal" => un(Unary::Reciprocal),
        "Floor" => un(Unary::Floor),
        "Ceil" => un(Unary::Ceil),
        "Round" => un(Unary::Round),
        "Erf" => un(Unary::Erf),
        "Not" => un(Unary::Not),
        "Sign" => un(Unary::Sign),
        "Sin" => un(Unary::Sin),
        "Cos" => un(Unary::Cos),
        "HardSwish" => un(Unary::HardSwish),
        "Softplus" => un(Unary::Softplus),
        "Mish" => un(Unary::Mish),
        "LeakyRelu" => {
            a.only(&["alpha"])?;
            un(Unary::LeakyRelu(a.float_or("alpha", 0.01)))
        }
        "Elu" => {
            a.only(&["alpha"])?;
            un(Unary::Elu(a.float_or("alpha", 1.0)))
        }
        "Selu" => {
            a.only(&["alpha", "gamma"])?;
            un(Unary::Selu(a.float_or("alpha", 1.673_263_2), a.float_or("gamma", 1.050_701)))
        }
        "HardSigmoid" => {
            a.only(&["alpha", "beta"])?;
            un(Unary::HardSigmoid(a.float_or("alpha", 0.2), a.float_or("beta", 0.5)))
        }
        "Gelu" => {
            a.only(&["approximate"])?;
            match a.string_or("approximate", "none").as_str() {
                "none" => un(Unary::Gelu { tanh: false }),
                "tanh" => un(Unary::Gelu { tanh: true }),
                other => Err(a.err(format!("approximate='{other}' is not supported"))),
            }
        }
        "Add" => Ok(Some(Op::Binary(Binary::Add))),
        "Sub" => Ok(Some(Op::Binary(Binary::Sub))),
        "Mul" => Ok(Some(Op::Binary(Binary::Mul))),
        "Div" => Ok(Some(Op::Binary(Binary::Div))),
        "Pow" => Ok(Some(Op::Binary(Binary::Pow))),
        "Equal" => Ok(Some(Op::Binary(Binary::Equal))),
        "Less" => Ok(Some(Op::Binary(Binary::Less))),
        "Greater" => Ok(Some(Op::Binary(Binary::Greater))),
        "LessOrEqual" => Ok(Some(Op::Binary(Binary::LessOrEqual))),
        "GreaterOrEqual" => Ok(Some(Op::Binary(Binary::GreaterOrEqual))),
        "And" => Ok(Some(Op::Binary(Binary::And))),
        "Or" => Ok(Some(Op::Binary(Binary::Or))),
        "Sum" => Ok(Some(Op::Variadic(Variadic::Sum))),
        "Mean" => Ok(Some(Op::Variadic(Variadic::Mean))),
        "Max" => Ok(Some(Op::Variadic(Variadic::Max))),
        "Min" => Ok(Some(Op::Variadic(Variadic::Min))),
        "Where" => Ok(Some(Op::Where)),
        "Identity" => Ok(Some(Op::Identity)),
        "PRelu" => Ok(Some(Op::PRelu)),
        "Dropout" => {
            // Inference semantics only: the mask output or a training_mode input is refused.
            a.only(&["ratio", "seed", "is_test"])?;
            if a.node.input.len() > 2 && !a.node.input[2].is_empty() {
                return Err(a.err("the training_mode input is not supported (inference only)"));
            }
            if opset < 7 && a.int_or("is_test", 0) == 0 {
                return Err(a.err("is_test=0 (training) is not supported"));
            }
            // In inference the output is the input and the mask is all true.
            Ok(Some(Op::Dropout))
        }
        "Clip" => {
            if opset < 11 {
                a.only(&["min", "max"])?;
                Ok(Some(Op::Clip(Clip { attr: Some((a.float_or("min", f32::MIN), a.float_or("max", f32::MAX))) })))
            } else {
                a.only(&[])?;
                Ok(Some(Op::Clip(Clip { attr: None })))
            }
        }
        "CastLike" => {
            a.only(&["saturate", "round_mode"])?;
            Ok(Some(Op::CastLike { saturate: a.int_or("saturate", 1) != 0, round: round_mode(a)? }))
        }
        "Cast" => {
            a.only(&["to", "saturate", "round_mode"])?;
            let to = a.int("to").ok_or_else(|| a.err("missing 'to'"))? as i32;
            let saturate = a.int_or("saturate", 1) != 0;
            if let Some(held) = Held::from_onnx(to) {
                if held == Held::F8E8M0 && !saturate {
                    return Err(a.err("non-saturating casts to float8e8m0 are not supported"));
                }
                return Ok(Some(Op::CastHeld(CastHeld { to: held, from: None, saturate, round: round_mode(a)? })));
            }
            let dt = dtype_of(to).ok_or_else(|| a.err(format!("cast to element type {to} is not supported")))?;
            Ok(Some(Op::Cast(dt, to == crate::proto::onnx_type::BOOL)))
        }
        "Softmax" | "LogSoftmax" => {
            a.only(&["axis"])?;
            let legacy = opset < 13;
            let axis = a.int_or("axis", if legacy { 1 } else { -1 });
            Ok(Some(Op::Softmax { axis, legacy, log: op == "LogSoftmax" }))
        }
        _ => Ok(None),
    }
}

/// Cast's `round_mode` (only used for float8e8m0 targets).
fn round_mode(a: &Attrs) -> std::result::Result<E8m0Round, LoadError> {
    Ok(match a.string_or("round_mode", "up").as_str() {
        "up" => E8m0Round::Up,
        "down" => E8m0Round::Down,
        "nearest" => E8m0Round::Nearest,
        m => return Err(a.err(format!("round_mode '{m}' is not supported"))),
    })
}

fn is_float(t: &Tensor) -> bool {
    t.dtype().is_float()
}

pub fn unary(u: Unary, x: &Tensor) -> Result<Tensor> {
    // candle implements most unary maps for floats only: compute integer inputs in f64.
    if !x.dtype().is_float() && !matches!(u, Unary::Not | Unary::Relu) {
        return unary(u, &x.to_dtype(DType::F64)?)?.to_dtype(x.dtype());
    }
    match u {
        Unary::Relu => x.relu(),
        // Untracked f32 (the fast path's, when the input is not contiguous): onnxruntime's
        // arithmetic, see `kernels::sigmoid`.
        Unary::Sigmoid if x.dtype() == DType::F32 && !x.track_op() => {
            let mut v = x.flatten_all()?.to_vec1::<f32>()?;
            crate::kernels::sigmoid_slice(&mut v, false);
            Tensor::from_vec(v, x.shape(), x.device())
        }
        Unary::Sigmoid => {
            let one = x.ones_like()?;
            one.broadcast_div(&(x.neg()?.exp()? + 1.0)?)
        }
        Unary::Tanh => x.tanh(),
        Unary::Exp => x.exp(),
        Unary::Log => x.log(),
        Unary::Sqrt => x.sqrt(),
        Unary::Neg => x.neg(),
        Unary::Abs => x.abs(),
        Unary::Reciprocal => x.recip(),
        Unary::Floor => x.floor(),
        Unary::Ceil => x.ceil(),
        Unary::Round => {
            // candle rounds halves away from zero; an exact half goes to the even neighbour,
            // which is 2 * round(x / 2).
            let tie = (x - x.floor()?)?.eq(&(x.zeros_like()? + 0.5)?)?;
            tie.where_cond(&((x * 0.5)?.round()? * 2.0)?, &x.round()?)
        }
        Unary::Erf => x.erf(),
        Unary::Not => x.eq(&x.zeros_like()?),
        Unary::Sign => {
            let z = x.zeros_like()?;
            let pos = x.gt(&z)?.to_dtype(x.dtype())?;
            let neg = x.lt(&z)?.to_dtype(x.dtype())?;
            pos - neg
        }
        Unary::Sin => x.sin(),
        Unary::Cos => x.cos(),
        Unary::LeakyRelu(alpha) => {
            let pos = x.ge(&x.zeros_like()?)?;
            pos.where_cond(x, &(x * alpha as f64)?)
        }
        Unary::Elu(alpha) => {
            let pos = x.ge(&x.zeros_like()?)?;
            pos.where_cond(x, &((x.exp()? - 1.0)? * alpha as f64)?)
        }
        Unary::Selu(alpha, gamma) => {
            let pos = x.gt(&x.zeros_like()?)?;
            pos.where_cond(x, &((x.exp()? - 1.0)? * alpha as f64)?)? * gamma as f64
        }
        Unary::HardSigmoid(alpha, beta) => x.affine(alpha as f64, beta as f64)?.clamp(0f32, 1f32),
        Unary::HardSwish => x * x.affine(1.0 / 6.0, 0.5)?.clamp(0f32, 1f32)?,
        Unary::Gelu { tanh } => {
            if tanh {
                x.gelu()
            } else {
                x.gelu_erf()
            }
        }
        Unary::Softplus => {
            // log(1 + exp(x)) computed stably as max(x,0) + log(1 + exp(-|x|)).
            let r = x.relu()?;
            r + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
        }
        Unary::Mish => {
            let sp = unary(Unary::Softplus, x)?;
            x * sp.tanh()?
        }
    }
}

/// Broadcast two tensors to their common shape (numpy rules).
pub fn broadcast_pair(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    let shape = a.shape().broadcast_shape_binary_op(b.shape(), "broadcast")?;
    Ok((a.broadcast_as(&shape)?, b.broadcast_as(&shape)?))
}

pub fn binary(op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match op {
        Binary::Add => a.broadcast_add(b),
        Binary::Sub => a.broadcast_sub(b),
        Binary::Mul => a.broadcast_mul(b),
        Binary::Div => {
            if is_float(a) {
                a.broadcast_div(b)
            } else {
                // Integer division truncates like C (onnxruntime) rather than flooring.
                let (x, y) = broadcast_pair(a, b)?;
                let q = (x.to_dtype(DType::F64)? / y.to_dtype(DType::F64)?)?;
                let t = (q.abs()?.floor()? * sign(&q)?)?;
                t.to_dtype(a.dtype())
            }
        }
        Binary::Pow => pow(a, b),
        Binary::Equal => cmp(a, b, |x, y| x.eq(y)),
        Binary::Less => cmp(a, b, |x, y| x.lt(y)),
        Binary::Greater => cmp(a, b, |x, y| x.gt(y)),
        Binary::LessOrEqual => cmp(a, b, |x, y| x.le(y)),
        Binary::GreaterOrEqual => cmp(a, b, |x, y| x.ge(y)),
        Binary::And => {
            let (x, y) = broadcast_pair(a, b)?;
            x.mul(&y)?.ne(0u8)
        }
        Binary::Or => {
            let (x, y) = broadcast_pair(&a.to_dtype(DType::U32)?, &b.to_dtype(DType::U32)?)?;
            x.add(&y)?.ne(0u32)
        }
    }
}

fn sign(t: &Tensor) -> Result<Tensor> {
    unary(Unary::Sign, t)
}

fn cmp(a: &Tensor, b: &Tensor, f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (x, y) = broadcast_pair(a, b)?;
    let y = if y.dtype() != x.dtype() { y.to_dtype(x.dtype())? } else { y };
    f(&x, &y)
}

fn pow(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    // Common exports raise to a constant 2 or 0.5: keep those exact and differentiable.
    if b.elem_count() == 1 && is_float(a) {
        let e = super::floats(b)?[0];
        if e == 2.0 {
            return a.sqr();
        }
        if e == 0.5 {
            return a.sqrt();
        }
        if e == 1.0 {
            return Ok(a.clone());
        }
        if e.fract() == 0.0 && e.abs() <= 16.0 {
            // Integer exponent by repeated multiplication (works for negative bases).
            let mut r = a.ones_like()?;
            for _ in 0..e.abs() as usize {
                r = (r * a)?;
            }
            return if e < 0.0 { r.recip() } else { Ok(r) };
        }
    }
    // General case element-wise in f64 (negative bases with integer exponents handled by powf).
    let (x, y) = broadcast_pair(a, b)?;
    let shape = x.shape().clone();
    let xs = super::floats(&x)?;
    let ys = super::floats(&y)?;
    let v: Vec<f64> = xs.iter().zip(&ys).map(|(p, q)| p.powf(*q)).collect();
    Tensor::from_vec(v, shape, a.device())?.to_dtype(a.dtype())
}

pub fn variadic(op: Variadic, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let xs: Vec<&Tensor> = ins.iter().flatten().copied().collect();
    if op == Variadic::Sum
        && let Some(y) = super::fast::sum(&xs)
    {
        return y;
    }
    let mut acc = xs.first().copied().cloned().ok_or_else(|| candle_core::Error::Msg("no inputs".into()))?;
    for x in &xs[1..] {
        acc = match op {
            Variadic::Sum | Variadic::Mean => acc.broadcast_add(x)?,
            Variadic::Max => acc.broadcast_maximum(x)?,
            Variadic::Min => acc.broadcast_minimum(x)?,
        };
    }
    if op == Variadic::Mean {
        acc = (acc / xs.len() as f64)?;
    }
    Ok(acc)
}

pub fn clip(c: &Clip, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = req(ins, 0)?;
    let (lo, hi) = match c.attr {
        Some((lo, hi)) => (Some(lo as f64), Some(hi as f64)),
        None => (
            opt(ins, 1).map(|t| super::floats(t).map(|v| v[0])).transpose()?,
            opt(ins, 2).map(|t| super::floats(t).map(|v| v[0])).transpose()?,
        ),
    };
    let mut y = x.clone();
    if let Some(lo) = lo {
        y = y.maximum(&Tensor::new(lo, x.device())?.to_dtype(x.dtype())?.broadcast_as(x.shape())?)?;
    }
    if let Some(hi) = hi {
        y = y.minimum(&Tensor::new(hi, x.device())?.to_dtype(x.dtype())?.broadcast_as(x.shape())?)?;
    }
    Ok(y)
}

pub fn where_op(c: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let s1 = c.shape().broadcast_shape_binary_op(a.shape(), "where")?;
    let shape = s1.broadcast_shape_binary_op(b.shape(), "where")?;
    let c = c.to_dtype(DType::U8)?.broadcast_as(&shape)?.contiguous()?;
    c.where_cond(&a.broadcast_as(&shape)?.contiguous()?, &b.broadcast_as(&shape)?.contiguous()?)
}

pub fn cast(x: &Tensor, dt: DType, to_bool: bool) -> Result<Tensor> {
    if to_bool {
        return x.ne(&x.zeros_like()?);
    }
    if x.dtype() == dt {
        return Ok(x.clone());
    }
    if dt.is_int() && x.dtype().is_float() {
        // Float to integer truncates toward zero.
        let t = (x.abs()?.floor()? * sign(x)?)?;
        return t.to_dtype(dt);
    }
    x.to_dtype(dt)
}

pub fn softmax(x: &Tensor, axis: i64, legacy: bool, log: bool) -> Result<Tensor> {
    let rank = x.rank();
    let ax = norm_axis(axis, rank)?;
    let dims = x.dims();
    let (outer, n, inner) = if legacy {
        (dims[..ax].iter().product(), dims[ax..].iter().product(), 1)
    } else {
        (dims[..ax].iter().product(), dims[ax], dims[ax + 1..].iter().product())
    };
    if let Some(y) = super::fast::softmax(x, outer, n, inner, log) {
        return y;
    }
    if legacy {
        // Opset < 13: coerce to 2-D at `axis` and normalise over everything after it.
        let dims = x.dims();
        let outer: usize = dims[..ax].iter().product();
        let inner: usize = dims[ax..].iter().product();
        let y = softmax_last(&x.reshape((outer, inner))?, log)?;
        return y.reshape(dims);
    }
    if ax == rank - 1 {
        return softmax_last(x, log);
    }
    let t = x.transpose(ax, rank - 1)?.contiguous()?;
    softmax_last(&t, log)?.transpose(ax, rank - 1)?.contiguous()
}

fn softmax_last(x: &Tensor, log: bool) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let shifted = x.broadcast_sub(&max)?;
    let e = shifted.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    if log { shifted.broadcast_sub(&s.log()?) } else { e.broadcast_div(&s) }
}

pub fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let pos = x.ge(&x.zeros_like()?)?;
    let neg = x.broadcast_mul(slope)?;
    let shape = neg.shape().clone();
    pos.broadcast_as(&shape)?.contiguous()?.where_cond(&x.broadcast_as(&shape)?.contiguous()?, &neg)
}
