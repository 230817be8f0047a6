//! The README demo: the whole flywheel on a local cluster in a few minutes, every step shown.
//! Ctrl-C at any point stops everything the demo started (cluster processes, the S3 server).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use flywheel_cluster::{Cluster, ClusterOptions, ImageMap};
use flywheel_demo::flywheel_loop::{CHAMPION, PIPELINE, SHADOW};
use flywheel_demo::progress::Progress;
use flywheel_demo::{FlywheelLoop, Platform, assets, quickstart};
use flywheel_e2e::TestCluster;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;

#[derive(Parser, Debug)]
#[command(about = "Runs the whole Flywheel loop on a local cluster and shows each step")]
struct Args {
    /// Namespace the quickstart goes into (the operator is installed there too).
    #[arg(long, default_value = "flywheel-demo")]
    namespace: String,
    /// Stop right after the loop instead of keeping the cluster up for a look around.
    #[arg(long)]
    exit: bool,
    /// Production images generated for traffic.
    #[arg(long, default_value_t = 120)]
    images: usize,
}

const STEPS: usize = 12;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter("warn,kube_client=off,kube=off").with_writer(std::io::stderr).init();
    let bin_dir = std::env::current_exe()?.parent().map(PathBuf::from).context("the demo binary's directory")?;
    let mut progress = Progress::new(STEPS);

    let t =
        progress.step("starting the local cluster (etcd, kube-apiserver, kube-controller-manager, process kubelet)");
    let options =
        ClusterOptions { name: "demo".into(), images: ImageMap::from_env(Some(bin_dir.clone())), ..Default::default() };
    let cluster =
        Cluster::start(options).await.context("starting the local cluster (scripts/demo.sh installs what it needs)")?;
    progress.done(
        t,
        format!(
            "cluster {}, API server {} up in {:.1}s",
            cluster.id(),
            cluster.server(),
            cluster.startup_time().as_secs_f64()
        ),
    );

    let outcome = tokio::select! {
        r = run(&args, &cluster, bin_dir, &mut progress) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: stopping everything the demo started");
            Ok(None)
        }
    };
    match outcome {
        Ok(Some(platform)) if !args.exit => {
            eprintln!("\nThe cluster stays up until Ctrl-C.");
            tokio::signal::ctrl_c().await?;
            eprintln!("stopping");
            drop(platform);
        }
        Ok(_) => {}
        Err(e) => {
            cluster.stop().await;
            return Err(e);
        }
    }
    cluster.stop().await;
    Ok(())
}

async fn run(
    args: &Args,
    cluster: &Cluster,
    bin_dir: PathBuf,
    progress: &mut Progress,
) -> anyhow::Result<Option<Platform>> {
    let handle = TestCluster::from_cluster(cluster);
    let client = handle.client().await;
    let ns = Namespace {
        metadata: kube::api::ObjectMeta { name: Some(args.namespace.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client).create(&PostParams::default(), &ns).await.context("creating the demo namespace")?;

    let t = progress.step("starting the object store (SeaweedFS S3) and creating bucket flywheel-demo");
    let platform = Platform::new(handle.clone(), &args.namespace, bin_dir.clone()).await?;
    progress.done(t, platform.s3.endpoint());

    let t = progress.step("installing the Helm chart charts/flywheel (CRDs, RBAC, operator)");
    let pod = platform.install_operator().await?;
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default();
    progress.done(
        t,
        format!(
            "operator Pod {} Ready, service account {sa}, holding the leader Lease",
            pod.metadata.name.unwrap_or_default()
        ),
    );

    let t = progress.step("generating the demo models (v1, v2) and training dataset into S3");
    let s3_env = platform.s3_env();
    let samples = {
        let (bin, work) = (bin_dir.clone(), platform.work.path().to_path_buf());
        let images = args.images;
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            assets::upload_models_and_training_data(&bin, &s3_env)?;
            assets::production_samples(&bin, &work, images)
        })
        .await??
    };
    progress.done(
        t,
        format!("{} training images, {} production images kept aside for traffic", assets::TRAIN_IMAGES, samples.len()),
    );
    let mut flywheel = FlywheelLoop::new(platform, samples);

    let t = progress.step("kubectl apply -f examples/quickstart/");
    let applied = quickstart::apply(&flywheel.platform, |_, y| y).await?;
    progress.done(t, applied.join(", "));

    let t = progress.step("waiting for the models to be verified and the inference Pod to serve");
    flywheel.wait_model_ready(CHAMPION, 120).await?;
    flywheel.wait_model_ready(SHADOW, 120).await?;
    flywheel.wait_serving(CHAMPION).await?;
    progress.done(t, format!("champion {CHAMPION}, shadow {SHADOW}, Pod at {}", flywheel.serving()?.address));

    let t = progress.step("profiling the training data for drift and outlier metrics (a trainer Job)");
    let p = flywheel.wait_profiled().await?;
    progress.done(
        t,
        format!("reference statistics at {}", p.status.and_then(|s| s.reference_statistics_uri).unwrap_or_default()),
    );

    let t = progress.step("sending 40 production images to POST /v1/predict");
    let predictions = flywheel.send_traffic(40).await?;
    let shapes: usize = predictions.iter().map(|p| p.shapes.len()).sum();
    progress.done(
        t,
        format!("{} predictions, {shapes} shapes above the 0.4 confidence threshold (v1 is untrained: mostly noise, which the loop fixes)", predictions.len()),
    );

    let t = progress.step("reviewing 20 predictions (corrections with the true shapes) to reach the trigger");
    let reviewed = flywheel.review(20, 60, |_| true).await?;
    flywheel.wait_feedback_count(20).await?;
    progress.info(format!("{} reviews written into DatasetVersion shapes-feedback", reviewed.len()));
    let run = flywheel.wait_run_finished(1).await?;
    let jobs = flywheel.training_jobs().await?;
    let last =
        run.status.as_ref().and_then(|s| s.run_history.iter().find(|r| r.number == 1)).cloned().context("run 1")?;
    progress
        .done(t, format!("training Job {} {} ({} Job(s) in total)", last.job, last.outcome.to_lowercase(), jobs.len()));
    let trained =
        last.model_version.clone().with_context(|| format!("run 1 registered no ModelVersion: {}", last.message))?;

    let t = progress.step(&format!("deploying the retrained model {trained} as shadow (policy: shadow)"));
    let mv = flywheel.wait_model_ready(&trained, 120).await?;
    flywheel.wait_shadow(&trained).await?;
    let metrics = mv.spec.metrics.iter().map(|(k, v)| format!("{k}={v:.3}")).collect::<Vec<_>>().join(" ");
    progress.done(t, format!("{trained} Ready (offline {metrics}), now the shadow"));

    let t = progress.step("reviewing 20 more predictions the new shadow also made; the promotion gate compares them");
    flywheel.review_shadow_samples(&trained, 20).await?;
    let status = flywheel.serving()?.review_status().await?;
    let quality = status["quality"]
        .as_array()
        .and_then(|pairs| pairs.iter().find(|q| q["shadowModel"]["version"] == trained.as_str()))
        .cloned()
        .unwrap_or_default();
    progress.info(format!(
        "the review service's /status: mAP@0.5 on {} reviewed samples both scored: champion {}, shadow {}",
        quality["reviewedSamples"],
        fmt(&quality["champion"]),
        fmt(&quality["shadow"])
    ));
    let d = flywheel.wait_champion(&trained, 120).await?;
    let promotion = d
        .status
        .as_ref()
        .and_then(|s| s.promotion_history.iter().rev().find(|p| p.role == flywheel_api::deployment::Role::Champion))
        .cloned()
        .context("a promotion record")?;
    progress.done(t, format!("{trained} promoted to champion ({}: {})", promotion.reason, promotion.message));

    let t = progress.step("where to look");
    let address = flywheel.serving()?.address;
    let reviews = flywheel.serving()?.review_address.unwrap_or(address);
    let ns = &args.namespace;
    progress.done(t, "");
    println!(
        "\n  export KUBECONFIG={kc}\n  kubectl -n {ns} get modelversions,datasetversions,fwdeploy,datapipelines\n  kubectl -n {ns} get fwdeploy shapes -o jsonpath='{{.status.promotionHistory}}'\n  kubectl -n {ns} describe datapipeline {PIPELINE}\n\n  metrics:      http://{address}/metrics\n  status:       http://{address}/status\n  review page:  http://{reviews}/review#token=$(kubectl -n {ns} get secret shapes-review-token -o jsonpath='{{.data.token}}' | base64 -d)\n",
        kc = cluster.kubeconfig_path().display()
    );
    Ok(Some(flywheel.platform))
}

fn fmt(v: &serde_json::Value) -> String {
    v.as_f64().map(|x| format!("{x:.3}")).unwrap_or_else(|| "n/a".into())
}
