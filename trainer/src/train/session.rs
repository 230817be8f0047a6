//! One fine-tuning session: the trainable model, the selected parameters, the optimiser and the
//! objective, with epoch-level operations.

use candle_core::{Device, Tensor, Var};
use flywheel_api::common::Task;
use flywheel_api::data_pipeline::{Hyperparameters, TrainLayers};
use flywheel_api::model_version::{InputSpec, ModelVersionSpec};
use flywheel_runtime::{Dim, Model, ParamFilter, TrainableModel};
use flywheel_vision::batch_shape;

use super::objective::{Objective, Prepared};
use super::optim::Optimizer;
use crate::error::{Result, TrainerError};
use crate::model::{io_names, weight_names};

pub struct Session {
    model: TrainableModel,
    input_name: String,
    output_name: String,
    input: InputSpec,
    pub objective: Objective,
    params: Vec<(String, Var)>,
    optimizer: Optimizer,
    /// The model's batch dimension when it is fixed (many exports use 1): batches are run in
    /// pieces of that size and their outputs concatenated.
    fixed_batch: Option<usize>,
}

fn model_err(reason: impl std::fmt::Display) -> TrainerError {
    TrainerError::Model { uri: "base model".into(), reason: reason.to_string() }
}

impl Session {
    /// `probe` (a few samples) is used to recognise the output layout. `trainLayers: head`
    /// trains the layers `head_depth` levels back from the outputs ([`crate::heads`]).
    pub fn new(
        bytes: &[u8],
        spec: &ModelVersionSpec,
        h: &Hyperparameters,
        probe: &Prepared,
        head_depth: u32,
    ) -> Result<Self> {
        let model = TrainableModel::from_bytes(bytes).map_err(model_err)?;
        // Loading for inference too checks the model runs in the server as it is.
        let inference = Model::from_bytes(bytes).map_err(model_err)?;
        let fixed_batch = match inference.inputs().first().and_then(|i| i.shape.clone()).as_deref() {
            Some([Dim::Fixed(b), ..]) => Some((*b).max(1)),
            _ => None,
        };
        let (inputs, outputs) = io_names(bytes)?;
        let (Some(input_name), Some(output_name)) = (inputs.first().cloned(), outputs.first().cloned()) else {
            return Err(model_err("the graph has no input or no output"));
        };
        if inputs.len() != 1 {
            return Err(model_err(format!("expected one image input, the graph has {inputs:?}")));
        }
        let filter = match h.train_layers {
            TrainLayers::Head => ParamFilter::Names(crate::heads::head_params(bytes, head_depth)?),
            TrainLayers::All => ParamFilter::Names(weight_names(bytes)?),
        };
        let params = model.trainable_params(&filter);
        if params.is_empty() {
            return Err(model_err(format!("no trainable parameters for trainLayers={}", h.train_layers.as_str())));
        }
        tracing::info!(params = ?params.iter().map(|p| &p.0).collect::<Vec<_>>(), "trained parameters");
        let optimizer = Optimizer::new(h.optimizer, h.learning_rate, params.iter().map(|p| p.1.clone()).collect())?;
        let mut s = Self {
            model,
            input_name,
            output_name,
            input: spec.input.clone(),
            objective: Objective::Classification { classes: spec.labels.len(), probabilities: false },
            params,
            optimizer,
            fixed_batch,
        };
        let n = probe.len().min(4);
        let out = s.forward(&(0..n).collect::<Vec<_>>(), probe)?.detach();
        s.objective = objective_for(spec, &out)?;
        Ok(s)
    }

    fn batch(&self, idx: &[usize], data: &Prepared) -> Result<Tensor> {
        let mut flat = Vec::with_capacity(idx.len() * data.inputs[0].len());
        for &i in idx {
            flat.extend_from_slice(&data.inputs[i]);
        }
        Ok(Tensor::from_vec(flat, batch_shape(&self.input, idx.len()), &Device::Cpu)?)
    }

    fn forward(&self, idx: &[usize], data: &Prepared) -> Result<Tensor> {
        let Some(b) = self.fixed_batch.filter(|b| *b != idx.len()) else {
            return self.forward_exact(idx, data);
        };
        let mut parts = Vec::new();
        for chunk in idx.chunks(b) {
            // A short last piece is padded with its last sample; the padding is cut off again.
            let mut padded = chunk.to_vec();
            padded.resize(b, chunk[chunk.len() - 1]);
            parts.push(self.forward_exact(&padded, data)?.narrow(0, 0, chunk.len())?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    fn forward_exact(&self, idx: &[usize], data: &Prepared) -> Result<Tensor> {
        let x = self.batch(idx, data)?;
        let outs = self.model.forward(&[(self.input_name.as_str(), x)]).map_err(model_err)?;
        outs.into_iter()
            .find(|(n, _)| *n == self.output_name)
            .map(|(_, t)| t)
            .ok_or_else(|| model_err(format!("output {} was not produced", self.output_name)))
    }

    /// The model's output for every sample of `data`, without gradients.
    pub fn outputs(&self, data: &Prepared) -> Result<Tensor> {
        let idx: Vec<usize> = (0..data.len()).collect();
        Ok(self.forward(&idx, data)?.detach())
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.optimizer.set_learning_rate(lr);
    }

    /// One optimiser step on a batch; returns the batch loss.
    pub fn step(&mut self, idx: &[usize], data: &Prepared) -> Result<f64> {
        let out = self.forward(idx, data)?;
        let loss = self.objective.loss(&out, idx, data)?;
        let grads = loss.backward()?;
        self.optimizer.step(&grads)?;
        Ok(loss.to_scalar::<f32>()? as f64)
    }

    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        Ok(self.params.iter().map(|(_, v)| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?)
    }

    pub fn restore(&self, weights: &[Tensor]) -> Result<()> {
        for ((_, v), w) in self.params.iter().zip(weights) {
            v.set(w)?;
        }
        Ok(())
    }

    pub fn trained_names(&self) -> Vec<String> {
        self.params.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The model with the current weights, checked to load in the inference runtime.
    pub fn export(&self) -> Result<Vec<u8>> {
        let bytes = self.model.to_onnx_bytes().map_err(model_err)?;
        Model::from_bytes(&bytes).map_err(|e| model_err(format!("the trained model does not load back: {e}")))?;
        Ok(bytes)
    }
}

fn objective_for(spec: &ModelVersionSpec, out: &Tensor) -> Result<Objective> {
    let classes = spec.labels.len();
    let dims = out.dims().to_vec();
    match spec.task {
        Task::Classification => {
            if dims.len() != 2 || dims[1] != classes {
                return Err(model_err(format!(
                    "classification output {dims:?} is not [N, {classes}] (one score per label)"
                )));
            }
            let rows = out.to_vec2::<f32>()?;
            let probabilities = rows
                .iter()
                .all(|r| r.iter().all(|v| (0.0..=1.0).contains(v)) && (r.iter().sum::<f32>() - 1.0).abs() < 1e-3);
            Ok(Objective::Classification { classes, probabilities })
        }
        Task::Detection => Ok(Objective::Detection {
            format: super::yolo::detect(&dims, classes)?,
            input_size: (spec.input.width as f32, spec.input.height as f32),
            nms_iou: spec.output.nms_iou_threshold as f32,
        }),
    }
}
