//! # flywheel-trainer
//!
//! The binary Flywheel's Kubernetes Jobs run, as a library: `profile` computes the reference
//! statistics of a DatasetVersion for drift and outlier monitoring, `train` fine-tunes an ONNX
//! model with candle autograd (through `flywheel-runtime`'s training mode) and writes the new
//! model, its metrics and a `result.json` commit marker, and `generate` writes synthetic datasets
//! and small models for tests and the demo. See `docs/trainer.md`.

pub mod cli;
pub mod dataset;
pub mod efficacy;
pub mod error;
pub mod generate;
pub mod heads;
pub mod model;
pub mod profile;
pub mod train;

pub use error::{Result, TrainerError};
