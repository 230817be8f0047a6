//! Reconcile errors. Each variant has a metric label; `is_transient` decides between a
//! backoff requeue and waiting for the user to change the spec.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("storage: {0}")]
    Storage(#[from] flywheel_storage::StorageError),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("{kind} {name:?} not found")]
    MissingReference { kind: &'static str, name: String },
    #[error("serialisation: {0}")]
    Serialization(String),
}

impl Error {
    /// Errors only the user can fix: wait for a change of the spec instead of retrying.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::InvalidSpec(_) | Error::MissingReference { .. } => true,
            Error::Storage(e) => e.is_permanent(),
            Error::Kube(_) | Error::Serialization(_) => false,
        }
    }

    /// Label for the `flywheel_operator_reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            // Status writes are guarded by resourceVersion: a 409 means the object changed
            // under the reconcile, which retries; not a fault worth alerting on.
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(_) => "kube",
            Error::Storage(e) if e.is_permanent() => "storage_permanent",
            Error::Storage(_) => "storage",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingReference { .. } => "missing_reference",
            Error::Serialization(_) => "serialization",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
