//! The Flywheel operator: one controller per custom resource, a shared context, metrics,
//! leader election and the CRD generator.

pub mod context;
pub mod controllers;
pub mod crdgen;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;

pub use error::{Error, Result};
