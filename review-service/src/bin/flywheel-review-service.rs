//! The review service binary: connects to the database (migrating it), serves the review API
//! and page, and ingests the prediction log and writes reviewed samples every --poll-seconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use flywheel_review_service::http::{Token, router};
use flywheel_review_service::{Service, Store};
use flywheel_storage::{FeedbackWriter, Location};
use flywheel_types::Task;
use flywheel_types::dataset::DatasetFormat;

#[derive(Parser, Debug)]
#[command(name = "flywheel-review-service", about = "Flywheel's review service")]
struct Args {
    /// postgres://user:password@host/db (or sqlite://<file>?mode=rwc); wins over --sqlite-file.
    #[arg(long, env = "FLYWHEEL_REVIEW_DATABASE_URL")]
    database_url: Option<String>,
    /// The SQLite database file (created when missing), used without --database-url.
    #[arg(long, default_value = "/var/lib/flywheel/review/reviews.db")]
    sqlite_file: PathBuf,
    /// The prediction log every inference replica writes.
    #[arg(long)]
    log_uri: String,
    /// The feedback dataset reviewed samples are written into.
    #[arg(long)]
    feedback_uri: String,
    /// coco, yolo or imagefolder (default: the task's usual layout).
    #[arg(long)]
    feedback_format: Option<String>,
    /// The dataset's labels, comma-separated (YOLO class ids index them).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// classification or detection.
    #[arg(long)]
    task: String,
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// File holding the API's bearer token (a mounted Secret key).
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    poll_seconds: u64,
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).with_context(|| format!("invalid {what} {s:?}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let task: Task = parse("--task", &args.task)?;
    let format = match &args.feedback_format {
        Some(f) => parse("--feedback-format", f)?,
        None => DatasetFormat::default_for(task),
    };
    format.check_holds(task).map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = args.database_url.clone().unwrap_or_else(|| format!("sqlite://{}?mode=rwc", args.sqlite_file.display()));
    let store =
        Store::connect(&url).await.with_context(|| format!("connecting to {}", flywheel_storage::redact(&url)))?;
    let log = Location::open(&args.log_uri)?;
    let feedback = FeedbackWriter::new(Location::open(&args.feedback_uri)?, format, args.labels.clone());
    let service = Arc::new(Service::new(store, log, feedback, task, args.labels));
    let every = Duration::from_secs(args.poll_seconds.max(1));
    let (ingester, writer) = (service.clone(), service.clone());
    tokio::spawn(async move { ingester.ingest_loop(every).await });
    tokio::spawn(async move { writer.write_loop(every).await });
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "serving the review API");
    axum::serve(listener, router(service, Token::from_file(args.token_file))).await?;
    Ok(())
}
