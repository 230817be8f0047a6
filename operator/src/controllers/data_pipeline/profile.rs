//! Profiling: one Job per generation of the training dataset computes the reference
//! statistics that drift and outlier metrics compare with.

use flywheel_api::DataPipeline;
use flywheel_api::data_pipeline::conditions;
use flywheel_api::training::REFERENCE_STATISTICS_FILE;
use k8s_openapi::api::batch::v1::Job;
use kube::{Api, ResourceExt};

use super::build;
use super::read::{Refs, check_job_secrets, job_settings};
use super::runs::create_job;
use crate::Result;
use crate::context::Context;
use crate::controllers::recorder::StatusRecorder;

/// Starts or follows the profiling Job. Returns the reference statistics' URI once it succeeded.
/// A Job whose credentials cannot be given is not created (a user error, for `Ready`).
pub async fn profile(
    ctx: &Context,
    p: &DataPipeline,
    refs: &Refs,
    output_base: Option<&str>,
    rec: &mut StatusRecorder<'_>,
) -> Result<Option<String>> {
    let (Some(training), Some(base)) = (&refs.training, output_base) else { return Ok(None) };
    let output = build::output_uri(base, p, "profile");
    let settings = job_settings(ctx, p, refs, &[training], None)?;
    let job = build::profile_job(p, training, &output, &settings)?;
    let ns = p.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = jobs.get_opt(&job.name_any()).await?;
    if existing.is_none() {
        check_job_secrets(ctx, p, &settings).await?;
    }
    Ok(match existing.and_then(|j| j.status) {
        None => {
            if create_job(ctx, &ns, &job).await? {
                rec.notice(
                    false,
                    "ProfilingStarted",
                    format!("Job {} profiles {}", job.name_any(), training.name_any()),
                );
            }
            rec.fail(conditions::PROFILING_COMPLETE, "Running", format!("Job {} is profiling", job.name_any()));
            None
        }
        Some(s) if s.succeeded.unwrap_or(0) > 0 => {
            let statistics = format!("{output}{REFERENCE_STATISTICS_FILE}");
            rec.ok(
                conditions::PROFILING_COMPLETE,
                "Profiled",
                "reference statistics ready: drift and outlier metrics available",
            )
            .announce_with("ProfilingComplete", format!("reference statistics at {statistics}"));
            Some(statistics)
        }
        Some(s) if s.conditions.iter().flatten().any(|c| c.type_ == "Failed" && c.status == "True") => {
            let message = format!("profiling Job {} failed; see its logs", job.name_any());
            rec.fail(conditions::PROFILING_COMPLETE, "ProfilingFailed", message).announce();
            None
        }
        Some(_) => None,
    })
}
