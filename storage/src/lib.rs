//! Flywheel's storage layer: a URI (`s3://`, `gs://`, `az://`, `http(s)://`, `file://`,
//! `pvc://<claim>/<path>`) becomes an [`object_store`] store plus a path.
//!
//! `pvc://<claim>/<path>` is a PersistentVolumeClaim mounted into the pod at
//! `$FLYWHEEL_PVC_ROOT/<claim>` (default `/var/lib/flywheel/pvc/<claim>`); the operator mounts
//! claims there, so every component resolves the same URI to the same file.
//!
//! Writes go through [`put_atomic`]: object stores publish a single `put` atomically, and the
//! local file system store writes a temporary file and renames it, so a crash never leaves a
//! half-written object visible.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

pub use object_store;

/// Default mount root of PersistentVolumeClaims inside Flywheel pods.
pub const DEFAULT_PVC_ROOT: &str = "/var/lib/flywheel/pvc";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage URI {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("{uri} does not exist")]
    NotFound { uri: String },
    #[error("storage error for {uri}: {source}")]
    Store { uri: String, source: object_store::Error },
}

impl StorageError {
    /// Errors the user must fix (as opposed to transient ones worth retrying).
    pub fn is_permanent(&self) -> bool {
        matches!(self, StorageError::InvalidUri { .. } | StorageError::NotFound { .. })
    }
}

/// A store and the location of one object (or prefix) in it.
#[derive(Clone, Debug)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    pub uri: String,
}

/// Resolves a URI with credentials from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
pub fn open(uri: &str) -> Result<Location, StorageError> {
    open_with(uri, std::env::vars())
}

/// Resolves a URI with explicit options, e.g. the keys of a credentials Secret. Keys are
/// object_store's configuration names in any case (`AWS_ACCESS_KEY_ID`, `aws_endpoint`, ...);
/// unknown keys are ignored.
pub fn open_with<I, K, V>(uri: &str, options: I) -> Result<Location, StorageError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Into<String>,
{
    let (store, path) = resolve(uri, options)?;
    Ok(Location { store, path, uri: uri.to_string() })
}

/// The store and the path inside it that a URI names; the one place every Flywheel component
/// turns URIs into stores. Also accepts a plain file-system path (made absolute). Options are
/// object_store's configuration keys (`AWS_*`, `GOOGLE_*`, `AZURE_*`, any case); others are
/// ignored.
pub fn resolve<I, K, V>(uri: &str, options: I) -> Result<(Arc<dyn ObjectStore>, Path), StorageError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Into<String>,
{
    let invalid = |reason: String| StorageError::InvalidUri { uri: uri.to_string(), reason };
    let resolved = if uri.contains("://") {
        resolve_pvc(uri, &pvc_root()).map_err(invalid)?
    } else {
        let abs = std::path::absolute(uri).map_err(|e| invalid(e.to_string()))?;
        url::Url::from_file_path(&abs).map_err(|_| invalid("not a usable file-system path".into()))?.to_string()
    };
    let url = url::Url::parse(&resolved).map_err(|e| invalid(e.to_string()))?;
    let options: HashMap<String, String> = options
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.into()))
        .filter(|(k, _)| k.starts_with("aws_") || k.starts_with("google_") || k.starts_with("azure_"))
        .collect();
    let (store, path) = if url.scheme() == "file" {
        // Rooted at "/" so any absolute path works; from_url_path decodes %20 and friends
        // and, unlike from_filesystem_path, accepts paths that do not exist yet (outputs).
        let local = object_store::local::LocalFileSystem::new();
        let path = Path::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
        (Box::new(local) as Box<dyn ObjectStore>, path)
    } else {
        object_store::parse_url_opts(&url, options).map_err(|e| invalid(e.to_string()))?
    };
    Ok((Arc::from(store), path))
}

fn pvc_root() -> String {
    std::env::var("FLYWHEEL_PVC_ROOT").unwrap_or_else(|_| DEFAULT_PVC_ROOT.to_string())
}

/// `pvc://claim/path` → `file://<root>/claim/path`; other URIs unchanged.
fn resolve_pvc(uri: &str, root: &str) -> Result<String, String> {
    let Some(rest) = uri.strip_prefix("pvc://") else {
        return Ok(uri.to_string());
    };
    let claim = rest.split('/').next().unwrap_or_default();
    if claim.is_empty() {
        return Err("pvc:// URIs need a claim name: pvc://<claim>/<path>".into());
    }
    if rest.split('/').any(|segment| segment == "..") {
        return Err("pvc:// paths may not contain '..'".into());
    }
    Ok(format!("file://{}/{}", root.trim_end_matches('/'), rest))
}

impl Location {
    /// A location under this one (`join("model.onnx")`).
    pub fn join(&self, child: &str) -> Location {
        let mut path = self.path.clone();
        for part in child.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        Location {
            store: self.store.clone(),
            path,
            uri: format!("{}/{}", self.uri.trim_end_matches('/'), child.trim_start_matches('/')),
        }
    }

    fn map_err(&self, e: object_store::Error) -> StorageError {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound { uri: self.uri.clone() },
            source => StorageError::Store { uri: self.uri.clone(), source },
        }
    }

    /// Reads the whole object.
    pub async fn read(&self) -> Result<Bytes, StorageError> {
        let got = self.store.get(&self.path).await.map_err(|e| self.map_err(e))?;
        got.bytes().await.map_err(|e| self.map_err(e))
    }

    /// Size in bytes, or NotFound.
    pub async fn size(&self) -> Result<u64, StorageError> {
        let meta = self.store.head(&self.path).await.map_err(|e| self.map_err(e))?;
        Ok(meta.size)
    }

    /// Streams the object through SHA-256; returns (lowercase hex digest, size).
    pub async fn sha256(&self) -> Result<(String, u64), StorageError> {
        let got = self.store.get(&self.path).await.map_err(|e| self.map_err(e))?;
        let mut stream = got.into_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.map_err(e))? {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), size))
    }

    /// Writes the object so that readers see either the old or the whole new content.
    pub async fn put_atomic(&self, data: impl Into<Bytes>) -> Result<(), StorageError> {
        self.store
            .put(&self.path, PutPayload::from_bytes(data.into()))
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(e))
    }

    /// Paths of every object under this prefix, relative to it, sorted.
    pub async fn list_relative(&self) -> Result<Vec<String>, StorageError> {
        let prefix = self.path.clone();
        let objects: Vec<_> =
            self.store.list(Some(&prefix)).try_collect().await.map_err(|e| self.map_err(e))?;
        let mut names: Vec<String> = objects
            .into_iter()
            .filter_map(|meta| {
                let full = meta.location.as_ref().to_string();
                let rel = full.strip_prefix(prefix.as_ref()).unwrap_or(&full).trim_start_matches('/');
                (!rel.is_empty()).then(|| rel.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

/// SHA-256 of bytes in memory, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_and_file_uris_name_the_same_object() {
        let (_, a) = resolve("/tmp/flywheel x/model.onnx", std::iter::empty::<(&str, String)>()).unwrap();
        let (_, b) = resolve("file:///tmp/flywheel%20x/model.onnx", std::iter::empty::<(&str, String)>()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_ref(), "tmp/flywheel x/model.onnx");
    }

    #[test]
    fn unknown_schemes_are_invalid_uris() {
        let e = resolve("ftp://host/x", std::iter::empty::<(&str, String)>()).err().unwrap();
        assert!(matches!(e, StorageError::InvalidUri { .. }), "{e}");
    }

    #[test]
    fn pvc_uris_map_under_the_mount_root() {
        assert_eq!(resolve_pvc("pvc://data/models/m.onnx", "/mnt/pvc/").unwrap(), "file:///mnt/pvc/data/models/m.onnx");
        assert_eq!(resolve_pvc("s3://b/k", "/x").unwrap(), "s3://b/k");
        assert!(resolve_pvc("pvc:///no-claim", "/x").is_err());
        assert!(resolve_pvc("pvc://c/../../etc/passwd", "/x").is_err());
    }

    #[test]
    fn unknown_schemes_are_rejected() {
        let err = open_with("ftp://host/x", Vec::<(String, String)>::new()).unwrap_err();
        assert!(matches!(err, StorageError::InvalidUri { .. }), "{err}");
        assert!(err.is_permanent());
    }

    #[tokio::test]
    async fn file_round_trip_digest_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let root = open(&format!("file://{}", dir.path().display())).unwrap();
        let obj = root.join("a/b.bin");
        assert!(matches!(obj.read().await, Err(StorageError::NotFound { .. })));
        obj.put_atomic(Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(obj.read().await.unwrap().as_ref(), b"hello");
        let (digest, size) = obj.sha256().await.unwrap();
        assert_eq!(digest, sha256_hex(b"hello"));
        assert_eq!(size, 5);
        root.join("c.txt").put_atomic(Bytes::from_static(b"x")).await.unwrap();
        let spaced = open(&format!("file://{}/new%20dir/d.txt", dir.path().display())).unwrap();
        spaced.put_atomic(Bytes::from_static(b"y")).await.unwrap();
        assert!(dir.path().join("new dir/d.txt").exists(), "outputs may go to directories that do not exist yet");
        assert_eq!(root.list_relative().await.unwrap(), vec!["a/b.bin", "c.txt", "new dir/d.txt"]);
    }
}
