//! A small builder for ONNX graphs on the protobuf types the runtime uses (candle-onnx's prost
//! types), so generated models need no Python.

use flywheel_runtime::proto_types::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use prost::Message;

pub const OPSET: i64 = 17;

#[derive(Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    counter: usize,
}

/// A dimension of a graph input or output.
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

#[allow(clippy::large_enum_variant)] // a handful per generated graph
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Tensor(TensorProto),
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self { graph: GraphProto { name: name.to_string(), ..Default::default() }, counter: 0 }
    }

    pub fn input(&mut self, name: &str, dims: &[Dim]) {
        self.graph.input.push(value_info(name, dims));
    }

    pub fn output(&mut self, name: &str, dims: &[Dim]) {
        self.graph.output.push(value_info(name, dims));
    }

    /// A trainable weight (an initializer).
    pub fn initializer(&mut self, name: &str, dims: &[i64], data: Vec<f32>) -> String {
        assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "initializer {name}");
        self.graph.initializer.push(float_tensor(name, dims, data));
        name.to_string()
    }

    /// A constant that is part of the graph's structure (a `Constant` node, never trained).
    pub fn constant(&mut self, name: &str, tensor: TensorProto) -> String {
        self.node("Constant", &[], &[name], vec![("value", Attr::Tensor(tensor))]);
        name.to_string()
    }

    /// Adds a node; `outputs` empty gets one generated output name. Returns the first output.
    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.counter += 1;
        let outs: Vec<String> = if outputs.is_empty() {
            vec![format!("{}_{}", op.to_ascii_lowercase(), self.counter)]
        } else {
            outputs.iter().map(|s| s.to_string()).collect()
        };
        let attribute = attrs.into_iter().map(|(name, a)| attribute(name, a)).collect();
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            name: format!("{}_{}", op, self.counter),
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
        outs[0].clone()
    }

    pub fn finish(self, doc: &str) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "flywheel-trainer generate".to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            doc_string: doc.to_string(),
            graph: Some(self.graph),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

pub fn float_tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: data,
        ..Default::default()
    }
}

pub fn int64_tensor(name: &str, dims: &[i64], data: Vec<i64>) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        int64_data: data,
        ..Default::default()
    }
}

fn attribute(name: &str, a: Attr) -> AttributeProto {
    let mut p = AttributeProto { name: name.to_string(), ..Default::default() };
    match a {
        Attr::Int(i) => {
            p.r#type = AttributeType::Int as i32;
            p.i = i;
        }
        Attr::Ints(v) => {
            p.r#type = AttributeType::Ints as i32;
            p.ints = v;
        }
        Attr::Float(f) => {
            p.r#type = AttributeType::Float as i32;
            p.f = f;
        }
        Attr::Tensor(t) => {
            p.r#type = AttributeType::Tensor as i32;
            p.t = Some(t);
        }
    }
    p
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                Dim::Named(n) => tensor_shape_proto::dimension::Value::DimParam(n.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
