//! Object-store locations (file, pvc, s3, gs, az, http) resolved from URIs by flywheel-storage,
//! with credentials and endpoints from the usual AWS_* / GOOGLE_* / AZURE_* environment variables.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::ServerError;

/// A directory-like prefix inside an object store.
#[derive(Clone, Debug)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The URI it was made from (for messages; never holds credentials).
    pub uri: String,
}

impl Location {
    /// Resolves through flywheel-storage (so `pvc://` and plain paths work as everywhere
    /// else), with credentials and endpoints from the environment.
    pub fn parse(uri: &str) -> Result<Self, ServerError> {
        let (store, prefix) = flywheel_storage::resolve(uri, std::env::vars())
            .map_err(|e| ServerError::bad_request(e.to_string()))?;
        Ok(Self { store, prefix, uri: uri.to_string() })
    }

    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    pub async fn get(&self, rel: &str) -> Result<bytes::Bytes, object_store::Error> {
        self.store.get(&self.path(rel)).await?.bytes().await
    }

    /// Atomic overwrite.
    pub async fn put(&self, rel: &str, data: impl Into<PutPayload>) -> Result<(), object_store::Error> {
        self.store.put(&self.path(rel), data.into()).await.map(|_| ())
    }

    /// Atomic create; `Ok(false)` when the object already exists. Stores without conditional
    /// writes fall back to check-then-put (callers serialise writers of one key in-process).
    pub async fn put_if_absent(&self, rel: &str, data: bytes::Bytes) -> Result<bool, object_store::Error> {
        let path = self.path(rel);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&path, data.clone().into(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) | Err(object_store::Error::NotSupported { .. }) => {
                match self.store.head(&path).await {
                    Ok(_) => Ok(false),
                    Err(object_store::Error::NotFound { .. }) => {
                        self.store.put(&path, data.into()).await?;
                        Ok(true)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Object paths (relative to the prefix) under `rel`.
    pub async fn list(&self, rel: &str) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, object_store::Error> {
        use futures::TryStreamExt;
        let base = self.path(rel);
        let metas: Vec<_> = self.store.list(Some(&base)).try_collect().await?;
        let strip = format!("{}/", self.prefix.as_ref());
        Ok(metas
            .into_iter()
            .map(|m| {
                let full = m.location.as_ref().to_string();
                let relp = if self.prefix.as_ref().is_empty() {
                    full
                } else {
                    full.strip_prefix(&strip).map(str::to_string).unwrap_or(full)
                };
                (relp, m.last_modified)
            })
            .collect())
    }

    pub async fn delete(&self, rel: &str) -> Result<(), object_store::Error> {
        self.store.delete(&self.path(rel)).await
    }
}
