//! Command line: `profile` and `train` read their request from `FLYWHEEL_REQUEST` (what the
//! operator's Jobs set) or from `--request FILE`; `generate` writes synthetic datasets and models.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use flywheel_api::common::Task;
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::training::{NamedModel, ProfileRequest, REQUEST_ENV, TrainRequest};
use flywheel_storage::Location;
use serde::Deserialize;

use crate::error::{Result, TrainerError};
use crate::generate::{self, DatasetOptions, Domain};
use crate::model::sha256_hex;

#[derive(Parser)]
#[command(
    name = "flywheel-trainer",
    version,
    about = "Profile datasets, fine-tune ONNX models, generate synthetic data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compute reference statistics (drift/outlier baseline) of a dataset.
    Profile(RequestArgs),
    /// Fine-tune a model and write model.onnx, metrics.json, progress.json and result.json.
    Train(RequestArgs),
    /// Write synthetic datasets and models (tests, demo).
    #[command(subcommand)]
    Generate(GenerateCommand),
}

#[derive(clap::Args)]
struct RequestArgs {
    /// JSON request file; defaults to the FLYWHEEL_REQUEST environment variable.
    #[arg(long)]
    request: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum GenerateCommand {
    /// Synthetic shapes (circle, square, triangle, ...) on noisy backgrounds.
    Dataset {
        #[arg(long, value_enum)]
        task: TaskArg,
        /// coco or yolo (detection), imagefolder (classification).
        #[arg(long, value_enum)]
        format: FormatArg,
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Image width and height in pixels.
        #[arg(long, default_value_t = 64)]
        size: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Class names, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = default_labels())]
        labels: Vec<String>,
        /// Most shapes per detection image.
        #[arg(long, default_value_t = 3)]
        max_objects: usize,
        /// `source` (what the generator always drew) or a shifted target domain of the same
        /// classes, as comma-separated shifts: dark, warm, cool, texture, small, large, blur,
        /// noise, recolor[:LABEL]. The same seed draws the same scenes in every domain (except
        /// the boxes under small/large).
        #[arg(long, default_value = "source")]
        domain: String,
        /// Strength of the shifts, from 0 (none: the source images) to 1 (full).
        #[arg(long, default_value_t = 1.0)]
        severity: f64,
        /// Directory URI (file://, s3://, pvc://, a path, ...).
        #[arg(long)]
        out: String,
    },
    /// A small untrained ONNX classifier or YOLO-style detector; prints its ModelVersion spec.
    Model {
        #[arg(long, value_enum)]
        task: TaskArg,
        #[arg(long, default_value_t = 64)]
        size: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_delimiter = ',', default_values_t = default_labels())]
        labels: Vec<String>,
        /// URI of the .onnx file to write.
        #[arg(long)]
        out: String,
    },
}

fn default_labels() -> Vec<String> {
    generate::DEFAULT_LABELS.iter().map(|s| s.to_string()).collect()
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    Classification,
    Detection,
}

impl From<TaskArg> for Task {
    fn from(t: TaskArg) -> Task {
        match t {
            TaskArg::Classification => Task::Classification,
            TaskArg::Detection => Task::Detection,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Coco,
    Yolo,
    Imagefolder,
}

impl From<FormatArg> for DatasetFormat {
    fn from(f: FormatArg) -> DatasetFormat {
        match f {
            FormatArg::Coco => DatasetFormat::Coco,
            FormatArg::Yolo => DatasetFormat::Yolo,
            FormatArg::Imagefolder => DatasetFormat::Imagefolder,
        }
    }
}

/// Optional fields a profile request may carry beyond `ProfileRequest`: with a model, the
/// `confidence` feature is profiled too.
#[derive(Deserialize)]
struct ProfileExtras {
    #[serde(default)]
    model: Option<NamedModel>,
}

fn read_request(args: &RequestArgs) -> Result<String> {
    match &args.request {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| TrainerError::Read { uri: path.display().to_string(), reason: e.to_string() }),
        None => std::env::var(REQUEST_ENV).map_err(|_| {
            TrainerError::Request(format!("no request: set {REQUEST_ENV} to the request JSON or pass --request FILE"))
        }),
    }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| TrainerError::Request(format!("request JSON: {e}")))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Profile(args) => {
            let text = read_request(&args)?;
            let req: ProfileRequest = parse(&text)?;
            let extras: ProfileExtras = parse(&text)?;
            crate::profile::run(&req, extras.model.as_ref()).await?;
        }
        Command::Train(args) => {
            let text = read_request(&args)?;
            let req: TrainRequest = parse(&text)?;
            let extras: crate::train::RequestExtras = parse(&text)?;
            let result = crate::train::run_with(&req, &extras.trainer_options).await?;
            println!("{}", serde_json::to_string_pretty(&result).expect("serialisable"));
        }
        Command::Generate(GenerateCommand::Dataset {
            task,
            format,
            count,
            size,
            seed,
            labels,
            max_objects,
            domain,
            severity,
            out,
        }) => {
            let domain = Domain::parse(&domain, severity).map_err(TrainerError::Request)?;
            let location = Location::open(&out)?;
            let (task, format) = (task.into(), format.into());
            let opts = DatasetOptions { task, format, count, size, labels, seed, max_objects, domain };
            let spec = generate::write_dataset(&location, &opts).await?;
            println!("{}", serde_json::to_string_pretty(&spec).expect("serialisable"));
        }
        Command::Generate(GenerateCommand::Model { task, size, seed, labels, out }) => {
            let task: Task = task.into();
            let bytes = match task {
                Task::Classification => generate::classifier(labels.len(), size, seed),
                Task::Detection => generate::detector(labels.len(), size, seed),
            }
            .map_err(TrainerError::Request)?;
            let (parent, name) = Location::open_object(&out)?;
            parent.put(&name, bytes.clone()).await?;
            let spec = generate::model_spec(task, &labels, size, &parent.child_uri(&name), &sha256_hex(&bytes));
            println!("{}", serde_json::to_string_pretty(&spec).expect("serialisable"));
        }
    }
    Ok(())
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
