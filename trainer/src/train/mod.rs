//! `train`: fine-tune a base ONNX model on the old training data replayed with the feedback
//! (reviewed samples), judged on the newest feedback when there is some, and write the new
//! model, its metrics and finally `result.json` (the commit marker).

pub mod augment;
pub mod epochs;
pub mod mix;
pub mod objective;
pub mod optim;
pub mod options;
pub mod parts;
pub mod report;
pub mod schedule;
pub mod stream;
pub mod yolo;

mod data;
mod session;

pub use data::prepare;
pub use objective::{Objective, Prepared};
pub use options::{AugmentOptions, RequestExtras, TrainOptions};
pub use session::Session;

use flywheel_api::common::StorageUri;
use flywheel_api::model_version::{BoxFormat, Decoder};
use flywheel_api::training::{MODEL_FILE, RESULT_FILE, TrainRequest, TrainResult};
use flywheel_storage::Location;

use crate::error::{Result, TrainerError};
use crate::model::{fetch_model, sha256_hex};
use epochs::{EpochPlan, Evaluation};
use report::{METRICS_FILE, MetricsReport, PROGRESS_FILE, Progress};
use schedule::{EarlyStopping, LrSchedule};
use stream::Loader;

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

/// Runs a whole training request with the default [`TrainOptions`].
pub async fn run(req: &TrainRequest) -> Result<TrainResult> {
    run_with(req, &TrainOptions::default()).await
}

/// Runs a whole training request. Returns the result that was written to `result.json`.
pub async fn run_with(req: &TrainRequest, opts: &TrainOptions) -> Result<TrainResult> {
    validate(req)?;
    opts.validate()?;
    let out = Location::open(req.output_uri.as_str())?;
    if let Some(existing) = out.get_opt(RESULT_FILE).await? {
        // A retried Job whose previous attempt already finished: keep that result.
        tracing::info!(uri = %out.child_uri(RESULT_FILE), "output already holds a finished run; nothing to do");
        return serde_json::from_slice(&existing)
            .map_err(|e| TrainerError::Read { uri: out.child_uri(RESULT_FILE), reason: e.to_string() });
    }
    let spec = &req.base_model.spec;
    let h = &req.hyperparameters;
    let base_bytes = fetch_model(&req.base_model).await?;
    let parts = parts::read(req, opts).await?;
    let loader = Loader::new(spec, opts.augment.clone());
    let probe_refs = parts.eval_feedback.iter().chain(&parts.eval_old).take(4).cloned().collect();
    let probe = loader.plain().load(probe_refs, 0).await?;
    let mut session = Session::new(&base_bytes, spec, h, &probe, opts.head_depth)?;
    drop(probe);
    let metric = session.objective.metric_name().to_string();
    let base_eval = epochs::evaluate(&session, &loader, &parts).await?;
    let base_metrics = base_eval.to_map(&metric);
    let base_value = base_eval.judged();
    tracing::info!(metric = %metric, value = base_value, judged_on = base_eval.judged_on(), ?base_metrics, "base model evaluated");
    let mut progress = Progress {
        state: "training".into(),
        epochs: h.epochs,
        metric: metric.clone(),
        judged_on: base_eval.judged_on().into(),
        base_metrics: base_metrics.clone(),
        epoch: 0,
        loss: None,
        metrics: Default::default(),
        images_per_second: None,
        eta_seconds: None,
        best_epoch: 0,
        stopped_early: false,
        history: vec![],
    };
    out.put_json(PROGRESS_FILE, &progress).await?;

    let batch = h.batch_size as usize;
    let steps = epochs::steps_per_epoch(&parts, batch);
    let schedule =
        LrSchedule::new(h.learning_rate, steps * h.epochs as usize, opts.warmup_fraction, opts.final_lr_fraction);
    let mut stopping = EarlyStopping::new(opts.patience, base_value);
    // The best trained epoch is kept (not the base weights: a run that cannot beat the base
    // within the tolerance is refused below rather than re-registering the base model).
    let (mut best_epoch, mut best_eval) = (0u32, Evaluation { feedback: None, old: None });
    let mut best_weights = session.snapshot()?;
    for epoch in 1..=h.epochs {
        let plan = EpochPlan { epoch, batch, options: opts, schedule: &schedule };
        let (record, eval) = epochs::train_epoch(&mut session, &loader, &parts, &plan, &metric).await?;
        let value = eval.judged();
        if !record.loss.is_finite() {
            progress.record(record);
            progress.state = "rejected".into();
            out.put_json(PROGRESS_FILE, &progress).await?;
            let loss = progress.loss.unwrap_or(f64::NAN);
            return Err(TrainerError::Training(format!(
                "refusing to write the trained model: the training loss became {loss} at epoch {epoch}; lower the learning rate"
            )));
        }
        if best_epoch == 0 || value > best_eval.judged() || best_eval.judged().is_nan() {
            (best_epoch, best_eval) = (epoch, eval);
            best_weights = session.snapshot()?;
        }
        progress.best_epoch = best_epoch;
        progress.record(record);
        tracing::info!(
            "epoch {epoch}/{} loss={:.4} {metric}={value:.4} ({}) {:.1} img/s lr={:.2e} eta={:.0}s",
            h.epochs,
            progress.loss.unwrap_or(f64::NAN),
            progress.judged_on,
            progress.images_per_second.unwrap_or(0.0),
            progress.history.last().map_or(0.0, |r| r.learning_rate),
            progress.eta_seconds.unwrap_or(0.0),
        );
        if stopping.record(value) && epoch < h.epochs {
            progress.stopped_early = true;
            progress.eta_seconds = Some(0.0);
            out.put_json(PROGRESS_FILE, &progress).await?;
            tracing::info!(
                epoch,
                best_epoch,
                patience = opts.patience,
                "no better {metric} for {} epochs: stopping early",
                opts.patience
            );
            break;
        }
        out.put_json(PROGRESS_FILE, &progress).await?;
    }
    session.restore(&best_weights)?;
    let final_value = best_eval.judged();
    if !final_value.is_finite() || final_value < base_value - req.max_regression {
        progress.state = "rejected".into();
        out.put_json(PROGRESS_FILE, &progress).await?;
        return Err(TrainerError::Regression {
            metric: format!("{metric} ({})", best_eval.judged_on()),
            base: base_value,
            new: final_value,
            tolerance: req.max_regression,
        });
    }
    let model_bytes = session.export()?;
    let metrics = best_eval.to_map(&metric);
    let counts = |n: usize| n as u64;
    let report = MetricsReport {
        metric,
        base_metrics: base_metrics.clone(),
        metrics: metrics.clone(),
        best_epoch,
        judged_on: best_eval.judged_on().into(),
        samples: [
            ("old", parts.old.len()),
            ("feedback", parts.feedback.len()),
            ("evalOld", parts.eval_old.len()),
            ("evalFeedback", parts.eval_feedback.len()),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_string(), counts(n)))
        .collect(),
        options: opts.clone(),
        train_samples: parts.train_len() as u64,
        eval_samples: parts.eval_len() as u64,
        trained_parameters: session.trained_names(),
        hyperparameters: req.hyperparameters.clone(),
        history: progress.history.clone(),
    };
    out.put(MODEL_FILE, model_bytes.clone()).await?;
    out.put_json(METRICS_FILE, &report).await?;
    progress.state = "finished".into();
    progress.eta_seconds = Some(0.0);
    out.put_json(PROGRESS_FILE, &progress).await?;
    let result = TrainResult {
        model_uri: StorageUri(out.child_uri(MODEL_FILE)),
        sha256: sha256_hex(&model_bytes),
        size_bytes: model_bytes.len() as u64,
        base_metrics,
        metrics,
        train_samples: parts.train_len() as u64,
        eval_samples: parts.eval_len() as u64,
    };
    out.put_json(RESULT_FILE, &result).await?;
    tracing::info!(uri = %out.child_uri(RESULT_FILE), "training finished");
    Ok(result)
}
