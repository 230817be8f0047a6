//! Open Inference Protocol v2 REST bodies: the JSON encoding and Triton's binary tensor
//! extension (JSON header of `Inference-Header-Content-Length` bytes, then raw little-endian
//! tensors, in input order, for inputs with `parameters.binary_data_size`).

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ServerError;

pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    pub inputs: Vec<InferInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub data: Option<FlatNumbers>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// Tensor data as JSON: flat or nested arrays of numbers (or booleans), read as f32.
#[derive(Debug, Default)]
pub struct FlatNumbers(pub Vec<f32>);

impl<'de> Deserialize<'de> for FlatNumbers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Flat<'a>(&'a mut Vec<f32>, usize);
        impl<'de> de::DeserializeSeed<'de> for Flat<'_> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_any(self)
            }
        }
        impl<'de> Visitor<'de> for Flat<'_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a (nested) array of numbers")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
                self.0.push(v as f32);
                Ok(())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
                self.0.push(v as f32);
                Ok(())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
                self.0.push(v as f32);
                Ok(())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
                self.0.push(if v { 1.0 } else { 0.0 });
                Ok(())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                if self.1 > 8 {
                    return Err(de::Error::custom("tensor data nested deeper than 8 levels"));
                }
                while seq.next_element_seed(Flat(&mut *self.0, self.1 + 1))?.is_some() {}
                Ok(())
            }
        }
        let mut out = Vec::new();
        d.deserialize_any(Flat(&mut out, 0))?;
        Ok(FlatNumbers(out))
    }
}

#[derive(Debug, Serialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

#[derive(Debug, Serialize)]
pub struct OutputTensor {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<f32>>,
}

/// Bytes per element of the numeric datatypes accepted as input.
pub fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "FP32" | "INT32" | "UINT32" => 4,
        "FP64" | "INT64" | "UINT64" => 8,
        "UINT8" | "INT8" | "BOOL" => 1,
        "INT16" | "UINT16" => 2,
        _ => return None,
    })
}

/// Little-endian raw tensor bytes → f32.
pub fn decode_binary(datatype: &str, raw: &[u8]) -> Result<Vec<f32>, ServerError> {
    let size =
        element_size(datatype).ok_or_else(|| ServerError::bad_request(format!("unsupported datatype {datatype}")))?;
    if !raw.len().is_multiple_of(size) {
        return Err(ServerError::bad_request(format!(
            "{} bytes are not a whole number of {datatype} elements",
            raw.len()
        )));
    }
    let c = raw.chunks_exact(size);
    Ok(match datatype {
        "FP32" => c.map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        "FP64" => c.map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        "INT32" => c.map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        "UINT32" => c.map(|b| u32::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        "INT64" => c.map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        "UINT64" => c.map(|b| u64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        "INT16" => c.map(|b| i16::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        "UINT16" => c.map(|b| u16::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        "UINT8" | "BOOL" => raw.iter().map(|&b| b as f32).collect(),
        "INT8" => raw.iter().map(|&b| b as i8 as f32).collect(),
        _ => unreachable!("element_size accepted it"),
    })
}

/// Parses a request body; `header_len` is the Inference-Header-Content-Length value.
/// Returns the request with every input's `data` filled in.
pub fn parse_request(body: &[u8], header_len: Option<usize>) -> Result<InferRequest, ServerError> {
    let (json, mut rest) = match header_len {
        None => (body, &[][..]),
        Some(n) if n <= body.len() => (&body[..n], &body[n..]),
        Some(n) => {
            return Err(ServerError::bad_request(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )));
        }
    };
    let mut req: InferRequest = serde_json::from_slice(json)
        .map_err(|e| ServerError::bad_request(format!("invalid inference request JSON: {e}")))?;
    for input in &mut req.inputs {
        let binary = input.parameters.as_ref().and_then(|p| p.get("binary_data_size"));
        match (binary, &input.data) {
            (Some(size), None) => {
                let size = size
                    .as_u64()
                    .ok_or_else(|| ServerError::bad_request("binary_data_size must be a non-negative integer"))?
                    as usize;
                if size > rest.len() {
                    return Err(ServerError::bad_request(format!(
                        "input {:?} declares {size} binary bytes but only {} remain in the body",
                        input.name,
                        rest.len()
                    )));
                }
                input.data = Some(FlatNumbers(decode_binary(&input.datatype, &rest[..size])?));
                rest = &rest[size..];
            }
            (Some(_), Some(_)) => {
                return Err(ServerError::bad_request(format!(
                    "input {:?} has both JSON data and binary_data_size",
                    input.name
                )));
            }
            (None, Some(_)) => {
                if element_size(&input.datatype).is_none() {
                    return Err(ServerError::bad_request(format!("unsupported datatype {}", input.datatype)));
                }
            }
            (None, None) => return Err(ServerError::bad_request(format!("input {:?} has no data", input.name))),
        }
    }
    if !rest.is_empty() {
        return Err(ServerError::bad_request(format!("{} trailing bytes after the binary inputs", rest.len())));
    }
    Ok(req)
}

/// Encodes a response: pure JSON, or a JSON header plus binary outputs when `binary[i]`.
/// Returns (body, header length when binary).
pub fn encode_response(mut resp: InferResponse, mut data: Vec<Vec<f32>>, binary: &[bool]) -> (Vec<u8>, Option<usize>) {
    let any_binary = binary.iter().any(|b| *b);
    let mut tail = Vec::new();
    for (i, out) in resp.outputs.iter_mut().enumerate() {
        let values = std::mem::take(&mut data[i]);
        if binary[i] {
            let start = tail.len();
            tail.reserve(values.len() * 4);
            for v in &values {
                tail.extend_from_slice(&v.to_le_bytes());
            }
            out.parameters = Some(serde_json::json!({ "binary_data_size": tail.len() - start }));
        } else {
            out.data = Some(values);
        }
    }
    let mut body = serde_json::to_vec(&resp).expect("responses serialise");
    if !any_binary {
        return (body, None);
    }
    let n = body.len();
    body.extend_from_slice(&tail);
    (body, Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_json_data_is_flattened() {
        let body = br#"{"inputs":[{"name":"x","shape":[1,2,2],"datatype":"FP32","data":[[1,2],[3.5,4]]}]}"#;
        let r = parse_request(body, None).unwrap();
        assert_eq!(r.inputs[0].data.as_ref().unwrap().0, vec![1.0, 2.0, 3.5, 4.0]);
    }

    #[test]
    fn binary_inputs_follow_the_header() {
        let header = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2f32).to_le_bytes());
        let r = parse_request(&body, Some(header.len())).unwrap();
        assert_eq!(r.inputs[0].data.as_ref().unwrap().0, vec![1.5, -2.0]);
        assert!(parse_request(&body, Some(body.len() + 1)).is_err());
        assert!(parse_request(&body[..body.len() - 1], Some(header.len())).is_err());
    }

    #[test]
    fn binary_response_carries_sizes() {
        let resp = InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: None,
            outputs: vec![OutputTensor {
                name: "y".into(),
                datatype: "FP32",
                shape: vec![2],
                parameters: None,
                data: None,
            }],
        };
        let (body, n) = encode_response(resp, vec![vec![1.0, 2.0]], &[true]);
        let n = n.unwrap();
        let header: Value = serde_json::from_slice(&body[..n]).unwrap();
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(&body[n..n + 4], &1f32.to_le_bytes());
    }
}
