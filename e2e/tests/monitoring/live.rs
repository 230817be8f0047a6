//! Every dashboard query returns series from a real Prometheus that discovers the inference
//! pod through the Kubernetes API and scrapes it and the operator; the alert rules load and
//! evaluate without errors against the real series.

use flywheel_e2e::generate;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use flywheel_api::DataPipeline;
use flywheel_e2e::prometheus::{Prometheus, PrometheusConfig, ScrapeTarget, dashboard_queries};
use flywheel_e2e::{TestNamespace, install_crds, shared_cluster, workspace_root};
use flywheel_operator::context::{Context, Settings};
use flywheel_operator::http::{HttpState, router};
use flywheel_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::files::{alerts_path, dashboard_path, dashboard_vars};
use crate::traffic::{Sample, Server, coco_samples, wait_until};

/// Aborts the background tasks it holds when the test ends, however it ends.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(|t| t.abort());
    }
}

fn model_version(name: &str, mut spec: Value, version: &str) -> String {
    spec["version"] = version.into();
    serde_json::to_string(&serde_json::json!({
        "apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// Champion and shadow from generated detectors, training data the DataPipeline profiles (its
/// Job runs the real trainer and writes the reference statistics drift is measured against),
/// a feedback dataset reviews go to, and a Deployment that logs every prediction for review.
async fn apply_objects(ns: &TestNamespace, dir: &Path) {
    let uri = |leaf: &str| format!("file://{}/{leaf}", dir.display());
    let champion = generate(&["model", "--task", "detection", "--seed", "1", "--out", &uri("champion.onnx")]);
    let shadow = generate(&["model", "--task", "detection", "--seed", "2", "--out", &uri("shadow.onnx")]);
    generate(&["dataset", "--task", "detection", "--format", "coco", "--count", "24", "--out", &uri("train")]);
    generate(&[
        "dataset",
        "--task",
        "detection",
        "--format",
        "coco",
        "--count",
        "1",
        "--seed",
        "3",
        "--out",
        &uri("feedback"),
    ]);
    ns.apply_yaml(&format!(
        "{}\n---\n{}",
        model_version("champion", champion, "v1"),
        model_version("shadow", shadow, "v2")
    ))
    .await
    .unwrap();
    ns.apply_yaml(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: train}}
spec: {{uri: '{train}', format: coco, task: detection, labels: [circle, square, triangle]}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: fb}}
spec: {{uri: '{feedback}', format: coco, task: detection, labels: [circle, square, triangle], feedback: true}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {{name: shapes}}
spec:
  champion: {{modelVersion: champion}}
  shadow: {{modelVersion: shadow, sampleRate: 1.0}}
  confidenceThreshold: 0.2
  replicas: 1
  predictionLog: {{uri: '{log}', sampleRate: 1.0}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {{name: loop}}
spec:
  deployment: shapes
  trainingData: {{datasetVersion: train}}
  feedbackLoop: {{datasetVersion: fb}}
",
        train = uri("train"),
        feedback = uri("feedback"),
        log = uri("log"),
    ))
    .await
    .unwrap();
}

/// Predicts every sample once (returning prediction id → sample), plus one bad request.
async fn burst(server: &Server, samples: &[Sample]) -> Vec<(String, Sample)> {
    let mut ids = Vec::new();
    for s in samples {
        let id = server.predict(&s.path).await.unwrap_or_else(|e| panic!("predict {}: {e}", s.path.display()));
        ids.push((id, s.clone()));
    }
    assert_eq!(server.bad_request().await, 415, "a body that is not an image is refused");
    ids
}

/// Waits until every rule has been evaluated, and asserts none failed to evaluate.
async fn assert_rules_evaluate(prom: &Prometheus) {
    let rules = wait_until("every alert rule evaluated", 60, || async {
        let data = prom.rules().await.ok()?;
        let rules: Vec<Value> = data["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (!rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")).then_some(rules)
    })
    .await;
    assert!(rules.len() >= 6, "{} rules loaded", rules.len());
    for r in &rules {
        assert_eq!(r["health"], "ok", "rule {} failed to evaluate: {}", r["name"], r["lastError"]);
    }
}

/// Turns on continuous training: the run the three reviews trigger, and its promotion to
/// shadow, show in the operator's counters.
async fn assert_training_counted(ns: &TestNamespace, prom: &Prometheus) {
    let before_training = Instant::now();
    let continuous = serde_json::json!({"spec": {
        "continuousTraining": {"trigger": {"reviewedSamples": 3}, "hyperparameters": {"epochs": 1, "batchSize": 8}},
        "continuousDeployment": {"policy": "shadow"},
    }});
    ns.api::<DataPipeline>()
        .patch("loop", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&continuous))
        .await
        .unwrap();
    let operator_selector = format!("namespace=\"{}\", deployment=\"shapes\"", ns.name);
    let counted = |expr: String| async move {
        prom.wait_for_series(&expr, Duration::from_secs(240)).await.unwrap_or_else(|e| panic!("{e}"))
    };
    counted(format!(
        "flywheel_operator_training_runs_total{{{operator_selector}, pipeline=\"loop\", result=\"succeeded\"}} == 1"
    ))
    .await;
    counted(format!("flywheel_operator_promotions_total{{{operator_selector}, to=\"shadow\"}} == 1")).await;
    let failed = prom
        .query(&format!("flywheel_operator_training_runs_total{{{operator_selector}, result=\"failed\"}} == 0"))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1, "no failed run: {failed:?}");
    eprintln!("monitoring: training run counted in {:.0?}", before_training.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_a_real_prometheus() {
    let started = Instant::now();
    let cluster = shared_cluster();
    let client = cluster.client().await;
    install_crds(&client, &workspace_root().join("crds")).await.expect("CRDs install");
    let ns = TestNamespace::new(cluster, "mon").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The operator in this process, with its /metrics on a free loopback port.
    let metrics = Metrics::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator_metrics = listener.local_addr().unwrap();
    let state = HttpState { metrics: metrics.clone(), ready: Arc::new(AtomicBool::new(true)) };
    let http = tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let settings = Settings {
        default_output_uri: Some(format!("file://{}/pipelines", dir.path().display())),
        ..flywheel_e2e::test_settings(&ns.name)
    };
    let operator = tokio::spawn(flywheel_operator::controllers::run(
        Context::new(client.clone(), metrics, settings),
        std::future::pending(),
    ));
    let mut background = AbortOnDrop(vec![http.abort_handle(), operator.abort_handle()]);

    // Prometheus from the start, so it discovers the pod as it comes up.
    let prom = Prometheus::start_with(PrometheusConfig {
        kubeconfig: cluster.kubeconfig.clone(),
        namespaces: vec![ns.name.clone()],
        static_targets: vec![ScrapeTarget::new("flywheel-operator", operator_metrics)],
        rule_files: vec![alerts_path()],
    })
    .await
    .unwrap();

    apply_objects(&ns, dir.path()).await;
    let traffic_dir = dir.path().join("traffic");
    generate(&[
        "dataset",
        "--task",
        "detection",
        "--format",
        "coco",
        "--count",
        "40",
        "--seed",
        "9",
        "--out",
        &format!("file://{}", traffic_dir.display()),
    ]);
    let samples = coco_samples(&traffic_dir);

    // The profile Job ran the trainer: reference statistics exist, so the pod measures drift.
    let profiled =
        |p: Option<&DataPipeline>| p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.unsupervised_metrics_available);
    ns.wait_for::<DataPipeline>("loop", profiled, 180).await.unwrap();
    let addr = ns.service_address("shapes-inference", "http", 180).await.unwrap();
    let server = Server::new(addr);
    wait_until("the pod serves champion and shadow with drift monitoring on", 90, || async {
        let s = server.status().await?;
        (s["ready"] == true && s["shadow"].is_object() && s["driftMonitoring"] == true).then_some(())
    })
    .await;

    // Scraped before any traffic, so every counter's growth shows in Prometheus.
    let selector = format!("namespace=\"{}\", deployment=\"shapes\"", ns.name);
    prom.wait_for_series(&format!("up{{{selector}}} == 1"), Duration::from_secs(60)).await.unwrap();

    // Enough images for the drift statistics (30 values per feature), then a steady trickle so
    // rates over the last 30 s have data whenever the queries run.
    let predicted = burst(&server, &samples).await;
    let trickle = {
        let (server, samples) = (server.clone(), samples.clone());
        tokio::spawn(async move {
            for s in samples.iter().cycle() {
                let _ = server.predict(&s.path).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    background.0.push(trickle.abort_handle());

    // Reviewers correct three predictions with the ground truth through the pipeline's review
    // service: mAP for both roles.
    let secrets: kube::Api<Secret> = ns.api();
    let secret = secrets.get("shapes-review-token").await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let reviewer = Server::new(ns.service_address("loop-review", "http", 180).await.unwrap());
    let listed = wait_until("the burst's predictions listed for review", 60, || async {
        let ids = reviewer.to_review(&token).await.ok()?;
        let ours: Vec<&(String, Sample)> =
            predicted.iter().filter(|(id, s)| !s.shapes.is_empty() && ids.contains(id)).collect();
        (ours.len() >= 3).then(|| ours.into_iter().take(3).cloned().collect::<Vec<_>>())
    })
    .await;
    for (id, sample) in &listed {
        reviewer.review(&token, id, &sample.shapes).await.unwrap();
    }
    wait_until("quality scored for champion and shadow", 60, || async {
        let pairs = reviewer.status().await?["quality"].as_array()?.clone();
        pairs
            .iter()
            .any(|q| {
                q["reviewedSamples"].as_u64().unwrap_or(0) >= 3 && q["champion"].is_number() && q["shadow"].is_number()
            })
            .then_some(())
    })
    .await;

    // Grafana's variables resolve to this Deployment.
    let namespaces = wait_until("$namespace values", 60, || async {
        prom.label_values("namespace", "flywheel_model_info").await.ok().filter(|v| v.contains(&ns.name))
    })
    .await;
    let deployments =
        prom.label_values("deployment", &format!("flywheel_model_info{{namespace=\"{}\"}}", ns.name)).await.unwrap();
    assert_eq!(deployments, vec!["shapes".to_string()], "namespaces {namespaces:?}");

    // Every panel target returns at least one series.
    let mut pending = dashboard_queries(&dashboard_path(), &dashboard_vars(&ns.name, "shapes")).unwrap();
    let total = pending.len();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (title, expr) in pending {
            if prom.query(&expr).await.unwrap_or_else(|e| panic!("panel {title:?}: {e}")).is_empty() {
                still.push((title, expr));
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    assert!(
        pending.is_empty(),
        "{} of {total} dashboard queries returned no series:\n{}\nscrape targets:\n{}",
        pending.len(),
        pending.iter().map(|(t, e)| format!("  panel {t:?}: {e}")).collect::<Vec<_>>().join("\n"),
        prom.targets_summary().await
    );

    // A few figures behind the panels, from what this test did.
    let prom_ref = &prom;
    let served = |expr: String| async move { prom_ref.wait_for_series(&expr, Duration::from_secs(60)).await.unwrap() };
    served(format!("flywheel_http_requests_total{{{selector}, code=\"415\"}}")).await;
    served(format!("sum(increase(flywheel_reviews_total{{{selector}}}[10m])) >= 1")).await;
    let roles = served(format!("max by (role) (flywheel_reviewed_map50{{{selector}}})")).await;
    assert_eq!(roles.len(), 2, "mAP of champion and shadow: {roles:?}");
    let features = served(format!("max by (feature) (flywheel_drift_ks{{{selector}}})")).await;
    for feature in ["brightness", "contrast", "boxArea"] {
        assert!(features.iter().any(|f| f["metric"]["feature"] == feature), "no KS for {feature}: {features:?}");
    }
    let runs = served(format!(
        "flywheel_operator_training_runs_total{{namespace=\"{}\", pipeline=\"loop\", deployment=\"shapes\"}} == 0",
        ns.name
    ))
    .await;
    assert_eq!(runs.len(), 2, "succeeded and failed, at 0 before any run: {runs:?}");

    // What the dashboard would show now (in the test log, for a look at the figures).
    for (title, expr) in dashboard_queries(&dashboard_path(), &dashboard_vars(&ns.name, "shapes")).unwrap() {
        let series = prom.query(&expr).await.unwrap();
        let first = series.first().map(|s| format!("{} = {}", s["metric"], s["value"][1])).unwrap_or_default();
        eprintln!("  {title}: {} series, e.g. {first}", series.len());
    }

    // The alert rules load into the real Prometheus and evaluate against the real series.
    assert_rules_evaluate(&prom).await;

    assert_training_counted(&ns, &prom).await;
    eprintln!("monitoring: {total} dashboard queries answered, {:.0?} in all", started.elapsed());
    drop(background);
}
