//! Storage locations: a directory-like prefix in any object store, resolved from a URI.
//!
//! Supported: `file:///abs/path`, plain paths, `s3://bucket/prefix` (credentials, region and
//! endpoint from `AWS_*` variables, e.g. `AWS_ENDPOINT=http://127.0.0.1:8333` and
//! `AWS_ALLOW_HTTP=true` for SeaweedFS), `gs://` (`GOOGLE_*`), `az://` (`AZURE_*`),
//! `http(s)://` (read-only for most servers) and `pvc://<claim>/<path>`, which maps to the
//! directory where the claim is mounted: `${FLYWHEEL_PVC_ROOT:-/var/lib/flywheel/pvc}/<claim>/<path>`.
//!
//! Every write is a single put: atomic on object stores, and write-to-temp-then-rename on the
//! local file system, so a killed process never leaves a half-written object.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Result, TrainerError};

/// Environment variable naming the directory under which PVCs are mounted (read by
/// flywheel-storage; default [`flywheel_storage::DEFAULT_PVC_ROOT`]).
pub const PVC_ROOT_ENV: &str = "FLYWHEEL_PVC_ROOT";

#[derive(Clone, Debug)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The URI it was made from, for messages.
    uri: String,
}

impl Location {
    pub fn parse(uri: &str) -> Result<Self> {
        let bad = |reason: String| TrainerError::Uri {
            uri: uri.to_string(),
            reason,
        };
        // The one URI resolution of the workspace (pvc://, file://, plain paths, object stores).
        let (store, prefix) =
            flywheel_storage::resolve(uri, std::env::vars()).map_err(|e| bad(e.to_string()))?;
        // Plain paths become file:// URIs (what a DatasetVersion or ModelVersion accepts).
        let canonical = if uri.contains("://") {
            uri.to_string()
        } else {
            let abs = std::path::absolute(uri).map_err(|e| bad(e.to_string()))?;
            url::Url::from_file_path(&abs)
                .map_err(|_| bad("not an absolute path".into()))?
                .to_string()
        };
        Ok(Self {
            store,
            prefix,
            uri: canonical.trim_end_matches('/').to_string(),
        })
    }

    /// The location holding an object and the object's name, from the object's full URI.
    pub fn parse_object(uri: &str) -> Result<(Self, String)> {
        let owned;
        let uri = if uri.contains("://") {
            uri
        } else {
            owned = std::path::absolute(uri).map_err(|e| TrainerError::Uri {
                uri: uri.into(),
                reason: e.to_string(),
            })?;
            owned.to_str().ok_or_else(|| TrainerError::Uri {
                uri: uri.into(),
                reason: "not UTF-8".into(),
            })?
        };
        match uri.trim_end_matches('/').rsplit_once('/') {
            Some((parent, name))
                if !name.is_empty() && !parent.ends_with(':') && !parent.ends_with(":/") =>
            {
                Ok((Self::parse(parent)?, name.to_string()))
            }
            _ => Err(TrainerError::Uri {
                uri: uri.into(),
                reason: "expected the URI of an object (a file)".into(),
            }),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The URI of an object below this location.
    pub fn child_uri(&self, rel: &str) -> String {
        format!("{}/{}", self.uri, rel.trim_start_matches('/'))
    }

    /// A sub-location (a "directory" below this one).
    pub fn join(&self, rel: &str) -> Self {
        Self {
            store: self.store.clone(),
            prefix: self.path(rel),
            uri: self.child_uri(rel),
        }
    }

    fn path(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    pub async fn get(&self, rel: &str) -> Result<bytes::Bytes> {
        let read = |e: object_store::Error| TrainerError::Read {
            uri: self.child_uri(rel),
            reason: short(e),
        };
        self.store
            .get(&self.path(rel))
            .await
            .map_err(read)?
            .bytes()
            .await
            .map_err(read)
    }

    /// `None` when the object does not exist.
    pub async fn get_opt(&self, rel: &str) -> Result<Option<bytes::Bytes>> {
        match self.store.get(&self.path(rel)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| TrainerError::Read {
                uri: self.child_uri(rel),
                reason: short(e),
            })?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(TrainerError::Read {
                uri: self.child_uri(rel),
                reason: short(e),
            }),
        }
    }

    /// Atomic write (whole object or nothing).
    pub async fn put(&self, rel: &str, data: impl Into<PutPayload>) -> Result<()> {
        self.store
            .put(&self.path(rel), data.into())
            .await
            .map(|_| ())
            .map_err(|e| TrainerError::Write {
                uri: self.child_uri(rel),
                reason: short(e),
            })
    }

    pub async fn put_json<T: serde::Serialize>(&self, rel: &str, value: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| TrainerError::Write {
            uri: self.child_uri(rel),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        self.put(rel, bytes).await
    }

    /// Paths of every object below `rel`, relative to this location, sorted.
    pub async fn list(&self, rel: &str) -> Result<Vec<String>> {
        let base = self.path(rel);
        let metas: Vec<_> = match self.store.list(Some(&base)).try_collect().await {
            Ok(m) => m,
            // A missing local directory lists as an error on some stores: treat it as empty.
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => {
                return Err(TrainerError::Read {
                    uri: self.child_uri(rel),
                    reason: short(e),
                });
            }
        };
        let strip = format!("{}/", self.prefix.as_ref());
        let mut out: Vec<String> = metas
            .into_iter()
            .map(|m| {
                let full = m.location.as_ref().to_string();
                if self.prefix.as_ref().is_empty() {
                    full
                } else {
                    full.strip_prefix(&strip)
                        .map(str::to_string)
                        .unwrap_or(full)
                }
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

/// object_store errors repeat the path and the source chain; keep the message readable.
fn short(e: object_store::Error) -> String {
    match e {
        object_store::Error::NotFound { .. } => "not found".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvc_uris_map_below_the_pvc_root() {
        // SAFETY: single-threaded test touching only this variable.
        unsafe { std::env::set_var(PVC_ROOT_ENV, "/mnt/pvcs") };
        let loc = Location::parse("pvc://data/sets/a").unwrap();
        assert_eq!(loc.prefix.as_ref(), "mnt/pvcs/data/sets/a");
        assert_eq!(loc.child_uri("x.json"), "pvc://data/sets/a/x.json");
        assert!(Location::parse("pvc:///x").is_err());
        assert!(Location::parse("pvc://data/../../etc").is_err());
    }

    #[test]
    fn plain_paths_become_file_uris() {
        let loc = Location::parse("/tmp/not-created-yet").unwrap();
        assert_eq!(loc.uri(), "file:///tmp/not-created-yet");
    }
}
