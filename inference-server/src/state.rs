//! Shared server state. Everything that a config change replaces lives in one immutable
//! `Serving` snapshot swapped atomically, so a request sees either the old or the new
//! configuration, never a mix.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio::sync::Semaphore;

use crate::auth::TokenSource;
use crate::drift::DriftMonitor;
use crate::metrics::Metrics;
use crate::models::{BackendFactory, LoadedModel};
use crate::predlog::PredictionLog;
use crate::review::{Pair, ReviewStore, Served};
use crate::serving::ServingConfig;
use crate::shadow::ShadowQueue;

pub struct Serving {
    pub config: Arc<ServingConfig>,
    pub champion: Arc<LoadedModel>,
    pub shadow: Option<Arc<LoadedModel>>,
    /// Requests in flight; `try_acquire` failing means 429.
    pub limiter: Arc<Semaphore>,
    pub shadow_tx: Option<ShadowQueue>,
    pub log: Option<Arc<PredictionLog>>,
    pub reviews: Option<Arc<ReviewStore>>,
    pub token: TokenSource,
}

impl Serving {
    /// The models the reviewed-quality figures compare now.
    pub fn quality_pair(&self) -> Pair {
        let served = |m: &LoadedModel| Served::new(&m.spec.name, &m.spec.version);
        Pair { champion: served(&self.champion), shadow: self.shadow.as_deref().map(served) }
    }
}

/// What the last (re)load did, for /status.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    pub config_sha256: Option<String>,
    pub last_attempt: Option<chrono::DateTime<chrono::Utc>>,
    pub last_success: Option<chrono::DateTime<chrono::Utc>>,
    /// Errors of the last attempt (empty when it fully succeeded).
    pub errors: Vec<String>,
}

pub struct AppState {
    pub serving: ArcSwapOption<Serving>,
    pub metrics: Arc<Metrics>,
    pub status: Mutex<ReloadStatus>,
    pub drift: Mutex<Option<DriftMonitor>>,
    pub cache_dir: PathBuf,
    pub factory: BackendFactory,
    /// Inference requests being handled (see `batcher::InFlight`).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Pixels being decoded, in units of [`PIXEL_UNIT`] (see `preprocess::MAX_PIXELS_IN_FLIGHT`).
    decoding: Arc<Semaphore>,
}

/// Pixels per permit of the decode budget.
const PIXEL_UNIT: u64 = 4096;

impl AppState {
    pub fn new(cache_dir: PathBuf, factory: BackendFactory) -> Arc<Self> {
        Arc::new(Self {
            serving: ArcSwapOption::empty(),
            metrics: Arc::new(Metrics::new()),
            status: Mutex::new(ReloadStatus::default()),
            drift: Mutex::new(None),
            cache_dir,
            factory,
            in_flight: Default::default(),
            decoding: Arc::new(Semaphore::new((crate::preprocess::MAX_PIXELS_IN_FLIGHT / PIXEL_UNIT) as usize)),
        })
    }

    pub fn current(&self) -> Result<Arc<Serving>, crate::error::ServerError> {
        self.serving.load_full().ok_or_else(|| crate::error::ServerError::NotReady("no model loaded yet".into()))
    }

    /// Reserves decoding `pixels` against the server's budget until the guard drops; 429 when
    /// other requests hold it.
    pub fn decode_budget(&self, pixels: u64) -> Result<tokio::sync::OwnedSemaphorePermit, crate::error::ServerError> {
        let units = pixels.div_ceil(PIXEL_UNIT).max(1) as u32;
        self.decoding.clone().try_acquire_many_owned(units).map_err(|_| crate::error::ServerError::Overloaded)
    }

    /// Publishes the KS and outlier gauges (called before every scrape).
    pub fn refresh_drift_gauges(&self) {
        let guard = self.drift.lock().expect("drift monitor poisoned");
        let Some(mon) = guard.as_ref() else { return };
        for (feature, d) in mon.ks() {
            self.metrics.drift_ks.get_or_create(&crate::metrics::FeatureLabel { feature }).set(d);
        }
        if let Some(s) = mon.mean_outlier_score() {
            self.metrics.outlier_score.set(s);
        }
    }
}
