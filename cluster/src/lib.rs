//! flywheel-cluster (work in progress).
