//! Samples → model inputs and targets (in input pixels), all at once: for benchmarks and tools
//! that hold a small dataset in memory (training streams its data, see [`super::stream`]).

use flywheel_api::model_version::ModelVersionSpec;

use super::objective::Prepared;
use super::stream::Loader;
use crate::dataset::SampleRef;
use crate::error::Result;

pub async fn prepare(refs: &[SampleRef], spec: &ModelVersionSpec) -> Result<Prepared> {
    Loader::new(spec, None).load(refs.to_vec(), 0).await
}
