//! Flywheel's shared vocabulary, free of Kubernetes: the types every component reads and writes
//! (the operator, the inference server, the trainer, the tests). `flywheel-api` wraps them in the
//! custom resources; the server and the trainer use them without linking kube.
