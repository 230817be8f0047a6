//! Errors of the trainer. Every variant names what the user has to fix (the file, the field).

use flywheel_storage::{Op, StorageError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainerError {
    #[error("invalid request: {0}")]
    Request(String),
    #[error("invalid storage URI {uri:?}: {reason}")]
    Uri { uri: String, reason: String },
    #[error("cannot read {uri}: {reason}")]
    Read { uri: String, reason: String },
    #[error("cannot write {uri}: {reason}")]
    Write { uri: String, reason: String },
    #[error("dataset error in {file}: {reason}")]
    Dataset { file: String, reason: String },
    #[error("model {uri}: {reason}")]
    Model { uri: String, reason: String },
    #[error("training failed: {0}")]
    Training(String),
    #[error(
        "refusing to write the trained model: eval {metric} is {new} against {base} for the base model \
         (allowed regression {tolerance})"
    )]
    Regression { metric: String, base: f64, new: f64, tolerance: f64 },
}

impl TrainerError {
    pub fn dataset(file: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Dataset { file: file.into(), reason: reason.to_string() }
    }
}

/// Storage failures keep naming the object and whether it was being read or written.
impl From<StorageError> for TrainerError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::InvalidUri { uri, reason } => Self::Uri { uri, reason },
            StorageError::NotFound { uri } => Self::Read { uri, reason: "not found".into() },
            StorageError::Store { op: Op::Read | Op::List, uri, source } => {
                Self::Read { uri, reason: source.to_string() }
            }
            StorageError::Store { op: Op::Write | Op::Delete, uri, source } => {
                Self::Write { uri, reason: source.to_string() }
            }
            StorageError::Json { uri, source } => Self::Write { uri, reason: source.to_string() },
            // A frozen version's object that changed: the dataset is not the one trained on before.
            StorageError::Frozen { uri, reason } => Self::Dataset { file: uri, reason },
        }
    }
}

impl From<candle_core::Error> for TrainerError {
    fn from(e: candle_core::Error) -> Self {
        Self::Training(e.to_string())
    }
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;
