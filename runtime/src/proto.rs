//! Decoding ONNX protobuf values: tensors stored in any of the storage fields (raw_data,
//! float_data, int32_data, int64_data, double_data, uint64_data) and node attributes.

use crate::error::{LoadError, node_err};
use crate::ops::narrow::Held;
use candle_core::{DType, Device, Tensor};
use candle_onnx::onnx::{AttributeProto, NodeProto, TensorProto};

/// ONNX TensorProto.DataType codes used here.
pub mod onnx_type {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
    pub const BFLOAT16: i32 = 16;
}

/// The candle dtype an ONNX element type is held in, including the types held in another dtype
/// (int8, uint16, uint64, float8, int4, ...: see `ops::narrow`); None when unsupported.
pub fn holder_of(onnx: i32) -> Option<DType> {
    dtype_of(onnx).or_else(|| Held::from_onnx(onnx).map(Held::holder))
}

/// The candle dtype an ONNX element type maps to exactly (bool as u8), or None when unsupported.
pub fn dtype_of(onnx: i32) -> Option<DType> {
    use onnx_type::*;
    Some(match onnx {
        FLOAT => DType::F32,
        DOUBLE => DType::F64,
        FLOAT16 => DType::F16,
        BFLOAT16 => DType::BF16,
        INT64 => DType::I64,
        INT32 => DType::I32,
        INT16 => DType::I16,
        UINT8 | BOOL => DType::U8,
        UINT32 => DType::U32,
        _ => return None,
    })
}

pub fn onnx_type_of(dtype: DType) -> i32 {
    use onnx_type::*;
    match dtype {
        DType::F32 => FLOAT,
        DType::F64 => DOUBLE,
        DType::F16 => FLOAT16,
        DType::BF16 => BFLOAT16,
        DType::I64 => INT64,
        DType::I32 => INT32,
        DType::I16 => INT16,
        DType::U8 => UINT8,
        DType::U32 => UINT32,
        _ => 0,
    }
}

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| c.try_into().expect("chunk size"))
}

pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor, LoadError> {
    let err = |reason: String| LoadError::Tensor { name: t.name.clone(), reason };
    if t.data_location == 1 {
        return Err(err("external data is not supported; embed the weights in the model".into()));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative dimension {d}"))))
        .collect::<Result<_, _>>()?;
    let n: usize = dims.iter().product();
    let raw = &t.raw_data;
    let dev = &Device::Cpu;
    let check = |len: usize| {
        if len == n { Ok(()) } else { Err(err(format!("holds {len} values but its shape {dims:?} needs {n}"))) }
    };
    use onnx_type::*;
    let tensor = match t.data_type {
        FLOAT => {
            let v: Vec<f32> = if !raw.is_empty() {
                le_chunks::<4>(raw).map(f32::from_le_bytes).collect()
            } else {
                t.float_data.clone()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        DOUBLE => {
            let v: Vec<f64> = if !raw.is_empty() {
                le_chunks::<8>(raw).map(f64::from_le_bytes).collect()
            } else {
                t.double_data.clone()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        FLOAT16 => {
            let v: Vec<half::f16> = if !raw.is_empty() {
                le_chunks::<2>(raw).map(|b| half::f16::from_bits(u16::from_le_bytes(b))).collect()
            } else {
                t.int32_data.iter().map(|&b| half::f16::from_bits(b as u16)).collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        BFLOAT16 => {
            let v: Vec<half::bf16> = if !raw.is_empty() {
                le_chunks::<2>(raw).map(|b| half::bf16::from_bits(u16::from_le_bytes(b))).collect()
            } else {
                t.int32_data.iter().map(|&b| half::bf16::from_bits(b as u16)).collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        INT64 => {
            let v: Vec<i64> = if !raw.is_empty() {
                le_chunks::<8>(raw).map(i64::from_le_bytes).collect()
            } else {
                t.int64_data.clone()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        INT32 => {
            let v: Vec<i32> = if !raw.is_empty() {
                le_chunks::<4>(raw).map(i32::from_le_bytes).collect()
            } else {
                t.int32_data.clone()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        INT16 => {
            let v: Vec<i16> = if !raw.is_empty() {
                le_chunks::<2>(raw).map(i16::from_le_bytes).collect()
            } else {
                t.int32_data.iter().map(|&x| x as i16).collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        UINT8 | BOOL => {
            let v: Vec<u8> =
                if !raw.is_empty() { raw.clone() } else { t.int32_data.iter().map(|&x| x as u8).collect() };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        UINT32 => {
            let v: Vec<u32> = if !raw.is_empty() {
                le_chunks::<4>(raw).map(u32::from_le_bytes).collect()
            } else {
                t.uint64_data.iter().map(|&x| x as u32).collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        // int8 / uint16 / uint64: held in I16 / I32 / I64 (uint64 as the same bit pattern).
        INT8 => {
            let v: Vec<i16> = if !raw.is_empty() {
                raw.iter().map(|&b| b as i8 as i16).collect()
            } else {
                t.int32_data.iter().map(|&x| x as i8 as i16).collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        UINT16 => {
            let v: Vec<i32> = if !raw.is_empty() {
                le_chunks::<2>(raw).map(|b| u16::from_le_bytes(b) as i32).collect()
            } else {
                t.int32_data.iter().map(|&x| x as u16 as i32).collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        UINT64 => {
            let v: Vec<i64> = if !raw.is_empty() {
                le_chunks::<8>(raw).map(i64::from_le_bytes).collect()
            } else {
                t.uint64_data.iter().map(|&x| x as i64).collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims.as_slice(), dev)
        }
        other => match Held::from_onnx(other) {
            // float8 / float4 / float8e8m0 (held in F32) and packed 4-bit / 2-bit integers.
            Some(held) => return crate::ops::lowbit::decode(held, raw, &t.int32_data, n, &dims).map_err(err),
            None => return Err(err(format!("element type {other} is not supported"))),
        },
    };
    tensor.map_err(|e| err(e.to_string()))
}

/// Encode a tensor as a TensorProto with raw_data (used when writing trained weights back).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> candle_core::Result<TensorProto> {
    let t = t.flatten_all()?;
    let raw: Vec<u8> = match t.dtype() {
        DType::F32 => t.to_vec1::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F64 => t.to_vec1::<f64>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::I64 => t.to_vec1::<i64>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::I32 => t.to_vec1::<i32>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::U8 => t.to_vec1::<u8>()?,
        d => candle_core::bail!("cannot encode dtype {d:?}"),
    };
    Ok(TensorProto { name: name.to_string(), data_type: onnx_type_of(t.dtype()), raw_data: raw, ..Default::default() })
}

/// Typed access to a node's attributes; every getter reports errors naming the node.
pub struct Attrs<'a> {
    pub node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    pub fn new(node: &'a NodeProto) -> Self {
        Self { node }
    }
    pub fn err(&self, reason: impl std::fmt::Display) -> LoadError {
        node_err(&self.node.name, &self.node.op_type, reason)
    }
    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| a.i)
    }
    pub fn int_or(&self, name: &str, default: i64) -> i64 {
        self.int(name).unwrap_or(default)
    }
    pub fn float_or(&self, name: &str, default: f32) -> f32 {
        self.get(name).map(|a| a.f).unwrap_or(default)
    }
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.get(name).map(|a| a.floats.clone())
    }
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.string(name).unwrap_or_else(|| default.to_string())
    }
    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>, LoadError> {
        match self.get(name).and_then(|a| a.t.as_ref()) {
            Some(t) => tensor_from_proto(t).map(Some).map_err(|e| self.err(e)),
            None => Ok(None),
        }
    }
    /// Reject attributes the runtime does not understand for this op instead of ignoring them.
    pub fn only(&self, known: &[&str]) -> Result<(), LoadError> {
        for a in &self.node.attribute {
            if !known.contains(&a.name.as_str()) {
                return Err(self.err(format!("attribute '{}' is not supported", a.name)));
            }
        }
        Ok(())
    }
}
