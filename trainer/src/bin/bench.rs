//! Training throughput of the generated detector: images per second at batch 8 (median of
//! several rounds), training the head and all layers, next to inference (forward only) on the
//! same batches for scale. Not part of the test run:
//! `cargo run --release -p flywheel-trainer --bin flywheel-trainer-bench`.

use std::time::Instant;

use clap::Parser;
use flywheel_api::common::Task;
use flywheel_api::data_pipeline::{Hyperparameters, Optimizer, TrainLayers};
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::training::NamedDataset;
use flywheel_storage::Location;
use flywheel_trainer::generate::{self, DatasetOptions};
use flywheel_trainer::train::{Session, prepare};
use flywheel_trainer::{dataset, model::sha256_hex};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Images per round.
    #[arg(long, default_value_t = 128)]
    images: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 64)]
    size: u32,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("flywheel-trainer-bench-{}", std::process::id()));
    let loc = Location::open(dir.to_str().unwrap())?;
    let mut opts = DatasetOptions::new(Task::Detection, DatasetFormat::Coco, args.images);
    opts.size = args.size;
    let ds_spec = generate::write_dataset(&loc.join("data"), &opts).await?;
    let labels = ds_spec.labels.clone();
    let bytes = generate::detector(labels.len(), args.size, 1).map_err(anyhow::Error::msg)?;
    let spec = generate::model_spec(Task::Detection, &labels, args.size, "file:///bench.onnx", &sha256_hex(&bytes));
    let refs = dataset::read_dataset(&NamedDataset { name: "bench".into(), spec: ds_spec }, &labels).await?;
    let data = prepare(&refs, &spec).await?;
    std::fs::remove_dir_all(&dir).ok();
    let idx: Vec<usize> = (0..data.len()).collect();

    println!(
        "generated detector {}x{}, {} images per round, batch {}, {} rounds, RAYON_NUM_THREADS={}",
        args.size,
        args.size,
        data.len(),
        args.batch,
        args.rounds,
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    let mut results = Vec::new();
    for layers in [TrainLayers::Head, TrainLayers::All] {
        let h = Hyperparameters {
            epochs: 1,
            learning_rate: 1e-3,
            batch_size: args.batch as u32,
            optimizer: Optimizer::Adamw,
            train_layers: layers,
        };
        let mut session = Session::new(&bytes, &spec, &h, &data, 1)?;
        session.step(&idx[..args.batch], &data)?; // warm-up
        let mut rates = Vec::new();
        for _ in 0..args.rounds {
            let start = Instant::now();
            for chunk in idx.chunks(args.batch) {
                session.step(chunk, &data)?;
            }
            rates.push(data.len() as f64 / start.elapsed().as_secs_f64());
        }
        let rate = median(rates);
        println!("train ({:>4} layers): {:>8.1} images/s", layers.as_str(), rate);
        results.push(rate);
    }
    let mut rates = Vec::new();
    let model = flywheel_runtime::Model::from_bytes(&bytes)?;
    let input = model.inputs()[0].name.clone();
    for _ in 0..args.rounds {
        let start = Instant::now();
        for chunk in idx.chunks(args.batch) {
            let mut flat = Vec::new();
            for &i in chunk {
                flat.extend_from_slice(&data.inputs[i]);
            }
            let x = candle_core::Tensor::from_vec(
                flat,
                (chunk.len(), 3, args.size as usize, args.size as usize),
                &candle_core::Device::Cpu,
            )?;
            model.run(&[(input.as_str(), x)])?;
        }
        rates.push(data.len() as f64 / start.elapsed().as_secs_f64());
    }
    let infer = median(rates);
    println!("inference (runtime) : {:>8.1} images/s", infer);
    println!(
        "ratio train(head)/inference = {:.3}, train(all)/inference = {:.3}",
        results[0] / infer,
        results[1] / infer
    );
    Ok(())
}
