//! [`Location`]: a directory-like path in a store. Calls take `rel`, a `/`-separated path
//! below the location; `""` names the location itself (an object opened by its own URI).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};

use crate::manifest::{Entries, verify};
use crate::uri::{self, Resolved};
use crate::{Op, StorageError};

#[derive(Clone, Debug)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// The URI it was opened from (canonical: plain paths as `file://`, no trailing slash).
    /// Never holds credentials.
    uri: String,
    /// A frozen view ([`Location::frozen`]): only these objects exist, reads are checked
    /// against their digests and writes are refused.
    frozen: Option<Arc<Entries>>,
}

impl Location {
    /// Opens a URI with credentials and endpoints from the environment (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`).
    pub fn open(uri: &str) -> Result<Self, StorageError> {
        Self::open_with(uri, std::env::vars())
    }

    /// Opens a URI with explicit options, e.g. the keys of a credentials Secret. Keys are
    /// object_store's configuration names in any case (`AWS_ACCESS_KEY_ID`, `aws_endpoint`,
    /// ...); unknown keys are ignored.
    pub fn open_with<I, K, V>(uri: &str, options: I) -> Result<Self, StorageError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        Self::open_in(uri, options, &uri::pvc_root())
    }

    fn open_in<I, K, V>(uri: &str, options: I, pvc_root: &str) -> Result<Self, StorageError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let Resolved { store, path, uri } = uri::resolve(uri, options, pvc_root)?;
        Ok(Self { store, path, uri, frozen: None })
    }

    /// The location holding an object and the object's name, from the object's URI
    /// (credentials from the environment).
    pub fn open_object(uri: &str) -> Result<(Self, String), StorageError> {
        let (parent, name) = uri::split_object(uri)?;
        Ok((Self::open(&parent)?, name))
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The URI of an object below this location.
    pub fn child_uri(&self, rel: &str) -> String {
        match rel.trim_start_matches('/') {
            "" => self.uri.clone(),
            rel => format!("{}/{rel}", self.uri),
        }
    }

    /// A location below this one (a "directory", or one object).
    pub fn join(&self, rel: &str) -> Self {
        let frozen = self.frozen.as_ref().map(|entries| match rel.trim_matches('/') {
            "" => entries.clone(),
            dir => {
                let prefix = format!("{dir}/");
                let below = entries.iter().filter_map(|(p, e)| Some((p.strip_prefix(&prefix)?.to_string(), e.clone())));
                Arc::new(below.collect())
            }
        });
        Self { store: self.store.clone(), path: self.object_path(rel), uri: self.child_uri(rel), frozen }
    }

    /// This location frozen to `entries` (see [`crate::manifest`]).
    pub(crate) fn with_entries(&self, entries: Entries) -> Self {
        Self { frozen: Some(Arc::new(entries)), ..self.clone() }
    }

    /// Whether this is a frozen view ([`Location::frozen`]).
    pub fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// Writes are refused in a frozen view.
    fn writable(&self, rel: &str) -> Result<(), StorageError> {
        match self.frozen {
            Some(_) => Err(StorageError::Frozen {
                uri: self.child_uri(rel),
                reason: "a frozen dataset version is read-only".into(),
            }),
            None => Ok(()),
        }
    }

    fn object_path(&self, rel: &str) -> Path {
        let mut path = self.path.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    fn error(&self, op: Op, rel: &str, e: object_store::Error) -> StorageError {
        let uri = self.child_uri(rel);
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound { uri },
            source => StorageError::Store { op, uri, source },
        }
    }

    /// Reads a whole object; [`StorageError::NotFound`] when it does not exist.
    /// In a frozen view, only its objects exist and each must still have its frozen digest.
    pub async fn get(&self, rel: &str) -> Result<Bytes, StorageError> {
        let entry = match &self.frozen {
            Some(entries) => {
                let key = rel.trim_start_matches('/');
                Some(entries.get(key).ok_or_else(|| StorageError::NotFound { uri: self.child_uri(rel) })?)
            }
            None => None,
        };
        let got = self.store.get(&self.object_path(rel)).await.map_err(|e| self.error(Op::Read, rel, e))?;
        let bytes = got.bytes().await.map_err(|e| self.error(Op::Read, rel, e))?;
        if let Some(entry) = entry {
            verify(self.child_uri(rel), entry, &bytes)?;
        }
        Ok(bytes)
    }

    /// Reads a whole object; `None` when it does not exist.
    pub async fn get_opt(&self, rel: &str) -> Result<Option<Bytes>, StorageError> {
        match self.get(rel).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Size in bytes, or NotFound.
    pub async fn size(&self, rel: &str) -> Result<u64, StorageError> {
        let meta = self.store.head(&self.object_path(rel)).await.map_err(|e| self.error(Op::Read, rel, e))?;
        Ok(meta.size)
    }

    /// Streams an object through SHA-256; returns (lowercase hex digest, size).
    pub async fn sha256(&self, rel: &str) -> Result<(String, u64), StorageError> {
        let read = |e| self.error(Op::Read, rel, e);
        let mut stream = self.store.get(&self.object_path(rel)).await.map_err(read)?.into_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(read)? {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), size))
    }

    /// Writes an object so that readers see either the old or the whole new content.
    pub async fn put(&self, rel: &str, data: impl Into<Bytes>) -> Result<(), StorageError> {
        self.writable(rel)?;
        self.store
            .put(&self.object_path(rel), PutPayload::from_bytes(data.into()))
            .await
            .map(|_| ())
            .map_err(|e| self.error(Op::Write, rel, e))
    }

    /// Writes `value` as pretty-printed JSON (with a final newline), atomically.
    pub async fn put_json<T: serde::Serialize>(&self, rel: &str, value: &T) -> Result<(), StorageError> {
        let mut bytes = serde_json::to_vec_pretty(value)
            .map_err(|source| StorageError::Json { uri: self.child_uri(rel), source })?;
        bytes.push(b'\n');
        self.put(rel, bytes).await
    }

    /// Atomic create; `Ok(false)` when the object already exists. Stores without conditional
    /// writes fall back to check-then-put (callers serialise writers of one key in-process).
    pub async fn put_if_absent(&self, rel: &str, data: impl Into<Bytes>) -> Result<bool, StorageError> {
        self.writable(rel)?;
        let (path, data) = (self.object_path(rel), data.into());
        let write = |e| self.error(Op::Write, rel, e);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&path, data.clone().into(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) | Err(object_store::Error::NotSupported { .. }) => {
                match self.store.head(&path).await {
                    Ok(_) => Ok(false),
                    Err(object_store::Error::NotFound { .. }) => {
                        self.store.put(&path, data.into()).await.map_err(write)?;
                        Ok(true)
                    }
                    Err(e) => Err(self.error(Op::Read, rel, e)),
                }
            }
            Err(e) => Err(write(e)),
        }
    }

    /// Every object below `rel` with its content, sorted by path; an object deleted between the
    /// listing and its read is left out.
    pub async fn get_all(&self, rel: &str) -> Result<Vec<(String, Bytes)>, StorageError> {
        let mut out = Vec::new();
        for (path, _) in self.list(rel).await? {
            match self.get(&path).await {
                Ok(bytes) => out.push((path, bytes)),
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Every object below `rel`: its path relative to this location (what [`get`](Self::get)
    /// takes) and when it was last modified, sorted by path. A missing directory is empty.
    pub async fn list(&self, rel: &str) -> Result<Vec<(String, DateTime<Utc>)>, StorageError> {
        if let Some(entries) = &self.frozen {
            let dir = rel.trim_matches('/');
            let below = |p: &str| dir.is_empty() || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
            return Ok(entries.iter().filter(|(p, _)| below(p)).map(|(p, e)| (p.clone(), e.modified)).collect());
        }
        let metas: Vec<_> = match self.store.list(Some(&self.object_path(rel))).try_collect().await {
            Ok(metas) => metas,
            // Some stores report a missing local directory as NotFound rather than empty.
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(self.error(Op::List, rel, e)),
        };
        let prefix = self.path.as_ref();
        let mut out: Vec<(String, DateTime<Utc>)> = metas
            .into_iter()
            .filter_map(|meta| {
                let full = meta.location.as_ref();
                let rel = full.strip_prefix(prefix).unwrap_or(full).trim_start_matches('/');
                (!rel.is_empty()).then(|| (rel.to_string(), meta.last_modified))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Deletes an object.
    pub async fn delete(&self, rel: &str) -> Result<(), StorageError> {
        self.writable(rel)?;
        self.store.delete(&self.object_path(rel)).await.map_err(|e| self.error(Op::Delete, rel, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sha256_hex;

    fn tempdir_location() -> (tempfile::TempDir, Location) {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::open(&format!("file://{}", dir.path().display())).unwrap();
        (dir, root)
    }

    #[test]
    fn pvc_uris_map_below_the_pvc_root() {
        let none = std::iter::empty::<(&str, String)>;
        let loc = Location::open_in("pvc://data/sets/a", none(), "/mnt/pvcs").unwrap();
        assert_eq!(loc.path.as_ref(), "mnt/pvcs/data/sets/a");
        assert_eq!(loc.child_uri("x.json"), "pvc://data/sets/a/x.json");
        assert!(Location::open_in("pvc:///x", none(), "/mnt/pvcs").is_err());
        assert!(Location::open_in("pvc://data/../../etc", none(), "/mnt/pvcs").is_err());
    }

    #[test]
    fn plain_paths_become_file_uris() {
        let loc = Location::open("/tmp/not-created-yet").unwrap();
        assert_eq!(loc.uri(), "file:///tmp/not-created-yet");
        assert_eq!(Location::open("s3://bucket/prefix/").unwrap().child_uri("a/b"), "s3://bucket/prefix/a/b");
        assert_eq!(loc.child_uri(""), loc.uri());
    }

    #[test]
    fn unknown_schemes_are_rejected() {
        let err = Location::open_with("ftp://host/x", Vec::<(String, String)>::new()).unwrap_err();
        assert!(matches!(err, StorageError::InvalidUri { .. }), "{err}");
        assert!(err.is_permanent());
    }

    #[test]
    fn objects_open_as_their_parent_and_name() {
        let (parent, name) = Location::open_object("/tmp/out/model.onnx").unwrap();
        assert_eq!((parent.uri(), name.as_str()), ("file:///tmp/out", "model.onnx"));
        assert!(matches!(Location::open_object("s3://bucket"), Err(StorageError::InvalidUri { .. })));
    }

    #[tokio::test]
    async fn file_round_trip_digest_and_listing() {
        let (dir, root) = tempdir_location();
        let obj = root.join("a/b.bin");
        assert!(matches!(obj.get("").await, Err(StorageError::NotFound { .. })));
        obj.put("", Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(root.get("a/b.bin").await.unwrap().as_ref(), b"hello");
        let (digest, size) = root.sha256("a/b.bin").await.unwrap();
        assert_eq!(digest, sha256_hex(b"hello"));
        assert_eq!(size, 5);
        assert_eq!(obj.size("").await.unwrap(), 5);
        root.put("c.txt", Bytes::from_static(b"x")).await.unwrap();
        let spaced = Location::open(&format!("file://{}/new%20dir/d.txt", dir.path().display())).unwrap();
        spaced.put("", b"y".to_vec()).await.unwrap();
        assert!(dir.path().join("new dir/d.txt").exists(), "outputs may go to directories that do not exist yet");
        let names: Vec<String> = root.list("").await.unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(names, vec!["a/b.bin", "c.txt", "new dir/d.txt"]);
        let below_a: Vec<String> = root.list("a").await.unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(below_a, vec!["a/b.bin"], "paths stay relative to the location, not to the listed directory");
    }

    #[tokio::test]
    async fn get_opt_is_none_for_missing_objects() {
        let (_dir, root) = tempdir_location();
        assert!(root.get_opt("missing.json").await.unwrap().is_none());
        root.put_json("there.json", &serde_json::json!({"a": 1})).await.unwrap();
        assert_eq!(root.get_opt("there.json").await.unwrap().unwrap().as_ref(), b"{\n  \"a\": 1\n}\n");
        let err = root.get("missing.json").await.unwrap_err();
        assert_eq!(err.to_string(), format!("{}/missing.json does not exist", root.uri()));
    }

    #[tokio::test]
    async fn put_if_absent_creates_once() {
        let (_dir, root) = tempdir_location();
        assert!(root.put_if_absent("reviews/x.json", b"first".to_vec()).await.unwrap());
        assert!(!root.put_if_absent("reviews/x.json", b"second".to_vec()).await.unwrap());
        assert_eq!(root.get("reviews/x.json").await.unwrap().as_ref(), b"first");
    }

    #[tokio::test]
    async fn listing_a_missing_directory_is_empty() {
        let (dir, root) = tempdir_location();
        assert!(root.list("no/such/dir").await.unwrap().is_empty());
        let gone = Location::open(&format!("file://{}/not-created", dir.path().display())).unwrap();
        assert!(gone.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn listing_has_modification_times_and_delete_removes() {
        let (_dir, root) = tempdir_location();
        let before = Utc::now() - chrono::Duration::seconds(5);
        root.put("images/2024-01-01/a.png", b"a".to_vec()).await.unwrap();
        root.put("records/r.jsonl", b"{}".to_vec()).await.unwrap();
        let listed = root.list("").await.unwrap();
        assert_eq!(
            listed.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["images/2024-01-01/a.png", "records/r.jsonl"]
        );
        assert!(listed.iter().all(|(_, t)| *t >= before && *t <= Utc::now()), "{listed:?}");
        root.delete("images/2024-01-01/a.png").await.unwrap();
        assert!(root.get_opt("images/2024-01-01/a.png").await.unwrap().is_none());
        let left: Vec<String> = root.list("").await.unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(left, vec!["records/r.jsonl"]);
        let all = root.get_all("records").await.unwrap();
        assert_eq!(all, vec![("records/r.jsonl".to_string(), Bytes::from_static(b"{}"))]);
        assert!(root.get_all("missing").await.unwrap().is_empty());
    }
}
