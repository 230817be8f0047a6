//! The efficacy benchmark (a command, never part of the test run): a champion trained on the
//! generated source domain, production switching to a shifted domain, and the retraining loop
//! run in rounds with reviews simulated from the generator's ground truth, for each review
//! order (random, margin, the queue's former disagreement order, the product's). Each round reviews `--step` more production images
//! in that order, retrains the champion on the source data replayed with every review so far
//! (a feedback DatasetVersion, the built-in trainer with its defaults) and measures the new
//! model on held-out target data; the new model is the shadow that the disagreement and product
//! orders compare the champion with in the next round. Prints a table and writes
//! `efficacy-<task>.svg`.
//!
//! `cargo run --release -p flywheel-trainer --bin flywheel-trainer-efficacy -- --task detection`

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use flywheel_api::common::{StorageUri, Task};
use flywheel_api::data_pipeline::{Hyperparameters, Optimizer, TrainLayers};
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::training::{NamedDataset, NamedModel, TrainRequest};
use flywheel_storage::Location;
use flywheel_trainer::dataset::{self, SampleRef};
use flywheel_trainer::efficacy::{Order, review_order, reviews_to_reach, reviews_to_stay, svg};
use flywheel_trainer::generate::{self, DatasetOptions, Domain};
use flywheel_trainer::model::{fetch_model, sha256_hex};
use flywheel_trainer::train::objective::{Objective, detections};
use flywheel_trainer::train::stream::Loader;
use flywheel_trainer::train::{self, Session, TrainOptions, epochs};
use flywheel_types::prediction::Shape;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "detection")]
    task: String,
    /// Target domain (default: `small` for detection, `warm` for classification).
    #[arg(long)]
    domain: Option<String>,
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    #[arg(long, default_value_t = 300)]
    source: usize,
    /// Unreviewed production images of the target domain.
    #[arg(long, default_value_t = 300)]
    pool: usize,
    /// Held-out images per test set (source and target).
    #[arg(long, default_value_t = 150)]
    test: usize,
    /// Reviews per round.
    #[arg(long, default_value_t = 20)]
    step: usize,
    #[arg(long, default_value_t = 120)]
    max_reviews: usize,
    #[arg(long, default_value_t = 20)]
    champion_epochs: u32,
    #[arg(long, default_value_t = 0.005)]
    champion_lr: f64,
    #[arg(long, default_value_t = 6)]
    epochs: u32,
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Retraining: `head` (with `--head-depth`) or `all`.
    #[arg(long, default_value = "head")]
    layers: String,
    #[arg(long, default_value_t = 2)]
    head_depth: u32,
    /// Print the champion's confusion on the pool and each round's picks (true > predicted @
    /// confidence), for classification.
    #[arg(long)]
    explain: bool,
    /// Review orders to compare, comma-separated.
    #[arg(long, default_value = "random,margin,disagreement,product")]
    orders: String,
    #[arg(long, default_value = "target/efficacy")]
    out: PathBuf,
}

impl Args {
    fn orders(&self) -> anyhow::Result<Vec<Order>> {
        self.orders.split(',').map(|o| Order::parse(o).ok_or_else(|| anyhow::anyhow!("unknown order {o}"))).collect()
    }
}

fn uri(p: &Path) -> String {
    format!("file://{}", std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display())
}

async fn generated(dir: &Path, task: Task, domain: &str, count: usize, seed: u64) -> anyhow::Result<NamedDataset> {
    let format = if task == Task::Detection { DatasetFormat::Coco } else { DatasetFormat::Imagefolder };
    let mut o = DatasetOptions::new(task, format, count);
    o.seed = seed;
    o.domain = Domain::parse(domain, 1.0).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dir)?;
    let spec = generate::write_dataset(&Location::open(&uri(dir))?, &o).await?;
    Ok(NamedDataset { name: dir.file_name().unwrap().to_string_lossy().into(), spec })
}

fn request(
    base: NamedModel,
    train: Vec<NamedDataset>,
    out: &Path,
    epochs: u32,
    lr: f64,
    layers: TrainLayers,
) -> TrainRequest {
    TrainRequest {
        base_model: base,
        train,
        eval: None,
        hyperparameters: Hyperparameters {
            epochs,
            learning_rate: lr,
            batch_size: 8,
            optimizer: Optimizer::Adamw,
            train_layers: layers,
        },
        output_uri: StorageUri(format!("{}/", uri(out))),
        max_regression: 1.0,
    }
}

/// A model and what it predicts: its session, its objective and the loader of its inputs.
struct Evaluator {
    session: Session,
    loader: Loader,
}

impl Evaluator {
    async fn new(model: &NamedModel, probe: &[SampleRef]) -> anyhow::Result<Self> {
        let bytes = fetch_model(model).await?;
        let loader = Loader::new(&model.spec, None);
        let probe = loader.load(probe.iter().take(4).cloned().collect(), 0).await?;
        Ok(Self { session: Session::new(&bytes, &model.spec, &Hyperparameters::default(), &probe, 1)?, loader })
    }

    async fn metric(&self, refs: &[SampleRef]) -> anyhow::Result<f64> {
        Ok(epochs::evaluate_set(&self.session, &self.loader, refs).await?.unwrap_or(f64::NAN))
    }

    /// Shapes per image as the server would answer (detections above 0.25 after NMS; the top
    /// class with its softmax probability).
    async fn predict(&self, refs: &[SampleRef]) -> anyhow::Result<Vec<Vec<Shape>>> {
        let mut all = Vec::new();
        for chunk in refs.chunks(epochs::EVAL_BATCH) {
            let batch = self.loader.load(chunk.to_vec(), 0).await?;
            let out = self.session.outputs(&batch)?;
            match self.session.objective {
                Objective::Detection { format, nms_iou, .. } => {
                    for dets in detections(&format, &out, 0.25, nms_iou)? {
                        all.push(
                            dets.into_iter()
                                .map(|d| Shape {
                                    label: d.class.to_string(),
                                    class_id: d.class,
                                    confidence: d.score,
                                    bbox: Some(d.bbox),
                                })
                                .collect(),
                        );
                    }
                }
                Objective::Classification { probabilities, .. } => {
                    for row in out.to_vec2::<f32>()? {
                        let p: Vec<f32> = if probabilities {
                            row
                        } else {
                            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                            let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
                            let s: f32 = e.iter().sum();
                            e.into_iter().map(|v| v / s).collect()
                        };
                        let (c, conf) = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
                        all.push(vec![Shape { label: c.to_string(), class_id: c, confidence: *conf, bbox: None }]);
                    }
                }
            }
        }
        Ok(all)
    }
}

/// A feedback dataset holding `reviewed` (in review order, so the newest are written last) with
/// the generator's ground truth, as the review service would have written it.
fn write_feedback(
    pool: &NamedDataset,
    pool_dir: &Path,
    refs: &[SampleRef],
    dir: &Path,
) -> anyhow::Result<NamedDataset> {
    std::fs::create_dir_all(dir)?;
    let paths: Vec<&str> = refs.iter().map(|r| r.path.as_str()).collect();
    if pool.spec.format == DatasetFormat::Coco {
        let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(pool_dir.join("annotations.json"))?)?;
        let keep: HashSet<&str> = paths.iter().map(|p| p.trim_start_matches("images/")).collect();
        let images: Vec<serde_json::Value> = doc["images"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| keep.contains(i["file_name"].as_str().unwrap().trim_start_matches("images/")))
            .cloned()
            .collect();
        let ids: HashSet<i64> = images.iter().map(|i| i["id"].as_i64().unwrap()).collect();
        let anns: Vec<serde_json::Value> = doc["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| ids.contains(&a["image_id"].as_i64().unwrap()))
            .cloned()
            .collect();
        doc["images"] = images.into();
        doc["annotations"] = anns.into();
        std::fs::write(dir.join("annotations.json"), serde_json::to_vec(&doc)?)?;
    }
    for p in paths {
        let to = dir.join(p);
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::copy(pool_dir.join(p), to)?;
    }
    let mut spec = pool.spec.clone();
    spec.uri = StorageUri(format!("{}/", uri(dir)));
    spec.feedback = true;
    Ok(NamedDataset { name: "feedback".into(), spec })
}

fn trained(base: &NamedModel, result: &flywheel_api::training::TrainResult, name: &str) -> NamedModel {
    let mut spec = base.spec.clone();
    spec.artifact.uri = result.model_uri.clone();
    spec.artifact.sha256 = Some(result.sha256.clone());
    NamedModel { name: name.into(), spec }
}

/// Reviews a curve needs to recover to a target (`reviews_to_reach`, `reviews_to_stay`).
type Recovery = fn(&[(usize, f64)], f64) -> Option<usize>;

struct SeedResult {
    pre_drift: f64,
    no_loop: f64,
    curves: BTreeMap<&'static str, Vec<(usize, f64)>>,
}

async fn one_seed(a: &Args, task: Task, domain: &str, seed: u64) -> anyhow::Result<SeedResult> {
    let dir = a.out.join(format!("{}-seed{seed}", task.as_str()));
    std::fs::create_dir_all(&dir)?;
    let s = seed * 100;
    let source = generated(&dir.join("source"), task, "source", a.source, s + 1).await?;
    let source_test = generated(&dir.join("source-test"), task, "source", a.test, s + 2).await?;
    let pool = generated(&dir.join("pool"), task, domain, a.pool, s + 3).await?;
    let target_test = generated(&dir.join("target-test"), task, domain, a.test, s + 4).await?;
    let labels = source.spec.labels.clone();
    let refs = |d: NamedDataset| {
        let labels = labels.clone();
        async move { dataset::read_dataset(&d, &labels).await }
    };
    let (source_test_refs, pool_refs, target_refs) =
        (refs(source_test.clone()).await?, refs(pool.clone()).await?, refs(target_test.clone()).await?);

    let bytes = match task {
        Task::Detection => generate::detector(labels.len(), 64, seed),
        Task::Classification => generate::classifier(labels.len(), 64, seed),
    }
    .map_err(anyhow::Error::msg)?;
    let base_path = dir.join("base.onnx");
    std::fs::write(&base_path, &bytes)?;
    let base = NamedModel {
        name: "base".into(),
        spec: generate::model_spec(task, &labels, 64, &uri(&base_path), &sha256_hex(&bytes)),
    };
    let champion_dir = dir.join("champion");
    let _ = std::fs::remove_dir_all(&champion_dir);
    let req =
        request(base.clone(), vec![source.clone()], &champion_dir, a.champion_epochs, a.champion_lr, TrainLayers::All);
    let champion = trained(&base, &train::run_with(&req, &TrainOptions::default()).await?, "champion");
    let champ = Evaluator::new(&champion, &source_test_refs).await?;
    let pre_drift = champ.metric(&source_test_refs).await?;
    let no_loop = champ.metric(&target_refs).await?;
    eprintln!("seed {seed}: champion {pre_drift:.3} on source, {no_loop:.3} on {domain}");
    let champion_preds = champ.predict(&pool_refs).await?;
    if a.explain && task == Task::Classification {
        let mut confusion: BTreeMap<(usize, String), (usize, f32)> = BTreeMap::new();
        for (r, p) in pool_refs.iter().zip(&champion_preds) {
            let e = confusion.entry((r.label.unwrap_or(0), p[0].label.clone())).or_default();
            e.0 += 1;
            e.1 += p[0].confidence;
        }
        let cells: Vec<String> =
            confusion.iter().map(|((t, p), (n, c))| format!("{t}>{p}: {n} @ {:.2}", c / *n as f32)).collect();
        eprintln!("  champion on the pool (true > predicted: images @ mean confidence): {}", cells.join(", "));
    }

    let ids: Vec<String> = pool_refs.iter().map(|r| r.path.clone()).collect();
    let layers = match a.layers.as_str() {
        "head" => TrainLayers::Head,
        "all" => TrainLayers::All,
        l => anyhow::bail!("--layers is head or all, not {l}"),
    };
    let mut curves = BTreeMap::new();
    for order in a.orders()? {
        let mut reviewed: Vec<usize> = Vec::new();
        let mut shadow: Option<Vec<Vec<Shape>>> = None;
        let mut curve = vec![(0, no_loop)];
        for round in 1..=a.max_reviews / a.step {
            let taken: HashSet<usize> = reviewed.iter().copied().collect();
            let next: Vec<usize> =
                review_order(order, task, &ids, &champion_preds, shadow.as_deref(), &taken, s + round as u64)
                    .into_iter()
                    .take(a.step)
                    .collect();
            if a.explain && task == Task::Classification {
                let d: Vec<String> = next
                    .iter()
                    .map(|&i| {
                        let c = &champion_preds[i];
                        format!("{}>{}@{:.2}", pool_refs[i].label.unwrap_or(0), c[0].label, c[0].confidence)
                    })
                    .collect();
                eprintln!("  picks {} {round}: {}", order.name(), d.join(" "));
            }
            reviewed.extend(next);
            let round_dir = dir.join(format!("{}-{round}", order.name()));
            let _ = std::fs::remove_dir_all(&round_dir);
            let samples: Vec<SampleRef> = reviewed.iter().map(|&i| pool_refs[i].clone()).collect();
            let feedback = write_feedback(&pool, &dir.join("pool"), &samples, &round_dir.join("feedback"))?;
            let req = request(
                champion.clone(),
                vec![source.clone(), feedback],
                &round_dir.join("run"),
                a.epochs,
                a.lr,
                layers,
            );
            let value = match train::run_with(
                &req,
                &TrainOptions { head_depth: a.head_depth, ..TrainOptions::default() },
            )
            .await
            {
                Ok(result) => {
                    let candidate = trained(&champion, &result, "candidate");
                    let e = Evaluator::new(&candidate, &target_refs).await?;
                    shadow = Some(e.predict(&pool_refs).await?);
                    e.metric(&target_refs).await?
                }
                Err(e) => {
                    eprintln!("  {} round {round}: {e}", order.name());
                    no_loop
                }
            };
            eprintln!("  seed {seed} {:>12} {:>4} reviews: {value:.3}", order.name(), reviewed.len());
            curve.push((reviewed.len(), value));
        }
        curves.insert(order.name(), curve);
    }
    Ok(SeedResult { pre_drift, no_loop, curves })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let task = match a.task.as_str() {
        "detection" => Task::Detection,
        "classification" => Task::Classification,
        t => anyhow::bail!("--task is detection or classification, not {t}"),
    };
    let domain = a.domain.clone().unwrap_or_else(|| if task == Task::Detection { "small" } else { "warm" }.into());
    let mut results = Vec::new();
    for seed in 1..=a.seeds {
        results.push(one_seed(&a, task, &domain, seed).await?);
    }
    let n = results.len() as f64;
    let mean = |f: &dyn Fn(&SeedResult) -> f64| results.iter().map(f).sum::<f64>() / n;
    let pre = mean(&|r| r.pre_drift);
    let no_loop = mean(&|r| r.no_loop);
    let metric = if task == Task::Detection { "mAP50" } else { "accuracy" };
    println!(
        "\n{task} on domain {domain}, {} seeds: champion {metric} {pre:.3} before the drift, {no_loop:.3} after",
        a.seeds,
        task = task.as_str()
    );
    let orders = a.orders()?;
    let rounds: Vec<usize> = results[0].curves[orders[0].name()].iter().map(|p| p.0).collect();
    print!("{:>12} |", "reviews");
    for r in &rounds {
        print!(" {r:>6}");
    }
    println!(
        " | reviews to reach within 0.02 of pre-drift, and to stay there to the last round (per seed; mean over \
         the seeds that do)"
    );
    let mut series = vec![("no loop".to_string(), rounds.iter().map(|&r| (r, no_loop)).collect::<Vec<_>>())];
    for &order in &orders {
        let curve: Vec<(usize, f64)> = rounds
            .iter()
            .enumerate()
            .map(|(k, &r)| (r, results.iter().map(|s| s.curves[order.name()][k].1).sum::<f64>() / n))
            .collect();
        print!("{:>12} |", order.name());
        for (_, v) in &curve {
            print!(" {v:>6.3}");
        }
        let summary = |f: Recovery| {
            let needed: Vec<Option<usize>> =
                results.iter().map(|s| f(&s.curves[order.name()], s.pre_drift - 0.02)).collect();
            let got: Vec<usize> = needed.iter().flatten().copied().collect();
            let per_seed: Vec<String> = needed.iter().map(|n| n.map_or("-".into(), |v| v.to_string())).collect();
            let avg = if got.is_empty() {
                "never".to_string()
            } else {
                let mean = got.iter().sum::<usize>() as f64 / got.len() as f64;
                format!("{mean:.1} over {} of {} seeds", got.len(), needed.len())
            };
            format!("{} (mean {avg})", per_seed.join(", "))
        };
        println!(" | reach: {} | stay: {}", summary(reviews_to_reach), summary(reviews_to_stay));
        series.push((format!("{} order", order.name()), curve));
    }
    let chart = svg(
        &format!(
            "{task} drifting to `{domain}`: {metric} on held-out target data, mean of {} seeds",
            a.seeds,
            task = task.as_str()
        ),
        &series,
        Some((format!("pre-drift - 0.02 ({:.3})", pre - 0.02), pre - 0.02)),
    );
    let path = a.out.join(format!("efficacy-{}.svg", task.as_str()));
    std::fs::write(&path, chart)?;
    println!("chart: {}", path.display());
    Ok(())
}
