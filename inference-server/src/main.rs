//! `flywheel-inference-server`: serves the models described by a serving config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Flywheel inference server (OIP v2, /v1/predict, review, metrics)")]
struct Args {
    /// Serving config (YAML or JSON), usually mounted from the Deployment's ConfigMap.
    #[arg(long, env = "FLYWHEEL_SERVING_CONFIG", default_value = "/etc/flywheel/serving.yaml")]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "FLYWHEEL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Local model cache (keyed by sha256).
    #[arg(long, env = "FLYWHEEL_MODEL_CACHE", default_value = "/var/cache/flywheel/models")]
    cache_dir: PathBuf,
    /// Bearer-token file for the review API (overrides the config's auth.tokenFile).
    #[arg(long, env = "FLYWHEEL_REVIEW_TOKEN_FILE")]
    review_token_file: Option<PathBuf>,
    /// How often the config file is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// Longest a shutdown (SIGTERM) waits for requests in flight, the shadow and the prediction
    /// log; keep it under the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "FLYWHEEL_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    shutdown_grace_seconds: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Verify one model against its contract (what the operator's verification Job runs): load
    /// it, check the input and output spec, run a probe image, and print one
    /// `FLYWHEEL_VERIFICATION {json}` line. Exits 0 when the result is known, pass or fail.
    Verify {
        /// The model as the serving config describes it (JSON), e.g. from the Job's environment.
        #[arg(long, env = "FLYWHEEL_VERIFY_MODEL")]
        model: String,
        /// Also write the result (JSON, at most 4 KiB) to this file: the Job's
        /// terminationMessagePath, where the operator reads it.
        #[arg(long, env = "FLYWHEEL_VERIFY_REPORT")]
        report: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    if let Some(Command::Verify { model, report }) = &args.command {
        let spec: flywheel_inference_server::serving::ServedModel = serde_json::from_str(model)
            .map_err(|e| anyhow::anyhow!("--model is not a served model description: {e}"))?;
        let v = flywheel_inference_server::verify::verify(&spec, &args.cache_dir, &default_factory()?).await;
        match &v.message {
            None => tracing::info!(ops = v.ops.len(), parameters = v.parameters, "the model passed verification"),
            Some(m) => tracing::warn!(reason = %m, "the model failed verification"),
        }
        println!("{}", v.report_line());
        if let Some(path) = report {
            std::fs::write(path, v.to_json_within(4096))
                .map_err(|e| anyhow::anyhow!("writing the report to {}: {e}", path.display()))?;
        }
        return Ok(());
    }
    let running = flywheel_inference_server::server::start(
        flywheel_inference_server::server::Options {
            config: args.config,
            listen: args.listen,
            cache_dir: args.cache_dir,
            poll: Duration::from_millis(args.poll_ms.max(10)),
            token_file: args.review_token_file,
            retry: Duration::from_secs(10),
        },
        default_factory()?,
    )
    .await?;
    println!("listening on {}", running.addr);
    // Ctrl-C, or SIGTERM from the kubelet when the pod is deleted.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing requests in flight and writing the prediction log");
    if running.shutdown(Duration::from_secs(args.shutdown_grace_seconds)).await {
        tracing::info!("shut down cleanly");
    } else {
        tracing::warn!(
            seconds = args.shutdown_grace_seconds,
            "shutdown grace period over; exiting with work unfinished"
        );
    }
    Ok(())
}

#[cfg(feature = "runtime")]
fn default_factory() -> anyhow::Result<flywheel_inference_server::models::BackendFactory> {
    Ok(flywheel_inference_server::runtime_backend::factory())
}

#[cfg(not(feature = "runtime"))]
fn default_factory() -> anyhow::Result<flywheel_inference_server::models::BackendFactory> {
    anyhow::bail!("built without the `runtime` feature: no model backend available")
}
