//! Executing a plan: values live in a slot per value id and are dropped after their last use.

use crate::error::RunError;
use crate::ops;
use crate::plan::Plan;
use candle_core::Tensor;
use std::collections::HashMap;

/// Run the plan. `overrides` replaces constants (training binds initializers to Vars).
pub fn execute(plan: &Plan, inputs: &[(&str, Tensor)], overrides: &HashMap<usize, Tensor>) -> Result<Vec<(String, Tensor)>, RunError> {
    let g = &plan.graph;
    let mut slots: Vec<Option<Tensor>> = vec![None; g.value_names.len()];
    for (id, t) in &g.consts {
        slots[*id] = Some(overrides.get(id).cloned().unwrap_or_else(|| t.clone()));
    }
    for (name, t) in inputs {
        let (id, info) = g
            .inputs
            .iter()
            .find(|(_, info)| info.name == *name)
            .ok_or_else(|| RunError::UnknownInput(name.to_string()))?;
        let bad = |reason: String| RunError::BadInput { name: info.name.clone(), reason };
        if t.dtype() != info.dtype {
            return Err(bad(format!("dtype {:?}, the model expects {:?}", t.dtype(), info.dtype)));
        }
        if let Some(shape) = &info.shape {
            if !info.matches(t.dims()) {
                return Err(bad(format!("shape {:?} does not match the model's {:?}", t.dims(), shape)));
            }
        }
        if let Some(ty) = g.held.get(id) {
            ty.check_range(t).map_err(|e| bad(e.to_string()))?;
        }
        slots[*id] = Some(t.clone());
    }
    for (id, info) in &g.inputs {
        if slots[*id].is_none() {
            return Err(RunError::MissingInput(info.name.clone()));
        }
    }
    let profile = profiling();
    for (ni, node) in g.nodes.iter().enumerate() {
        let started = profile.then(std::time::Instant::now);
        let ins: Vec<Option<&Tensor>> = node.inputs.iter().map(|i| i.and_then(|i| slots[i].as_ref())).collect();
        let outs = ops::run_guarded(&node.op, &ins, node.outputs.len()).map_err(|e| RunError::Node { node: node.name.clone(), op: node.op_type.clone(), reason: e.to_string() })?;
        if outs.len() < node.outputs.len() {
            return Err(RunError::Node { node: node.name.clone(), op: node.op_type.clone(), reason: format!("produced {} outputs, {} declared", outs.len(), node.outputs.len()) });
        }
        if let Some(t0) = started {
            eprintln!("{:>9.3} ms  {:<20} {}  -> {:?}", t0.elapsed().as_secs_f64() * 1e3, node.op_type, node.name, outs.first().map(|t| t.dims().to_vec()));
        }
        for (id, t) in node.outputs.iter().zip(outs) {
            slots[*id] = Some(t);
        }
        for id in &plan.free_after[ni] {
            slots[*id] = None;
        }
    }
    g.outputs
        .iter()
        .map(|(id, info)| {
            slots[*id].clone().map(|t| (info.name.clone(), t)).ok_or_else(|| RunError::Other(format!("output '{}' was not computed", info.name)))
        })
        .collect()
}

/// FLYWHEEL_RUNTIME_PROFILE=1 prints the time of every node to stderr.
fn profiling() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FLYWHEEL_RUNTIME_PROFILE").is_ok_and(|v| v == "1"))
}
