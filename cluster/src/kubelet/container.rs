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
}

/// A prepared process: program, args, env and working directory.
pub struct Launch {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: std::path::PathBuf,
    pub log: std::path::PathBuf,
}

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
        let terminated = terminated_from(status, started_at.clone(), self.killed_reason.take());
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
