//! Reading a base model: fetch, verify its digest, find its input and output, and choose which
//! initializers are trained.

use std::collections::HashSet;

use flywheel_api::training::NamedModel;
use flywheel_runtime::proto_types::ModelProto;
use flywheel_storage::Location;
pub use flywheel_storage::sha256_hex;
use prost::Message;

use crate::error::{Result, TrainerError};

/// Reads one object given its full URI.
pub async fn read_object(uri: &str) -> Result<bytes::Bytes> {
    let (parent, name) = Location::open_object(uri)?;
    Ok(parent.get(&name).await?)
}

/// The base model's bytes, checked against `artifact.sha256` when set.
pub async fn fetch_model(model: &NamedModel) -> Result<Vec<u8>> {
    let uri = model.spec.artifact.uri.as_str();
    let bytes = read_object(uri).await?;
    if let Some(expected) = &model.spec.artifact.sha256 {
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(TrainerError::Model {
                uri: uri.into(),
                reason: format!("sha256 is {actual}, ModelVersion {} expects {expected}", model.name),
            });
        }
    }
    Ok(bytes.to_vec())
}

/// Names of the graph inputs that are not initializers, and the graph outputs.
pub fn io_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>)> {
    let proto =
        ModelProto::decode(bytes).map_err(|e| TrainerError::Model { uri: "model".into(), reason: e.to_string() })?;
    let g = proto.graph.unwrap_or_default();
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = g.input.iter().filter(|v| !inits.contains(v.name.as_str())).map(|v| v.name.clone()).collect();
    let outputs = g.output.iter().map(|v| v.name.clone()).collect();
    Ok((inputs, outputs))
}

/// Initializers that are layer weights: weights and biases of Conv, ConvTranspose, Gemm and
/// MatMul (and a bias Add right after a MatMul), BatchNormalization scale and bias, PRelu
/// slopes. "Train all layers" trains these, never decoding constants such as anchor grids or
/// strides that some exports store as initializers.
pub fn weight_names(bytes: &[u8]) -> Result<Vec<String>> {
    let proto =
        ModelProto::decode(bytes).map_err(|e| TrainerError::Model { uri: "model".into(), reason: e.to_string() })?;
    let g = proto.graph.unwrap_or_default();
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let matmul_outputs: HashSet<&str> =
        g.node.iter().filter(|n| n.op_type == "MatMul").flat_map(|n| n.output.iter().map(String::as_str)).collect();
    let mut names = Vec::new();
    for n in &g.node {
        let picked: Vec<&String> = match n.op_type.as_str() {
            "Conv" | "ConvTranspose" | "Gemm" | "MatMul" | "PRelu" => n.input.iter().skip(1).collect(),
            "BatchNormalization" => n.input.iter().skip(1).take(2).collect(),
            "Add" if n.input.iter().any(|i| matmul_outputs.contains(i.as_str())) => n.input.iter().collect(),
            _ => Vec::new(),
        };
        for name in picked {
            if inits.contains(name.as_str()) && !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    Ok(names)
}
