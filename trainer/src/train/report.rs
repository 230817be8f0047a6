//! The files a training run writes besides the model: `progress.json` (rewritten after every
//! epoch, for humans and dashboards) and `metrics.json` (the final evaluation).

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
    /// Eval metrics after the epoch.
    pub metrics: BTreeMap<String, f64>,
    pub seconds: f64,
    pub images_per_second: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// `training` while epochs run, `finished` once the model is written, `rejected` when the
    /// trained model was refused (NaN or regression).
    pub state: String,
    pub epochs: u32,
    pub metric: String,
    pub base_metrics: BTreeMap<String, f64>,
    pub history: Vec<EpochRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsReport {
    pub metric: String,
    pub base_metrics: BTreeMap<String, f64>,
    pub metrics: BTreeMap<String, f64>,
    /// Epoch whose weights were kept (the best trained epoch on the eval set).
    pub best_epoch: u32,
    pub train_samples: u64,
    pub eval_samples: u64,
    pub trained_parameters: Vec<String>,
    pub hyperparameters: flywheel_api::data_pipeline::Hyperparameters,
    pub history: Vec<EpochRecord>,
}
