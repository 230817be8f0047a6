//! A real Prometheus for tests: scrapes the inference pods of some namespaces of the local
//! cluster (relabelled to the label convention of docs/monitoring.md: `namespace`, `pod`,
//! `deployment`), plus static targets such as an operator running in the test process;
//! answers PromQL over its HTTP API.
//!
//! Debian's `prometheus` is built without Kubernetes service discovery, so the pods reach
//! Prometheus through [`pod_discovery`]: a task that lists them from the API server and
//! writes a `file_sd` file with the `__meta_kubernetes_pod_*` labels Kubernetes SD would give
//! them. The relabelling ([`INFERENCE_POD_RELABEL_CONFIGS`]) is the one a PodMonitor applies.
//!
//! ```no_run
//! # async fn t(kubeconfig: &std::path::Path) -> Result<(), flywheel_e2e::prometheus::PrometheusError> {
//! use flywheel_e2e::prometheus::{Prometheus, ScrapeTarget};
//! let prom = Prometheus::start(kubeconfig, "my-ns", &[ScrapeTarget::new("flywheel-operator", "127.0.0.1:9090")]).await?;
//! let series = prom.wait_for_series("flywheel_model_info", std::time::Duration::from_secs(60)).await?;
//! # Ok(()) }
//! ```
//!
//! The `prometheus` binary comes from Debian's `prometheus` package (scripts/apt-packages.txt).
//! The process is killed when the [`Prometheus`] value is dropped, and gets SIGKILL if the
//! thread that started it dies first, so call `start` from a thread that outlives it (a test's
//! own thread or a runtime worker, not a `spawn_blocking` closure).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod dashboard;
pub mod pod_discovery;

pub use dashboard::{collect_panels, dashboard_queries, substitute};

#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("prometheus is not installed (Debian package `prometheus`, see scripts/apt-packages.txt): {0}")]
    NotInstalled(std::io::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("prometheus did not become ready within {secs}s; its log:\n{log}")]
    NotReady { secs: u64, log: String },
    #[error("query {expr:?}: {message}")]
    Query { expr: String, message: String },
    #[error("no series for {expr:?} after {secs}s; scrape targets:\n{targets}")]
    NoSeries { expr: String, secs: u64, targets: String },
    #[error("dashboard {path}: {message}")]
    Dashboard { path: String, message: String },
}

/// A fixed scrape target, e.g. the operator's /metrics.
#[derive(Clone, Debug)]
pub struct ScrapeTarget {
    pub job: String,
    /// `host:port`.
    pub address: String,
}

impl ScrapeTarget {
    pub fn new(job: &str, address: impl ToString) -> Self {
        Self { job: job.into(), address: address.to_string() }
    }
}

/// Everything [`Prometheus::start_with`] needs.
#[derive(Clone, Debug, Default)]
pub struct PrometheusConfig {
    /// Kubeconfig pod discovery uses.
    pub kubeconfig: PathBuf,
    /// Namespaces whose inference pods are scraped.
    pub namespaces: Vec<String>,
    /// Scraped with `honor_labels: true`: the operator's series carry the `namespace` of the
    /// object they describe (a chart's operator ServiceMonitor sets `honorLabels: true` too).
    pub static_targets: Vec<ScrapeTarget>,
    /// Rule files loaded and evaluated every second (e.g. charts/flywheel/files/alerts.yaml).
    pub rule_files: Vec<PathBuf>,
}

/// Relabelling of Kubernetes pod targets to the label convention (docs/monitoring.md): keep
/// inference pods (labelled `flywheel.dev/deployment`) and review-service pods (labelled
/// `flywheel.dev/review-for`) on their `http` port, and give their series `namespace`, `pod`
/// and `deployment`. The chart's PodMonitor does the same.
pub const INFERENCE_POD_RELABEL_CONFIGS: &str =
    "      - source_labels: [__meta_kubernetes_pod_label_flywheel_dev_deployment, __meta_kubernetes_pod_label_flywheel_dev_review_for]
        regex: (.+;.*|;.+)
        action: keep
      - source_labels: [__meta_kubernetes_pod_container_port_name]
        regex: http
        action: keep
      - source_labels: [__meta_kubernetes_pod_phase]
        regex: Running
        action: keep
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_label_flywheel_dev_deployment]
        regex: (.+)
        target_label: deployment
      - source_labels: [__meta_kubernetes_pod_label_flywheel_dev_review_for]
        regex: (.+)
        target_label: deployment
";

/// The job name of the inference pods' scrape config.
pub const INFERENCE_JOB: &str = "flywheel-inference";

/// The prometheus.yml for `config`, with one-second scrapes and rule evaluation; pods come
/// from the file_sd file `pod_targets`.
pub fn render_config(config: &PrometheusConfig, pod_targets: &Path) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let mut out = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n");
    if !config.rule_files.is_empty() {
        out.push_str("rule_files:\n");
        for f in &config.rule_files {
            out.push_str(&format!("  - {}\n", quote(&f.display().to_string())));
        }
    }
    out.push_str("scrape_configs:\n");
    if !config.namespaces.is_empty() {
        out.push_str(&format!(
            "  - job_name: {INFERENCE_JOB}\n    file_sd_configs:\n      - files: [{}]\n        refresh_interval: 1s\n    relabel_configs:\n{INFERENCE_POD_RELABEL_CONFIGS}",
            quote(&pod_targets.display().to_string()),
        ));
    }
    for t in &config.static_targets {
        out.push_str(&format!(
            "  - job_name: {}\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
            quote(&t.job),
            quote(&t.address)
        ));
    }
    out
}

/// A running Prometheus; killed (and its pod discovery stopped) on drop.
pub struct Prometheus {
    child: Child,
    discovery: Option<tokio::task::JoinHandle<()>>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

fn free_port() -> Result<u16, PrometheusError> {
    let io = |source| PrometheusError::Io { what: "picking a free port".into(), source };
    Ok(std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?.local_addr().map_err(io)?.port())
}

impl Prometheus {
    /// Scrapes the inference pods of `namespace` and `extra_static_targets`.
    pub async fn start(
        kubeconfig: &Path,
        namespace: &str,
        extra_static_targets: &[ScrapeTarget],
    ) -> Result<Self, PrometheusError> {
        Self::start_with(PrometheusConfig {
            kubeconfig: kubeconfig.to_path_buf(),
            namespaces: vec![namespace.to_string()],
            static_targets: extra_static_targets.to_vec(),
            rule_files: Vec::new(),
        })
        .await
    }

    pub async fn start_with(config: PrometheusConfig) -> Result<Self, PrometheusError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| PrometheusError::Io { what, source }
        };
        let dir = tempfile::Builder::new()
            .prefix("flywheel-prometheus-")
            .tempdir()
            .map_err(io("creating a temporary directory"))?;
        let config_path = dir.path().join("prometheus.yml");
        let pod_targets = dir.path().join("pods.json");
        pod_discovery::write_targets(&pod_targets, &[]).map_err(io("writing pods.json"))?;
        std::fs::write(&config_path, render_config(&config, &pod_targets)).map_err(io("writing prometheus.yml"))?;
        let discovery = if config.namespaces.is_empty() {
            None
        } else {
            let client = flywheel_cluster::kubeconfig::client_from_file(&config.kubeconfig).await.map_err(|e| {
                PrometheusError::Io {
                    what: format!("kubeconfig {}", config.kubeconfig.display()),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
            Some(tokio::spawn(pod_discovery::run(client, config.namespaces.clone(), pod_targets)))
        };
        let log = std::fs::File::create(dir.path().join("prometheus.log")).map_err(io("creating prometheus.log"))?;
        let log_err = log.try_clone().map_err(io("opening prometheus.log"))?;
        let port = free_port()?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PrometheusError::NotInstalled(e),
            _ => PrometheusError::Io { what: "starting prometheus".into(), source: e },
        })?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");
        let mut prom = Self { child, discovery, url: format!("http://127.0.0.1:{port}"), http, dir };
        prom.wait_ready(Duration::from_secs(30)).await?;
        Ok(prom)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), PrometheusError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(PrometheusError::NotReady {
                    secs: 0,
                    log: format!("exited with {status}\n{}", self.log()),
                });
            }
            let ready = self.http.get(format!("{}/-/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PrometheusError::NotReady { secs: timeout.as_secs(), log: self.log() });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Prometheus' own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str, params: &[(&str, &str)], what: &str) -> Result<Value, PrometheusError> {
        let failed = |message: String| PrometheusError::Query { expr: what.to_string(), message };
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .query(params)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let body: Value = response.json().await.map_err(|e| failed(format!("unreadable answer: {e}")))?;
        if body["status"] != "success" {
            return Err(failed(format!("{}: {}", body["errorType"], body["error"])));
        }
        Ok(body["data"].clone())
    }

    /// An instant query at the current time: the series of a vector (or the one value of a
    /// scalar). An expression Prometheus rejects is an error.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, PrometheusError> {
        let data = self.get("/api/v1/query", &[("query", expr)], expr).await?;
        Ok(match (data["resultType"].as_str(), &data["result"]) {
            (Some("vector" | "matrix"), Value::Array(series)) => series.clone(),
            (_, Value::Null) => Vec::new(),
            (_, other) => vec![other.clone()],
        })
    }

    /// Polls `expr` until it returns at least one series.
    pub async fn wait_for_series(&self, expr: &str, timeout: Duration) -> Result<Vec<Value>, PrometheusError> {
        let deadline = Instant::now() + timeout;
        loop {
            let series = self.query(expr).await?;
            if !series.is_empty() {
                return Ok(series);
            }
            if Instant::now() > deadline {
                return Err(PrometheusError::NoSeries {
                    expr: expr.into(),
                    secs: timeout.as_secs(),
                    targets: self.targets_summary().await,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Values of a label over the series matching `selector` (Grafana's `label_values`).
    pub async fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, PrometheusError> {
        let data = self.get(&format!("/api/v1/label/{label}/values"), &[("match[]", selector)], selector).await?;
        Ok(data.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect())
    }

    /// One line per active scrape target: job, labels, health and last error.
    pub async fn targets_summary(&self) -> String {
        let Ok(data) = self.get("/api/v1/targets", &[("state", "active")], "targets").await else {
            return "(targets unavailable)".into();
        };
        let lines: Vec<String> = data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| format!("  {} {} health={} error={}", t["scrapePool"], t["labels"], t["health"], t["lastError"]))
            .collect();
        if lines.is_empty() { "  (no active targets)".into() } else { lines.join("\n") }
    }

    /// The loaded rule groups (`/api/v1/rules`): each rule with its health and last error.
    pub async fn rules(&self) -> Result<Value, PrometheusError> {
        self.get("/api/v1/rules", &[], "rules").await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(d) = &self.discovery {
            d.abort();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_scrapes_pods_and_static_targets() {
        let config = PrometheusConfig {
            kubeconfig: "/k/config".into(),
            namespaces: vec!["a".into()],
            static_targets: vec![ScrapeTarget::new("op", "127.0.0.1:1")],
            rule_files: vec!["/r.yaml".into()],
        };
        let text = render_config(&config, Path::new("/t/pods.json"));
        let parsed: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let jobs = parsed["scrape_configs"].as_sequence().unwrap();
        assert_eq!(jobs[0]["file_sd_configs"][0]["files"][0], "/t/pods.json");
        // keep (inference or review pod), port, phase, namespace, pod, deployment from either label.
        assert_eq!(jobs[0]["relabel_configs"].as_sequence().unwrap().len(), 7);
        assert_eq!(jobs[1]["honor_labels"], true);
        assert_eq!(parsed["rule_files"][0], "/r.yaml");
    }
}
