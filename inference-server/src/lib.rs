//! Flywheel inference server: serves a champion (and optionally a shadow) ONNX model over the
//! Open Inference Protocol v2 and a plain image endpoint, logs predictions for review, writes
//! reviewed samples into a feedback dataset and exports monitoring metrics.

/// The serving-config and reference-statistics types, shared with the operator and the trainer
/// through the Kubernetes-free `flywheel-types` crate.
pub use flywheel_types::serving;

pub mod auth;
pub mod backend;
pub mod batcher;
pub mod drift;
pub mod error;
pub mod feedback;
pub mod fetch;
pub mod http;
pub mod metrics;
pub mod models;
pub mod postprocess;
pub mod predictor;
pub mod predlog;
pub mod preprocess;
pub mod record;
pub mod reload;
pub mod review;
#[cfg(feature = "runtime")]
pub mod runtime_backend;
pub mod server;
pub mod shadow;
pub mod state;
pub mod verify;
