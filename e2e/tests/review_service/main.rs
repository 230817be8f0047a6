//! Three inference replicas, one review service: predictions sent through the Service's
//! endpoints to all three replicas land in one review queue; 1,000 decisions sent at once by 8
//! reviewers land exactly once in the feedback dataset (one image and one annotation object
//! each, counted) even though the review service is SIGKILLed mid-stream; the figures the
//! promotion gate reads (the DataPipeline's status) equal those computed offline from every
//! reviewed sample. Once on SQLite (the default, on the operator's PersistentVolumeClaim) and
//! once on a real PostgreSQL named by a Secret. And an inference replica SIGKILLed while it
//! logs loses only the records it had not acknowledged ([`replica_kill`]).

mod replica_kill;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flywheel_api::DataPipeline;
use flywheel_e2e::wait::eventually;
use flywheel_e2e::{
    TestNamespace, generate, install_crds, shared_cluster, start_operator, test_settings, workspace_root,
};
use flywheel_types::Task;
use flywheel_types::prediction::Shape;
use flywheel_vision::review_order::{QueueKey, queue_order};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Secret};
use kube::api::ListParams;
use serde_json::{Value, json};

const PREDICTIONS: usize = 1000;

/// A reviewed sample: champion shapes, shadow shapes, ground truth.
type Reviewed = (Vec<Shape>, Vec<Shape>, Vec<Shape>);
const REVIEWERS: usize = 8;

fn model_version(name: &str, mut spec: Value) -> String {
    spec["version"] = name.into();
    serde_json::to_string(&json!({
        "apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// Every ready address of a Service's `http` port (the Endpoints controller's view).
async fn endpoints(ns: &TestNamespace, service: &str, want: usize) -> Vec<SocketAddr> {
    let addresses = |e: Option<&Endpoints>| -> Vec<SocketAddr> {
        let Some(e) = e else { return Vec::new() };
        e.subsets
            .iter()
            .flatten()
            .flat_map(|s| {
                let port = s.ports.iter().flatten().find(|p| p.name.as_deref() == Some("http")).map(|p| p.port);
                s.addresses
                    .iter()
                    .flatten()
                    .filter_map(move |a| Some(SocketAddr::new(a.ip.parse().ok()?, port? as u16)))
            })
            .collect()
    };
    let e = ns.wait_for::<Endpoints>(service, |e| addresses(e).len() >= want, 300).await.unwrap();
    addresses(e.as_ref())
}

/// The PNGs of a generated COCO dataset.
fn images(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The pid of the review service process whose command line holds `marker` (this test's log
/// URI, so another test's service is never touched).
fn review_service_pid(marker: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("flywheel-review-service") && cmdline.contains(marker)).then_some(pid)
    })
}

/// The first 1,000 review items of `status` (`toReview`, `reviewed`), as the API lists them.
async fn review_items(http: &reqwest::Client, base: &str, token: &str, status: &str) -> Value {
    let url = format!("{base}/v1/review/items?status={status}&limit=1000");
    http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// One decision, sent until the service answers it: 200 (stored now) or 409 (stored by an
/// earlier attempt whose answer was lost when the service was killed). Returns the status.
async fn decide(http: &reqwest::Client, base: &str, token: &str, id: &str, body: &Value) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match http.post(format!("{base}/v1/review/items/{id}")).bearer_auth(token).json(body).send().await {
            Ok(r) if r.status() == 200 || r.status() == 409 => return r.status().as_u16(),
            Ok(r) if r.status().is_client_error() => panic!("{id}: {} {}", r.status(), r.text().await.unwrap()),
            Ok(_) | Err(_) => {
                assert!(Instant::now() < deadline, "{id}: the review service did not come back");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A new namespace on the cluster the tests of this binary share, whose CRDs are installed
/// once (concurrent first installs race), and a client.
async fn namespace(prefix: &str) -> (TestNamespace, kube::Client) {
    let cluster = shared_cluster();
    let client = cluster.client().await;
    static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CRDS.get_or_init(|| async {
        install_crds(&client, &workspace_root().join("crds")).await.expect("CRDs install");
    })
    .await;
    (TestNamespace::new(cluster, prefix).await.unwrap(), client)
}

/// Runs the scenario; returns the namespace and the operator still running.
async fn scenario(prefix: &str, database: Option<String>) -> (TestNamespace, AbortOnDrop) {
    let (ns, client) = namespace(prefix).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = flywheel_operator::context::Settings { verify_models: false, ..test_settings(&ns.name) };
    let operator = AbortOnDrop(start_operator(client.clone(), settings));

    let uri = |leaf: &str| format!("file://{}/{leaf}", dir.path().display());
    let champion = generate(&["model", "--task", "detection", "--seed", "1", "--out", &uri("champion.onnx")]);
    let shadow = generate(&["model", "--task", "detection", "--seed", "2", "--out", &uri("shadow.onnx")]);
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
        &uri("traffic"),
    ]);
    std::fs::create_dir_all(dir.path().join("feedback")).unwrap();
    let database_spec = match &database {
        Some(url) => {
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": "reviews-db", "labels": {"flywheel.dev/credentials": "true"}},
                "stringData": {"url": url},
            }))
            .unwrap();
            ns.api::<Secret>().create(&Default::default(), &secret).await.unwrap();
            ", database: {secretName: reviews-db}"
        }
        None => "",
    };
    let log = uri("log");
    ns.apply_yaml(&format!(
        "{}\n---\n{}\n---
apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: fb}}
spec: {{uri: '{feedback}', format: coco, task: detection, labels: [circle, square, triangle], feedback: true}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {{name: shapes}}
spec:
  champion: {{modelVersion: champion}}
  shadow: {{modelVersion: shadow, sampleRate: 1.0}}
  confidenceThreshold: 0.05
  replicas: 3
  predictionLog: {{uri: '{log}', sampleRate: 1.0}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {{name: loop}}
spec:
  deployment: shapes
  feedbackLoop: {{datasetVersion: fb{database_spec}}}
  continuousDeployment: {{policy: manual, promotionGate: {{minReviewedSamples: 20}}}}
",
        model_version("champion", champion),
        model_version("shadow", shadow),
        feedback = uri("feedback"),
    ))
    .await
    .unwrap();

    // 1. Predictions through the Service: round robin over its three endpoints.
    let replicas = endpoints(&ns, "shapes-inference", 3).await;
    let reviewer = endpoints(&ns, "loop-review", 1).await[0];
    let base = format!("http://{reviewer}");
    let pngs = images(&dir.path().join("traffic"));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let started = Instant::now();
    let sent: Vec<String> = futures::stream::iter(0..PREDICTIONS)
        .map(|i| {
            let (http, png, replica) = (http.clone(), pngs[i % pngs.len()].clone(), replicas[i % replicas.len()]);
            async move {
                let r = http
                    .post(format!("http://{replica}/v1/predict"))
                    .header("content-type", "image/png")
                    .body(png)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "predict on {replica}");
                r.json::<Value>().await.unwrap()["predictions"][0]["id"].as_str().unwrap().to_string()
            }
        })
        .buffer_unordered(6)
        .collect()
        .await;
    eprintln!("{prefix}: {PREDICTIONS} predictions over 3 replicas in {:.1?}", started.elapsed());

    // 2. One queue: the review service ingests every replica's log.
    let status = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/status"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json::<Value>()
            .await
            .map_err(|e| e.to_string())
    };
    eventually("every prediction ingested by the review service", 180, || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let s = status(http, base).await?;
            (s["totals"]["predictions"] == json!(PREDICTIONS)).then_some(()).ok_or(format!("{s}"))
        }
    })
    .await
    .unwrap();
    let token_secret = ns.api::<Secret>().get("shapes-review-token").await.unwrap();
    let token = String::from_utf8(token_secret.data.unwrap()["token"].0.clone()).unwrap();
    let page = review_items(&http, &base, &token, "toReview").await;
    assert_eq!(page["total"], json!(PREDICTIONS));
    let queued: BTreeSet<String> =
        page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(queued, sent.iter().cloned().collect(), "every replica's predictions, each once, in one queue");
    // The global order is `review_order::queue_order`'s for these predictions.
    let shapes = |v: &Value| serde_json::from_value::<Vec<Shape>>(v["shapes"].clone()).unwrap();
    let keys: Vec<QueueKey> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let shadow = (!i["shadow"].is_null()).then(|| shapes(&i["shadow"]));
            QueueKey::new(Task::Detection, i["id"].as_str().unwrap(), &shapes(&i["champion"]), shadow.as_deref())
        })
        .collect();
    assert_eq!(queue_order(&keys), (0..keys.len()).collect::<Vec<_>>(), "global order");

    // 3. 1,000 decisions from 8 reviewers at once (every third a correction); the service is
    //    SIGKILLed once a third are acknowledged and restarted by the kubelet.
    let items: Vec<Value> = page["items"].as_array().unwrap().clone();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (acknowledged, marker) = (acknowledged.clone(), log.clone());
        tokio::spawn(async move {
            while acknowledged.load(Ordering::SeqCst) < PREDICTIONS / 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let pid = review_service_pid(&marker).expect("the review service's process");
            // SAFETY: kill(2) on the review service process this test's operator started.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
            acknowledged.load(Ordering::SeqCst)
        })
    };
    let started = Instant::now();
    let answers: Vec<(String, u16, Value)> = futures::stream::iter(items.into_iter().enumerate())
        .map(|(k, item)| {
            let (http, base, token, acknowledged) = (http.clone(), base.clone(), token.clone(), acknowledged.clone());
            async move {
                let id = item["id"].as_str().unwrap().to_string();
                let body = if k % 3 == 0 {
                    let (w, h) = (item["width"].as_f64().unwrap() as f32, item["height"].as_f64().unwrap() as f32);
                    json!({"decision": "correct", "shapes": [{"label": "square", "classId": 1, "confidence": 1.0, "box": [1.0, 1.0, w / 2.0, h / 2.0]}]})
                } else {
                    json!({"decision": "accept"})
                };
                let code = decide(&http, &base, &token, &id, &body).await;
                acknowledged.fetch_add(1, Ordering::SeqCst);
                (id, code, body)
            }
        })
        .buffer_unordered(REVIEWERS)
        .collect()
        .await;
    let killed_at = killer.await.unwrap();
    let conflicts = answers.iter().filter(|a| a.1 == 409).count();
    eprintln!(
        "{prefix}: {PREDICTIONS} decisions in {:.1?}; SIGKILL after {killed_at}; {conflicts} answered 409 after a retry",
        started.elapsed()
    );
    assert!(killed_at < PREDICTIONS, "the service was killed mid-stream");
    let pods = ns.api::<Pod>().list(&ListParams::default().labels("flywheel.dev/review-service=loop")).await.unwrap();
    let restarts: i32 = pods
        .items
        .iter()
        .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .map(|c| c.restart_count)
        .sum();
    assert!(restarts >= 1, "the kubelet restarted the killed review service");

    // 4. Exactly once in the feedback dataset: one image and one annotation object per decision.
    // Counted as readers see the dataset (the storage layer's listing): a put the SIGKILL cut
    // short leaves a staged `<name>#<n>` file that no listing shows.
    let feedback = flywheel_storage::Location::open(&format!("file://{}/feedback", dir.path().display())).unwrap();
    let listed = |sub: &'static str| {
        let feedback = feedback.clone();
        async move { feedback.list(sub).await.unwrap().len() }
    };
    eventually("every review written into the feedback dataset", 300, || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let s = status(http, base).await?;
            let t = &s["totals"];
            (t["reviewed"] == json!(PREDICTIONS) && t["written"] == json!(PREDICTIONS))
                .then_some(())
                .ok_or(format!("{s}"))
        }
    })
    .await
    .unwrap();
    assert_eq!((listed("images").await, listed("annotations").await), (PREDICTIONS, PREDICTIONS), "one per review");
    let written: BTreeSet<String> = feedback
        .list("annotations")
        .await
        .unwrap()
        .iter()
        .map(|(path, _)| path.trim_start_matches("annotations/").trim_end_matches(".json").to_string())
        .collect();
    assert_eq!(written, sent.iter().cloned().collect(), "each acknowledged review's sample, none other");

    // 5. The gate's figures (the DataPipeline's status) equal the offline figures over every
    //    reviewed sample both models predicted.
    let reviewed = review_items(&http, &base, &token, "reviewed").await;
    let mut by_id: BTreeMap<String, Reviewed> = BTreeMap::new();
    for item in reviewed["items"].as_array().unwrap() {
        let shapes = |v: &Value| serde_json::from_value::<Vec<Shape>>(v.clone()).unwrap();
        by_id.insert(
            item["id"].as_str().unwrap().to_string(),
            (shapes(&item["champion"]["shapes"]), shapes(&item["shadow"]["shapes"]), shapes(&item["review"]["shapes"])),
        );
    }
    assert_eq!(by_id.len(), PREDICTIONS);
    let pairs = |pick: fn(&Reviewed) -> &Vec<Shape>| -> Option<f64> {
        let pairs: Vec<(&[Shape], &[Shape])> = by_id.values().map(|v| (pick(v).as_slice(), v.2.as_slice())).collect();
        flywheel_vision::reviewed::map50(&pairs)
    };
    let (champion_offline, shadow_offline) = (pairs(|v| &v.0), pairs(|v| &v.1));
    let p = ns
        .wait_for::<DataPipeline>(
            "loop",
            |p| {
                p.and_then(|p| p.status.as_ref()?.review_service.as_ref()).is_some_and(|r| {
                    r.written == Some(PREDICTIONS as u64)
                        && r.quality.as_ref().is_some_and(|q| q.reviewed_samples == PREDICTIONS as u64)
                })
            },
            120,
        )
        .await
        .unwrap()
        .unwrap();
    let service = p.status.unwrap().review_service.unwrap();
    let q = service.quality.unwrap();
    assert_eq!((q.champion_model_version.as_str(), q.shadow_model_version.as_deref()), ("champion", Some("shadow")));
    assert_eq!((q.champion, q.shadow), (champion_offline, shadow_offline), "gate figures = offline figures");
    assert_eq!(
        (service.predictions, service.reviewed, service.written),
        (Some(PREDICTIONS as u64), Some(PREDICTIONS as u64), Some(PREDICTIONS as u64))
    );
    assert_eq!(service.database, if database.is_some() { "postgresql" } else { "sqlite" });

    // 6. The inference replicas send reviewers to the service.
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect.get(format!("http://{}/review", replicas[1])).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("http://loop-review.{}.svc:8090/review", ns.name).as_str());
    (ns, operator)
}

/// Aborts the in-process operator when the test ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_queue_exactly_once_on_sqlite() {
    let (ns, _operator) = scenario("review-sqlite", None).await;

    // The loop turned off stops the service (0 replicas); turned on again, it comes back with
    // every review it had (its database claim stayed).
    // (The promotion gate needs the loop's reviews: it goes off and on with it.)
    let loop_enabled = |on: bool| {
        json!({"spec": {
            "feedbackLoop": {"datasetVersion": "fb", "enabled": on},
            "continuousDeployment": {"promotionGate": {"enabled": on}},
        }})
    };
    let pipelines = ns.api::<DataPipeline>();
    let merge = |v: &Value| kube::api::Patch::Merge(v.clone());
    pipelines.patch("loop", &Default::default(), &merge(&loop_enabled(false))).await.unwrap();
    let replicas = |n: i32| {
        move |d: Option<&k8s_openapi::api::apps::v1::Deployment>| {
            d.and_then(|d| d.spec.as_ref()?.replicas) == Some(n)
                && (n > 0 || d.and_then(|d| d.status.as_ref()?.replicas).unwrap_or(0) == 0)
        }
    };
    ns.wait_for("loop-review", replicas(0), 120).await.unwrap();
    let off = |p: Option<&DataPipeline>| p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.review_service.is_none());
    ns.wait_for::<DataPipeline>("loop", off, 60).await.unwrap();
    pipelines.patch("loop", &Default::default(), &merge(&loop_enabled(true))).await.unwrap();
    ns.wait_for("loop-review", replicas(1), 120).await.unwrap();
    let back = |p: Option<&DataPipeline>| {
        p.and_then(|p| p.status.as_ref()?.review_service.as_ref())
            .is_some_and(|r| r.reviewed == Some(PREDICTIONS as u64) && r.written == Some(PREDICTIONS as u64))
    };
    ns.wait_for::<DataPipeline>("loop", back, 180).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_queue_exactly_once_on_postgresql() {
    let pg = flywheel_test_support::postgres::Postgres::start();
    pg.create_database("reviews");
    let (ns, _operator) = scenario("review-pg", Some(pg.url("reviews"))).await;

    // The database goes away: the service answers 503 and the pipeline says so.
    drop(pg);
    let unavailable = |p: Option<&DataPipeline>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "ReviewServiceReady" && c.status == "False" && c.reason == "Unavailable")
        })
    };
    let p = ns.wait_for::<DataPipeline>("loop", unavailable, 120).await.unwrap().unwrap();
    let c = p.status.unwrap().conditions.into_iter().find(|c| c.type_ == "ReviewServiceReady").unwrap();
    assert!(c.message.contains("503"), "{}", c.message);
}
