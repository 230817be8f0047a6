//! flywheel-e2e (work in progress).
