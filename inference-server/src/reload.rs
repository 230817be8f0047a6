//! Applying a serving config: load what changed, keep what did not, and swap atomically.
//! A model that fails to load leaves the previous one serving; the failure is logged, counted
//! (flywheel_model_load_failures) and shown on /status.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flywheel_storage::Location;
use tokio::sync::{Semaphore, mpsc};

use crate::auth::TokenSource;
use crate::drift::DriftMonitor;
use crate::feedback::FeedbackWriter;
use crate::fetch::sha256_hex;
use crate::metrics::{ModelInfo, RoleLabel};
use crate::models::{self, LoadedModel};
use crate::predlog::PredictionLog;
use crate::review::ReviewStore;
use crate::serving::{DatasetFormat, ReferenceStatistics, ServedModel, ServingConfig};
use crate::shadow::ShadowRunner;
use crate::state::{AppState, Serving};

/// Loads `config` and swaps it in. Returns the errors (empty on full success).
pub async fn apply(state: &Arc<AppState>, config: ServingConfig) -> Vec<String> {
    let old = state.serving.load_full();
    let mut errors = Vec::new();
    let champion =
        match load_role(state, "champion", &config.champion, old.as_ref().map(|o| &o.champion), &config.batching).await
        {
            Ok(m) => m,
            Err(e) => {
                errors.push(e);
                match &old {
                    Some(o) => o.champion.clone(),
                    None => {
                        record(state, &errors);
                        return errors;
                    }
                }
            }
        };
    let shadow = match &config.shadow {
        None => None,
        Some(spec) => {
            let prev = old.as_ref().and_then(|o| o.shadow.as_ref());
            match load_role(state, "shadow", spec, prev, &config.batching).await {
                Ok(m) => Some(m),
                Err(e) => {
                    errors.push(e);
                    prev.cloned()
                }
            }
        }
    };
    // Storage-side parts: reuse the old ones when their settings did not change.
    let same = |f: fn(&ServingConfig) -> String| old.as_ref().is_some_and(|o| f(&o.config) == f(&config));
    let same_reviews = same(|c| {
        format!(
            "{:?}{:?}{:?}{:?}",
            c.prediction_log.as_ref().map(|l| (&l.uri, l.retention_days)),
            c.feedback_dataset,
            c.review_service,
            (c.champion.task, &c.champion.labels)
        )
    });
    // A part that failed before is tried again even when its settings did not change.
    let old_reviews = old.as_ref().and_then(|o| o.reviews.clone());
    let reviews = if same_reviews
        && (config.prediction_log.is_none() || config.review_service.is_some() || old_reviews.is_some())
    {
        old_reviews
    } else {
        match open_reviews(&config).await {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                None
            }
        }
    };
    // A new review store needs a log that tells it, not the old store, what was written.
    let same_log = same(|c| format!("{:?}", c.prediction_log))
        && old.as_ref().and_then(|o| o.reviews.as_ref()).map(Arc::as_ptr) == reviews.as_ref().map(Arc::as_ptr);
    let log = match &config.prediction_log {
        None => None,
        Some(_) if same_log && old.as_ref().is_some_and(|o| o.log.is_some()) => {
            old.as_ref().and_then(|o| o.log.clone())
        }
        Some(cfg) => match Location::open(&cfg.uri) {
            Ok(loc) => {
                let written = reviews.as_ref().map(|r| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    r.listen(rx);
                    tx
                });
                Some(PredictionLog::start(cfg.clone(), loc, state.metrics.clone(), written))
            }
            Err(e) => {
                errors.push(format!("prediction log: {e}"));
                None
            }
        },
    };
    let drift_missing = config.reference_statistics_uri.is_some() && state.drift.lock().expect("drift lock").is_none();
    if !same(|c| format!("{:?}", c.reference_statistics_uri)) || drift_missing {
        match &config.reference_statistics_uri {
            None => *state.drift.lock().expect("drift lock") = None,
            Some(uri) => match load_reference(uri).await {
                Ok(m) => *state.drift.lock().expect("drift lock") = Some(m),
                Err(e) => errors.push(format!("reference statistics: {e}")),
            },
        }
    }
    let token = match &old {
        Some(o) if o.config.auth.token_file == config.auth.token_file => o.token.clone(),
        _ => TokenSource::from_file(config.auth.token_file.as_ref().map(PathBuf::from)),
    };
    let shadow_tx = shadow.clone().map(|model| {
        let runner = ShadowRunner {
            model,
            threshold: config.confidence_threshold,
            log: log.clone(),
            metrics: state.metrics.clone(),
        };
        runner.start(config.batching.shadow_queue_capacity)
    });
    let serving = Arc::new(Serving {
        limiter: Arc::new(Semaphore::new(config.batching.max_concurrent_requests.max(1))),
        config: Arc::new(config),
        champion,
        shadow: shadow.clone(),
        shadow_tx,
        log,
        reviews,
        token,
    });
    publish_model_info(state, &serving);
    state.serving.store(Some(serving));
    record(state, &errors);
    errors
}

async fn load_role(
    state: &Arc<AppState>,
    role: &str,
    spec: &ServedModel,
    prev: Option<&Arc<LoadedModel>>,
    batching: &crate::serving::BatchingConfig,
) -> Result<Arc<LoadedModel>, String> {
    if let Some(p) = prev.filter(|p| p.serves(spec)) {
        return Ok(p.clone());
    }
    match models::load(spec, &state.cache_dir, &state.factory, batching, state.in_flight.clone()).await {
        Ok(m) => {
            tracing::info!(role, model = %spec.name, version = %spec.version, "model loaded");
            Ok(Arc::new(m))
        }
        Err(e) => {
            state.metrics.model_load_failures.get_or_create(&RoleLabel { role: role.into() }).inc();
            // Shown in /status and the log: a URI's credentials must not be.
            let msg = flywheel_storage::redact_text(&format!("{role} {} {}: {e}", spec.name, spec.version));
            tracing::error!(error = %msg, "model load failed; keeping the previous model");
            Err(msg)
        }
    }
}

async fn open_reviews(config: &ServingConfig) -> Result<Option<Arc<ReviewStore>>, String> {
    // A review service owns the reviews: no index here, no samples written from here.
    if config.review_service.is_some() {
        return Ok(None);
    }
    let Some(log) = &config.prediction_log else { return Ok(None) };
    let log_loc = Location::open(&log.uri).map_err(|e| format!("prediction log: {e}"))?;
    let task = config.champion.task;
    let feedback = match &config.feedback_dataset {
        None => None,
        Some(f) => {
            let loc = Location::open(&f.uri).map_err(|e| format!("feedback dataset: {e}"))?;
            let format = f.format.unwrap_or(DatasetFormat::default_for(task));
            format.check_holds(task).map_err(|e| format!("feedback dataset: {e}"))?;
            let labels = if f.labels.is_empty() { config.champion.labels.clone() } else { f.labels.clone() };
            Some(FeedbackWriter::new(loc, format, labels))
        }
    };
    ReviewStore::open(log_loc, task, config.champion.labels.clone(), feedback, log.retention_days)
        .await
        .map(Some)
        .map_err(|e| format!("reading the prediction log: {e}"))
}

async fn load_reference(uri: &str) -> Result<DriftMonitor, String> {
    let loc = Location::open(uri).map_err(|e| e.to_string())?;
    let bytes = loc.get("").await.map_err(|e| format!("fetching {uri}: {e}"))?;
    let r: ReferenceStatistics = serde_json::from_slice(&bytes).map_err(|e| format!("parsing {uri}: {e}"))?;
    DriftMonitor::new(&r)
}

fn publish_model_info(state: &AppState, s: &Serving) {
    state.metrics.model_info.clear();
    for (role, m) in std::iter::once(("champion", &s.champion)).chain(s.shadow.iter().map(|m| ("shadow", m))) {
        let l = ModelInfo {
            role: role.into(),
            model: m.spec.name.clone(),
            model_version: m.spec.version.clone(),
            sha256: m.spec.sha256.to_ascii_lowercase(),
        };
        state.metrics.model_info.get_or_create(&l).set(1);
    }
}

fn record(state: &AppState, errors: &[String]) {
    let mut st = state.status.lock().expect("status lock");
    let now = chrono::Utc::now();
    st.last_attempt = Some(now);
    if errors.is_empty() {
        st.last_success = Some(now);
    }
    st.errors = errors.iter().map(|e| flywheel_storage::redact_text(e)).collect();
}

/// Watches the config file (polling, because ConfigMap volumes update through a symlink swap
/// that inotify-based watchers miss) and applies every change. A failed attempt is retried
/// every `retry` while the content stays the same.
pub async fn watch(state: Arc<AppState>, path: PathBuf, token_file: Option<PathBuf>, poll: Duration, retry: Duration) {
    let mut applied: Option<String> = None;
    let mut last_try = std::time::Instant::now() - retry;
    loop {
        match read_config(&path).await {
            Ok((text, digest)) => {
                let changed = applied.as_deref() != Some(digest.as_str());
                let failed = !state.status.lock().expect("status lock").errors.is_empty();
                if changed || (failed && last_try.elapsed() >= retry) {
                    last_try = std::time::Instant::now();
                    state.status.lock().expect("status lock").config_sha256 = Some(digest.clone());
                    match ServingConfig::from_yaml(&text) {
                        Ok(mut cfg) => {
                            if let Some(file) = &token_file {
                                cfg.auth.token_file = Some(file.display().to_string());
                            }
                            let errors = apply(&state, cfg).await;
                            if errors.is_empty() {
                                tracing::info!(config = %path.display(), "serving config applied");
                            }
                        }
                        Err(e) => {
                            let msg = format!("invalid serving config {}: {e}", path.display());
                            tracing::error!(error = %msg);
                            record(&state, &[msg]);
                        }
                    }
                    applied = Some(digest);
                }
            }
            Err(e) => {
                if applied.is_none() {
                    record(&state, &[e]);
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}

async fn read_config(path: &Path) -> Result<(String, String), String> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| format!("reading {}: {e}", path.display()))?;
    let digest = sha256_hex(text.as_bytes());
    Ok((text, digest))
}
