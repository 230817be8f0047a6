//! String tensors: ONNX `string` values, which candle tensors cannot hold. They live next to the
//! candle tensors in the executor as a separate value kind, so the numeric paths never see them.
//! Only the ops in [`StringOp`] accept strings; any other node receiving a string value is
//! rejected at load (see [`assign`]), never at run time.

use crate::error::LoadError;
use crate::graph::Node;
use crate::ops::{Op, elementwise::Binary, shape};
use candle_core::{DType, Device, Tensor};
use candle_onnx::onnx::{NodeProto, TensorProto};
use std::collections::{HashMap, HashSet};

/// ONNX element type code of `string`.
pub const ONNX_STRING: i32 = 8;

/// An n-dimensional array of byte strings (ONNX strings are byte sequences, usually UTF-8),
/// row-major like a candle tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringTensor {
    dims: Vec<usize>,
    data: Vec<Vec<u8>>,
}

impl StringTensor {
    /// Fails when the number of strings does not match the shape.
    pub fn new(dims: Vec<usize>, data: Vec<Vec<u8>>) -> Result<StringTensor, String> {
        let n: usize = dims.iter().product();
        if n != data.len() {
            return Err(format!("holds {} strings but its shape {dims:?} needs {n}", data.len()));
        }
        Ok(StringTensor { dims, data })
    }
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }
    /// The strings in row-major order.
    pub fn data(&self) -> &[Vec<u8>] {
        &self.data
    }
}

/// A value of the graph: a candle tensor or a string tensor.
#[derive(Debug, Clone)]
pub enum Value {
    Tensor(Tensor),
    Strings(StringTensor),
}

impl Value {
    pub fn dims(&self) -> &[usize] {
        match self {
            Value::Tensor(t) => t.dims(),
            Value::Strings(s) => s.dims(),
        }
    }
}

/// Decode a string-typed TensorProto (its `string_data`).
pub fn from_proto(t: &TensorProto) -> Result<StringTensor, LoadError> {
    let err = |reason: String| LoadError::Tensor { name: t.name.clone(), reason };
    if t.data_location == 1 {
        return Err(err("external data is not supported; embed the strings in the model".into()));
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    StringTensor::new(dims, t.string_data.clone()).map_err(err)
}

/// The string value of a `Constant` node (`value` holding a string tensor, `value_string` or
/// `value_strings`), or None when the constant is numeric.
pub fn constant(n: &NodeProto) -> Result<Option<StringTensor>, LoadError> {
    let Some(a) = n.attribute.first() else { return Ok(None) };
    match a.name.as_str() {
        "value" => match &a.t {
            Some(t) if t.data_type == ONNX_STRING => from_proto(t).map(Some),
            _ => Ok(None),
        },
        "value_string" => Ok(Some(StringTensor { dims: vec![], data: vec![a.s.clone()] })),
        "value_strings" => Ok(Some(StringTensor { dims: vec![a.strings.len()], data: a.strings.clone() })),
        _ => Ok(None),
    }
}

/// Ops that accept string inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringOp {
    /// Elementwise equality with numpy broadcasting; the output is bool (held as u8).
    Equal,
    Identity,
    Reshape {
        allowzero: bool,
    },
}

/// Load-time pass over the sorted nodes: find the values that are strings (starting from
/// `strings`, the string graph inputs and constants), turn the nodes that consume them into
/// [`Op::Strings`] and reject every other consumer naming the node. Returns all string value ids.
pub fn assign(nodes: &mut [Node], strings: HashSet<usize>, names: &[String]) -> Result<HashSet<usize>, LoadError> {
    let mut strings = strings;
    for n in nodes.iter_mut() {
        let is_str: Vec<bool> = n.inputs.iter().map(|i| i.is_some_and(|i| strings.contains(&i))).collect();
        let Some(first) = is_str.iter().position(|&s| s) else { continue };
        let reject = |reason: String| LoadError::Node { node: n.name.clone(), op: n.op_type.clone(), reason };
        let (op, string_out) = match &n.op {
            Op::Binary(Binary::Equal) => {
                if is_str.len() != 2 || !(is_str[0] && is_str[1]) {
                    return Err(reject("Equal compares a string tensor with a non-string value".into()));
                }
                (StringOp::Equal, false)
            }
            Op::Identity if first == 0 => (StringOp::Identity, true),
            Op::Reshape { allowzero } if is_str == [true, false] => (StringOp::Reshape { allowzero: *allowzero }, true),
            _ => {
                let name = n.inputs[first].map(|i| names[i].as_str()).unwrap_or_default();
                return Err(reject(format!(
                    "input '{name}' is a string tensor; only Equal (string with string), Identity and Reshape accept strings"
                )));
            }
        };
        n.op = Op::Strings(op);
        if string_out {
            strings.extend(n.outputs.iter().copied());
        }
    }
    Ok(strings)
}

/// Run a string op. `strs` holds the string values, `tensors` the candle ones.
pub fn run(
    op: StringOp,
    ins: &[Option<usize>],
    strs: &[Option<StringTensor>],
    tensors: &[Option<Tensor>],
) -> candle_core::Result<Value> {
    let s = |k: usize| -> candle_core::Result<&StringTensor> {
        ins.get(k)
            .copied()
            .flatten()
            .and_then(|i| strs[i].as_ref())
            .ok_or_else(|| candle_core::Error::Msg(format!("missing string input {k}")))
    };
    match op {
        StringOp::Equal => equal(s(0)?, s(1)?).map(Value::Tensor),
        StringOp::Identity => Ok(Value::Strings(s(0)?.clone())),
        StringOp::Reshape { allowzero } => {
            let x = s(0)?;
            let spec = ins
                .get(1)
                .copied()
                .flatten()
                .and_then(|i| tensors[i].as_ref())
                .ok_or_else(|| candle_core::Error::Msg("missing shape input".into()))?;
            // Reuse the numeric shape rules on a placeholder of the same dims (one byte per element).
            let placeholder = Tensor::zeros(x.dims(), DType::U8, &Device::Cpu)?;
            let dims = shape::reshape(&placeholder, spec, allowzero)?.dims().to_vec();
            Ok(Value::Strings(StringTensor { dims, data: x.data.clone() }))
        }
    }
}

/// The numpy broadcast of two shapes.
fn broadcast_dims(a: &[usize], b: &[usize]) -> candle_core::Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |d: &[usize], k: usize| if k + d.len() >= r { d[k + d.len() - r] } else { 1 };
    (0..r)
        .map(|k| match (at(a, k), at(b, k)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(candle_core::Error::Msg(format!("shapes {a:?} and {b:?} do not broadcast"))),
        })
        .collect()
}

/// Row-major strides of `d` aligned to rank `r`, with 0 on broadcast dimensions.
fn broadcast_strides(d: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let mut strides = vec![0; r];
    let mut acc = 1;
    for k in (0..d.len()).rev() {
        let o = k + r - d.len();
        strides[o] = if d[k] == 1 && out[o] != 1 { 0 } else { acc };
        acc *= d[k];
    }
    strides
}

/// Elementwise string equality with numpy broadcasting, as a bool (u8) tensor.
pub fn equal(a: &StringTensor, b: &StringTensor) -> candle_core::Result<Tensor> {
    let out = broadcast_dims(&a.dims, &b.dims)?;
    let (sa, sb) = (broadcast_strides(&a.dims, &out), broadcast_strides(&b.dims, &out));
    let n: usize = out.iter().product();
    let mut idx = vec![0usize; out.len()];
    let mut res = Vec::with_capacity(n);
    for _ in 0..n {
        let ia: usize = idx.iter().zip(&sa).map(|(i, s)| i * s).sum();
        let ib: usize = idx.iter().zip(&sb).map(|(i, s)| i * s).sum();
        res.push(u8::from(a.data[ia] == b.data[ib]));
        // Advance the multi-index (last dimension fastest).
        for k in (0..out.len()).rev() {
            idx[k] += 1;
            if idx[k] < out[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Tensor::from_vec(res, out.as_slice(), &Device::Cpu)
}

/// String constants keyed by value id (what the graph keeps next to its numeric constants).
pub type StringConsts = HashMap<usize, StringTensor>;

#[cfg(test)]
mod tests {
    use super::*;

    fn st(dims: &[usize], v: &[&str]) -> StringTensor {
        StringTensor::new(dims.to_vec(), v.iter().map(|s| s.as_bytes().to_vec()).collect()).unwrap()
    }

    #[test]
    fn equal_broadcasts_like_numpy() {
        // [2, 3] against [3]: the row is compared with each row.
        let a = st(&[2, 3], &["a", "b", "c", "b", "b", "x"]);
        let b = st(&[3], &["a", "b", "x"]);
        let r = equal(&a, &b).unwrap();
        assert_eq!(r.dims(), &[2, 3]);
        assert_eq!(r.dtype(), DType::U8);
        assert_eq!(r.to_vec2::<u8>().unwrap(), vec![vec![1, 1, 0], vec![0, 1, 1]]);
        // [2, 1] against [1, 3]: both sides broadcast to [2, 3].
        let c = st(&[2, 1], &["p", "q"]);
        let d = st(&[1, 3], &["q", "p", "q"]);
        assert_eq!(equal(&c, &d).unwrap().to_vec2::<u8>().unwrap(), vec![vec![0, 1, 0], vec![1, 0, 1]]);
        // A scalar against a vector, and strings compared byte-exactly (case, UTF-8).
        let s = st(&[], &["é"]);
        let v = st(&[3], &["é", "É", "e"]);
        assert_eq!(equal(&v, &s).unwrap().to_vec1::<u8>().unwrap(), vec![1, 0, 0]);
        // Incompatible shapes are an error, not a guess.
        assert!(equal(&st(&[2], &["a", "b"]), &st(&[3], &["a", "b", "c"])).is_err());
    }

    #[test]
    fn string_tensor_checks_its_length() {
        assert!(StringTensor::new(vec![2, 2], vec![b"a".to_vec()]).is_err());
    }
}
