//! # flywheel-runtime: ONNX models on candle-core
//!
//! The runtime shared by the Flywheel inference server and the trainer. It parses ONNX with
//! candle-onnx's protobuf types, normalises the graph (opset differences, `auto_pad`, padded
//! pooling, tensor attributes in any storage field, `Constant` nodes), plans it once
//! (topological order, constant folding, BatchNorm folded into Conv, values freed when dead) and
//! executes it on candle-core with direct kernels for convolution and pooling.
//!
//! Anything the runtime cannot run exactly is rejected by [`Model::from_bytes`] with a
//! [`LoadError`] naming the node, the op and the reason: never a silently wrong answer.
//!
//! ## Inference
//! ```no_run
//! use flywheel_runtime::{Model, Tensor};
//! let model = Model::from_bytes(&std::fs::read("model.onnx")?)?;
//! let input = &model.inputs()[0];              // name, dtype, shape with dynamic dims
//! let x = Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32, &candle_core::Device::Cpu)?;
//! let outputs = model.run(&[(input.name.as_str(), x)])?;  // Vec<(output name, Tensor)>
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! [`Model`] is `Send + Sync + Clone` (the plan is shared behind an `Arc`): one instance can be
//! used from several threads at once. Tensors are candle `Tensor`s on the CPU, images in NCHW
//! f32. [`Model::run_batch`] stacks single-sample inputs along the batch dimension, runs once and
//! splits the outputs back per sample (falling back to one run per sample when the model's batch
//! dimension is fixed).
//!
//! Models with string inputs or outputs ([`ValueInfo::is_string`]) run through
//! [`Model::run_values`], which takes and returns [`Value`]s: a candle tensor or a
//! [`StringTensor`]. Strings are a separate value kind that only Equal, Identity and Reshape
//! accept; any other op receiving one is rejected at load.
//!
//! ## Training
//! [`TrainableModel`] keeps the same graph differentiable: initializers become candle `Var`s,
//! no inference fusions are applied, BatchNorm uses its stored (frozen) statistics, and
//! [`TrainableModel::to_onnx_bytes`] writes the original graph back with updated initializers.
//! ```no_run
//! use flywheel_runtime::{ParamFilter, TrainableModel};
//! let model = TrainableModel::from_bytes(&std::fs::read("model.onnx")?)?;
//! let params = model.trainable_params(&ParamFilter::Head); // Vec<(initializer name, Var)>
//! # let x = candle_core::Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, &candle_core::Device::Cpu)?;
//! let out = model.forward(&[("input", x)])?;               // differentiable w.r.t. the Vars
//! let loss = out[0].1.sqr()?.mean_all()?;
//! let grads = loss.backward()?;
//! for (_, var) in &params {
//!     let g = grads.get(var.as_tensor()).expect("gradient");
//!     var.set(&(var.as_tensor() - (g * 0.01)?)?)?;
//! }
//! let onnx_bytes = model.to_onnx_bytes()?;                  // loads in onnxruntime
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The supported op list, the conformance table and the benchmark are in `docs/runtime.md`.

mod error;
mod exec;
mod graph;
mod kernels;
mod model;
mod ops;
mod plan;
mod proto;
mod strings;
mod train;

pub use candle_core::{DType, Device, Tensor, Var};
pub use error::{ExportError, LoadError, RunError};
pub use exec::NodeTime;
pub use model::{Dim, Model, ValueInfo};
pub use ops::SUPPORTED_OPS;
pub use strings::{StringTensor, Value};
pub use train::{ParamFilter, TrainableModel};

/// Raw ONNX protobuf types (re-exported from candle-onnx) for callers that build or inspect graphs.
pub use candle_onnx::onnx as proto_types;

/// Decode an ONNX `TensorProto` (any storage field) into a candle tensor; used by test harnesses.
pub fn tensor_from_proto(t: &proto_types::TensorProto) -> Result<Tensor, LoadError> {
    proto::tensor_from_proto(t)
}

/// Decode an ONNX `TensorProto` into a [`Value`]: a string tensor for `string` element type, a
/// candle tensor otherwise; used by test harnesses.
pub fn value_from_proto(t: &proto_types::TensorProto) -> Result<Value, LoadError> {
    if t.data_type == strings::ONNX_STRING {
        strings::from_proto(t).map(Value::Strings)
    } else {
        proto::tensor_from_proto(t).map(Value::Tensor)
    }
}
