//! Loading: ONNX protobuf -> a topologically sorted graph of parsed ops with value ids,
//! initializers and Constant nodes decoded once.

use crate::error::LoadError;
use crate::model::{Dim, ValueInfo};
use crate::ops::narrow::{self, Held};
use crate::ops::{self, Op};
use crate::proto::{holder_of, tensor_from_proto};
use crate::strings::{self, StringConsts};
use candle_core::Tensor;
use candle_onnx::onnx::{ModelProto, ValueInfoProto, tensor_shape_proto::dimension, type_proto};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub op: Op,
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub value_names: Vec<String>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<(usize, ValueInfo)>,
    pub outputs: Vec<(usize, ValueInfo)>,
    pub consts: HashMap<usize, Tensor>,
    /// Initializer name -> value id (what training may turn into Vars).
    pub initializers: Vec<(String, usize)>,
    pub opset: i64,
    /// Values of element types held in another dtype (int8, uint64, float8, int4, ...), see `ops::narrow`.
    pub held: HashMap<usize, Held>,
    /// String constants (initializers and Constant nodes of element type string).
    pub string_consts: StringConsts,
    /// Every value id holding strings (inputs, constants and the outputs of string ops).
    pub string_values: HashSet<usize>,
}

fn elem_type(v: &ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tt)) => Some(tt.elem_type),
        _ => None,
    }
}

fn value_info(v: &ValueInfoProto) -> Result<ValueInfo, LoadError> {
    let err = |r: &str| LoadError::Graph(format!("value '{}': {r}", v.name));
    let tt = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tt)) => tt,
        _ => return Err(err("only tensor-typed graph inputs/outputs are supported")),
    };
    let is_string = tt.elem_type == strings::ONNX_STRING;
    let dtype = if is_string {
        candle_core::DType::U8
    } else {
        holder_of(tt.elem_type).ok_or_else(|| err(&format!("element type {} is not supported", tt.elem_type)))?
    };
    let shape = tt.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                Some(dimension::Value::DimParam(p)) => Dim::Dynamic(Some(p.clone())),
                _ => Dim::Dynamic(None),
            })
            .collect()
    });
    Ok(ValueInfo { name: v.name.clone(), dtype, shape, is_string })
}

pub fn load(model: &ModelProto) -> Result<Graph, LoadError> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1);
    let g = model.graph.as_ref().ok_or_else(|| LoadError::Graph("model has no graph".into()))?;
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut id_of = |name: &str, names: &mut Vec<String>| -> usize {
        *ids.entry(name.to_string()).or_insert_with(|| {
            names.push(name.to_string());
            names.len() - 1
        })
    };
    let mut consts = HashMap::new();
    let mut initializers = Vec::new();
    let mut held_types: HashMap<usize, Held> = HashMap::new();
    let mut declared: HashMap<usize, i32> = HashMap::new();
    let mut string_consts = StringConsts::new();
    for init in &g.initializer {
        let id = id_of(&init.name, &mut names);
        if init.data_type == strings::ONNX_STRING {
            string_consts.insert(id, strings::from_proto(init)?);
            continue;
        }
        declared.insert(id, init.data_type);
        if let Some(t) = Held::from_onnx(init.data_type) {
            held_types.insert(id, t);
        }
        consts.insert(id, tensor_from_proto(init)?);
        initializers.push((init.name.clone(), id));
    }
    let mut inputs = Vec::new();
    for v in &g.input {
        let id = id_of(&v.name, &mut names);
        if consts.contains_key(&id) || string_consts.contains_key(&id) {
            continue; // an initializer listed as input (IR < 4): a constant here
        }
        inputs.push((id, value_info(v)?));
        if let Some(t) = elem_type(v) {
            declared.insert(id, t);
        }
        if let Some(t) = elem_type(v).and_then(Held::from_onnx) {
            held_types.insert(id, t);
        }
    }
    let mut outputs = Vec::new();
    for v in &g.output {
        outputs.push((id_of(&v.name, &mut names), value_info(v)?));
    }
    let mut nodes = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let name = if n.name.is_empty() { format!("{}_{i}", n.op_type) } else { n.name.clone() };
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(LoadError::UnsupportedOp { node: name, op: n.op_type.clone(), domain: n.domain.clone() });
        }
        if n.op_type == "Constant"
            && let Some(st) = strings::constant(n)?
        {
            let [out] = n.output.as_slice() else {
                return Err(LoadError::Node {
                    node: name,
                    op: n.op_type.clone(),
                    reason: format!("has {} outputs, 1 expected", n.output.len()),
                });
            };
            string_consts.insert(id_of(out, &mut names), st);
            continue;
        }
        let mut named = n.clone();
        named.name = name.clone();
        let op = ops::parse(&named, opset)?;
        let ins = n.input.iter().map(|s| if s.is_empty() { None } else { Some(id_of(s, &mut names)) }).collect();
        let outs: Vec<usize> = n.output.iter().map(|s| id_of(if s.is_empty() { "" } else { s }, &mut names)).collect();
        // Constant / ConstantOfShape whose value tensor has a held element type.
        if matches!(n.op_type.as_str(), "Constant" | "ConstantOfShape") {
            let ty = n
                .attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref())
                .and_then(|t| Held::from_onnx(t.data_type));
            if let (Some(ty), Some(&o)) = (ty, outs.first()) {
                held_types.insert(o, ty);
            }
        }
        nodes.push(Node { name, op_type: n.op_type.clone(), op, inputs: ins, outputs: outs });
    }
    let mut nodes = topo_sort(nodes, &names, consts.keys().chain(string_consts.keys()), &inputs)?;
    let seeds =
        string_consts.keys().copied().chain(inputs.iter().filter(|(_, v)| v.is_string).map(|(id, _)| *id)).collect();
    let string_values = strings::assign(&mut nodes, seeds, &names)?;
    narrow::rewrite(&mut nodes, &mut held_types, &declared)?;
    for (id, info) in &outputs {
        let produced = nodes.iter().any(|n| n.outputs.contains(id))
            || consts.contains_key(id)
            || string_consts.contains_key(id)
            || inputs.iter().any(|(i, _)| i == id);
        if !produced {
            return Err(LoadError::Graph(format!("output '{}' is not produced by any node", info.name)));
        }
        if info.is_string != string_values.contains(id) {
            let (declared, actual) = if info.is_string { ("string", "numeric") } else { ("numeric", "string") };
            return Err(LoadError::Graph(format!(
                "output '{}' is declared {declared} but the graph computes a {actual} value",
                info.name
            )));
        }
    }
    Ok(Graph {
        value_names: names,
        nodes,
        inputs,
        outputs,
        consts,
        initializers,
        opset,
        held: held_types,
        string_consts,
        string_values,
    })
}

fn topo_sort<'a>(
    nodes: Vec<Node>,
    names: &[String],
    consts: impl Iterator<Item = &'a usize>,
    inputs: &[(usize, ValueInfo)],
) -> Result<Vec<Node>, LoadError> {
    let mut available = vec![false; names.len()];
    for id in consts {
        available[*id] = true;
    }
    for (id, _) in inputs {
        available[*id] = true;
    }
    let mut pending: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    let mut sorted = Vec::with_capacity(pending.len());
    loop {
        let mut progressed = false;
        for slot in pending.iter_mut() {
            let ready = slot.as_ref().is_some_and(|n| n.inputs.iter().flatten().all(|&i| available[i]));
            if ready {
                let n = slot.take().expect("ready node");
                for &o in &n.outputs {
                    available[o] = true;
                }
                sorted.push(n);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    if let Some(n) = pending.into_iter().flatten().next() {
        let missing: Vec<&str> =
            n.inputs.iter().flatten().filter(|&&i| !available[i]).map(|&i| names[i].as_str()).collect();
        return Err(LoadError::Node {
            node: n.name,
            op: n.op_type,
            reason: format!("inputs {missing:?} are never produced (or the graph has a cycle)"),
        });
    }
    Ok(sorted)
}
