//! Ingestion: every prediction-log object that every inference replica wrote under `records/`
//! and that the store has not seen, each in its own transaction with its path (the cursor).

use flywheel_storage::{Location, StorageError};
use flywheel_types::prediction::PredictionRecord;

use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one pass ingested.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    pub objects: usize,
    pub predictions: u64,
    /// Lines that are not prediction records (skipped, and logged).
    pub unreadable: usize,
}

/// Reads one log object's records; unreadable lines are skipped and counted.
pub fn parse_records(path: &str, data: &[u8]) -> (Vec<PredictionRecord>, usize) {
    let mut unreadable = 0;
    let records = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|line| match serde_json::from_slice::<PredictionRecord>(line) {
            Ok(r) => Some(r),
            Err(e) => {
                unreadable += 1;
                tracing::warn!(path, error = %e, "skipping an unreadable prediction record");
                None
            }
        })
        .collect();
    (records, unreadable)
}

/// Ingests every log object not ingested yet.
pub async fn ingest(store: &Store, log: &Location) -> Result<Ingested, IngestError> {
    let known = store.ingested_paths().await?;
    let mut done = Ingested::default();
    for (path, _) in log.list("records").await? {
        if known.contains(&path) {
            continue;
        }
        let data = match log.get(&path).await {
            Ok(d) => d,
            // Deleted by retention between the listing and the read: nothing to ingest.
            Err(StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let (records, unreadable) = parse_records(&path, &data);
        done.predictions += store.ingest_object(&path, &records).await?;
        done.objects += 1;
        done.unreadable += unreadable;
    }
    Ok(done)
}
