//! flywheel-inference-server (work in progress).
