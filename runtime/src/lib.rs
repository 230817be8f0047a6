//! flywheel-runtime (work in progress).
