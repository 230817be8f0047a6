//! flywheel-demo: the whole flywheel on the local cluster. The `flywheel-demo` binary is the
//! README's demo; the e2e tests in `tests/` drive the same steps and assert every transition.
//!
//! Steps: a real S3 server (SeaweedFS) → the operator from the Helm chart → generated models
//! and datasets → examples/quickstart → traffic → reviews up to the trigger → the retraining
//! Job → the new ModelVersion as shadow → more reviews → the promotion gate makes it champion.

pub mod assets;
pub mod flywheel_loop;
pub mod platform;
pub mod progress;
pub mod quickstart;
pub mod serving;

pub use flywheel_loop::FlywheelLoop;
pub use platform::Platform;
