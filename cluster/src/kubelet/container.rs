//! One container of a Pod as a local process: start (image → binary, env, mounts, log file),
//! exit detection, restart back-off, probes, and its ContainerStatus.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::process::Command;

use super::probes::ProbeState;
use crate::process::ManagedChild;

/// Restart back-off: 1 s doubling to 60 s (the real kubelet uses 10 s to 5 min; tests need
/// quicker turnarounds and the shape is the same).
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

pub enum RunState {
    Waiting { reason: String, message: Option<String> },
    Running { child: ManagedChild, started_at: Time },
    Terminated(ContainerStateTerminated),
}

/// Everything the kubelet tracks for one container.
pub struct ContainerRuntime {
    pub spec: Container,
    pub state: RunState,
    pub restart_count: i32,
    pub last_state: Option<ContainerStateTerminated>,
    /// When set, the container is waiting to be (re)started at that instant.
    pub start_at: Option<Instant>,
    backoff: Duration,
    pub readiness: Option<ProbeState>,
    pub liveness: Option<ProbeState>,
    /// Set when the kubelet killed the process itself (liveness failure, Pod deletion).
    pub killed_reason: Option<String>,
    /// The running process's log and termination-message files.
    files: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// A prepared process: program, args, env and working directory.
pub struct Launch {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: std::path::PathBuf,
    pub log: std::path::PathBuf,
    /// Host file behind the container's `terminationMessagePath`.
    pub termination_log: std::path::PathBuf,
}

/// Most bytes of a termination message, as the kubelet keeps them.
const MAX_TERMINATION_MESSAGE: usize = 4096;
/// Most bytes of log tail `FallbackToLogsOnError` takes.
const MAX_FALLBACK_LOG: usize = 2048;

impl ContainerRuntime {
    pub fn new(spec: Container) -> Self {
        Self {
            spec,
            state: RunState::Waiting { reason: "ContainerCreating".into(), message: None },
            restart_count: 0,
            last_state: None,
            start_at: Some(Instant::now()),
            backoff: BACKOFF_START,
            readiness: None,
            liveness: None,
            killed_reason: None,
            files: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn due_to_start(&self) -> bool {
        matches!(self.state, RunState::Waiting { .. }) && self.start_at.is_some_and(|t| Instant::now() >= t)
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }

    /// Terminated with no restart pending.
    pub fn finished(&self) -> Option<&ContainerStateTerminated> {
        match &self.state {
            RunState::Terminated(t) if self.start_at.is_none() => Some(t),
            _ => None,
        }
    }

    pub fn set_waiting(&mut self, reason: &str, message: Option<String>, retry_in: Duration) {
        self.state = RunState::Waiting { reason: reason.into(), message };
        self.start_at = Some(Instant::now() + retry_in);
    }

    pub fn launch(&mut self, launch: Launch, cluster_id: &str) -> Result<i32, String> {
        if let Some(parent) = launch.log.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut cmd = Command::new(&launch.program);
        cmd.args(&launch.args).env_clear().envs(launch.env.iter().map(|(k, v)| (k, v))).current_dir(&launch.cwd);
        let child = ManagedChild::spawn(&self.spec.name, cmd, cluster_id, &launch.log).map_err(|e| e.to_string())?;
        let pgid = child.pid();
        let started = Instant::now();
        self.readiness = self.spec.readiness_probe.clone().map(|p| ProbeState::new(p, started, false));
        self.liveness = self.spec.liveness_probe.clone().map(|p| ProbeState::new(p, started, true));
        self.killed_reason = None;
        self.files = Some((launch.log.clone(), launch.termination_log.clone()));
        self.state = RunState::Running { child, started_at: now() };
        self.start_at = None;
        Ok(pgid)
    }

    /// Checks whether the process exited; on exit records Terminated and returns its pgid.
    pub fn poll_exit(&mut self) -> Option<(i32, ContainerStateTerminated)> {
        let RunState::Running { child, started_at, .. } = &mut self.state else {
            return None;
        };
        let status = child.try_wait()?;
        let pgid = child.pid();
        let mut terminated = terminated_from(status, started_at.clone(), self.killed_reason.take());
        if terminated.message.is_none()
            && let Some((log, file)) = &self.files
        {
            let fallback = self.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
            terminated.message = termination_message(file, (fallback && terminated.exit_code != 0).then_some(log));
        }
        self.state = RunState::Terminated(terminated.clone());
        Some((pgid, terminated))
    }

    /// After an exit: schedule a restart per `restart_policy`, with back-off. Returns true if it will restart.
    pub fn schedule_restart(&mut self, restart_policy: &str, exit_code: i32) -> bool {
        let restart = match restart_policy {
            "Never" => false,
            "OnFailure" => exit_code != 0,
            _ => true,
        };
        if !restart {
            self.start_at = None;
            return false;
        }
        if let RunState::Terminated(t) = &self.state {
            self.last_state = Some(t.clone());
        }
        self.restart_count += 1;
        self.state = RunState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some(format!(
                "back-off {}s restarting failed container={}",
                self.backoff.as_secs(),
                self.spec.name
            )),
        };
        self.start_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        true
    }

    pub fn ready(&self) -> bool {
        self.is_running() && self.readiness.as_ref().is_none_or(|p| p.passing)
    }

    pub fn status(&self, image: &str) -> ContainerStatus {
        let state = match &self.state {
            RunState::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
                ..Default::default()
            },
            RunState::Running { started_at, .. } => ContainerState {
                running: Some(ContainerStateRunning { started_at: Some(started_at.clone()) }),
                ..Default::default()
            },
            RunState::Terminated(t) => ContainerState { terminated: Some(t.clone()), ..Default::default() },
        };
        let container_id = match &self.state {
            RunState::Running { child, .. } => Some(format!("process://{}", child.pid())),
            _ => None,
        };
        ContainerStatus {
            name: self.spec.name.clone(),
            image: image.to_string(),
            image_id: format!("process://{image}"),
            container_id,
            ready: self.ready(),
            restart_count: self.restart_count,
            started: Some(self.is_running()),
            state: Some(state),
            last_state: self.last_state.clone().map(|t| ContainerState { terminated: Some(t), ..Default::default() }),
            ..Default::default()
        }
    }
}

/// What a container left at its termination-message path, or with `FallbackToLogsOnError` and
/// an empty file, the tail of its log; bounded as the kubelet bounds them.
fn termination_message(file: &std::path::Path, fallback_log: Option<&std::path::PathBuf>) -> Option<String> {
    let tail = |path: &std::path::Path, max: usize| {
        let bytes = std::fs::read(path).ok()?;
        let text = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(max)..]).trim().to_string();
        (!text.is_empty()).then_some(text)
    };
    let head = std::fs::read(file).ok().and_then(|b| {
        let text = String::from_utf8_lossy(&b[..b.len().min(MAX_TERMINATION_MESSAGE)]).trim().to_string();
        (!text.is_empty()).then_some(text)
    });
    head.or_else(|| fallback_log.and_then(|log| tail(log, MAX_FALLBACK_LOG)))
}

fn terminated_from(
    status: std::process::ExitStatus,
    started_at: Time,
    killed_reason: Option<String>,
) -> ContainerStateTerminated {
    use std::os::unix::process::ExitStatusExt;
    let exit_code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    ContainerStateTerminated {
        exit_code,
        signal: status.signal(),
        reason: Some(reason.to_string()),
        message: killed_reason,
        started_at: Some(started_at),
        finished_at: Some(now()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_termination_message_is_the_file_or_with_fallback_the_log_tail() {
        let dir = std::env::temp_dir().join(format!("termination-message-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (file, log) = (dir.join("termination-log"), dir.join("0.log"));
        std::fs::write(&log, format!("{}\nlast words\n", "x".repeat(5000))).unwrap();
        std::fs::write(&file, "").unwrap();
        assert_eq!(termination_message(&file, None), None);
        let tail = termination_message(&file, Some(&log)).unwrap();
        assert!(tail.ends_with("last words") && tail.len() <= MAX_FALLBACK_LOG, "{}", tail.len());
        std::fs::write(&file, format!("{{\"ok\":true}}{}", " ".repeat(MAX_TERMINATION_MESSAGE))).unwrap();
        assert_eq!(termination_message(&file, Some(&log)).as_deref(), Some("{\"ok\":true}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
