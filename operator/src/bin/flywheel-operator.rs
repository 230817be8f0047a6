//! The Flywheel operator binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use flywheel_operator::context::{Context, Settings};
use flywheel_operator::http::{self, HttpState};
use flywheel_operator::leader::LeaderElector;
use flywheel_operator::metrics::Metrics;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(version, about = "Reconciles Flywheel's ModelVersions, DatasetVersions, Deployments and DataPipelines")]
struct Args {
    /// Address of /metrics, /healthz and /readyz. `$(POD_IP)` style values are expanded by Kubernetes.
    #[arg(long, env = "FLYWHEEL_OPERATOR_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Image of the inference server pods.
    #[arg(long, env = "FLYWHEEL_SERVER_IMAGE")]
    server_image: Option<String>,
    /// Image of profiling and training Jobs.
    #[arg(long, env = "FLYWHEEL_TRAINER_IMAGE")]
    trainer_image: Option<String>,
    /// Image of each DataPipeline's review service.
    #[arg(long, env = "FLYWHEEL_REVIEW_SERVICE_IMAGE")]
    review_service_image: Option<String>,
    /// Where DataPipelines without spec.outputUri write profiles and models.
    #[arg(long, env = "FLYWHEEL_DEFAULT_OUTPUT_URI")]
    default_output_uri: Option<String>,
    /// Read `file://` URIs of ModelVersions, DatasetVersions and DataPipelines from this
    /// process's own file system (development and tests; off by default, see docs/security.md).
    #[arg(long, env = "FLYWHEEL_ALLOW_LOCAL_FILES")]
    allow_local_files: bool,
    /// Make ModelVersions Ready once their digest is checked, without the verification Job
    /// that loads the model and runs a probe through it (for clusters that cannot run the
    /// server image; a model that cannot serve is then only found by the inference pods).
    #[arg(long, env = "FLYWHEEL_SKIP_MODEL_VERIFICATION")]
    skip_model_verification: bool,
    /// Watch only this namespace instead of the whole cluster.
    #[arg(long, env = "FLYWHEEL_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_namespace: String,
    /// Disable leader election (a single replica, e.g. for development).
    #[arg(long)]
    no_leader_election: bool,
    /// Log as JSON lines.
    #[arg(long, env = "FLYWHEEL_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    if args.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    let client = kube::Client::try_default().await?;
    let mut settings = Settings::default();
    settings.server_image = args.server_image.unwrap_or(settings.server_image);
    settings.trainer_image = args.trainer_image.unwrap_or(settings.trainer_image);
    settings.review_service_image = args.review_service_image.unwrap_or(settings.review_service_image);
    settings.default_output_uri = args.default_output_uri;
    settings.namespace = args.watch_namespace;
    settings.allow_local_files = args.allow_local_files;
    settings.verify_models = !args.skip_model_verification;
    if settings.allow_local_files {
        tracing::warn!("--allow-local-files: user objects may name files on this operator's file system");
    }
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let http =
        tokio::spawn(http::serve(args.listen, HttpState { metrics: metrics.clone(), ready: ready.clone() }, stopped()));

    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("flywheel-operator-{}", std::process::id()));
    let elector = (!args.no_leader_election)
        .then(|| LeaderElector::new(client.clone(), &args.leader_namespace, "flywheel-operator", identity.clone()));
    if let Some(elector) = &elector {
        tracing::info!(%identity, "waiting for leadership");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = stopped() => return Ok(()),
        }
        tracing::info!(%identity, "leading");
    }
    ready.store(true, Ordering::Relaxed);

    let ctx = Context::new(client, metrics, settings);
    let controllers = flywheel_operator::controllers::run(ctx, stopped());
    match &elector {
        Some(elector) => {
            tokio::select! {
                _ = controllers => {}
                _ = elector.keep_renewing() => {
                    tracing::error!("lost leadership; exiting so a new leader can take over");
                    std::process::exit(1);
                }
            }
            elector.release().await;
        }
        None => controllers.await,
    }
    let _ = http.await;
    Ok(())
}
