//! ONNX operators: parsing a node into an [`Op`] with normalised attributes (opset differences,
//! auto_pad, defaults resolved, unknown attributes rejected) and executing it on candle tensors.
//!
//! Every op here is differentiable through candle when one of its inputs tracks gradients; the
//! direct kernels (convolution, pooling) are only used when none does.

pub mod elementwise;
pub mod fast;
pub mod lowbit;
pub mod narrow;
pub mod nn;
pub mod norm;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod resize_taps;
pub mod rnn;
pub mod select;
pub mod shape;
pub mod window_nd;

use crate::error::LoadError;
use crate::proto::Attrs;
use candle_core::{Result, Tensor};
use candle_onnx::onnx::NodeProto;

/// Op types (default ONNX domain) the runtime implements; everything else is rejected at load.
pub const SUPPORTED_OPS: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Cos",
    "DepthToSpace",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "DynamicQuantizeLinear",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GRU",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "InstanceNormalization",
    "LayerNormalization",
    "LeakyRelu",
    "LRN",
    "LSTM",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mish",
    "Mul",
    "Neg",
    "NonMaxSuppression",
    "Not",
    "Or",
    "Pad",
    "Pow",
    "PRelu",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "RNN",
    "Round",
    "Selu",
    "Shape",
    "Sigmoid",
    "Sign",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "Softplus",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Tile",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Upsample",
    "Where",
];

/// Where an op parameter comes from: an attribute (older opsets) or a runtime input (newer ones).
#[derive(Debug, Clone)]
pub enum Source<T> {
    Attr(T),
    Input(usize),
    Absent,
}

#[derive(Debug, Clone)]
pub enum Op {
    Unary(elementwise::Unary),
    Binary(elementwise::Binary),
    Variadic(elementwise::Variadic),
    Clip(elementwise::Clip),
    Where,
    Cast(candle_core::DType, bool),
    Identity,
    Dropout,
    Softmax {
        axis: i64,
        legacy: bool,
        log: bool,
    },
    PRelu,
    Conv(nn::Conv),
    ConvTranspose(nn::ConvTranspose),
    BatchNorm {
        eps: f32,
    },
    /// Inference BatchNorm with the per-channel Mul / Add and activation after it folded in at
    /// load (inputs: x, per-channel scale and shift); `rank`: the input rank the folded
    /// constants were per-channel for.
    ChannelAffine {
        act: crate::kernels::Activation,
        rank: Option<usize>,
    },
    /// Inference: a two-input Add / Sum and the Relu after it (`plan::residual`), one pass on
    /// contiguous f32 tensors of one shape, else the two ops as written.
    AddRelu {
        first: Box<Op>,
        relu: Box<Op>,
    },
    /// Opset-14 training mode: batch statistics, plus the updated running mean and variance.
    BatchNormTrain {
        eps: f32,
        momentum: f32,
    },
    Pool(nn::Pool),
    GlobalPool {
        max: bool,
    },
    Gemm(nn::Gemm),
    MatMul,
    Reduce(reduce::Reduce),
    ArgReduce(reduce::ArgReduce),
    TopK(select::TopK),
    /// NonMaxSuppression.
    Nms(select::Nms),
    Resize(resize::Resize),
    Reshape {
        allowzero: bool,
    },
    Flatten {
        axis: i64,
    },
    Transpose {
        perm: Option<Vec<i64>>,
    },
    Squeeze(Source<Vec<i64>>),
    Unsqueeze(Source<Vec<i64>>),
    Concat {
        axis: i64,
    },
    Split(shape::Split),
    Slice(shape::Slice),
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Size,
    Gather {
        axis: i64,
    },
    Expand,
    Tile,
    Range,
    ConstantOfShape(Tensor),
    Constant(Tensor),
    Pad(shape::Pad),
    CastLike {
        saturate: bool,
        round: lowbit::E8m0Round,
    },
    /// Cast to an element type held in another dtype (float8, int4, int8, ...), see `narrow`.
    CastHeld(narrow::CastHeld),
    LayerNorm {
        axis: i64,
        eps: f64,
    },
    InstanceNorm {
        eps: f64,
    },
    Lrn(norm::Lrn),
    DepthToSpace {
        block: usize,
        crd: bool,
    },
    SpaceToDepth {
        block: usize,
        crd: bool,
    },
    /// Arithmetic on int8/uint16/uint64 values held in a wider dtype (set by the load-time type pass).
    Narrow(narrow::NarrowOp),
    /// An op on string values (set by the load-time string pass); run by the executor, not here.
    Strings(crate::strings::StringOp),
    /// QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and the integer Conv/MatMul ops.
    Quant(quant::Quant),
    /// LSTM, GRU and RNN.
    Rnn(rnn::Rnn),
}

/// Parse a node (default domain) for the model's opset.
pub fn parse(node: &NodeProto, opset: i64) -> std::result::Result<Op, LoadError> {
    let a = Attrs::new(node);
    if let Some(op) = elementwise::parse(&a, opset)? {
        return Ok(op);
    }
    if let Some(op) = nn::parse(&a, opset)? {
        return Ok(op);
    }
    if let Some(op) = reduce::parse(&a, opset)? {
        return Ok(op);
    }
    if let Some(op) = select::parse(&a, opset)? {
        return Ok(op);
    }
    if let Some(op) = resize::parse(&a, opset)? {
        return Ok(op);
    }
    if let Some(op) = shape::parse(&a, opset)? {
        return Ok(op);
    }
    if let Some(op) = norm::parse(&a, opset)? {
        return Ok(op);
    }
    if let Some(op) = quant::parse(&a, opset)? {
        return Ok(op);
    }
    if let Some(op) = rnn::parse(&a, opset)? {
        return Ok(op);
    }
    Err(LoadError::UnsupportedOp { node: node.name.clone(), op: node.op_type.clone(), domain: node.domain.clone() })
}

/// Execute one op. `ins[i]` is None for an omitted optional input. `n_out` is the number of outputs the node declares.
pub fn run(op: &Op, ins: &[Option<&Tensor>], n_out: usize) -> Result<Vec<Tensor>> {
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Unary(u) => match fast::unary(*u, req(ins, 0)?) {
            Some(r) => one(r?),
            None => one(elementwise::unary(*u, req(ins, 0)?)?),
        },
        Op::Binary(b) => match fast::binary(*b, req(ins, 0)?, req(ins, 1)?) {
            Some(r) => one(r?),
            None => one(elementwise::binary(*b, req(ins, 0)?, req(ins, 1)?)?),
        },
        Op::Variadic(v) => one(elementwise::variadic(*v, ins)?),
        Op::AddRelu { first, relu } => {
            if let Some(y) = fast::add_relu(req(ins, 0)?, req(ins, 1)?) {
                return one(y?);
            }
            let y = run(first, ins, 1)?;
            run(relu, &[Some(&y[0])], 1)
        }
        Op::Clip(c) => one(elementwise::clip(c, ins)?),
        Op::Where => one(elementwise::where_op(req(ins, 0)?, req(ins, 1)?, req(ins, 2)?)?),
        Op::Cast(dt, to_bool) => one(elementwise::cast(req(ins, 0)?, *dt, *to_bool)?),
        Op::Identity => one(req(ins, 0)?.clone()),
        Op::Dropout => {
            let x = req(ins, 0)?;
            Ok(vec![x.clone(), x.ones_like()?.to_dtype(candle_core::DType::U8)?])
        }
        Op::Softmax { axis, legacy, log } => one(elementwise::softmax(req(ins, 0)?, *axis, *legacy, *log)?),
        Op::PRelu => one(elementwise::prelu(req(ins, 0)?, req(ins, 1)?)?),
        Op::Conv(c) => one(nn::conv(c, ins)?),
        Op::ConvTranspose(c) => one(nn::conv_transpose(c, ins)?),
        Op::BatchNorm { eps } => one(nn::batch_norm(ins, *eps)?),
        Op::ChannelAffine { act, rank } => one(nn::channel_affine(ins, *act, *rank)?),
        Op::BatchNormTrain { eps, momentum } => norm::batch_norm_training(ins, *eps, *momentum),
        Op::Pool(p) => {
            let x = req(ins, 0)?;
            if p.indices.is_some() || x.rank() > 4 { window_nd::pool(p, x) } else { one(nn::pool(p, x)?) }
        }
        Op::GlobalPool { max } => one(nn::global_pool(req(ins, 0)?, *max)?),
        Op::Gemm(g) => one(nn::gemm(g, ins)?),
        Op::MatMul => one(nn::matmul(req(ins, 0)?, req(ins, 1)?)?),
        Op::Reduce(r) => one(reduce::reduce(r, ins)?),
        Op::ArgReduce(r) => one(reduce::arg_reduce(r, req(ins, 0)?)?),
        Op::TopK(t) => select::top_k(t, ins),
        Op::Nms(p) => one(select::non_max_suppression(p, ins)?),
        Op::Resize(r) => one(resize::resize(r, ins)?),
        Op::Reshape { allowzero } => one(shape::reshape(req(ins, 0)?, req(ins, 1)?, *allowzero)?),
        Op::Flatten { axis } => one(shape::flatten(req(ins, 0)?, *axis)?),
        Op::Transpose { perm } => one(shape::transpose(req(ins, 0)?, perm.as_deref())?),
        Op::Squeeze(src) => one(shape::squeeze(req(ins, 0)?, &axes_from(src, ins)?)?),
        Op::Unsqueeze(src) => one(shape::unsqueeze(req(ins, 0)?, &axes_from(src, ins)?.unwrap_or_default())?),
        Op::Concat { axis } => one(shape::concat(ins, *axis)?),
        Op::Split(s) => shape::split(s, ins, n_out),
        Op::Slice(s) => one(shape::slice(s, ins)?),
        Op::Shape { start, end } => one(shape::shape_of(req(ins, 0)?, *start, *end)?),
        Op::Size => one(Tensor::new(req(ins, 0)?.elem_count() as i64, &candle_core::Device::Cpu)?),
        Op::Gather { axis } => one(shape::gather(req(ins, 0)?, req(ins, 1)?, *axis)?),
        Op::Expand => one(shape::expand(req(ins, 0)?, req(ins, 1)?)?),
        Op::Tile => one(shape::tile(req(ins, 0)?, req(ins, 1)?)?),
        Op::Range => one(shape::range(req(ins, 0)?, req(ins, 1)?, req(ins, 2)?)?),
        Op::ConstantOfShape(v) => one(shape::constant_of_shape(req(ins, 0)?, v)?),
        Op::Constant(t) => one(t.clone()),
        Op::Pad(p) => one(shape::pad(p, ins)?),
        Op::CastHeld(c) => one(lowbit::cast_to(req(ins, 0)?, c.from, c.to, c.saturate, c.round)?),
        Op::CastLike { .. } => {
            let target = req(ins, 1)?.dtype();
            if target == candle_core::DType::U8 {
                // u8 holds both uint8 and bool, whose casts differ: refuse rather than guess.
                candle_core::bail!("CastLike to a uint8/bool target is not supported");
            }
            one(elementwise::cast(req(ins, 0)?, target, false)?)
        }
        Op::LayerNorm { axis, eps } => norm::layer_norm(ins, *axis, *eps),
        Op::InstanceNorm { eps } => one(norm::instance_norm(ins, *eps)?),
        Op::Lrn(p) => one(norm::lrn(p, req(ins, 0)?)?),
        Op::DepthToSpace { block, crd } => one(norm::depth_to_space(req(ins, 0)?, *block, *crd)?),
        Op::SpaceToDepth { block, crd } => one(norm::space_to_depth(req(ins, 0)?, *block, *crd)?),
        Op::Narrow(n) => one(narrow::run(n, ins)?),
        Op::Strings(_) => candle_core::bail!("string op given numeric inputs"),
        Op::Quant(q) => quant::run(q, ins),
        Op::Rnn(r) => rnn::run(r, ins),
    }
}

/// [`run`], turning a panic inside candle (e.g. an op not implemented for a dtype) into an error
/// so one bad request cannot take down a serving thread.
pub fn run_guarded(op: &Op, ins: &[Option<&Tensor>], n_out: usize) -> Result<Vec<Tensor>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(op, ins, n_out))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(candle_core::Error::Msg(format!("internal error: {msg}")))
        }
    }
}

pub fn req<'a>(ins: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    ins.get(i).copied().flatten().ok_or_else(|| candle_core::Error::Msg(format!("missing required input {i}")))
}

pub fn opt<'a>(ins: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    ins.get(i).copied().flatten()
}

/// Integer values of a (shape-like) tensor as i64.
pub fn ints(t: &Tensor) -> Result<Vec<i64>> {
    t.flatten_all()?.to_dtype(candle_core::DType::I64)?.to_vec1::<i64>()
}

/// Float values of a tensor as f64.
pub fn floats(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()
}

fn axes_from(src: &Source<Vec<i64>>, ins: &[Option<&Tensor>]) -> Result<Option<Vec<i64>>> {
    Ok(match src {
        Source::Attr(v) => Some(v.clone()),
        Source::Input(i) => opt(ins, *i).map(ints).transpose()?,
        Source::Absent => None,
    })
}

/// Normalise a possibly negative axis against a rank.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        candle_core::bail!("axis {axis} out of range for rank {rank}")
    }
    Ok(a as usize)
}
