//! An inference replica SIGKILLed while it answers and logs predictions: every record it had
//! acknowledged (written to the log, counted by `flywheel_prediction_log_records_total`)
//! survives and reaches the review queue once; what it loses is at most the records it had
//! not acknowledged; no record is half-written or names a missing image.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::*;

/// Records acknowledged before the kill (a few flushed batches).
const ACKNOWLEDGED_BEFORE_KILL: u64 = 150;

/// The pid of the inference server of pod `pod` in namespace `ns` (its working directory is
/// the pod's root file system under the kubelet's `<ns>_<pod>_<uid>` directory).
fn inference_server_pid(ns: &str, pod: &str) -> Option<i32> {
    let marker = format!("/{ns}_{pod}_");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
        (String::from_utf8_lossy(&cmdline).contains("flywheel-inference-server")
            && cwd.to_string_lossy().contains(&marker))
        .then_some(pid)
    })
}

/// A counter's value in a Prometheus text exposition.
fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok()).map(|v| v as u64)
}

/// Every record in the log's `records/` objects: (id, image path).
fn logged(log: &Path) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let Ok(days) = std::fs::read_dir(log.join("records")) else { return out };
    for day in days.flatten() {
        for file in std::fs::read_dir(day.path()).unwrap().flatten() {
            let text = std::fs::read_to_string(file.path()).unwrap();
            for line in text.lines().filter(|l| !l.is_empty()) {
                let record: Value = serde_json::from_str(line).expect("a whole record");
                out.push((record["id"].as_str().unwrap().to_string(), record["image"].as_str().map(String::from)));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inference_replica_killed_while_logging_loses_only_unacknowledged_records() {
    let (ns, client) = namespace("replica-kill").await;
    let dir = tempfile::tempdir().unwrap();
    let settings = flywheel_operator::context::Settings { verify_models: false, ..test_settings(&ns.name) };
    let _operator = AbortOnDrop(start_operator(client.clone(), settings));
    let uri = |leaf: &str| format!("file://{}/{leaf}", dir.path().display());
    let champion = generate(&["model", "--task", "detection", "--seed", "1", "--out", &uri("champion.onnx")]);
    let count = ["--count", "20", "--seed", "9"];
    generate(
        &[&["dataset", "--task", "detection", "--format", "coco"][..], &count, &["--out", &uri("traffic")]].concat(),
    );
    std::fs::create_dir_all(dir.path().join("feedback")).unwrap();
    ns.apply_yaml(&format!(
        "{}\n---
apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: fb}}
spec: {{uri: '{feedback}', format: coco, task: detection, labels: [circle, square, triangle], feedback: true}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {{name: shapes}}
spec:
  champion: {{modelVersion: champion}}
  confidenceThreshold: 0.05
  replicas: 1
  predictionLog: {{uri: '{log}', sampleRate: 1.0}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {{name: loop}}
spec: {{deployment: shapes, feedbackLoop: {{datasetVersion: fb}}}}
",
        model_version("champion", champion),
        feedback = uri("feedback"),
        log = uri("log"),
    ))
    .await
    .unwrap();
    let replica = endpoints(&ns, "shapes-inference", 1).await[0];
    let reviewer = endpoints(&ns, "loop-review", 1).await[0];
    let pods = ns.api::<Pod>().list(&ListParams::default()).await.unwrap().items;
    let ip = replica.ip().to_string();
    let pod = pods.iter().find(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(ip.as_str())).unwrap();
    let pid = inference_server_pid(&ns.name, &pod.metadata.name.clone().unwrap()).expect("the replica's process");

    // Traffic until the kill; the ids of every prediction answered 200.
    let pngs = images(&dir.path().join("traffic"));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let (answered, stop) = (Arc::new(Mutex::new(Vec::<String>::new())), Arc::new(AtomicBool::new(false)));
    let senders: Vec<_> = (0..4)
        .map(|k| {
            let (http, pngs, answered, stop) = (http.clone(), pngs.clone(), answered.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = k;
                while !stop.load(Ordering::SeqCst) {
                    let body = pngs[i % pngs.len()].clone();
                    i += 4;
                    let url = format!("http://{replica}/v1/predict");
                    let Ok(r) = http.post(url).header("content-type", "image/png").body(body).send().await else {
                        continue;
                    };
                    if r.status() == 200
                        && let Ok(v) = r.json::<Value>().await
                    {
                        answered.lock().unwrap().push(v["predictions"][0]["id"].as_str().unwrap().to_string());
                    }
                }
            })
        })
        .collect();
    // SIGKILL once a few batches are acknowledged, while more are queued.
    let acknowledged = eventually("the replica acknowledged records", 120, || {
        let http = http.clone();
        async move {
            let text = http.get(format!("http://{replica}/metrics")).send().await.map_err(|e| e.to_string())?;
            let text = text.text().await.map_err(|e| e.to_string())?;
            let written = counter(&text, "flywheel_prediction_log_records_total").ok_or("no log counter")?;
            (written >= ACKNOWLEDGED_BEFORE_KILL).then_some(written).ok_or(format!("{written} written"))
        }
    })
    .await
    .unwrap();
    // No new request after this (the restarted process must not log into what is checked);
    // those in flight and the queued records meet the SIGKILL.
    stop.store(true, Ordering::SeqCst);
    // SAFETY: kill(2) on the inference server process of this test's own pod.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let answered_at_kill = answered.lock().unwrap().len();
    for s in senders {
        s.await.unwrap();
    }
    let answered: BTreeSet<String> = answered.lock().unwrap().iter().cloned().collect();
    let restarted = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.container_statuses.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.restart_count >= 1 && c.ready))
    };
    ns.wait_for::<Pod>(&pod.metadata.name.clone().unwrap(), restarted, 120).await.unwrap();

    // What the log holds: whole records of answered predictions, each once, with their images,
    // at least every record acknowledged before the kill.
    let log = dir.path().join("log");
    let records = logged(&log);
    let ids: BTreeSet<String> = records.iter().map(|r| r.0.clone()).collect();
    assert_eq!(ids.len(), records.len(), "no record written twice");
    assert!(ids.is_subset(&answered), "every logged record is an answered prediction");
    for (id, image) in &records {
        let image = image.as_ref().unwrap_or_else(|| panic!("{id}: an image request's record names its image"));
        assert!(log.join(image).exists(), "{id}: {image} is missing");
    }
    let lost = answered.len() - ids.len();
    eprintln!(
        "replica SIGKILLed after {acknowledged} acknowledged records ({answered_at_kill} answered); the log holds {} \
         of {} answered; {lost} lost",
        ids.len(),
        answered.len()
    );
    assert!(ids.len() as u64 >= acknowledged, "an acknowledged record was lost");
    assert!(answered.len() as u64 > acknowledged, "the kill came while records were unacknowledged");

    // The review queue holds exactly the surviving records.
    let token_secret = ns.api::<Secret>().get("shapes-review-token").await.unwrap();
    let token = String::from_utf8(token_secret.data.unwrap()["token"].0.clone()).unwrap();
    let base = format!("http://{reviewer}");
    let queued = eventually("every surviving record ingested", 120, || {
        let (http, base, token, want) = (http.clone(), base.clone(), token.clone(), ids.len());
        async move {
            let page = review_items(&http, &base, &token, "toReview").await;
            let queued: BTreeSet<String> =
                page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
            (page["total"] == json!(want)).then_some(queued).ok_or(format!("{} of {want} queued", page["total"]))
        }
    })
    .await
    .unwrap();
    // One page holds the first 1,000 items.
    let extra: Vec<&String> = queued.difference(&ids).collect();
    let missing: Vec<&String> = ids.difference(&queued).take(10).collect();
    assert!(
        extra.is_empty() && queued.len() == ids.len().min(1000),
        "the queue is the log's records: {} queued, {} logged; queued but not logged {extra:?}; logged but not \
         queued (first 10) {missing:?}",
        queued.len(),
        ids.len()
    );
}
