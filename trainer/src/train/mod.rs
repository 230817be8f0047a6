//! `train`: fine-tune a base ONNX model on the merged training datasets, evaluate before and
//! after, and write the new model, its metrics and finally `result.json` (the commit marker).

pub mod objective;
pub mod optim;
pub mod report;
pub mod yolo;

mod data;
mod session;

pub use data::prepare;
pub use objective::{Objective, Prepared};
pub use session::Session;

use std::collections::BTreeMap;

use flywheel_api::common::StorageUri;
use flywheel_api::model_version::{BoxFormat, Decoder};
use flywheel_api::training::{MODEL_FILE, RESULT_FILE, TrainRequest, TrainResult};
use flywheel_storage::Location;

use crate::dataset::{self, split_train_eval};
use crate::error::{Result, TrainerError};
use crate::model::{fetch_model, sha256_hex};
use report::{METRICS_FILE, MetricsReport, PROGRESS_FILE, Progress};

fn validate(req: &TrainRequest) -> Result<()> {
    let h = &req.hyperparameters;
    if h.epochs == 0 || h.batch_size == 0 {
        return Err(TrainerError::Request("epochs and batchSize must be at least 1".into()));
    }
    if !(h.learning_rate.is_finite() && h.learning_rate > 0.0) {
        return Err(TrainerError::Request(format!("learningRate must be positive, got {}", h.learning_rate)));
    }
    if req.train.is_empty() {
        return Err(TrainerError::Request("no training datasets".into()));
    }
    let output = &req.base_model.spec.output;
    let trainable = match output.decoder {
        Decoder::Logits => true,
        Decoder::Yolo => {
            output.strides.is_empty() && output.box_format() == BoxFormat::Cxcywh && !output.normalized_boxes
        }
        Decoder::BoxesScores => false,
    };
    if !trainable {
        return Err(TrainerError::Request(format!(
            "model {} cannot be fine-tuned by the built-in trainer: it trains classifiers (logits) and detectors \
             with one decoded YOLO output (centre/size boxes in input pixels), not raw grids or separate \
             boxes/scores outputs (it can still be served)",
            req.base_model.name
        )));
    }
    let task = req.base_model.spec.task;
    for ds in req.train.iter().chain(req.eval.iter()) {
        if ds.spec.task != task {
            return Err(TrainerError::Request(format!(
                "DatasetVersion {} is a {} dataset but model {} does {}",
                ds.name,
                ds.spec.task.as_str(),
                req.base_model.name,
                task.as_str()
            )));
        }
    }
    Ok(())
}

/// Runs a whole training request. Returns the result that was written to `result.json`.
pub async fn run(req: &TrainRequest) -> Result<TrainResult> {
    validate(req)?;
    let out = Location::open(req.output_uri.as_str())?;
    if let Some(existing) = out.get_opt(RESULT_FILE).await? {
        // A retried Job whose previous attempt already finished: keep that result.
        tracing::info!(uri = %out.child_uri(RESULT_FILE), "output already holds a finished run; nothing to do");
        return serde_json::from_slice(&existing)
            .map_err(|e| TrainerError::Read { uri: out.child_uri(RESULT_FILE), reason: e.to_string() });
    }
    let labels = &req.base_model.spec.labels;
    let base_bytes = fetch_model(&req.base_model).await?;
    let samples = dataset::read_datasets(&req.train, labels).await?;
    let (train_refs, eval_refs) = match &req.eval {
        Some(e) => (samples, dataset::read_dataset(e, labels).await?),
        None => split_train_eval(samples, dataset::DEFAULT_EVAL_FRACTION),
    };
    if train_refs.is_empty() || eval_refs.is_empty() {
        return Err(TrainerError::Request(format!(
            "need training and eval samples, got {} and {}",
            train_refs.len(),
            eval_refs.len()
        )));
    }
    let spec = &req.base_model.spec;
    let train = prepare(&train_refs, spec).await?;
    let eval = prepare(&eval_refs, spec).await?;
    tracing::info!(train = train.len(), eval = eval.len(), "datasets loaded");

    let mut session = Session::new(&base_bytes, spec, &req.hyperparameters, &eval)?;
    let metric = session.objective.metric_name().to_string();
    let base_value = session.evaluate(&eval)?;
    let base_metrics = BTreeMap::from([(metric.clone(), base_value)]);
    tracing::info!(metric = %metric, value = base_value, "base model evaluated");
    let mut progress = Progress {
        state: "training".into(),
        epochs: req.hyperparameters.epochs,
        metric: metric.clone(),
        base_metrics: base_metrics.clone(),
        history: vec![],
    };
    out.put_json(PROGRESS_FILE, &progress).await?;

    // The best trained epoch is kept (not the base weights: a run that cannot beat the base
    // within the tolerance is refused below rather than re-registering the base model).
    let (mut best_epoch, mut best_value) = (0u32, f64::NEG_INFINITY);
    let mut best_weights = session.snapshot()?;
    for epoch in 1..=req.hyperparameters.epochs {
        let record = session.train_epoch(epoch, &train, &eval)?;
        let value = record.metrics[&metric];
        tracing::info!(
            "epoch {epoch}/{} loss={:.4} {metric}={value:.4} ({:.1} img/s)",
            req.hyperparameters.epochs,
            record.loss,
            record.images_per_second
        );
        if !record.loss.is_finite() {
            progress.history.push(record);
            progress.state = "rejected".into();
            out.put_json(PROGRESS_FILE, &progress).await?;
            let loss = progress.history.last().map_or(f64::NAN, |r| r.loss);
            return Err(TrainerError::Training(format!(
                "refusing to write the trained model: the training loss became {loss} at epoch {epoch}; lower the learning rate"
            )));
        }
        if best_epoch == 0 || value > best_value || best_value.is_nan() {
            (best_epoch, best_value) = (epoch, value);
            best_weights = session.snapshot()?;
        }
        progress.history.push(record);
        out.put_json(PROGRESS_FILE, &progress).await?;
    }
    session.restore(&best_weights)?;
    let final_value = best_value;
    if !final_value.is_finite() || final_value < base_value - req.max_regression {
        progress.state = "rejected".into();
        out.put_json(PROGRESS_FILE, &progress).await?;
        return Err(TrainerError::Regression {
            metric,
            base: base_value,
            new: final_value,
            tolerance: req.max_regression,
        });
    }
    let model_bytes = session.export()?;
    let metrics = BTreeMap::from([(metric.clone(), final_value)]);
    let report = MetricsReport {
        metric,
        base_metrics: base_metrics.clone(),
        metrics: metrics.clone(),
        best_epoch,
        train_samples: train.len() as u64,
        eval_samples: eval.len() as u64,
        trained_parameters: session.trained_names(),
        hyperparameters: req.hyperparameters.clone(),
        history: progress.history.clone(),
    };
    out.put(MODEL_FILE, model_bytes.clone()).await?;
    out.put_json(METRICS_FILE, &report).await?;
    progress.state = "finished".into();
    out.put_json(PROGRESS_FILE, &progress).await?;
    let result = TrainResult {
        model_uri: StorageUri(out.child_uri(MODEL_FILE)),
        sha256: sha256_hex(&model_bytes),
        size_bytes: model_bytes.len() as u64,
        base_metrics,
        metrics,
        train_samples: train.len() as u64,
        eval_samples: eval.len() as u64,
    };
    out.put_json(RESULT_FILE, &result).await?;
    tracing::info!(uri = %out.child_uri(RESULT_FILE), "training finished");
    Ok(result)
}
