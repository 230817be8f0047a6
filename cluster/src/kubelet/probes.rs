//! HTTP GET and TCP socket probes against the Pod's loopback address.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Tracks one probe of one container across periods.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub probe: Probe,
    next_due: Instant,
    successes: i32,
    failures: i32,
    /// Current verdict after thresholds.
    pub passing: bool,
    pub last_message: String,
}

impl ProbeState {
    /// `passing_initially`: readiness starts false, liveness starts true.
    pub fn new(probe: Probe, started: Instant, passing_initially: bool) -> Self {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        Self {
            probe,
            next_due: started + delay,
            successes: 0,
            failures: 0,
            passing: passing_initially,
            last_message: String::new(),
        }
    }

    /// Runs the probe if due; returns true when the verdict changed.
    pub async fn tick(&mut self, pod_ip: &str, container: &Container) -> bool {
        let now = Instant::now();
        if now < self.next_due {
            return false;
        }
        let period = Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64);
        self.next_due = now + period;
        let timeout = Duration::from_secs(self.probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        let result = tokio::time::timeout(timeout, run(&self.probe, pod_ip, container))
            .await
            .unwrap_or_else(|_| Err(format!("probe timed out after {}s", timeout.as_secs())));
        let before = self.passing;
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                    self.passing = true;
                }
            }
            Err(message) => {
                self.successes = 0;
                self.failures += 1;
                self.last_message = message;
                if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                    self.passing = false;
                }
            }
        }
        before != self.passing
    }
}

fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("named port {name:?} not found in container ports")),
    }
}

async fn run(probe: &Probe, pod_ip: &str, container: &Container) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        if http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("https")) {
            return Err("HTTPS probes are not supported by the process kubelet".into());
        }
        let port = resolve_port(&http.port, container)?;
        let host = http.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let status = http_get(&host, port, &path).await?;
        return if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {status}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, container)?;
        let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_string());
        return TcpStream::connect((host.as_str(), port))
            .await
            .map(|_| ())
            .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
    }
    Err("only httpGet and tcpSocket probes are supported by the process kubelet".into())
}

/// Minimal HTTP/1.1 GET returning the status code; probes need nothing more.
pub async fn http_get(host: &str, port: u16, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect((host, port)).await.map_err(|e| format!("dial {host}:{port}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.20\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = stream.read(&mut head[read..]).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response {line:?}"))
}
