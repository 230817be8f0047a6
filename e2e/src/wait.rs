//! Waiting for a condition with a timeout: the object is re-read every 200 ms (cheap on a local
//! API server) until the condition holds; on timeout the error carries the last state seen.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use kube::Api;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {secs}s waiting for {what}; last state:\n{last}{dump}")]
    Timeout { what: String, secs: u64, last: String, dump: String },
    #[error("API error while waiting for {what}: {source}")]
    Kube { what: String, source: kube::Error },
}

impl WaitError {
    /// Appends a namespace dump (pods, events, logs) to a timeout message.
    pub fn with_dump(self, dump: String) -> Self {
        match self {
            WaitError::Timeout { what, secs, last, .. } => {
                WaitError::Timeout { what, secs, last, dump: format!("\n{dump}") }
            }
            other => other,
        }
    }
}

const POLL: Duration = Duration::from_millis(200);

/// Waits until `condition(object)` holds for `name` in `api` (object = None when absent) and
/// returns the object as last read.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    condition: impl Fn(Option<&K>) -> bool,
    timeout_secs: u64,
) -> Result<Option<K>, WaitError>
where
    K: Clone + DeserializeOwned + Debug + serde::Serialize,
{
    let what = format!("{} {name}", std::any::type_name::<K>().rsplit("::").next().unwrap_or("object"));
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut last: Option<K> = None;
    let mut transient_errors = 0;
    loop {
        match api.get_opt(name).await {
            Ok(obj) => {
                if condition(obj.as_ref()) {
                    return Ok(obj);
                }
                last = obj;
            }
            // The API server may briefly refuse (e.g. a CRD being established); give up only on repeats.
            Err(e) => {
                transient_errors += 1;
                if transient_errors > 25 {
                    return Err(WaitError::Kube { what, source: e });
                }
            }
        }
        if Instant::now() >= deadline {
            let last = match &last {
                Some(o) => serde_yaml::to_string(o).unwrap_or_else(|_| format!("{o:?}")),
                None => "(absent)".into(),
            };
            return Err(WaitError::Timeout { what, secs: timeout_secs, last, dump: String::new() });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Retries `probe` every 200 ms until it returns `Some`, or fails after `timeout_secs` with the
/// last `Err` message. For conditions that are not an object's state (HTTP answers, files).
pub async fn eventually<T, F, Fut>(what: &str, timeout_secs: u64, mut probe: F) -> Result<T, WaitError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let last = match probe().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(WaitError::Timeout { what: what.into(), secs: timeout_secs, last, dump: String::new() });
        }
        tokio::time::sleep(POLL).await;
    }
}
