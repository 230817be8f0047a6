//! The review service end to end, on a real SQLite file and a real PostgreSQL server: three
//! replicas' prediction log is ingested by the polling loop, 200 concurrent decisions from
//! several HTTP clients over 100 predictions store exactly one per prediction (100 are 200,
//! 100 are 409), the service is dropped and started again on the same database before the
//! writer runs (a sample put before the crash but never marked written included), a failed
//! write stays pending and is retried, and the feedback dataset ends up with exactly one
//! sample (one image, one annotation object) per acknowledged decision, read back as COCO.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use flywheel_review_service::http::{Token, router};
use flywheel_review_service::{Service, Store};
use flywheel_storage::{FeedbackWriter, Location, Sample};
use flywheel_types::Task;
use flywheel_types::dataset::DatasetFormat;
use flywheel_types::dataset::coco::{CocoDocument, assemble};
use flywheel_types::prediction::{PredictionRecord, Shape, records_path};
use futures::StreamExt;
use serde_json::{Value, json};

mod common;

use common::{TOKEN, labels, record};
const PREDICTIONS: usize = 100;

/// Three replicas log 100 predictions: each image, then its records object.
async fn write_log(log: &Location) -> Vec<PredictionRecord> {
    let mut all = Vec::new();
    for replica in 0..3 {
        let records: Vec<_> = (0..PREDICTIONS).filter(|n| n % 3 == replica).map(|n| record(replica, n)).collect();
        let mut body = Vec::new();
        for r in &records {
            log.put(r.image.as_deref().unwrap(), Bytes::from(format!("png of {}", r.id))).await.unwrap();
            body.extend(serde_json::to_vec(r).unwrap());
            body.push(b'\n');
        }
        log.put(&records_path(Utc::now(), &format!("replica{replica}")), Bytes::from(body)).await.unwrap();
        all.extend(records);
    }
    all
}

struct Running {
    service: Arc<Service>,
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops serving and ingesting, closes the database connections (a keep-alive connection's
    /// task may still hold the service; it can no longer reach the database) and drops it.
    async fn kill(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.service.store.close().await;
    }
}

async fn start(url: &str, root: &std::path::Path) -> Running {
    let store = Store::connect(url).await.unwrap();
    let log = Location::open(&format!("file://{}/log", root.display())).unwrap();
    let feedback = Location::open(&format!("file://{}/feedback", root.display())).unwrap();
    let writer = FeedbackWriter::new(feedback, DatasetFormat::Coco, labels());
    let service = Arc::new(Service::new(store, log, writer, Task::Detection, labels()));
    std::fs::write(root.join("token"), TOKEN).unwrap();
    let app = router(service.clone(), Token::from_file(Some(root.join("token"))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let ingester = service.clone();
    let ingest = tokio::spawn(async move { ingester.ingest_loop(Duration::from_millis(200)).await });
    Running { service, addr, tasks: vec![server, ingest] }
}

/// Polls `/status` until `predictions` are ingested (or fails after a minute).
async fn wait_ingested(client: &reqwest::Client, addr: SocketAddr, predictions: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        poll.tick().await;
        let status: Value = client.get(format!("http://{addr}/status")).send().await.unwrap().json().await.unwrap();
        if status["totals"]["predictions"] == json!(predictions) {
            return;
        }
        assert!(Instant::now() < deadline, "not ingested in time: {status}");
    }
}

async fn scenario(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let run = start(url, root).await;
    let log = run.service.log.clone();
    let records = write_log(&log).await;
    let client = reqwest::Client::new();
    wait_ingested(&client, run.addr, PREDICTIONS as i64).await;
    let base = format!("http://{}", run.addr);

    // Auth and validation.
    let r = client.get(format!("{base}/v1/review/items")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let bad = json!({ "decision": "correct", "shapes": [{ "label": "horse", "classId": 0, "confidence": 1.0, "box": [1, 1, 2, 2] }] });
    let r = client.post(format!("{base}/v1/review/items/r0-000")).bearer_auth(TOKEN).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let outside = json!({ "decision": "correct", "shapes": [{ "label": "dog", "classId": 1, "confidence": 1.0, "box": [1, 1, 90, 2] }] });
    let r =
        client.post(format!("{base}/v1/review/items/r0-000")).bearer_auth(TOKEN).json(&outside).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .post(format!("{base}/v1/review/items/nope"))
        .bearer_auth(TOKEN)
        .json(&json!({"decision": "accept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let page: Value = client
        .get(format!("{base}/v1/review/items?limit=1000"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], json!(PREDICTIONS));
    assert_eq!(page["items"][0]["status"], json!("TO_REVIEW"));

    // 200 decisions (an accept and a correction per prediction) from 8 clients at once.
    let clients: Vec<_> = (0..8).map(|_| reqwest::Client::new()).collect();
    let mut requests = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let accept = json!({ "decision": "accept" });
        let correct = json!({ "decision": "correct", "shapes": [{ "label": "dog", "classId": 1, "confidence": 0.5, "box": [8.0, 8.0, 40.0, 40.0] }] });
        // Interleave so the two decisions on one prediction go out from different clients.
        requests.push((i * 2 % 8, r.id.clone(), accept));
        requests.push(((i * 2 + 3) % 8, r.id.clone(), correct));
    }
    let answers: Vec<(String, u16, Value)> = futures::stream::iter(requests)
        .map(|(c, id, body)| {
            let (client, base) = (clients[c].clone(), base.clone());
            async move {
                let r = client
                    .post(format!("{base}/v1/review/items/{id}"))
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (id, status, r.json::<Value>().await.unwrap())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let ok: Vec<_> = answers.iter().filter(|a| a.1 == 200).collect();
    let conflicts = answers.iter().filter(|a| a.1 == 409).count();
    assert_eq!(
        (ok.len(), conflicts),
        (PREDICTIONS, PREDICTIONS),
        "{:?}",
        answers.iter().find(|a| a.1 != 200 && a.1 != 409)
    );
    // What each acknowledged decision made the ground truth (one per prediction).
    let acknowledged: BTreeMap<String, String> = ok
        .iter()
        .map(|(id, _, v)| (id.clone(), v["review"]["shapes"][0]["label"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(acknowledged.len(), PREDICTIONS);
    let item: Value = client
        .get(format!("{base}/v1/review/items/r1-001"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(item["status"], json!("REVIEWED"));
    assert_eq!(item["review"]["shapes"][0]["label"].as_str().unwrap(), acknowledged["r1-001"]);

    // The quality figures the gate reads equal those computed offline from every acknowledged
    // review, by the one definition of mAP@0.5 on reviewed samples.
    let truth: BTreeMap<String, Vec<Shape>> = ok
        .iter()
        .map(|(id, _, v)| (id.clone(), serde_json::from_value(v["review"]["shapes"].clone()).unwrap()))
        .collect();
    let mut by_id: Vec<&PredictionRecord> = records.iter().collect();
    by_id.sort_by(|a, b| a.id.cmp(&b.id));
    let pairs: Vec<(&[Shape], &[Shape])> =
        by_id.iter().map(|r| (r.champion.shapes.as_slice(), truth[&r.id].as_slice())).collect();
    let offline = flywheel_vision::reviewed::map50(&pairs);
    assert!(offline.is_some());
    let status: Value = client.get(format!("{base}/status")).send().await.unwrap().json().await.unwrap();
    let figures = status["quality"].as_array().unwrap();
    assert_eq!(figures.len(), 1, "{status}");
    assert_eq!(figures[0]["championModel"], json!({"model": "m", "version": "v1"}));
    assert_eq!((figures[0]["metric"].as_str(), figures[0]["reviewedSamples"].as_u64()), (Some("mAP50"), Some(100)));
    assert_eq!(figures[0]["champion"].as_f64(), offline);
    assert!(figures[0]["shadow"].is_null() && figures[0]["shadowModel"].is_null());
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("flywheel_review_reviewed 100"), "{metrics}");

    // A crash after one sample's put and before it was marked written.
    let early = &records[0];
    let shapes = run.service.store.review(&early.id).await.unwrap().unwrap().1;
    let image = log.get(early.image.as_deref().unwrap()).await.unwrap();
    let sample = Sample { id: &early.id, ext: "png", image, width: 64, height: 64, shapes: &shapes };
    run.service.feedback.write(&sample).await.unwrap();
    run.kill().await;

    // Restart on the same database: every acknowledged decision is there, none is written.
    let run = start(url, root).await;
    let totals = run.service.store.totals().await.unwrap();
    assert_eq!((totals.predictions, totals.reviewed, totals.written), (100, 100, 0));
    // One image is unreadable during the first pass: that review stays pending.
    let missing = records[5].image.clone().unwrap();
    let moved = root.join("moved.png");
    std::fs::rename(root.join("log").join(&missing), &moved).unwrap();
    let first = run.service.write_pending().await.unwrap();
    assert_eq!((first.written, first.failed), (99, 1));
    std::fs::rename(&moved, root.join("log").join(&missing)).unwrap();
    let second = run.service.write_pending().await.unwrap();
    assert_eq!((second.written, second.failed), (1, 0));
    assert_eq!(run.service.write_pending().await.unwrap().written, 0, "nothing is written twice");
    assert_eq!(run.service.store.totals().await.unwrap().written, 100);

    // The feedback dataset: exactly one image and one annotation object per acknowledged decision.
    let feedback = Location::open(&format!("file://{}/feedback", root.display())).unwrap();
    let objects = feedback.list("").await.unwrap();
    let images: Vec<_> = objects.iter().filter(|(p, _)| p.starts_with("images/")).collect();
    let annotations = feedback.get_all("annotations").await.unwrap();
    assert_eq!((objects.len(), images.len(), annotations.len()), (200, 100, 100));
    let doc: CocoDocument = assemble(None, &annotations).unwrap();
    assert_eq!((doc.images.len(), doc.annotations.len()), (100, 100));
    let names: BTreeMap<i64, &str> = doc.categories.iter().map(|c| (c.id, c.name.as_str())).collect();
    let files: BTreeMap<i64, &str> = doc.images.iter().map(|i| (i.id, i.file_name.as_str())).collect();
    let mut found = BTreeMap::new();
    for a in &doc.annotations {
        let file = files[&a.image_id];
        let id = file.trim_start_matches("images/").trim_end_matches(".png").to_string();
        found.insert(id, names[&a.category_id].to_string());
    }
    assert_eq!(found, acknowledged, "the dataset holds exactly the acknowledged ground truth");

    // The database out of reach: 503, not a crash or a wrong answer.
    run.service.store.close().await;
    let r = client.get(format!("http://{}/status", run.addr)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = client.get(format!("http://{}/v1/review/items", run.addr)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    run.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&format!("sqlite://{}/reviews.db?mode=rwc", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let pg = flywheel_test_support::postgres::Postgres::start();
    pg.create_database("service");
    scenario(&pg.url("service")).await;
}
