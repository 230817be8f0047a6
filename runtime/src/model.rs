//! The inference model: load once, run from any thread.

use crate::error::{LoadError, RunError};
use crate::exec::{NodeTime, execute, execute_timed};
use crate::graph;
use crate::plan::{self, Plan, PlanOptions};
use crate::strings::Value;
use candle_core::{DType, Tensor};
use candle_onnx::onnx::ModelProto;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One dimension of an input/output shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// Symbolic (e.g. "batch") or unknown.
    Dynamic(Option<String>),
}

/// Name, element type and (when the model declares it) shape of a graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Option<Vec<Dim>>,
    /// The element type is `string`: the value is a [`crate::StringTensor`], passed and returned
    /// through [`Model::run_values`] (`dtype` is then U8 and means nothing).
    pub is_string: bool,
}

impl ValueInfo {
    /// Whether concrete dims fit the declared shape (dynamic dims match anything).
    pub fn matches(&self, dims: &[usize]) -> bool {
        match &self.shape {
            None => true,
            Some(s) => {
                s.len() == dims.len()
                    && s.iter().zip(dims).all(|(d, &n)| match d {
                        Dim::Fixed(f) => *f == n,
                        Dim::Dynamic(_) => true,
                    })
            }
        }
    }
    /// Whether the first (batch) dimension is dynamic, so several samples can run in one call.
    pub fn dynamic_batch(&self) -> bool {
        matches!(self.shape.as_deref(), Some([Dim::Dynamic(_), ..]))
    }
}

/// Outputs as (name, tensor) pairs.
type NamedTensors = Vec<(String, Tensor)>;

/// A loaded, planned ONNX model. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Model {
    plan: Arc<Plan>,
    /// Per graph output, the op type of the node computing it in the graph as written (before
    /// fusions): what callers read to learn, e.g., that a classifier already ends in Softmax.
    output_ops: Vec<Option<String>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("inputs", &self.inputs())
            .field("outputs", &self.outputs())
            .field("nodes", &self.plan.graph.nodes.len())
            .finish()
    }
}

impl Model {
    /// Parse, normalise and plan an ONNX model. Rejects what cannot be run exactly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, LoadError> {
        let proto = ModelProto::decode(bytes).map_err(|e| LoadError::Decode(e.to_string()))?;
        Self::from_proto(&proto)
    }

    pub fn from_proto(proto: &ModelProto) -> Result<Model, LoadError> {
        let g = graph::load(proto)?;
        let output_ops = g
            .outputs
            .iter()
            .map(|(id, _)| g.nodes.iter().find(|n| n.outputs.contains(id)).map(|n| n.op_type.clone()))
            .collect();
        let plan = plan::build(g, &PlanOptions { fuse: true, keep_live: HashSet::new() })?;
        Ok(Model { plan: Arc::new(plan), output_ops })
    }

    pub fn inputs(&self) -> Vec<ValueInfo> {
        self.plan.graph.inputs.iter().map(|(_, v)| v.clone()).collect()
    }

    pub fn outputs(&self) -> Vec<ValueInfo> {
        self.plan.graph.outputs.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The op type of the node computing output `index` in the graph as written (None for an
    /// output that is an input or a constant).
    pub fn output_op(&self, index: usize) -> Option<&str> {
        self.output_ops.get(index)?.as_deref()
    }

    /// The model's default-domain opset.
    pub fn opset(&self) -> i64 {
        self.plan.graph.opset
    }

    /// Number of planned nodes (after folding and fusion).
    pub fn node_count(&self) -> usize {
        self.plan.graph.nodes.len()
    }

    /// Run once. Returns every graph output as (name, tensor) in the model's output order.
    pub fn run(&self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>, RunError> {
        let inputs: Vec<(&str, Value)> = inputs.iter().map(|(n, t)| (*n, Value::Tensor(t.clone()))).collect();
        tensors_only(execute(&self.plan, &inputs, &HashMap::new())?)
    }

    /// Run once like [`Model::run`] and return, besides the outputs, the wall-clock time of every
    /// planned node in execution order (what `flywheel-runtime-profile` aggregates).
    pub fn run_profiled(&self, inputs: &[(&str, Tensor)]) -> Result<(NamedTensors, Vec<NodeTime>), RunError> {
        let inputs: Vec<(&str, Value)> = inputs.iter().map(|(n, t)| (*n, Value::Tensor(t.clone()))).collect();
        let mut times = Vec::with_capacity(self.plan.graph.nodes.len());
        let outs = tensors_only(execute_timed(&self.plan, &inputs, &HashMap::new(), Some(&mut times))?)?;
        Ok((outs, times))
    }

    /// Run once with values that may be string tensors (for models with string inputs or
    /// outputs, see [`ValueInfo::is_string`]).
    pub fn run_values(&self, inputs: &[(&str, Value)]) -> Result<Vec<(String, Value)>, RunError> {
        execute(&self.plan, inputs, &HashMap::new())
    }

    /// Run a batch of single-sample inputs for a single-input model: each sample is [1, ...] or
    /// the input shape without its batch dim. Samples are stacked along dim 0 and run at once
    /// when the batch dim is dynamic (one run per sample otherwise). Returns per-sample outputs,
    /// each with a batch dim of 1.
    pub fn run_batch(&self, samples: &[Tensor]) -> Result<Vec<Vec<(String, Tensor)>>, RunError> {
        let inputs = self.inputs();
        let [info] = inputs.as_slice() else {
            return Err(RunError::Other(format!(
                "run_batch needs a single-input model, this one has {}",
                inputs.len()
            )));
        };
        let rank = info.shape.as_ref().map(|s| s.len());
        let with_batch = |t: &Tensor| -> Result<Tensor, RunError> {
            if rank == Some(t.rank() + 1) {
                t.unsqueeze(0).map_err(|e| RunError::Other(e.to_string()))
            } else {
                Ok(t.clone())
            }
        };
        let samples: Vec<Tensor> = samples.iter().map(with_batch).collect::<Result<_, _>>()?;
        if samples.is_empty() {
            return Ok(vec![]);
        }
        if !info.dynamic_batch() || samples.len() == 1 {
            return samples.iter().map(|s| self.run(&[(info.name.as_str(), s.clone())])).collect();
        }
        let sizes: Vec<usize> = samples.iter().map(|s| s.dims().first().copied().unwrap_or(1)).collect();
        let stacked = Tensor::cat(&samples, 0)
            .map_err(|e| RunError::BadInput { name: info.name.clone(), reason: e.to_string() })?;
        let outs = self.run(&[(info.name.as_str(), stacked)])?;
        let total: usize = sizes.iter().sum();
        let mut per_sample = vec![Vec::with_capacity(outs.len()); samples.len()];
        for (name, t) in outs {
            if t.dims().first() != Some(&total) {
                return Err(RunError::Other(format!(
                    "output '{name}' has no batch dimension of {total}; run samples one by one"
                )));
            }
            let mut start = 0;
            for (i, &n) in sizes.iter().enumerate() {
                per_sample[i].push((name.clone(), t.narrow(0, start, n).map_err(|e| RunError::Other(e.to_string()))?));
                start += n;
            }
        }
        Ok(per_sample)
    }
}

/// Outputs as candle tensors; a string output needs [`Model::run_values`].
pub(crate) fn tensors_only(outs: Vec<(String, Value)>) -> Result<Vec<(String, Tensor)>, RunError> {
    outs.into_iter()
        .map(|(name, v)| match v {
            Value::Tensor(t) => Ok((name, t)),
            Value::Strings(_) => Err(RunError::Other(format!("output '{name}' is a string tensor; use run_values"))),
        })
        .collect()
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
};
