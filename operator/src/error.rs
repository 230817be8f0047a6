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
    /// A Secret without the label that allows Flywheel to use it (docs/security.md).
    #[error(
        "Secret {name:?} is not labelled flywheel.dev/credentials=true; label it to allow Flywheel to use it \
         (kubectl label secret {name} flywheel.dev/credentials=true)"
    )]
    SecretNotAllowed { name: String },
    /// Two credentials Secrets one pod would need (their variables have the same names).
    #[error("{0}")]
    ConflictingCredentials(String),
    #[error("serialisation: {0}")]
    Serialization(String),
}

impl Error {
    /// Errors only the user can fix: wait for a change of the spec instead of retrying.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::InvalidSpec(_)
            | Error::MissingReference { .. }
            | Error::SecretNotAllowed { .. }
            | Error::ConflictingCredentials(_) => true,
            Error::Storage(e) => e.is_permanent(),
            Error::Kube(_) | Error::Serialization(_) => false,
        }
    }

    /// The condition reason of an error only the user can fix.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::SecretNotAllowed { .. } => crate::controllers::trust::CREDENTIALS_NOT_ALLOWED,
            Error::ConflictingCredentials(_) => crate::controllers::trust::CONFLICTING_CREDENTIALS,
            _ => "InvalidSpec",
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
            Error::SecretNotAllowed { .. } => "secret_not_allowed",
            Error::ConflictingCredentials(_) => "conflicting_credentials",
            Error::Serialization(_) => "serialization",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
