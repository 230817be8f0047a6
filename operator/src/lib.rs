//! The Flywheel operator.

pub mod crdgen;
