//! The review store on a real SQLite file and a real PostgreSQL server (Debian's), the same
//! scenario on both: a prediction log written by three replicas is ingested once (again after
//! a restart, and with new objects), the queue is ordered globally, concurrent decisions on the
//! same predictions are each stored exactly once, and unwritten reviews survive a restart.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{Duration, Utc};
use flywheel_review_service::{Decision, Filter, Store, StoreError, ingest};
use flywheel_storage::Location;
use flywheel_types::Task;
use flywheel_types::prediction::{ModelOutput, PredictionRecord, Shape, records_path};
use flywheel_vision::review_order::{QueueKey, queue_order};

fn shapes(label: &str, confidence: f32) -> Vec<Shape> {
    vec![Shape { label: label.into(), class_id: 0, confidence, bbox: None }]
}

/// Record `n`: the champion says bird on every 3rd (cat otherwise), the shadow dog on every
/// 5th (cat otherwise), confidences spread, every 7th has no image.
fn record(replica: usize, n: usize) -> PredictionRecord {
    let confidence = 0.05 + (n * 37 % 90) as f32 / 100.0;
    let champion_label = if n.is_multiple_of(3) { "bird" } else { "cat" };
    let shadow_label = if n.is_multiple_of(5) { "dog" } else { "cat" };
    PredictionRecord {
        id: format!("r{replica}-{n:03}"),
        time: Utc::now() - Duration::seconds(n as i64),
        deployment: "shapes".into(),
        task: Task::Classification,
        image: (!n.is_multiple_of(7)).then(|| format!("images/r{replica}-{n:03}.png")),
        width: 64,
        height: 64,
        champion: ModelOutput {
            model: "m".into(),
            version: "v1".into(),
            shapes: shapes(champion_label, confidence),
            latency_ms: 1.0,
        },
        shadow: Some(ModelOutput {
            model: "m".into(),
            version: "v2".into(),
            shapes: shapes(shadow_label, 0.9),
            latency_ms: 1.0,
        }),
    }
}

/// Writes `records` as one log object, as a replica's flush does.
async fn write_object(log: &Location, records: &[PredictionRecord]) -> String {
    let mut body = Vec::new();
    for r in records {
        body.extend(serde_json::to_vec(r).unwrap());
        body.push(b'\n');
    }
    let path = records_path(Utc::now(), &uuid::Uuid::new_v4().simple().to_string());
    log.put(&path, Bytes::from(body)).await.unwrap();
    path
}

fn to_review() -> Filter {
    Filter { reviewed: Some(false), ..Default::default() }
}

async fn scenario(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = Location::open(&format!("file://{}/log", dir.path().display())).unwrap();
    // Three replicas, 20 records each (17 with an image), plus a line that is not a record.
    let mut with_image = 0;
    let mut reviewable = Vec::new();
    for replica in 0..3 {
        let records: Vec<_> = (0..20).map(|n| record(replica, n)).collect();
        with_image += records.iter().filter(|r| r.image.is_some()).count() as u64;
        reviewable.extend(records.iter().filter(|r| r.image.is_some()).cloned());
        write_object(&log, &records).await;
    }
    log.put(&records_path(Utc::now(), "garbage"), Bytes::from_static(b"{not a record}\n")).await.unwrap();

    let store = Store::connect(url).await.unwrap();
    let first = ingest(&store, &log).await.unwrap();
    assert_eq!((first.objects, first.predictions, first.unreadable), (4, with_image, 1));
    assert_eq!(ingest(&store, &log).await.unwrap().objects, 0, "an object is ingested once");
    drop(store);

    // A restart: migrations are already applied, the cursor holds, new objects are picked up.
    let store = Store::connect(url).await.unwrap();
    assert_eq!(ingest(&store, &log).await.unwrap().objects, 0);
    write_object(&log, &[record(3, 1), record(3, 2)]).await;
    let more = ingest(&store, &log).await.unwrap();
    assert_eq!((more.objects, more.predictions), (1, 2));
    let total = with_image + 2;
    assert_eq!(store.totals().await.unwrap().predictions, total as i64);

    // One global queue, in the order `review_order::queue_order` gives the same predictions:
    // every (disagreement, predicted class) part in proportion from the first page on.
    let (page, n) = store.list(&to_review(), 1000, 0).await.unwrap();
    assert_eq!(n, total as i64);
    let keys: Vec<QueueKey> = page
        .iter()
        .map(|i| {
            let r = &i.record;
            QueueKey::new(r.task, &r.id, &r.champion.shapes, r.shadow.as_ref().map(|s| s.shapes.as_slice()))
        })
        .collect();
    assert_eq!(queue_order(&keys), (0..page.len()).collect::<Vec<_>>());
    assert!(page[..10].iter().any(|i| i.disagreement) && page[..10].iter().any(|i| !i.disagreement));
    let (second_page, _) = store.list(&to_review(), 10, 10).await.unwrap();
    assert_eq!(second_page, page[10..20]);

    // The filters, each against the same count made from the records themselves.
    let count = |f: &dyn Fn(&PredictionRecord) -> bool| reviewable.iter().filter(|r| f(r)).count() as i64;
    let birds = Filter { label: Some("bird".into()), ..to_review() };
    let (hits, n) = store.list(&birds, 1000, 0).await.unwrap();
    assert_eq!(n, count(&|r| r.champion.shapes[0].label == "bird"));
    assert!(n > 0 && hits.iter().all(|i| i.record.champion.shapes[0].label == "bird"));
    let unsure = Filter { max_confidence: Some(0.3), ..to_review() };
    let (hits, n) = store.list(&unsure, 1000, 0).await.unwrap();
    assert_eq!(n, count(&|r| r.champion.shapes[0].confidence <= 0.3));
    assert!(n > 0 && hits.iter().all(|i| i.min_confidence <= 0.3));
    let both = Filter { disagreement: Some(true), label: Some("cat".into()), ..to_review() };
    let (hits, n) = store.list(&both, 1000, 0).await.unwrap();
    let disagrees = |r: &PredictionRecord| r.champion.shapes[0].label != r.shadow.as_ref().unwrap().shapes[0].label;
    assert_eq!(n, count(&|r| r.champion.shapes[0].label == "cat" && disagrees(r)));
    assert!(n > 0 && hits.iter().all(|i| i.disagreement));
    assert_eq!(store.list(&Filter { label: Some("zebra".into()), ..to_review() }, 10, 0).await.unwrap().1, 0);

    // Eight reviewers decide the same 20 predictions at once: each is stored exactly once.
    let ids: Vec<String> = page.iter().take(20).map(|i| i.record.id.clone()).collect();
    let store = std::sync::Arc::new(store);
    let reviewers: Vec<_> = (0..8)
        .map(|k| {
            let (store, ids) = (store.clone(), ids.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for id in &ids {
                    let r = store.decide(id, Decision::Correct, &shapes(&format!("label-{k}"), 1.0), 1000 + k).await;
                    outcomes.push((id.clone(), r.map_err(|e| matches!(e, StoreError::AlreadyReviewed(_)))));
                }
                outcomes
            })
        })
        .collect();
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    for r in reviewers {
        for (id, outcome) in r.await.unwrap() {
            match outcome {
                Ok(()) => *stored.entry(id).or_default() += 1,
                Err(already) => assert!(already, "{id}: an error other than already reviewed"),
            }
        }
    }
    assert_eq!(stored.len(), 20);
    assert!(stored.values().all(|&n| n == 1), "{stored:?}");
    assert!(matches!(store.decide("nope", Decision::Accept, &[], 1).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.list(&Filter { reviewed: Some(true), ..Default::default() }, 1000, 0).await.unwrap().1, 20);

    // Unwritten reviews, oldest first; marking some written survives a restart.
    let pending = store.unwritten(1000).await.unwrap();
    assert_eq!(pending.len(), 20);
    for review in &pending[..5] {
        store.mark_written(&review.id).await.unwrap();
    }
    drop(store);
    let store = Store::connect(url).await.unwrap();
    let pending = store.unwritten(1000).await.unwrap();
    assert_eq!(pending.len(), 15);
    assert!(pending.iter().all(|r| r.decision == Decision::Correct && r.shapes[0].label.starts_with("label-")));
    assert_eq!(store.totals().await.unwrap().written, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&format!("sqlite://{}/reviews.db?mode=rwc", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql() {
    let pg = flywheel_test_support::postgres::Postgres::start();
    pg.create_database("reviews");
    scenario(&pg.url("reviews")).await;
}
