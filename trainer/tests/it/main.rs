//! The trainer's integration tests, in one binary (one link instead of one per file).

mod common;

mod domains;
mod errors;
mod finetune;
mod heads;
mod killed;
mod memory;
mod onnxruntime;
mod profile;
mod pvc;
mod recovery;
mod refusal;
mod s3;
