//! Training mode: the same graph kept differentiable. Float initializers become candle `Var`s;
//! the ones selected by [`ParamFilter`] are bound into the forward pass so gradients reach them,
//! the rest run as constants (so frozen layers keep the fast kernels). No inference fusion is
//! applied; BatchNormalization always uses its stored statistics (frozen).

use crate::error::{ExportError, LoadError, RunError};
use crate::exec::execute;
use crate::graph;
use crate::ops::Op;
use crate::plan::{self, Plan, PlanOptions};
use crate::proto::tensor_to_proto;
use candle_core::{Tensor, Var};
use candle_onnx::onnx::ModelProto;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

/// Which initializers are trained.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamFilter {
    /// The weights and biases of the last parameterised layers (Conv/ConvTranspose/Gemm/MatMul
    /// nodes with no other such layer downstream), plus a bias Add right after a head MatMul.
    Head,
    /// Every float initializer except BatchNormalization statistics.
    All,
    /// Exactly these initializer names.
    Names(Vec<String>),
}

pub struct TrainableModel {
    proto: ModelProto,
    plan: Plan,
    /// Every float initializer (except float8/float4 ones, held in F32), by name, with its value id.
    vars: Vec<(String, usize, Var)>,
    /// Value ids of BatchNorm running statistics (never trainable).
    frozen: HashSet<usize>,
    head: HashSet<usize>,
    trainable: RwLock<HashSet<usize>>,
}

impl TrainableModel {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        let proto = ModelProto::decode(bytes).map_err(|e| LoadError::Decode(e.to_string()))?;
        let g = graph::load(&proto)?;
        let init_ids: HashSet<usize> = g.initializers.iter().map(|(_, id)| *id).collect();
        let mut frozen = HashSet::new();
        for n in &g.nodes {
            if matches!(n.op, Op::BatchNorm { .. } | Op::BatchNormTrain { .. }) {
                frozen.extend(n.inputs.iter().skip(3).flatten().copied());
            }
        }
        let head = head_params(&g);
        let mut vars = Vec::new();
        for (name, id) in &g.initializers {
            let t = &g.consts[id];
            // Float8/float4 initializers are held in F32 but cannot take arbitrary values: not trainable.
            if t.dtype().is_float() && !g.held.contains_key(id) {
                let v =
                    Var::from_tensor(t).map_err(|e| LoadError::Tensor { name: name.clone(), reason: e.to_string() })?;
                vars.push((name.clone(), *id, v));
            }
        }
        let keep_live: HashSet<usize> = vars.iter().map(|(_, id, _)| *id).filter(|id| init_ids.contains(id)).collect();
        let plan = plan::build(g, &PlanOptions { fuse: false, keep_live })?;
        let default: HashSet<usize> = head.clone();
        Ok(Self { proto, plan, vars, frozen, head, trainable: RwLock::new(default) })
    }

    /// Select the trained parameters (this also decides which ones `forward` differentiates) and
    /// return them as (initializer name, Var). BatchNorm running statistics are never included.
    pub fn trainable_params(&self, filter: &ParamFilter) -> Vec<(String, Var)> {
        let chosen: HashSet<usize> = self
            .vars
            .iter()
            .filter(|(name, id, _)| {
                !self.frozen.contains(id)
                    && match filter {
                        ParamFilter::Head => self.head.contains(id),
                        ParamFilter::All => true,
                        ParamFilter::Names(n) => n.contains(name),
                    }
            })
            .map(|(_, id, _)| *id)
            .collect();
        let out =
            self.vars.iter().filter(|(_, id, _)| chosen.contains(id)).map(|(n, _, v)| (n.clone(), v.clone())).collect();
        *self.trainable.write().expect("lock") = chosen;
        out
    }

    /// Differentiable forward pass with the current parameter values.
    pub fn forward(&self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>, RunError> {
        let trainable = self.trainable.read().expect("lock").clone();
        let overrides: HashMap<usize, Tensor> = self
            .vars
            .iter()
            .map(|(_, id, v)| {
                (*id, if trainable.contains(id) { v.as_tensor().clone() } else { v.as_tensor().detach() })
            })
            .collect();
        let inputs: Vec<(&str, crate::strings::Value)> =
            inputs.iter().map(|(n, t)| (*n, crate::strings::Value::Tensor(t.clone()))).collect();
        crate::model::tensors_only(execute(&self.plan, &inputs, &overrides)?)
    }

    /// The original ONNX graph with every initializer replaced by its current value.
    pub fn to_onnx_bytes(&self) -> Result<Vec<u8>, ExportError> {
        let mut proto = self.proto.clone();
        let by_name: HashMap<&str, &Var> = self.vars.iter().map(|(n, _, v)| (n.as_str(), v)).collect();
        if let Some(g) = proto.graph.as_mut() {
            for init in g.initializer.iter_mut() {
                if let Some(v) = by_name.get(init.name.as_str()) {
                    let t = v
                        .as_tensor()
                        .to_dtype(crate::proto::dtype_of(init.data_type).unwrap_or(v.dtype()))
                        .and_then(|t| tensor_to_proto(&init.name, &t))
                        .map_err(|e| ExportError::Param { name: init.name.clone(), reason: e.to_string() })?;
                    let dims = std::mem::take(&mut init.dims);
                    *init = t;
                    init.dims = dims;
                }
            }
        }
        Ok(proto.encode_to_vec())
    }
}

/// Initializers of the last parameterised layers.
fn head_params(g: &graph::Graph) -> HashSet<usize> {
    let is_param = |op: &Op| matches!(op, Op::Conv(_) | Op::ConvTranspose(_) | Op::Gemm(_) | Op::MatMul);
    let init: HashSet<usize> = g.initializers.iter().map(|(_, id)| *id).collect();
    let n = g.nodes.len();
    // Walk backwards: a parameterised node is a head node when no parameterised node depends on it.
    let mut downstream_param = vec![false; n];
    let mut value_feeds_param: HashSet<usize> = HashSet::new();
    for i in (0..n).rev() {
        let node = &g.nodes[i];
        let feeds = node.outputs.iter().any(|o| value_feeds_param.contains(o));
        downstream_param[i] = feeds;
        if is_param(&node.op) || feeds {
            value_feeds_param.extend(node.inputs.iter().flatten().copied());
        }
    }
    let mut head = HashSet::new();
    for (i, node) in g.nodes.iter().enumerate() {
        if is_param(&node.op) && !downstream_param[i] {
            head.extend(node.inputs.iter().flatten().filter(|id| init.contains(id)).copied());
            if matches!(node.op, Op::MatMul) {
                for m in &g.nodes {
                    if matches!(m.op, Op::Binary(crate::ops::elementwise::Binary::Add))
                        && m.inputs.contains(&Some(node.outputs[0]))
                    {
                        head.extend(m.inputs.iter().flatten().filter(|id| init.contains(id)).copied());
                    }
                }
            }
        }
    }
    head
}
