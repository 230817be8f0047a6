//! `ModelBackend` on flywheel-runtime (ONNX on candle, CPU).

use std::sync::Arc;

use flywheel_runtime::{DType, Device, Dim, Model, Tensor, ValueInfo};

use crate::backend::{BackendError, GraphSummary, ModelBackend, TensorF32, TensorInfo};
use crate::models::BackendFactory;

pub struct RuntimeBackend {
    model: Model,
    input: TensorInfo,
    outputs: Vec<TensorInfo>,
    summary: GraphSummary,
}

/// Op histogram and weight count of the main graph, read from the protobuf.
fn summarise(bytes: &[u8]) -> GraphSummary {
    use prost::Message;
    let Ok(proto) = flywheel_runtime::proto_types::ModelProto::decode(bytes) else { return GraphSummary::default() };
    let Some(graph) = proto.graph else { return GraphSummary::default() };
    let mut summary = GraphSummary::default();
    for node in &graph.node {
        *summary.ops.entry(node.op_type.clone()).or_default() += 1;
    }
    summary.parameters =
        graph.initializer.iter().map(|t| t.dims.iter().map(|&d| d.max(0) as u64).product::<u64>()).sum();
    summary
}

fn info(v: &ValueInfo) -> TensorInfo {
    TensorInfo {
        name: v.name.clone(),
        datatype: match v.dtype {
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::F16 => "FP16",
            DType::BF16 => "BF16",
            DType::U8 => "UINT8",
            DType::U32 => "UINT32",
            DType::I64 => "INT64",
            _ => "FP32",
        },
        shape: v
            .shape
            .as_ref()
            .map(|s| s.iter().map(|d| if let Dim::Fixed(n) = d { Some(*n) } else { None }).collect())
            .unwrap_or_default(),
    }
}

impl RuntimeBackend {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BackendError> {
        let model = Model::from_bytes(bytes).map_err(|e| BackendError::InvalidModel(e.to_string()))?;
        let inputs = model.inputs();
        let [input] = inputs.as_slice() else {
            return Err(BackendError::InvalidModel(format!(
                "the server serves single-input image models; this one has {} inputs",
                inputs.len()
            )));
        };
        if input.dtype != DType::F32 {
            return Err(BackendError::InvalidModel(format!(
                "input {:?} is {:?}; image models take float32",
                input.name, input.dtype
            )));
        }
        let input = info(input);
        let outputs = model.outputs().iter().map(info).collect();
        Ok(Self { model, input, outputs, summary: summarise(bytes) })
    }
}

impl ModelBackend for RuntimeBackend {
    fn input(&self) -> &TensorInfo {
        &self.input
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn output_op(&self, index: usize) -> Option<String> {
        self.model.output_op(index).map(str::to_string)
    }

    fn graph_summary(&self) -> Option<GraphSummary> {
        Some(self.summary.clone())
    }

    fn run(&self, input: &TensorF32) -> Result<Vec<TensorF32>, BackendError> {
        let t = Tensor::from_slice(&input.data, input.shape.as_slice(), &Device::Cpu)
            .map_err(|e| BackendError::Input(e.to_string()))?;
        let outs =
            self.model.run(&[(self.input.name.as_str(), t)]).map_err(|e| BackendError::Execution(e.to_string()))?;
        outs.into_iter()
            .map(|(_, t)| {
                let shape = t.dims().to_vec();
                let data = t
                    .to_dtype(DType::F32)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| BackendError::Execution(e.to_string()))?;
                Ok(TensorF32 { shape, data })
            })
            .collect()
    }
}

/// The factory the server binary uses.
pub fn factory() -> BackendFactory {
    Arc::new(|bytes: &[u8]| Ok(Arc::new(RuntimeBackend::from_bytes(bytes)?) as Arc<dyn crate::backend::ModelBackend>))
}
