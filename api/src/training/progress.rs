//! `progress.json`: what a training run writes after its base evaluation, after every epoch and
//! when it ends (one put each), read by people, dashboards and the operator, which puts a
//! summary ([`RunProgress`]) into the DataPipeline's status and metrics.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// File name of the progress under a training run's output URI.
pub const PROGRESS_FILE: &str = "progress.json";

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

/// A run's progress as the DataPipeline's status shows it: the summary of `progress.json`
/// without the per-epoch history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunProgress {
    /// `training`, `finished` or `rejected`.
    pub state: String,
    /// Epochs finished, of `epochs` planned.
    pub epoch: u32,
    pub epochs: u32,
    /// The judged metric's name (`mAP50`, `accuracy`) and its last value.
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The base model's value of the same metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    pub best_epoch: u32,
}

impl From<&Progress> for RunProgress {
    fn from(p: &Progress) -> Self {
        Self {
            state: p.state.clone(),
            epoch: p.epoch,
            epochs: p.epochs,
            metric: p.metric.clone(),
            value: p.metrics.get(&p.metric).copied(),
            base_value: p.base_metrics.get(&p.metric).copied(),
            loss: p.loss,
            images_per_second: p.images_per_second,
            eta_seconds: p.eta_seconds,
            best_epoch: p.best_epoch,
        }
    }
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

    #[test]
    fn the_status_summary_keeps_the_judged_metric_and_drops_the_history() {
        let mut p = Progress {
            state: "training".into(),
            epochs: 4,
            metric: "mAP50".into(),
            judged_on: "old".into(),
            base_metrics: BTreeMap::from([("mAP50".into(), 0.3)]),
            epoch: 0,
            loss: None,
            metrics: BTreeMap::new(),
            images_per_second: None,
            eta_seconds: None,
            best_epoch: 0,
            stopped_early: false,
            history: vec![],
        };
        assert_eq!(RunProgress::from(&p).value, None);
        let mut e = epoch(1, 2.0);
        e.metrics.insert("mAP50".into(), 0.5);
        p.record(e);
        let s = RunProgress::from(&p);
        assert_eq!((s.epoch, s.epochs, s.value, s.base_value, s.eta_seconds), (1, 4, Some(0.5), Some(0.3), Some(6.0)));
    }
}
