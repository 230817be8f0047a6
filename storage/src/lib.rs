//! Flywheel's storage layer: a URI (`s3://`, `gs://`, `az://`, `http(s)://`, `file://`,
//! `pvc://<claim>/<path>` or a plain file-system path) becomes a [`Location`]: an
//! [`object_store`] store plus a directory-like path in it, with the calls the operator, the
//! inference server and the trainer make (read, atomic and create-only writes, listings with
//! modification times, deletes, digests).
//!
//! Credentials and endpoints come from the usual `AWS_*`, `GOOGLE_*` and `AZURE_*` variables
//! ([`Location::open`]) or from explicit options such as the keys of a credentials Secret
//! ([`Location::open_with`]); e.g. `AWS_ENDPOINT=http://127.0.0.1:8333` and
//! `AWS_ALLOW_HTTP=true` for SeaweedFS. `http(s)://` is read-only for most servers.
//!
//! `pvc://<claim>/<path>` is a PersistentVolumeClaim mounted into the pod at
//! `$FLYWHEEL_PVC_ROOT/<claim>` (default `/var/lib/flywheel/pvc/<claim>`); the operator mounts
//! claims there, so every component resolves the same URI to the same file.
//!
//! Every write is a single `put`: object stores publish it atomically, and the local file
//! system store writes a temporary file, fsyncs it, renames it and fsyncs the directory, so a
//! crash never leaves a half-written object visible and a node crash keeps every acknowledged
//! write.

pub mod feedback;
mod location;
pub mod manifest;
mod redact;
mod uri;

use sha2::{Digest, Sha256};

pub use feedback::{FeedbackError, FeedbackWriter, Sample};
pub use location::Location;
pub use object_store;
pub use redact::{redact, redact_text};

/// Default mount root of PersistentVolumeClaims inside Flywheel pods.
pub const DEFAULT_PVC_ROOT: &str = "/var/lib/flywheel/pvc";

/// Environment variable overriding [`DEFAULT_PVC_ROOT`] (where `pvc://` claims are mounted).
pub const PVC_ROOT_ENV: &str = "FLYWHEEL_PVC_ROOT";

/// What a failed store call was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    List,
    Write,
    Delete,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::List => "list",
            Op::Write => "write",
            Op::Delete => "delete",
        })
    }
}

/// Errors name the URI of the object (not the store-internal path). Their messages are shown in
/// statuses, conditions and logs, so credentials in a URI (`user:password@`, a presigned query
/// string) never appear in them: see [`redact`].
#[derive(Debug, thiserror::Error)]
#[error("{}", redact_text(&self.message()))]
pub enum StorageError {
    InvalidUri {
        uri: String,
        reason: String,
    },
    NotFound {
        uri: String,
    },
    Store {
        op: Op,
        uri: String,
        #[source]
        source: object_store::Error,
    },
    Json {
        uri: String,
        #[source]
        source: serde_json::Error,
    },
    /// A frozen dataset version's object that changed, or a write into a frozen version.
    Frozen {
        uri: String,
        reason: String,
    },
}

impl StorageError {
    fn message(&self) -> String {
        match self {
            StorageError::InvalidUri { uri, reason } => format!("invalid storage URI {uri:?}: {reason}"),
            StorageError::NotFound { uri } => format!("{uri} does not exist"),
            StorageError::Store { op, uri, source } => format!("cannot {op} {uri}: {source}"),
            StorageError::Json { uri, source } => format!("cannot write {uri}: {source}"),
            StorageError::Frozen { uri, reason } => format!("{uri}: {reason}"),
        }
    }

    /// Errors the user must fix (as opposed to transient ones worth retrying).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StorageError::InvalidUri { .. }
                | StorageError::NotFound { .. }
                | StorageError::Json { .. }
                | StorageError::Frozen { .. }
        )
    }
}

/// SHA-256 of bytes in memory, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
