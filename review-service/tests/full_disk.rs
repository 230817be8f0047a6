//! The review service's SQLite database on a disk that fills up: the service process runs with
//! a file-size limit (`RLIMIT_FSIZE`, so its database files cannot grow past it, as on a full
//! disk), ingests a prediction log, then takes decisions until its writes fail. A decision it
//! cannot store is answered 503 and never acknowledged; after a SIGKILL and a restart with
//! room, the database passes SQLite's integrity check, holds exactly the acknowledged
//! decisions, and takes the rest.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use common::{TOKEN, record};
use flywheel_storage::Location;
use flywheel_types::prediction::records_path;
use serde_json::{Value, json};

const PREDICTIONS: usize = 200;
/// Room for the ingested log (a few hundred KiB of database and write-ahead log), not for 200
/// decisions on top (each commit appends pages to the write-ahead log).
const FILE_SIZE_LIMIT: u64 = 512 * 1024;

/// Starts the service binary on `dir`'s database, log and feedback dataset; with `limit`, no
/// file it writes can grow past `limit` bytes (writes fail with EFBIG instead of a signal).
fn spawn(dir: &Path, addr: &str, limit: Option<u64>) -> Service {
    let uri = |leaf: &str| format!("file://{}/{leaf}", dir.display());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flywheel-review-service"));
    cmd.args(["--sqlite-file", &dir.join("reviews.db").display().to_string()])
        .args(["--log-uri", &uri("log"), "--feedback-uri", &uri("feedback")])
        .args(["--labels", "cat,dog", "--task", "detection", "--listen", addr, "--poll-seconds", "1"])
        .args(["--token-file", &dir.join("token").display().to_string()]);
    if let Some(bytes) = limit {
        // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let rlimit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    Service(cmd.spawn().expect("the review service binary"))
}

/// The service process, SIGKILLed when dropped (a failing test leaves none behind).
struct Service(Child);

impl Service {
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback address (bound and released; the service binds it next).
fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

async fn status(client: &reqwest::Client, base: &str) -> Option<Value> {
    client.get(format!("{base}/status")).send().await.ok()?.json().await.ok()
}

/// Waits (up to a minute) until the service's `/status` satisfies `done`.
async fn wait_status(client: &reqwest::Client, base: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(client, base).await;
        if let Some(s) = s.as_ref().filter(|s| done(s)) {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn decide(client: &reqwest::Client, base: &str, id: &str) -> (u16, String) {
    let r = client
        .post(format!("{base}/v1/review/items/{id}"))
        .bearer_auth(TOKEN)
        .json(&json!({"decision": "accept"}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_decisions_without_losing_or_corrupting_the_acknowledged_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let log = Location::open(&format!("file://{}/log", dir.path().display())).unwrap();
    let records: Vec<_> = (0..PREDICTIONS).map(|n| record(0, n)).collect();
    let mut body = Vec::new();
    for r in &records {
        log.put(r.image.as_deref().unwrap(), Bytes::from(format!("png of {}", r.id))).await.unwrap();
        body.extend(serde_json::to_vec(r).unwrap());
        body.push(b'\n');
    }
    log.put(&records_path(Utc::now(), "replica0"), Bytes::from(body)).await.unwrap();

    // A "disk" with room for the ingested log but not for every decision.
    let addr = free_addr();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let service = spawn(dir.path(), &addr, Some(FILE_SIZE_LIMIT));
    wait_status(&client, &base, "ingested", |s| s["totals"]["predictions"] == json!(PREDICTIONS)).await;
    // Every decision once; a write that fails is refused, and a later one may still fit.
    let mut acknowledged = BTreeSet::new();
    let mut refused = Vec::new();
    for r in &records {
        match decide(&client, &base, &r.id).await {
            (200, _) => {
                acknowledged.insert(r.id.clone());
            }
            (code, text) => refused.push((r.id.clone(), code, text)),
        }
    }
    eprintln!("{} decisions acknowledged, {} refused, e.g. {:?}", acknowledged.len(), refused.len(), refused.first());
    assert!(!acknowledged.is_empty() && !refused.is_empty(), "the disk filled mid-stream");
    assert!(refused.iter().all(|(_, code, _)| *code == 503), "{refused:?}");
    service.kill();

    // The database is intact and holds exactly the acknowledged decisions.
    let url = format!("sqlite://{}", dir.path().join("reviews.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    let check: (String,) = sqlx::query_as("PRAGMA integrity_check").fetch_one(&db).await.unwrap();
    assert_eq!(check.0, "ok");
    db.close().await;
    let addr = free_addr();
    let base = format!("http://{addr}");
    let service = spawn(dir.path(), &addr, None);
    let s = wait_status(&client, &base, "restarted", |s| s["totals"]["predictions"] == json!(PREDICTIONS)).await;
    assert_eq!(s["totals"]["reviewed"], json!(acknowledged.len()), "{s}");
    let page: Value = client
        .get(format!("{base}/v1/review/items?status=reviewed&limit=1000"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reviewed: BTreeSet<String> =
        page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(reviewed, acknowledged, "exactly the acknowledged decisions");

    // With room again, the rest are taken and every sample is written.
    for r in records.iter().filter(|r| !acknowledged.contains(&r.id)) {
        assert_eq!(decide(&client, &base, &r.id).await.0, 200, "{}", r.id);
    }
    wait_status(&client, &base, "all written", |s| s["totals"]["written"] == json!(PREDICTIONS)).await;
    let annotations = std::fs::read_dir(dir.path().join("feedback/annotations")).unwrap().count();
    assert_eq!(annotations, PREDICTIONS);
    service.kill();
}
