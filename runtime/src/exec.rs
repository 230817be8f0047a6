//! Executing a plan: values live in a slot per value id and are dropped after their last use.

use crate::error::RunError;
use crate::ops;
use crate::plan::Plan;
use crate::strings::{self, StringTensor, Value};
use candle_core::Tensor;
use std::collections::HashMap;

/// The wall-clock time of one planned node in one run (see [`crate::Model::run_profiled`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTime {
    /// The node's name in the graph (a fused node keeps the name of its first node, e.g. the Conv).
    pub name: String,
    /// The op type as planned: a Conv with a fused BatchNorm/activation stays "Conv".
    pub op_type: String,
    pub ms: f64,
}

/// Run the plan. `overrides` replaces constants (training binds initializers to Vars).
/// String values live in their own slots (allocated only when the graph has strings).
pub fn execute(
    plan: &Plan,
    inputs: &[(&str, Value)],
    overrides: &HashMap<usize, Tensor>,
) -> Result<Vec<(String, Value)>, RunError> {
    execute_timed(plan, inputs, overrides, None)
}

/// [`execute`], recording the time of every node into `times` when given.
pub fn execute_timed(
    plan: &Plan,
    inputs: &[(&str, Value)],
    overrides: &HashMap<usize, Tensor>,
    mut times: Option<&mut Vec<NodeTime>>,
) -> Result<Vec<(String, Value)>, RunError> {
    let g = &plan.graph;
    let mut slots: Vec<Option<Tensor>> = vec![None; g.value_names.len()];
    let mut strs: Vec<Option<StringTensor>> =
        if g.string_values.is_empty() { Vec::new() } else { vec![None; g.value_names.len()] };
    for (id, t) in &g.consts {
        slots[*id] = Some(overrides.get(id).cloned().unwrap_or_else(|| t.clone()));
    }
    for (id, s) in &g.string_consts {
        strs[*id] = Some(s.clone());
    }
    for (name, v) in inputs {
        let (id, info) = g
            .inputs
            .iter()
            .find(|(_, info)| info.name == *name)
            .ok_or_else(|| RunError::UnknownInput(name.to_string()))?;
        let bad = |reason: String| RunError::BadInput { name: info.name.clone(), reason };
        let t = match (v, info.is_string) {
            (Value::Tensor(t), false) => t,
            (Value::Strings(s), true) => {
                if !info.matches(s.dims()) {
                    return Err(bad(format!("shape {:?} does not match the model's {:?}", s.dims(), info.shape)));
                }
                strs[*id] = Some(s.clone());
                continue;
            }
            (Value::Tensor(_), true) => return Err(bad("the model expects a string tensor".into())),
            (Value::Strings(_), false) => {
                return Err(bad(format!("a string tensor, the model expects {:?}", info.dtype)));
            }
        };
        if t.dtype() != info.dtype {
            return Err(bad(format!("dtype {:?}, the model expects {:?}", t.dtype(), info.dtype)));
        }
        if let Some(shape) = &info.shape
            && !info.matches(t.dims())
        {
            return Err(bad(format!("shape {:?} does not match the model's {:?}", t.dims(), shape)));
        }
        if let Some(ty) = g.held.get(id) {
            ty.check_range(t).map_err(|e| bad(e.to_string()))?;
        }
        slots[*id] = Some(t.clone());
    }
    for (id, info) in &g.inputs {
        if slots[*id].is_none() && strs.get(*id).is_none_or(|s| s.is_none()) {
            return Err(RunError::MissingInput(info.name.clone()));
        }
    }
    let profile = profiling() || times.is_some();
    for (ni, node) in g.nodes.iter().enumerate() {
        let started = profile.then(std::time::Instant::now);
        if let ops::Op::Strings(op) = &node.op {
            let out = strings::run(*op, &node.inputs, &strs, &slots).map_err(|e| RunError::Node {
                node: node.name.clone(),
                op: node.op_type.clone(),
                reason: e.to_string(),
            })?;
            match out {
                Value::Tensor(t) => slots[node.outputs[0]] = Some(t),
                Value::Strings(s) => strs[node.outputs[0]] = Some(s),
            }
            if let (Some(t0), Some(times)) = (started, times.as_deref_mut()) {
                times.push(NodeTime {
                    name: node.name.clone(),
                    op_type: node.op_type.clone(),
                    ms: t0.elapsed().as_secs_f64() * 1e3,
                });
            }
            free(&plan.free_after[ni], &mut slots, &mut strs);
            continue;
        }
        let ins: Vec<Option<&Tensor>> = node.inputs.iter().map(|i| i.and_then(|i| slots[i].as_ref())).collect();
        let outs = ops::run_guarded(&node.op, &ins, node.outputs.len()).map_err(|e| RunError::Node {
            node: node.name.clone(),
            op: node.op_type.clone(),
            reason: e.to_string(),
        })?;
        if outs.len() < node.outputs.len() {
            return Err(RunError::Node {
                node: node.name.clone(),
                op: node.op_type.clone(),
                reason: format!("produced {} outputs, {} declared", outs.len(), node.outputs.len()),
            });
        }
        if let Some(t0) = started {
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            match times.as_deref_mut() {
                Some(times) => times.push(NodeTime { name: node.name.clone(), op_type: node.op_type.clone(), ms }),
                None => eprintln!(
                    "{:>9.3} ms  {:<20} {}  -> {:?}",
                    ms,
                    node.op_type,
                    node.name,
                    outs.first().map(|t| t.dims().to_vec())
                ),
            }
        }
        for (id, t) in node.outputs.iter().zip(outs) {
            slots[*id] = Some(t);
        }
        free(&plan.free_after[ni], &mut slots, &mut strs);
    }
    g.outputs
        .iter()
        .map(|(id, info)| {
            let v = if info.is_string {
                strs[*id].clone().map(Value::Strings)
            } else {
                slots[*id].clone().map(Value::Tensor)
            };
            v.map(|v| (info.name.clone(), v))
                .ok_or_else(|| RunError::Other(format!("output '{}' was not computed", info.name)))
        })
        .collect()
}

/// Drop the values that are dead after a node.
fn free(dead: &[usize], slots: &mut [Option<Tensor>], strs: &mut [Option<StringTensor>]) {
    for id in dead {
        slots[*id] = None;
        if let Some(s) = strs.get_mut(*id) {
            *s = None;
        }
    }
}

/// FLYWHEEL_RUNTIME_PROFILE=1 prints the time of every node to stderr.
fn profiling() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FLYWHEEL_RUNTIME_PROFILE").is_ok_and(|v| v == "1"))
}
