//! The files a training run writes besides the model: `progress.json` (rewritten, in one put,
//! after the base evaluation and after every epoch, for humans, dashboards and the
//! DataPipeline's status) and `metrics.json` (the final evaluation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use flywheel_api::training::progress::{EpochRecord, PROGRESS_FILE, Progress, eta};
pub const METRICS_FILE: &str = "metrics.json";

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
