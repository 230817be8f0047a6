//! URIs → stores: the one place Flywheel turns `s3://`, `gs://`, `az://`, `http(s)://`,
//! `file://`, `pvc://<claim>/<path>` and plain file-system paths into an [`ObjectStore`] and a
//! path inside it.

use std::collections::HashMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

use crate::{DEFAULT_PVC_ROOT, PVC_ROOT_ENV, StorageError};

/// What a URI resolves to: the store, the path inside it, and the URI to show and to derive
/// child URIs from (plain paths become `file://` URIs, trailing slashes are dropped).
pub(crate) struct Resolved {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    pub uri: String,
}

pub(crate) fn pvc_root() -> String {
    std::env::var(PVC_ROOT_ENV).unwrap_or_else(|_| DEFAULT_PVC_ROOT.to_string())
}

/// Resolves `uri` with `pvc://` claims mounted under `pvc_root`. Options are object_store's
/// configuration keys (`AWS_*`, `GOOGLE_*`, `AZURE_*`, any case); others are ignored.
pub(crate) fn resolve<I, K, V>(uri: &str, options: I, pvc_root: &str) -> Result<Resolved, StorageError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Into<String>,
{
    let invalid = |reason: String| StorageError::InvalidUri { uri: uri.to_string(), reason };
    // Plain paths become file:// URIs (what a DatasetVersion or ModelVersion accepts).
    let canonical = if uri.contains("://") {
        uri.to_string()
    } else {
        let abs = std::path::absolute(uri).map_err(|e| invalid(e.to_string()))?;
        url::Url::from_file_path(&abs).map_err(|_| invalid("not a usable file-system path".into()))?.to_string()
    };
    let resolved = resolve_pvc(&canonical, pvc_root).map_err(invalid)?;
    let url = url::Url::parse(&resolved).map_err(|e| invalid(e.to_string()))?;
    let mut options: HashMap<String, String> = options
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.into()))
        .filter(|(k, _)| k.starts_with("aws_") || k.starts_with("google_") || k.starts_with("azure_"))
        .collect();
    // object_store's client refuses plain http unless told: an http:// URI asks for it.
    if url.scheme() == "http" {
        options.insert("allow_http".into(), "true".into());
    }
    let (store, path) = if url.scheme() == "file" {
        // Rooted at "/" so any absolute path works; from_url_path decodes %20 and friends
        // and, unlike from_filesystem_path, accepts paths that do not exist yet (outputs).
        // fsync: a write is acknowledged only once the file and its directory entry are on
        // stable storage, as an object store's put is; a node crash keeps what was acknowledged.
        let local = object_store::local::LocalFileSystem::new().with_fsync(true);
        let path = Path::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
        (Box::new(local) as Box<dyn ObjectStore>, path)
    } else {
        object_store::parse_url_opts(&url, options).map_err(|e| invalid(e.to_string()))?
    };
    Ok(Resolved { store: Arc::from(store), path, uri: canonical.trim_end_matches('/').to_string() })
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

/// The URI of an object split into the URI of the location holding it and its name
/// (`s3://b/m/model.onnx` → `s3://b/m`, `model.onnx`); plain paths are made absolute first.
pub(crate) fn split_object(uri: &str) -> Result<(String, String), StorageError> {
    let invalid = |uri: &str, reason: String| StorageError::InvalidUri { uri: uri.to_string(), reason };
    let owned;
    let uri = if uri.contains("://") {
        uri
    } else {
        owned = std::path::absolute(uri).map_err(|e| invalid(uri, e.to_string()))?;
        owned.to_str().ok_or_else(|| invalid(uri, "not UTF-8".into()))?
    };
    match uri.trim_end_matches('/').rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() && !parent.ends_with(':') && !parent.ends_with(":/") => {
            Ok((parent.to_string(), name.to_string()))
        }
        _ => Err(invalid(uri, "expected the URI of an object (a file)".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(uri: &str) -> Result<Path, StorageError> {
        resolve(uri, std::iter::empty::<(&str, String)>(), DEFAULT_PVC_ROOT).map(|r| r.path)
    }

    #[test]
    fn plain_paths_and_file_uris_name_the_same_object() {
        let a = path_of("/tmp/flywheel x/model.onnx").unwrap();
        let b = path_of("file:///tmp/flywheel%20x/model.onnx").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_ref(), "tmp/flywheel x/model.onnx");
    }

    #[test]
    fn unknown_schemes_are_invalid_uris() {
        let e = path_of("ftp://host/x").err().unwrap();
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
    fn object_uris_split_into_location_and_name() {
        assert_eq!(split_object("s3://b/m/model.onnx").unwrap(), ("s3://b/m".into(), "model.onnx".into()));
        assert_eq!(split_object("pvc://claim/model.onnx/").unwrap(), ("pvc://claim".into(), "model.onnx".into()));
        assert_eq!(split_object("/tmp/out/model.onnx").unwrap(), ("/tmp/out".into(), "model.onnx".into()));
        assert!(split_object("s3://bucket").is_err());
        assert!(split_object("pvc://claim").is_err());
    }
}
