//! The files a training run writes besides the model: `progress.json` (rewritten, in one put,
//! after the base evaluation and after every epoch, for humans, dashboards and the
//! DataPipeline's status) and `metrics.json` (the final evaluation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const PROGRESS_FILE: &str = "progress.json";
pub const METRICS_FILE: &str = "metrics.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EpochRecord {
    pub epoch: u32,
    /// Mean training loss over the epoch.
    pub loss: f64,
    /// Eval metrics after the epoch: the judged one under its name (e.g. `mAP50`), and by eval
    /// set (`mAP50_feedback`, `mAP50_old`).
    pub metrics: BTreeMap<String, f64>,
    pub seconds: f64,
    pub images_per_second: f64,
    /// Learning rate of the epoch's last step.
    #[serde(default)]
    pub learning_rate: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// `training` while epochs run, `finished` once the model is written, `rejected` when the
    /// trained model was refused (NaN or regression).
    pub state: String,
    /// Epochs planned (`hyperparameters.epochs`; early stopping may end the run sooner).
    pub epochs: u32,
    /// The judged metric's name (`mAP50`, `accuracy`).
    pub metric: String,
    /// What the judged metric was measured on: `feedback` (the newest reviewed samples) or
    /// `old` (the old training data's eval set).
    #[serde(default)]
    pub judged_on: String,
    pub base_metrics: BTreeMap<String, f64>,
    /// Epochs finished.
    #[serde(default)]
    pub epoch: u32,
    /// The last epoch's mean training loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// The last epoch's eval metrics (as in `history`).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// The last epoch's training throughput.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_second: Option<f64>,
    /// Seconds until the planned epochs are done, at the mean epoch time so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// The epoch whose weights are kept so far (0: none yet).
    #[serde(default)]
    pub best_epoch: u32,
    /// True when early stopping ended the run before `epochs`.
    #[serde(default)]
    pub stopped_early: bool,
    pub history: Vec<EpochRecord>,
}

impl Progress {
    /// Records a finished epoch and updates the summary fields (ETA included).
    pub fn record(&mut self, r: EpochRecord) {
        self.epoch = r.epoch;
        self.loss = Some(r.loss);
        self.metrics = r.metrics.clone();
        self.images_per_second = Some(r.images_per_second);
        self.history.push(r);
        self.eta_seconds = Some(eta(&self.history, self.epochs));
    }
}

/// Seconds left for `epochs` epochs at the mean time of the finished ones.
pub fn eta(history: &[EpochRecord], epochs: u32) -> f64 {
    if history.is_empty() {
        return 0.0;
    }
    let mean = history.iter().map(|r| r.seconds).sum::<f64>() / history.len() as f64;
    mean * epochs.saturating_sub(history.len() as u32) as f64
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsReport {
    pub metric: String,
    pub base_metrics: BTreeMap<String, f64>,
    pub metrics: BTreeMap<String, f64>,
    /// Epoch whose weights were kept (the best trained epoch on the judged eval set).
    pub best_epoch: u32,
    /// `feedback` or `old`, as in `progress.json`.
    #[serde(default)]
    pub judged_on: String,
    /// Samples per part: `old`, `feedback` (trained on), `evalOld`, `evalFeedback`.
    #[serde(default)]
    pub samples: BTreeMap<String, u64>,
    /// The built-in trainer's options the run used.
    #[serde(default)]
    pub options: super::options::TrainOptions,
    pub train_samples: u64,
    pub eval_samples: u64,
    pub trained_parameters: Vec<String>,
    pub hyperparameters: flywheel_api::data_pipeline::Hyperparameters,
    pub history: Vec<EpochRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(e: u32, seconds: f64) -> EpochRecord {
        EpochRecord {
            epoch: e,
            loss: 1.0,
            metrics: BTreeMap::new(),
            seconds,
            images_per_second: 10.0,
            learning_rate: 0.1,
        }
    }

    #[test]
    fn the_eta_is_the_mean_epoch_time_times_the_epochs_left() {
        assert_eq!(eta(&[], 5), 0.0);
        assert_eq!(eta(&[epoch(1, 10.0), epoch(2, 20.0)], 5), 45.0);
        assert_eq!(eta(&[epoch(1, 10.0)], 1), 0.0);
        let mut p = Progress {
            state: "training".into(),
            epochs: 3,
            metric: "mAP50".into(),
            judged_on: "feedback".into(),
            base_metrics: BTreeMap::new(),
            epoch: 0,
            loss: None,
            metrics: BTreeMap::new(),
            images_per_second: None,
            eta_seconds: None,
            best_epoch: 0,
            stopped_early: false,
            history: vec![],
        };
        p.record(epoch(1, 4.0));
        assert_eq!((p.epoch, p.eta_seconds, p.loss), (1, Some(8.0), Some(1.0)));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["etaSeconds"], 8.0);
        assert_eq!(json["imagesPerSecond"], 10.0);
        assert_eq!(json["judgedOn"], "feedback");
    }
}
