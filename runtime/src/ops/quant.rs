//! Quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and the integer
//! operators QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger (what
//! `onnxruntime.quantization` writes in its QDQ, QOperator and dynamic formats).
//!
//! Integer products and sums are exact: zero points are subtracted in i64, the convolution or
//! matrix product of the (integer-valued) operands runs in f64, whose sums of products of 8- and
//! 16-bit values are exact far beyond any real layer (|sum| < 2^53), and the exact sum is wrapped
//! to i32 as the spec's 32-bit accumulation would. Requantization is onnxruntime's: the
//! multiplier `x_scale * w_scale / y_scale` in the scales' float type, the accumulator converted
//! to f32 and multiplied in f32, rounding half to even, then the zero point and saturation. (The
//! ONNX reference multiplies in f64; the two differ where the exact product lies within f32
//! rounding of a half, 21102 * 0.001303194 = 27.4999992 is 27.5 in f32, and in a deep network one
//! such activation a quantum away from onnxruntime's spreads to the outputs.)
//!
//! int8 (and int4, int2, uint16, float8, ...) values are held in another candle dtype (see
//! `narrow`); the load-time type pass records in [`Quant::held`] which inputs hold such a type,
//! so an int8 tensor (held in I16) is never confused with an int16 one.

use super::narrow::Held;
use super::nn::{Geometry, parse_geometry};
use super::{Op, norm_axis, opt, req};
use crate::error::LoadError;
use crate::kernels::{self, Activation};
use crate::proto::{Attrs, dtype_of, onnx_type};
use candle_core::{DType, Device, Result, Shape, Tensor, bail};

/// The element type of a quantized tensor: held in another dtype (int8, int4, float8, ...) or a
/// candle dtype of its own (uint8 as U8, int16 as I16, int32 as I32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QElem {
    Held(Held),
    Native(DType),
}

impl QElem {
    fn of(t: &Tensor, held: Option<Held>) -> Result<QElem> {
        match held {
            Some(h) if h.holder() != t.dtype() => bail!("{} value held as {:?}", h.name(), t.dtype()),
            Some(h) => Ok(QElem::Held(h)),
            None => Ok(QElem::Native(t.dtype())),
        }
    }

    /// From an ONNX element type code (the `output_dtype` attribute).
    fn from_onnx(t: i32) -> Option<QElem> {
        if t == onnx_type::BOOL {
            return None;
        }
        Held::from_onnx(t).map(QElem::Held).or_else(|| dtype_of(t).map(QElem::Native))
    }

    /// Saturation range of an integer type.
    fn range(self) -> Option<(i64, i64)> {
        Some(match self {
            QElem::Held(Held::I8) => (-128, 127),
            QElem::Held(Held::U16) => (0, 65535),
            QElem::Held(Held::I4) => (-8, 7),
            QElem::Held(Held::U4) => (0, 15),
            QElem::Held(Held::I2) => (-2, 1),
            QElem::Held(Held::U2) => (0, 3),
            QElem::Native(DType::U8) => (0, 255),
            QElem::Native(DType::I16) => (-32768, 32767),
            QElem::Native(DType::I32) => (i32::MIN as i64, i32::MAX as i64),
            _ => return None,
        })
    }

    /// float8 / float4: the values are held exactly in F32.
    fn float(self) -> Option<Held> {
        match self {
            QElem::Held(h) if !h.is_int() => Some(h),
            _ => None,
        }
    }

    fn name(self) -> String {
        match self {
            QElem::Held(h) => h.name().to_string(),
            QElem::Native(DType::U8) => "uint8".into(),
            QElem::Native(DType::I16) => "int16".into(),
            QElem::Native(DType::I32) => "int32".into(),
            QElem::Native(d) => format!("{d:?}"),
        }
    }

    /// Logical integer values (row-major).
    fn ints(self, t: &Tensor) -> Result<Vec<i64>> {
        if self.range().is_none() {
            bail!("{} is not a quantized integer type", self.name());
        }
        match self {
            QElem::Held(h) => Ok(h.read(t)?.into_iter().map(|v| v as i64).collect()),
            QElem::Native(_) => t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>(),
        }
    }

    /// A tensor of this type from values already in range.
    fn write(self, v: Vec<i64>, shape: &Shape) -> Result<Tensor> {
        let dev = &Device::Cpu;
        match self {
            QElem::Held(h) => h.write(v.into_iter().map(|x| x as i128).collect(), shape, dev),
            QElem::Native(DType::U8) => {
                Tensor::from_vec(v.into_iter().map(|x| x as u8).collect::<Vec<_>>(), shape, dev)
            }
            QElem::Native(DType::I16) => {
                Tensor::from_vec(v.into_iter().map(|x| x as i16).collect::<Vec<_>>(), shape, dev)
            }
            QElem::Native(DType::I32) => {
                Tensor::from_vec(v.into_iter().map(|x| x as i32).collect::<Vec<_>>(), shape, dev)
            }
            e => bail!("cannot write {} values", e.name()),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Kind {
    Quantize {
        axis: i64,
        block: usize,
        saturate: bool,
        /// The `output_dtype` attribute (ONNX element type), 0 when absent.
        output_dtype: i32,
        /// Float type of the division (`precision`), None for the scale's type.
        precision: Option<DType>,
    },
    Dequantize {
        axis: i64,
        block: usize,
        output_dtype: Option<DType>,
    },
    DynamicQuantize,
    QLinearConv {
        geom: Geometry,
        groups: usize,
    },
    ConvInteger {
        geom: Geometry,
        groups: usize,
    },
    QLinearMatMul,
    MatMulInteger,
}

#[derive(Debug, Clone)]
pub struct Quant {
    pub kind: Kind,
    /// Per input, the held element type (int8, int4, float8, ...) found by the load-time type pass.
    pub held: Vec<Option<Held>>,
}

pub fn parse(a: &Attrs, opset: i64) -> std::result::Result<Option<Op>, LoadError> {
    let kind = match a.node.op_type.as_str() {
        "QuantizeLinear" => {
            a.only(&["axis", "saturate", "block_size", "output_dtype", "precision"])?;
            let precision = match a.int_or("precision", 0) as i32 {
                0 => None,
                p @ (onnx_type::FLOAT | onnx_type::FLOAT16 | onnx_type::BFLOAT16 | onnx_type::DOUBLE) => dtype_of(p),
                p => return Err(a.err(format!("attribute 'precision' = {p} is not a supported float type"))),
            };
            let output_dtype = a.int_or("output_dtype", 0) as i32;
            if output_dtype != 0
                && QElem::from_onnx(output_dtype).is_none_or(|e| e.range().is_none() && e.float().is_none())
            {
                return Err(a.err(format!("attribute 'output_dtype' = {output_dtype} is not a quantized type")));
            }
            Kind::Quantize {
                axis: if opset < 13 { 1 } else { a.int_or("axis", 1) },
                block: block_size(a)?,
                saturate: a.int_or("saturate", 1) != 0,
                output_dtype,
                precision,
            }
        }
        "DequantizeLinear" => {
            a.only(&["axis", "block_size", "output_dtype"])?;
            let output_dtype = match a.int_or("output_dtype", 0) as i32 {
                0 => None,
                t @ (onnx_type::FLOAT | onnx_type::FLOAT16 | onnx_type::BFLOAT16 | onnx_type::DOUBLE) => dtype_of(t),
                t => return Err(a.err(format!("attribute 'output_dtype' = {t} is not a float type"))),
            };
            Kind::Dequantize {
                axis: if opset < 13 { 1 } else { a.int_or("axis", 1) },
                block: block_size(a)?,
                output_dtype,
            }
        }
        "DynamicQuantizeLinear" => {
            a.only(&[])?;
            Kind::DynamicQuantize
        }
        op @ ("QLinearConv" | "ConvInteger") => {
            a.only(&["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"])?;
            let (geom, groups) = (parse_geometry(a, 2)?, a.int_or("group", 1).max(1) as usize);
            if op == "QLinearConv" { Kind::QLinearConv { geom, groups } } else { Kind::ConvInteger { geom, groups } }
        }
        "QLinearMatMul" => {
            a.only(&[])?;
            Kind::QLinearMatMul
        }
        "MatMulInteger" => {
            a.only(&[])?;
            Kind::MatMulInteger
        }
        _ => return Ok(None),
    };
    Ok(Some(Op::Quant(Quant { kind, held: Vec::new() })))
}

fn block_size(a: &Attrs) -> std::result::Result<usize, LoadError> {
    match a.int_or("block_size", 0) {
        b if b >= 0 => Ok(b as usize),
        b => Err(a.err(format!("attribute 'block_size' = {b} must not be negative"))),
    }
}

impl Quant {
    /// The held element type of output 0 (None when it has a candle dtype of its own), given the
    /// held types of the inputs; called by the load-time type pass.
    pub fn output_held(&self, tys: &[Option<Held>]) -> Option<Held> {
        let ty = |i: usize| tys.get(i).copied().flatten();
        match &self.kind {
            Kind::Quantize { output_dtype, .. } => Held::from_onnx(*output_dtype).or(ty(2)),
            Kind::QLinearConv { .. } | Kind::QLinearMatMul => ty(7).or(ty(0)),
            _ => None,
        }
    }

    fn elem(&self, ins: &[Option<&Tensor>], i: usize) -> Result<Option<QElem>> {
        opt(ins, i).map(|t| QElem::of(t, self.held.get(i).copied().flatten())).transpose()
    }
}

pub fn run(q: &Quant, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    if ins.iter().flatten().any(|t| t.track_op()) {
        bail!("training through quantization ops is not supported");
    }
    let one = |t: Tensor| Ok(vec![t]);
    match &q.kind {
        Kind::Quantize { axis, block, saturate, output_dtype, precision } => {
            let to = if *output_dtype != 0 {
                let to = QElem::from_onnx(*output_dtype).expect("checked at load");
                if let Some(zp) = q.elem(ins, 2)?
                    && zp != to
                {
                    bail!("output_dtype {} differs from the zero point's type {}", to.name(), zp.name());
                }
                to
            } else {
                q.elem(ins, 2)?.unwrap_or(QElem::Native(DType::U8))
            };
            one(quantize(req(ins, 0)?, req(ins, 1)?, opt(ins, 2), to, *axis, *block, *saturate, *precision)?)
        }
        Kind::Dequantize { axis, block, output_dtype } => {
            let x = req(ins, 0)?;
            let from = q.elem(ins, 0)?.expect("required input");
            one(dequantize(x, from, req(ins, 1)?, opt(ins, 2), q.elem(ins, 2)?, *axis, *block, *output_dtype)?)
        }
        Kind::DynamicQuantize => dynamic_quantize(req(ins, 0)?),
        Kind::ConvInteger { geom, groups } => {
            let x = Operand::new(q, ins, 0, 2, false)?;
            let w = Operand::new(q, ins, 1, 3, true)?;
            let (acc, shape) = conv_exact(geom, *groups, &x, &w)?;
            one(Tensor::from_vec(acc.into_iter().map(|v| v as i64 as i32).collect::<Vec<_>>(), shape, &Device::Cpu)?)
        }
        Kind::QLinearConv { geom, groups } => {
            let x = Operand::new(q, ins, 0, 2, false)?;
            let w = Operand::new(q, ins, 3, 5, true)?;
            let (acc, shape) = conv_exact(geom, *groups, &x, &w)?;
            let m = shape.dims()[1];
            let plane: usize = shape.dims()[2..].iter().product();
            let bias = match opt(ins, 8) {
                Some(b) if b.elem_count() != m => bail!("bias has {} values for {m} output channels", b.elem_count()),
                Some(b) => b.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?,
                None => vec![0; m],
            };
            let acc: Vec<i32> =
                acc.iter().enumerate().map(|(i, &v)| (v as i64).wrapping_add(bias[(i / plane) % m]) as i32).collect();
            // Multiplier per output channel: x_scale * w_scale / y_scale in the scales' type.
            let (xs, ws, ys) = (req(ins, 1)?, req(ins, 4)?, req(ins, 6)?);
            if xs.elem_count() != 1 || ys.elem_count() != 1 || !(ws.elem_count() == 1 || ws.elem_count() == m) {
                bail!("x_scale and y_scale must be scalars, w_scale a scalar or one value per output channel ({m})");
            }
            let mult = xs.flatten_all()?.broadcast_mul(&ws.flatten_all()?)?.broadcast_div(&ys.flatten_all()?)?;
            let mult = super::floats(&mult)?;
            let y_zp = zero_point_scalar(q, ins, 7)?;
            let to = q.elem(ins, 7)?.unwrap_or(x.elem);
            let mult_of = |i: usize| if mult.len() == 1 { mult[0] } else { mult[(i / plane) % m] };
            one(requantize(&acc, mult_of, y_zp, to, &shape)?)
        }
        Kind::MatMulInteger => {
            let (acc, shape) = matmul_exact(q, ins, (0, 2), (1, 3))?;
            one(Tensor::from_vec(acc, shape, &Device::Cpu)?)
        }
        Kind::QLinearMatMul => {
            let (acc, shape) = matmul_exact(q, ins, (0, 2), (3, 5))?;
            // Per-tensor, per-row (a) and per-column (b) scales, in the scales' type.
            let a_rows = req(ins, 0)?.rank() >= 2;
            let a_s = row_param(req(ins, 1)?, a_rows)?;
            let mult = a_s.broadcast_mul(req(ins, 4)?)?.broadcast_div(req(ins, 6)?)?;
            let mult = super::floats(&mult.broadcast_as(shape.dims())?)?;
            let y_zp = zero_point_scalar(q, ins, 7)?;
            let to = q.elem(ins, 7)?.unwrap_or(q.elem(ins, 0)?.expect("required input"));
            one(requantize(&acc, |i| mult[i], y_zp, to, &shape)?)
        }
    }
}

/// A scalar zero point (0 when absent).
fn zero_point_scalar(q: &Quant, ins: &[Option<&Tensor>], i: usize) -> Result<i64> {
    match (opt(ins, i), q.elem(ins, i)?) {
        (Some(t), Some(e)) if t.elem_count() == 1 => Ok(e.ints(t)?[0]),
        (Some(t), _) => bail!("input {i} (a zero point) must be a scalar, got shape {:?}", t.dims()),
        _ => Ok(0),
    }
}

/// y = saturate(round_half_even(acc * multiplier) + zero_point), the multiplication in f32 as
/// onnxruntime's requantization (MLAS) does it.
fn requantize(acc: &[i32], mult: impl Fn(usize) -> f64, zp: i64, to: QElem, shape: &Shape) -> Result<Tensor> {
    let Some((lo, hi)) = to.range() else { bail!("output type {} is not an integer type", to.name()) };
    let product = |a: i32, m: f64| (a as f32 * m as f32) as f64;
    let v = acc.iter().enumerate().map(|(i, &a)| round_to_int(product(a, mult(i))).saturating_add(zp).clamp(lo, hi));
    to.write(v.collect(), shape)
}

/// Round half to even to an integer (NaN to 0, out-of-range values saturate to the i64 range).
fn round_to_int(v: f64) -> i64 {
    if v.is_nan() { 0 } else { v.round_ties_even() as i64 }
}

/// Expand a scale or zero point to the full shape `dims`: one value (per tensor), a 1-D tensor
/// along `axis` (per axis), or with `block` > 0 a tensor of the input's rank whose `axis`
/// dimension has ceil(D / block) entries, each repeated `block` times (blocked quantization).
fn expand(p: &Tensor, dims: &[usize], axis: i64, block: usize, what: &str) -> Result<Tensor> {
    if block == 0 {
        if p.elem_count() == 1 {
            return p.flatten_all()?.reshape(())?.broadcast_as(dims);
        }
        let ax = norm_axis(axis, dims.len())?;
        if p.rank() == 1 && p.dims()[0] == dims[ax] {
            let mut shape = vec![1; dims.len()];
            shape[ax] = dims[ax];
            return p.reshape(shape)?.broadcast_as(dims);
        }
        bail!(
            "{what} of shape {:?} is neither one value nor one per element of axis {axis} of the input {dims:?}",
            p.dims()
        );
    }
    let ax = norm_axis(axis, dims.len())?;
    let blocks = dims[ax].div_ceil(block);
    let fits = p.rank() == dims.len()
        && p.dims().iter().enumerate().all(|(i, &d)| d == if i == ax { blocks } else { dims[i] });
    if !fits {
        bail!("{what} of shape {:?} does not fit blocks of {block} along axis {axis} of the input {dims:?}", p.dims());
    }
    let mut wide = p.dims().to_vec();
    wide.insert(ax + 1, block);
    let mut merged = dims.to_vec();
    merged[ax] = blocks * block;
    p.unsqueeze(ax + 1)?.broadcast_as(wide)?.reshape(merged)?.narrow(ax, 0, dims[ax])
}

/// The float type a scale's arithmetic runs in, and its values widened to f64 (exact).
fn scale_values(s: &Tensor, dims: &[usize], axis: i64, block: usize) -> Result<Vec<f64>> {
    if !s.dtype().is_float() {
        bail!("the scale must be a float tensor, got {:?}", s.dtype());
    }
    super::floats(&expand(s, dims, axis, block, "the scale")?)
}

/// Round an f64 to the float type `dt` (f64 results of one operation on values of type `dt`
/// rounded this way equal the operation in `dt`: f64 has more than twice the precision).
fn round_to(v: f64, dt: DType) -> f64 {
    match dt {
        DType::F64 => v,
        DType::F16 => half::f16::from_f64(v).to_f64(),
        DType::BF16 => half::bf16::from_f64(v).to_f64(),
        _ => v as f32 as f64,
    }
}

#[allow(clippy::too_many_arguments)]
fn quantize(
    x: &Tensor,
    scale: &Tensor,
    zp: Option<&Tensor>,
    to: QElem,
    axis: i64,
    block: usize,
    saturate: bool,
    precision: Option<DType>,
) -> Result<Tensor> {
    if !x.dtype().is_float() {
        bail!("QuantizeLinear input must be a float tensor, got {:?}", x.dtype());
    }
    let dims = x.dims().to_vec();
    let div_type = precision.unwrap_or(scale.dtype());
    let xs = super::floats(x)?;
    let ss = scale_values(scale, &dims, axis, block)?;
    // x / y_scale in the precision of the scale (or `precision`), both operands first rounded to it.
    let q: Vec<f64> =
        xs.iter().zip(&ss).map(|(&x, &s)| round_to(round_to(x, div_type) / round_to(s, div_type), div_type)).collect();
    if let Some(f) = to.float() {
        if let Some(zp) = zp
            && super::floats(zp)?.iter().any(|&z| z != 0.0)
        {
            bail!("a non-zero zero point for {} quantization is not supported", f.name());
        }
        let t = Tensor::from_vec(q.into_iter().map(|v| v as f32).collect::<Vec<_>>(), dims, &Device::Cpu)?;
        return super::lowbit::cast_to(&t, None, f, saturate, super::lowbit::E8m0Round::Nearest);
    }
    let Some((lo, hi)) = to.range().filter(|_| to != QElem::Native(DType::I32)) else {
        bail!("{} is not a quantized type", to.name())
    };
    let zps = match zp {
        Some(z) => to.ints(&expand(z, &dims, axis, block, "the zero point")?)?,
        None => vec![0; q.len()],
    };
    let v = q.iter().zip(&zps).map(|(&v, &z)| round_to_int(v).saturating_add(z).clamp(lo, hi));
    to.write(v.collect(), x.shape())
}

#[allow(clippy::too_many_arguments)]
fn dequantize(
    x: &Tensor,
    from: QElem,
    scale: &Tensor,
    zp: Option<&Tensor>,
    zp_elem: Option<QElem>,
    axis: i64,
    block: usize,
    output_dtype: Option<DType>,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let ss = scale_values(scale, &dims, axis, block)?;
    // The product runs in the output type: f64 for a double scale, f32 otherwise (the ONNX
    // reference multiplies in float32 and rounds to float16/bfloat16 after).
    let out = output_dtype.unwrap_or(scale.dtype());
    let prod_type = if out == DType::F64 { DType::F64 } else { DType::F32 };
    let dx: Vec<f64> = if let Some(f) = from.float() {
        // float8 / float4: the zero point must be zero (the reference ignores it for float4).
        if let Some(z) = zp
            && super::floats(z)?.iter().any(|&v| v != 0.0)
        {
            bail!("a non-zero zero point for {} is not supported", f.name());
        }
        super::floats(x)?
    } else {
        let xv = from.ints(x)?;
        match zp {
            Some(z) => {
                if zp_elem != Some(from) {
                    bail!(
                        "the zero point's type {} differs from the input's {}",
                        zp_elem.map_or("?".into(), |e| e.name()),
                        from.name()
                    );
                }
                let zv = from.ints(&expand(z, &dims, axis, block, "the zero point")?)?;
                xv.iter().zip(&zv).map(|(&a, &b)| (a - b) as f64).collect()
            }
            None => xv.into_iter().map(|v| v as f64).collect(),
        }
    };
    let y: Vec<f64> = dx.iter().zip(&ss).map(|(&d, &s)| round_to(round_to(d, prod_type) * s, prod_type)).collect();
    Tensor::from_vec(y, dims, &Device::Cpu)?.to_dtype(out)
}

/// DynamicQuantizeLinear: uint8 with a scale and zero point covering [min(0, x), max(0, x)],
/// computed in float32 like the ONNX reference and onnxruntime.
fn dynamic_quantize(x: &Tensor) -> Result<Vec<Tensor>> {
    if x.dtype() != DType::F32 {
        bail!("DynamicQuantizeLinear input must be float32, got {:?}", x.dtype());
    }
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    let maxx = v.iter().fold(0f32, |m, &a| m.max(a));
    let minx = v.iter().fold(0f32, |m, &a| m.min(a));
    let scale = (if maxx == minx { 1.0 } else { maxx - minx }) / 255.0;
    let zp = (0.0 - minx / scale).clamp(0.0, 255.0).round_ties_even();
    let q: Vec<u8> = v.iter().map(|&a| ((a / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8).collect();
    let dev = &Device::Cpu;
    Ok(vec![Tensor::from_vec(q, x.shape(), dev)?, Tensor::new(scale, dev)?, Tensor::new(zp as u8, dev)?])
}

/// An integer operand with its zero point subtracted (as f64: exact).
struct Operand {
    elem: QElem,
    values: Vec<f64>,
    dims: Vec<usize>,
}

impl Operand {
    /// Input `i` minus the zero point at input `zp`: a scalar, or with `per_channel` (a
    /// convolution weight) one value per output channel.
    fn new(q: &Quant, ins: &[Option<&Tensor>], i: usize, zp: usize, per_channel: bool) -> Result<Operand> {
        let t = req(ins, i)?;
        let elem = q.elem(ins, i)?.expect("required input");
        let v = elem.ints(t)?;
        let z = match opt(ins, zp) {
            None => vec![0],
            Some(z) => {
                let ze = q.elem(ins, zp)?.expect("present");
                if ze != elem {
                    bail!("zero point type {} differs from its input's {}", ze.name(), elem.name());
                }
                ze.ints(z)?
            }
        };
        let dims = t.dims().to_vec();
        let per = dims.iter().skip(1).product::<usize>().max(1);
        if z.len() != 1 && !(per_channel && dims.first() == Some(&z.len())) {
            let want = if per_channel { "one value or one per output channel" } else { "one value" };
            bail!("zero point of {} values for an input of shape {dims:?}: {want} expected", z.len());
        }
        let values =
            v.iter().enumerate().map(|(k, &a)| (a - if z.len() == 1 { z[0] } else { z[k / per] }) as f64).collect();
        Ok(Operand { elem, values, dims })
    }
}

/// The exact integer convolution of x and w (zero points removed): values as f64, output shape.
fn conv_exact(geom: &Geometry, groups: usize, x: &Operand, w: &Operand) -> Result<(Vec<f64>, Shape)> {
    let (n, ch, h, wd, spatial) = match x.dims.as_slice() {
        &[n, c, w] => (n, c, 1, w, 1),
        &[n, c, h, w] => (n, c, h, w, 2),
        d => bail!("only 1-D and 2-D convolutions are supported, input shape {d:?}"),
    };
    if w.dims.len() != spatial + 2 {
        bail!("weight rank {} does not match input rank {}", w.dims.len(), x.dims.len());
    }
    let (m, cg) = (w.dims[0], w.dims[1]);
    let (kh, kw) = if spatial == 1 { (1, w.dims[2]) } else { (w.dims[2], w.dims[3]) };
    if cg * groups != ch || m % groups != 0 {
        bail!("channels {ch} / group {groups} do not match weight shape {:?}", w.dims);
    }
    let win = geom.window(spatial, h, wd, kh, kw)?;
    let args = kernels::conv::ConvArgs::<f64> {
        x: &x.values,
        n,
        c: ch,
        h,
        w: wd,
        weight: &w.values,
        m,
        bias: None,
        groups,
        win,
        act: Activation::None,
        packed: None,
    };
    let (out, oh, ow) = kernels::conv::conv2d(&args);
    let shape = if spatial == 1 { Shape::from((n, m, ow)) } else { Shape::from((n, m, oh, ow)) };
    Ok((out, shape))
}

/// A per-row parameter of `a` given as a 1-D tensor [M] becomes [M, 1] (numpy would align it
/// with the columns); scalars and N-D parameters are used as they are.
fn row_param(p: &Tensor, a_has_rows: bool) -> Result<Tensor> {
    if p.rank() == 1 && p.elem_count() > 1 && a_has_rows { p.reshape((p.elem_count(), 1)) } else { Ok(p.clone()) }
}

/// Exact integer matmul (numpy semantics) of inputs (a, a_zp) and (b, b_zp), zero points per
/// tensor, per row of a or per column of b; returns the i32 accumulators and the output shape.
fn matmul_exact(
    q: &Quant,
    ins: &[Option<&Tensor>],
    (ai, azi): (usize, usize),
    (bi, bzi): (usize, usize),
) -> Result<(Vec<i32>, Shape)> {
    let side = |i: usize, zi: usize, rows: bool| -> Result<Tensor> {
        let t = req(ins, i)?;
        let e = q.elem(ins, i)?.expect("required input");
        let v = e.ints(t)?;
        let centered: Vec<f64> = match opt(ins, zi) {
            None => v.into_iter().map(|x| x as f64).collect(),
            Some(z) => {
                let ze = q.elem(ins, zi)?.expect("present");
                if ze != e {
                    bail!("zero point type {} differs from its input's {}", ze.name(), e.name());
                }
                let zt = e.write(ze.ints(z)?, z.shape())?;
                let zt = row_param(&zt, rows && t.rank() >= 2)?;
                let zv = e.ints(&zt.broadcast_as(t.dims()).map_err(|_| {
                    candle_core::Error::Msg(format!(
                        "zero point of shape {:?} does not fit input {:?}",
                        z.dims(),
                        t.dims()
                    ))
                })?)?;
                v.iter().zip(&zv).map(|(&a, &b)| (a - b) as f64).collect()
            }
        };
        Tensor::from_vec(centered, t.dims(), &Device::Cpu)
    };
    let a = side(ai, azi, true)?;
    let b = side(bi, bzi, false)?;
    let y = super::nn::matmul(&a, &b)?;
    let v: Vec<i32> = y.flatten_all()?.to_vec1::<f64>()?.into_iter().map(|v| v as i64 as i32).collect();
    Ok((v, y.shape().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(kind: Kind, held: Vec<Option<Held>>) -> Quant {
        Quant { kind, held }
    }

    fn quant(axis: i64) -> Kind {
        Kind::Quantize { axis, block: 0, saturate: true, output_dtype: 0, precision: None }
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let x = Tensor::new(&[0.5f32, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0, 1.0], &Device::Cpu).unwrap();
        let s = Tensor::new(1f32, &Device::Cpu).unwrap();
        // int8 zero point 1 (held in I16).
        let zp = Held::I8.write(vec![1], &Shape::from(()), &Device::Cpu).unwrap();
        let y = run(&q(quant(1), vec![None, None, Some(Held::I8)]), &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        assert_eq!(Held::I8.read(&y[0]).unwrap(), vec![1, 3, 3, 1, -1, 127, -128, 2]);
        // uint8 by default.
        let y = run(&q(quant(1), vec![]), &[Some(&x), Some(&s)]).unwrap();
        assert_eq!(y[0].to_vec1::<u8>().unwrap(), vec![0, 2, 2, 0, 0, 255, 0, 1]);
    }

    #[test]
    fn per_axis_and_blocked_scales() {
        let x = Tensor::new(&[[1f32, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]], &Device::Cpu).unwrap();
        let s = Tensor::new(&[1f32, 10.0], &Device::Cpu).unwrap();
        let y = run(&q(quant(0), vec![]), &[Some(&x), Some(&s)]).unwrap();
        assert_eq!(y[0].to_vec2::<u8>().unwrap(), vec![vec![1, 2, 3, 4], vec![1, 2, 3, 4]]);
        // Blocks of 3 along axis 1: columns 0-2 use the first scale, column 3 the second.
        let sb = Tensor::new(&[[1f32, 2.0], [10.0, 20.0]], &Device::Cpu).unwrap();
        let k = Kind::Quantize { axis: 1, block: 3, saturate: true, output_dtype: 0, precision: None };
        let y = run(&q(k, vec![]), &[Some(&x), Some(&sb)]).unwrap();
        assert_eq!(y[0].to_vec2::<u8>().unwrap(), vec![vec![1, 2, 3, 2], vec![1, 2, 3, 2]]);
    }

    /// A zero point off by one moves every dequantized value by one quantum: the comparison
    /// tolerances of the real-model test must be (and are) well below that.
    #[test]
    fn dequantize_uses_the_zero_point_per_channel() {
        let x = Held::I8.write(vec![-128, 0, 127, 5], &Shape::from((2, 2)), &Device::Cpu).unwrap();
        let s = Tensor::new(&[0.5f32, 0.25], &Device::Cpu).unwrap();
        let zp = Held::I8.write(vec![0, 5], &Shape::from(2), &Device::Cpu).unwrap();
        let k = Kind::Dequantize { axis: 0, block: 0, output_dtype: None };
        let y = run(&q(k, vec![Some(Held::I8), None, Some(Held::I8)]), &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        assert_eq!(y[0].to_vec2::<f32>().unwrap(), vec![vec![-64.0, 0.0], vec![30.5, 0.0]]);
    }

    /// Sums beyond f32's exact range (2^24) stay exact, and wrap like 32-bit accumulation.
    #[test]
    fn integer_matmul_is_exact() {
        let k = 600; // 600 * 255 * 255 > 2^24
        let a = Tensor::from_vec(vec![255u8; k], (1, k), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(
            (0..k).map(|i| if i == 0 { 254u8 } else { 255 }).collect::<Vec<_>>(),
            (k, 1),
            &Device::Cpu,
        )
        .unwrap();
        let y = run(&q(Kind::MatMulInteger, vec![]), &[Some(&a), Some(&b)]).unwrap();
        let want = 255 * 255 * (k as i64 - 1) + 255 * 254;
        assert_eq!(y[0].to_vec2::<i32>().unwrap(), vec![vec![want as i32]]);
        assert_ne!(want as f32 as i64, want, "the case must not be exact in f32");
    }

    /// The multiplier times the accumulator is rounded to f32 before rounding to an integer, as
    /// onnxruntime does: 21102 * 0.0013031947 is 27.4999992 exactly but 27.5 in f32, which
    /// rounds to 28 (27 in f64, the ONNX reference's arithmetic).
    #[test]
    fn requantization_multiplies_in_f32_like_onnxruntime() {
        let dev = &Device::Cpu;
        // 1x1 convolution over two channels: 255 * 82 + 192 * 1 = 21102.
        let x = Tensor::from_vec(vec![255u8, 192], (1, 2, 1, 1), dev).unwrap();
        let w = Held::I8.write(vec![82, 1], &Shape::from((1, 2, 1, 1)), dev).unwrap();
        let xs = Tensor::new(f32::from_bits(0x3aaacfef), dev).unwrap();
        let one = Tensor::new(1f32, dev).unwrap();
        let geom = Geometry {
            auto_pad: super::super::nn::AutoPad::NotSet,
            kernel: None,
            strides: None,
            dilations: None,
            pads: None,
        };
        let held = vec![None, None, None, Some(Held::I8)];
        let ins = [Some(&x), Some(&xs), None, Some(&w), Some(&one), None, Some(&one)];
        let y = run(&q(Kind::QLinearConv { geom, groups: 1 }, held), &ins).unwrap();
        assert_eq!(y[0].flatten_all().unwrap().to_vec1::<u8>().unwrap(), vec![28]);
        assert_eq!((21102.0 * f32::from_bits(0x3aaacfef) as f64).round_ties_even(), 27.0, "the case must need f32");
    }

    #[test]
    fn conv_integer_pads_with_the_zero_point() {
        // 1x1x2x2 input, zero point 10; 1x1x2x2 kernel of ones; pads 1: the border sees zeros
        // after the zero point is removed (the padding value is the zero point).
        let x = Tensor::from_vec(vec![11u8, 12, 13, 14], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(vec![1u8; 4], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let zx = Tensor::new(10u8, &Device::Cpu).unwrap();
        let geom = Geometry {
            auto_pad: super::super::nn::AutoPad::NotSet,
            kernel: None,
            strides: None,
            dilations: None,
            pads: Some(vec![1, 1, 1, 1]),
        };
        let y = run(&q(Kind::ConvInteger { geom, groups: 1 }, vec![]), &[Some(&x), Some(&w), Some(&zx)]).unwrap();
        assert_eq!(y[0].flatten_all().unwrap().to_vec1::<i32>().unwrap(), vec![1, 3, 2, 4, 10, 6, 3, 7, 4]);
    }
}
