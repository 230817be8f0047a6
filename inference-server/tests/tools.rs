//! The server against real third-party clients: Triton's Python client, Prometheus (scrape and
//! `promtool check metrics`) and headless Chromium rendering the review page.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// Kills the child process it owns when dropped (tests never leave servers behind).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn need(tool: &str) -> std::path::PathBuf {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(tool)).find(|p| p.exists()));
    found.unwrap_or_else(|| {
        panic!("{tool} is not installed: run scripts/install-deps.sh (apt packages prometheus, chromium)")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_runs_inferences() {
    let s = TestServer::start(&config(classifier("colour", "colour_classifier.onnx", "v1"))).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/triton_infer.py");
    let addr = s.running.addr.to_string();
    let out =
        tokio::task::spawn_blocking(move || Command::new(python()).args([script, &addr, "colour"]).output().unwrap())
            .await
            .unwrap();
    assert!(
        out.status.success(),
        "tritonclient failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tritonclient OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_and_promtool_accepts_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(classifier("colour", "colour_classifier.onnx", "v1"));
    cfg.shadow = Some(classifier("colour-shadow", "colour_classifier_confused.onnx", "s1"));
    let s = TestServer::start_in(dir, &cfg).await;
    for _ in 0..3 {
        let r = s.client.post(s.url("/v1/predict")).body(png(32, 32, [255, 0, 0], None)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    wait_until("shadow ran", || async {
        metric_value(&s.metrics().await, "flywheel_shadow_runs_total", &[]).is_some_and(|v| v >= 3.0)
    })
    .await;

    // promtool lints the exposition as Prometheus parses it.
    let text = s.metrics().await;
    let mut child = Command::new(need("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes the server.
    let prom_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg_path = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg_path,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: flywheel\n    static_configs:\n      - targets: ['{}']\n",
            s.running.addr
        ),
    )
    .unwrap();
    let _prom = ChildGuard(
        Command::new(need("prometheus"))
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!("--storage.tsdb.path={}", prom_dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let query = |q: &str| {
        let (c, url) = (s.client.clone(), format!("http://127.0.0.1:{port}/api/v1/query"));
        let q = q.to_string();
        async move {
            let r = c.get(url).query(&[("query", q)]).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            v["data"]["result"].as_array().cloned()
        }
    };
    wait_until("prometheus scraped the server", || async {
        query("flywheel_predictions_total{role=\"champion\"}").await.is_some_and(|r| {
            r.first().and_then(|x| x["value"][1].as_str()?.parse::<f64>().ok()).is_some_and(|v| v >= 3.0)
        })
    })
    .await;
    let shadow = query("flywheel_inference_duration_seconds_count{role=\"shadow\"}").await.unwrap();
    assert_eq!(shadow.len(), 1, "{shadow:?}");
    let up = query("up{job=\"flywheel\"}").await.unwrap();
    assert_eq!(up[0]["value"][1], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_page_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let token = "page-token-42";
    std::fs::write(dir.path().join("token"), token).unwrap();
    let mut cfg = config(detector("squares", "d1"));
    // The shadow runs the same detector with stretch instead of letterbox resizing, which
    // splits the square over two cells: a visible disagreement.
    let mut shadow = detector("squares-shadow", "d2");
    shadow.input.resize = flywheel_inference_server::serving::ResizeMode::Stretch;
    cfg.shadow = Some(shadow);
    cfg.prediction_log = Some(flywheel_inference_server::serving::PredictionLogConfig {
        uri: format!("file://{}/log", dir.path().display()),
        sample_rate: 1.0,
        retention_days: 7,
        flush_records: 4,
        flush_interval_ms: 20,
    });
    cfg.feedback_dataset = Some(flywheel_inference_server::serving::FeedbackDatasetConfig {
        uri: format!("file://{}/feedback", dir.path().display()),
        format: None,
        labels: vec![],
    });
    cfg.auth.token_file = Some(dir.path().join("token").display().to_string());
    let s = TestServer::start_in(dir, &cfg).await;
    let img = png(128, 64, [20, 20, 20], Some((32, 16, 16, [255, 0, 0])));
    let r = s.client.post(s.url("/v1/predict")).body(img).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_until("logged with shadow", || async {
        let r = s.client.get(s.url("/v1/review/items")).bearer_auth(token).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        v["total"] == 1 && v["items"][0]["shadow"].is_object()
    })
    .await;

    let chromium = need("chromium");
    let profile = tempfile::tempdir().unwrap();
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("review-page.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("{}/review#token={token}", s.base);
    let run = |extra: Vec<String>| {
        let (chromium, profile, url) = (chromium.clone(), profile.path().to_path_buf(), url.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1280,720",
                    "--virtual-time-budget=10000",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(extra)
                .arg(url)
                .output()
                .unwrap()
        })
    };
    // Headless Chromium's virtual-time budget can run out before the page's fetches return on
    // a loaded machine, dumping the DOM before the page drew: try a few times.
    let mut dom = run(vec!["--dump-dom".into()]).await.unwrap();
    for _ in 0..2 {
        if String::from_utf8_lossy(&dom.stdout).contains("<canvas id=\"canvas\" width=\"128\"") {
            break;
        }
        dom = run(vec!["--dump-dom".into()]).await.unwrap();
    }
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        html.contains("<canvas id=\"canvas\" width=\"128\" height=\"64\""),
        "image not drawn:\n{html}\n{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(html.contains("red 0.9") || html.contains("red 1.00"), "champion shapes missing:\n{html}");
    assert!(html.contains("<span class=\"tag dis\">disagreement</span>"), "{html}");
    assert!(html.contains("<td>shadow</td><td>d2</td>"), "{html}");
    let out = run(vec![format!("--screenshot={}", shot.display())]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png_bytes = std::fs::read(&shot).expect("screenshot written");
    assert!(png_bytes.starts_with(b"\x89PNG") && png_bytes.len() > 10_000);
    println!("screenshot: {}", shot.display());
}
