//! Element types candle has no dtype for. Their values are held in another candle dtype: int8,
//! int4 and int2 in I16, uint16 in I32, uint64 in I64 (the same 64-bit pattern), uint4 and uint2
//! in U8, the float8 variants, float4 and float8e8m0 in F32 (every value exactly). That is exact
//! for storage, data movement and casts, but not for arithmetic (no wrap-around, signed
//! comparisons of uint64, no rounding to the small float). So at load every value of such a type
//! is tracked through the graph: the ops that compute on int8/uint16/uint64 are replaced by
//! [`NarrowOp`], which works on the logical values in i128 and wraps results back exactly as ONNX
//! (numpy) does; casts to any of these types round or wrap like ONNX (`lowbit.rs`); data-movement
//! ops keep their normal implementation; any other consumer is rejected at load.

use super::Op;
use super::elementwise::{Binary, Variadic};
use crate::error::{LoadError, node_err};
use crate::graph::Node;
use candle_core::{DType, Device, Result, Shape, Tensor, bail};
use std::collections::HashMap;

/// An ONNX element type candle has no dtype for, held in another candle dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    I8,
    U16,
    U64,
    I4,
    U4,
    I2,
    U2,
    F8E4M3FN,
    F8E4M3FNUZ,
    F8E5M2,
    F8E5M2FNUZ,
    F4E2M1,
    F8E8M0,
}

impl Held {
    pub fn from_onnx(elem_type: i32) -> Option<Self> {
        Some(match elem_type {
            3 => Self::I8,
            4 => Self::U16,
            13 => Self::U64,
            17 => Self::F8E4M3FN,
            18 => Self::F8E4M3FNUZ,
            19 => Self::F8E5M2,
            20 => Self::F8E5M2FNUZ,
            21 => Self::U4,
            22 => Self::I4,
            23 => Self::F4E2M1,
            24 => Self::F8E8M0,
            25 => Self::U2,
            26 => Self::I2,
            _ => return None,
        })
    }

    /// The candle dtype its values are held in.
    pub fn holder(self) -> DType {
        match self {
            Self::I8 | Self::I4 | Self::I2 => DType::I16,
            Self::U16 => DType::I32,
            Self::U64 => DType::I64,
            Self::U4 | Self::U2 => DType::U8,
            _ => DType::F32,
        }
    }

    pub fn is_int(self) -> bool {
        matches!(self, Self::I8 | Self::U16 | Self::U64 | Self::I4 | Self::U4 | Self::I2 | Self::U2)
    }

    /// Types ONNX arithmetic and comparison ops accept (the others only cast and move).
    pub fn is_arith(self) -> bool {
        matches!(self, Self::I8 | Self::U16 | Self::U64)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::I8 => "int8",
            Self::U16 => "uint16",
            Self::U64 => "uint64",
            Self::I4 => "int4",
            Self::U4 => "uint4",
            Self::I2 => "int2",
            Self::U2 => "uint2",
            Self::F8E4M3FN => "float8e4m3fn",
            Self::F8E4M3FNUZ => "float8e4m3fnuz",
            Self::F8E5M2 => "float8e5m2",
            Self::F8E5M2FNUZ => "float8e5m2fnuz",
            Self::F4E2M1 => "float4e2m1",
            Self::F8E8M0 => "float8e8m0",
        }
    }

    /// Two's-complement wrap-around to an integer type (numpy's integer overflow behaviour).
    pub fn wrap(self, v: i128) -> i128 {
        match self {
            Self::I8 => v as i8 as i128,
            Self::U16 => v as u16 as i128,
            Self::U64 => v as u64 as i128,
            Self::I4 => (((v as u8) << 4) as i8 >> 4) as i128,
            Self::U4 => (v as u8 & 0xf) as i128,
            Self::I2 => (((v as u8) << 6) as i8 >> 6) as i128,
            Self::U2 => (v as u8 & 0x3) as i128,
            _ => v,
        }
    }

    /// Logical values of an integer holder tensor (row-major).
    pub fn read(self, t: &Tensor) -> Result<Vec<i128>> {
        let v = t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        Ok(match self {
            Self::U64 => v.into_iter().map(|x| x as u64 as i128).collect(),
            _ => v.into_iter().map(|x| x as i128).collect(),
        })
    }

    /// An integer holder tensor from logical values (already in range).
    pub fn write(self, v: Vec<i128>, shape: &Shape, dev: &Device) -> Result<Tensor> {
        match self.holder() {
            DType::I16 => Tensor::from_vec(v.into_iter().map(|x| x as i16).collect::<Vec<_>>(), shape, dev),
            DType::I32 => Tensor::from_vec(v.into_iter().map(|x| x as i32).collect::<Vec<_>>(), shape, dev),
            DType::I64 => Tensor::from_vec(v.into_iter().map(|x| x as u64 as i64).collect::<Vec<_>>(), shape, dev),
            DType::U8 => Tensor::from_vec(v.into_iter().map(|x| x as u8).collect::<Vec<_>>(), shape, dev),
            d => bail!("{} is not an integer type (held as {d:?})", self.name()),
        }
    }

    /// Whether a holder tensor passed in by a caller only holds values of this type.
    pub fn check_range(self, t: &Tensor) -> Result<()> {
        if t.dtype() != self.holder() {
            bail!("dtype {:?}, {} values are passed as {:?}", t.dtype(), self.name(), self.holder());
        }
        if self.is_int() {
            if let Some(bad) = self.read(t)?.into_iter().find(|&x| self.wrap(x) != x) {
                bail!("value {bad} is outside the range of {}", self.name());
            }
        } else if let Some(bad) = super::floats(t)?.into_iter().find(|&v| !super::lowbit::representable(self, v)) {
            bail!("value {bad} is not a {} value", self.name());
        }
        Ok(())
    }
}

/// Cast to a held type (parsed from Cast / CastLike; `from` set by the load-time type pass).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CastHeld {
    pub to: Held,
    pub from: Option<Held>,
    pub saturate: bool,
    pub round: super::lowbit::E8m0Round,
}

/// What a [`NarrowOp`] computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Add, Sub, Mul, Div (truncating, like onnxruntime) and the comparisons.
    Binary(Binary),
    Max,
    Min,
    /// Clip with optional min/max inputs.
    Clip,
    /// Pow of a float base with an exponent of this type.
    PowExponent,
    /// uint64 (held as its i64 bit pattern) to a float dtype.
    ToFloat(DType),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NarrowOp {
    pub kind: Kind,
    pub ty: Held,
}

fn broadcast_all(ts: &[&Tensor]) -> Result<Shape> {
    let mut shape = ts[0].shape().clone();
    for t in &ts[1..] {
        shape = shape.broadcast_shape_binary_op(t.shape(), "broadcast")?;
    }
    Ok(shape)
}

pub fn run(op: &NarrowOp, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let ty = op.ty;
    let x = super::req(ins, 0)?;
    let dev = x.device();
    match op.kind {
        Kind::ToFloat(dt) => {
            let v = ty.read(x)?;
            match dt {
                DType::F64 => Tensor::from_vec(v.into_iter().map(|v| v as f64).collect::<Vec<_>>(), x.shape(), dev),
                // Exact for f16 too: every value f16 can hold finitely is exact in f32.
                DType::F32 | DType::F16 => {
                    Tensor::from_vec(v.into_iter().map(|v| v as f32).collect::<Vec<_>>(), x.shape(), dev)?.to_dtype(dt)
                }
                d => bail!("casting {} to {d:?} is not supported", ty.name()),
            }
        }
        Kind::Clip => {
            let bound = |i: usize| -> Result<Option<i128>> {
                super::opt(ins, i)
                    .map(|t| {
                        ty.read(t)?.first().copied().ok_or_else(|| candle_core::Error::Msg("empty Clip bound".into()))
                    })
                    .transpose()
            };
            let (lo, hi) = (bound(1)?, bound(2)?);
            let v = ty.read(x)?.into_iter().map(|v| {
                let v = lo.map_or(v, |lo| v.max(lo));
                hi.map_or(v, |hi| v.min(hi))
            });
            ty.write(v.collect(), x.shape(), dev)
        }
        Kind::PowExponent => {
            let e = super::req(ins, 1)?;
            if !x.dtype().is_float() {
                bail!("Pow with a {} exponent needs a floating-point base, got {:?}", ty.name(), x.dtype());
            }
            if x.track_op() {
                bail!("training through Pow with a {} exponent is not supported", ty.name());
            }
            let shape = broadcast_all(&[x, e])?;
            let base = super::floats(&x.broadcast_as(&shape)?)?;
            let exp = ty.read(&e.broadcast_as(&shape)?)?;
            // numpy promotes to float64, raises, then the result is cast back to the base type.
            let v: Vec<f64> = base.iter().zip(&exp).map(|(b, &e)| b.powf(e as f64)).collect();
            Tensor::from_vec(v, shape, dev)?.to_dtype(x.dtype())
        }
        Kind::Max | Kind::Min => {
            let xs: Vec<&Tensor> = ins.iter().flatten().copied().collect();
            let shape = broadcast_all(&xs)?;
            let mut acc = ty.read(&xs[0].broadcast_as(&shape)?)?;
            for t in &xs[1..] {
                for (a, b) in acc.iter_mut().zip(ty.read(&t.broadcast_as(&shape)?)?) {
                    *a = if op.kind == Kind::Max { (*a).max(b) } else { (*a).min(b) };
                }
            }
            ty.write(acc, &shape, dev)
        }
        Kind::Binary(b) => {
            let y = super::req(ins, 1)?;
            let shape = broadcast_all(&[x, y])?;
            let (l, r) = (ty.read(&x.broadcast_as(&shape)?)?, ty.read(&y.broadcast_as(&shape)?)?);
            let pairs = l.into_iter().zip(r);
            let cmp = |f: fn(&i128, &i128) -> bool| -> Result<Tensor> {
                Tensor::from_vec(pairs.clone().map(|(a, b)| f(&a, &b) as u8).collect::<Vec<_>>(), &shape, dev)
            };
            let arith = |f: fn(i128, i128) -> Result<i128>| -> Result<Tensor> {
                let v = pairs.clone().map(|(a, b)| f(a, b).map(|v| ty.wrap(v))).collect::<Result<Vec<_>>>()?;
                ty.write(v, &shape, dev)
            };
            match b {
                Binary::Add => arith(|a, b| Ok(a.wrapping_add(b))),
                Binary::Sub => arith(|a, b| Ok(a.wrapping_sub(b))),
                // Products of two uint64 may exceed i128: wrapping keeps the low 64 bits exact.
                Binary::Mul => arith(|a, b| Ok(a.wrapping_mul(b))),
                Binary::Div => arith(|a, b| if b == 0 { bail!("integer division by zero") } else { Ok(a / b) }),
                Binary::Equal => cmp(i128::eq),
                Binary::Less => cmp(i128::lt),
                Binary::Greater => cmp(i128::gt),
                Binary::LessOrEqual => cmp(i128::le),
                Binary::GreaterOrEqual => cmp(i128::ge),
                other => bail!("{other:?} is not supported for {}", ty.name()),
            }
        }
    }
}

/// Track values of held types through the (topologically sorted) nodes, starting from the graph
/// inputs, initializers and constants in `types`: record what casts produce, replace the ops
/// computing on int8/uint16/uint64 with [`NarrowOp`] and reject every consumer that would not be exact.
///
/// `declared` holds the ONNX element type of graph inputs and initializers: a CastLike whose
/// `like` is one of them becomes a plain Cast, which also settles uint8 versus bool (both held in U8).
pub fn rewrite(
    nodes: &mut [Node],
    types: &mut HashMap<usize, Held>,
    declared: &HashMap<usize, i32>,
) -> std::result::Result<(), LoadError> {
    for n in nodes.iter_mut() {
        let tys: Vec<Option<Held>> = n.inputs.iter().map(|i| i.and_then(|i| types.get(&i).copied())).collect();
        if let (Op::CastLike { .. }, Some(&Some(like))) = (&n.op, n.inputs.get(1))
            && let Some(dt) = declared.get(&like).copied().and_then(crate::proto::dtype_of)
        {
            n.op = Op::Cast(dt, declared[&like] == crate::proto::onnx_type::BOOL);
        }
        // A Cast to a held type produces it whatever its input; so does a CastLike whose `like` holds one.
        if let Op::CastLike { saturate, round } = n.op
            && let Some(&Some(like)) = tys.get(1)
        {
            if like == Held::F8E8M0 && !saturate {
                return Err(node_err(&n.name, &n.op_type, "non-saturating casts to float8e8m0 are not supported"));
            }
            n.op = Op::CastHeld(CastHeld { to: like, from: None, saturate, round });
        }
        if let Op::CastHeld(c) = &mut n.op {
            c.from = tys.first().copied().flatten();
            if c.from == Some(Held::U64) && !c.to.is_int() {
                return Err(node_err(
                    &n.name,
                    &n.op_type,
                    format!("casting uint64 to {} is not supported", c.to.name()),
                ));
            }
            types.insert(n.outputs[0], c.to);
            continue;
        }
        // Quantization ops take and produce the held integer (and float8) types themselves.
        if let Op::Quant(q) = &mut n.op {
            if let Some(h) = q.output_held(&tys) {
                types.insert(n.outputs[0], h);
            }
            q.held = tys;
            continue;
        }
        let Some(ty) = tys.iter().flatten().next().copied() else { continue };
        let present: Vec<Option<Held>> =
            n.inputs.iter().zip(&tys).filter(|(i, _)| i.is_some()).map(|(_, t)| *t).collect();
        let all_same = present.iter().all(|t| *t == Some(ty));
        let only_first = tys.first() == Some(&Some(ty)) && tys.iter().skip(1).all(|t| t.is_none());
        // TopK orders the logical values: its Values keep the type, its Indices are int64.
        if let Op::TopK(t) = &mut n.op
            && only_first
            && ty.is_arith()
        {
            t.held = Some(ty);
            types.insert(n.outputs[0], ty);
            continue;
        }
        let narrow = |kind| Op::Narrow(NarrowOp { kind, ty });
        // (replacement op, whether the outputs hold this type)
        let (op, keeps_type) = match &n.op {
            Op::Binary(b @ (Binary::Add | Binary::Sub | Binary::Mul | Binary::Div)) if ty.is_arith() && all_same => {
                (Some(narrow(Kind::Binary(*b))), true)
            }
            Op::Binary(
                b @ (Binary::Equal | Binary::Less | Binary::Greater | Binary::LessOrEqual | Binary::GreaterOrEqual),
            ) if ty.is_arith() && all_same => (Some(narrow(Kind::Binary(*b))), false),
            Op::Binary(Binary::Pow) if ty.is_arith() && tys.first() == Some(&None) && tys.get(1) == Some(&Some(ty)) => {
                (Some(narrow(Kind::PowExponent)), false)
            }
            Op::Variadic(v @ (Variadic::Max | Variadic::Min)) if ty.is_arith() && all_same => {
                (Some(narrow(if *v == Variadic::Max { Kind::Max } else { Kind::Min })), true)
            }
            Op::Clip(c) if ty.is_arith() && c.attr.is_none() && all_same => (Some(narrow(Kind::Clip)), true),
            // Pure data movement is exact in the holder dtype.
            Op::Identity
            | Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Transpose { .. }
            | Op::Squeeze(_)
            | Op::Unsqueeze(_)
            | Op::Expand
                if only_first =>
            {
                (None, true)
            }
            Op::Concat { .. } if all_same => (None, true),
            // Max pooling selects values (in f32, exact for these types): what QOperator models
            // run on int8 tensors between QLinearConv nodes.
            Op::Pool(p)
                if only_first
                    && ty.is_int()
                    && ty != Held::U64
                    && p.kind == crate::kernels::pool::PoolKind::Max
                    && p.indices.is_none() =>
            {
                (None, true)
            }
            Op::Where
                if tys.first() == Some(&None) && tys.get(1) == Some(&Some(ty)) && tys.get(2) == Some(&Some(ty)) =>
            {
                (None, true)
            }
            Op::Shape { .. } | Op::Size if only_first => (None, false),
            // Casting from the held value is exact, except uint64 whose i64 bit pattern needs reading as unsigned.
            Op::Cast(dt, _) if only_first && ty == Held::U64 && matches!(dt, DType::F32 | DType::F64 | DType::F16) => {
                (Some(narrow(Kind::ToFloat(*dt))), false)
            }
            Op::Cast(dt, _) if only_first && (ty != Held::U64 || !dt.is_float()) => (None, false),
            Op::CastLike { .. } if only_first && ty != Held::U64 => (None, false),
            _ => {
                return Err(node_err(
                    &n.name,
                    &n.op_type,
                    format!(
                        "{} inputs are only supported by Cast, CastLike, data-movement ops (Identity, Reshape, Flatten, Transpose, \
                     Squeeze, Unsqueeze, Expand, Concat, Where, Shape, Size), the quantization ops{}{}, all inputs of one type",
                        ty.name(),
                        if ty.is_int() && ty != Held::U64 { ", MaxPool" } else { "" },
                        if ty.is_arith() {
                            " and Add, Sub, Mul, Div, Max, Min, Clip, the comparisons and a Pow exponent"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        };
        if let Some(op) = op {
            n.op = op;
        }
        if keeps_type {
            for o in &n.outputs {
                types.insert(*o, ty);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ty: Held, v: &[i128]) -> Tensor {
        ty.write(v.to_vec(), &Shape::from(v.len()), &Device::Cpu).unwrap()
    }

    #[test]
    fn arithmetic_wraps_like_numpy() {
        let op = |b, ty| NarrowOp { kind: Kind::Binary(b), ty };
        let (a, b) = (t(Held::I8, &[100, -128, -7]), t(Held::I8, &[100, -1, 2]));
        let sum = run(&op(Binary::Add, Held::I8), &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(Held::I8.read(&sum).unwrap(), vec![-56, 127, -5]);
        let q = run(&op(Binary::Div, Held::I8), &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(Held::I8.read(&q).unwrap(), vec![1, -128, -3]); // -128 / -1 wraps; truncating division
        let big = t(Held::U64, &[u64::MAX as i128, 1 << 63]);
        let one = t(Held::U64, &[1, 3]);
        let s = run(&op(Binary::Add, Held::U64), &[Some(&big), Some(&one)]).unwrap();
        assert_eq!(Held::U64.read(&s).unwrap(), vec![0, (1i128 << 63) + 3]);
        let gt = run(&op(Binary::Greater, Held::U64), &[Some(&big), Some(&one)]).unwrap();
        assert_eq!(gt.to_vec1::<u8>().unwrap(), vec![1, 1]); // unsigned, although held as i64
    }

    #[test]
    fn caller_values_are_range_checked() {
        let ok = Tensor::new(&[0i32, 65535], &Device::Cpu).unwrap();
        assert!(Held::U16.check_range(&ok).is_ok());
        let bad = Tensor::new(&[-1i32], &Device::Cpu).unwrap();
        assert!(Held::U16.check_range(&bad).is_err());
    }
}
