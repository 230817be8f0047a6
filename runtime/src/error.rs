//! Error types of the public API. Load errors name the node, the op and the reason so a user can
//! tell exactly why a model was rejected.

/// Why a model could not be loaded (parsed, normalised or planned).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid ONNX protobuf: {0}")]
    Decode(String),
    #[error("node '{node}' ({op}): {reason}")]
    Node { node: String, op: String, reason: String },
    #[error("unsupported: node '{node}' uses op '{op}' (domain '{domain}') which this runtime does not implement")]
    UnsupportedOp { node: String, op: String, domain: String },
    #[error("initializer or constant '{name}': {reason}")]
    Tensor { name: String, reason: String },
    #[error("graph: {0}")]
    Graph(String),
}

/// Why a run failed (bad inputs or an execution error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("missing input '{0}'")]
    MissingInput(String),
    #[error("unknown input '{0}'")]
    UnknownInput(String),
    #[error("input '{name}': {reason}")]
    BadInput { name: String, reason: String },
    #[error("node '{node}' ({op}): {reason}")]
    Node { node: String, op: String, reason: String },
    #[error("{0}")]
    Other(String),
}

/// Why a trained graph could not be written back to ONNX.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("parameter '{name}': {reason}")]
    Param { name: String, reason: String },
}

pub(crate) fn node_err(node: &str, op: &str, reason: impl std::fmt::Display) -> LoadError {
    LoadError::Node { node: node.to_string(), op: op.to_string(), reason: reason.to_string() }
}
