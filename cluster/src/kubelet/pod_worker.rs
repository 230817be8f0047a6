//! Drives one Pod from binding to deletion: address, volumes, credentials, init containers, then
//! the app containers with restarts and probes, status reporting, and graceful termination.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;

use super::KubeletContext;
use super::container::{ContainerRuntime, Launch, RunState, now};
use super::{env, service_account, volumes};

const TICK: Duration = Duration::from_millis(200);
const VOLUME_REFRESH: Duration = Duration::from_secs(1);

pub(super) struct PodWorker {
    pub(super) ctx: Arc<KubeletContext>,
    pub(super) pod: Pod,
    pub(super) ip: Ipv4Addr,
    pub(super) dir: PathBuf,
    pub(super) volumes: Option<BTreeMap<String, PathBuf>>,
    pub(super) volumes_refreshed: Instant,
    pub(super) kubeconfig: Option<PathBuf>,
    pub(super) init: Vec<ContainerRuntime>,
    pub(super) app: Vec<ContainerRuntime>,
    /// Waiting reason/message for every container while the sandbox (volumes, token) is not ready.
    pub(super) sandbox_error: Option<(String, String)>,
    pub(super) start_time: Time,
    pub(super) conditions: BTreeMap<String, (bool, Time)>,
    pub(super) last_status: Option<serde_json::Value>,
    pub(super) last_event: Option<String>,
}

pub async fn run(ctx: Arc<KubeletContext>, mut rx: watch::Receiver<Pod>) {
    let pod = rx.borrow_and_update().clone();
    let Some(ip) = ctx.allocate_ip() else {
        tracing::error!(pod = %pod.name_any(), "pod address block exhausted");
        return;
    };
    let dir =
        ctx.pod_dir(&pod.namespace().unwrap_or_default(), &pod.name_any(), pod.metadata.uid.as_deref().unwrap_or(""));
    let spec = pod.spec.clone().unwrap_or_default();
    let mut worker = PodWorker {
        ip,
        dir,
        volumes: None,
        volumes_refreshed: Instant::now(),
        kubeconfig: None,
        init: spec.init_containers.unwrap_or_default().into_iter().map(ContainerRuntime::new).collect(),
        app: spec.containers.into_iter().map(ContainerRuntime::new).collect(),
        sandbox_error: None,
        start_time: now(),
        conditions: BTreeMap::new(),
        last_status: None,
        last_event: None,
        pod,
        ctx: ctx.clone(),
    };
    worker.drive(&mut rx).await;
    ctx.release_ip(ip);
}

impl PodWorker {
    pub(super) fn api(&self) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), &self.pod.namespace().unwrap_or_default())
    }

    fn restart_policy(&self) -> String {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into())
    }

    async fn drive(&mut self, rx: &mut watch::Receiver<Pod>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                self.terminate().await;
                return;
            }
            tokio::select! {
                changed = rx.changed() => match changed {
                    Ok(()) => self.pod = rx.borrow_and_update().clone(),
                    Err(_) => {
                        // The Pod is gone from the API (force-deleted): stop at once.
                        self.kill_all().await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    self.step().await;
                    self.report().await;
                }
            }
        }
    }

    async fn event(&mut self, type_: EventType, reason: &str, note: String) {
        let key = format!("{reason}:{note}");
        if self.last_event.as_deref() == Some(key.as_str()) {
            return;
        }
        self.last_event = Some(key);
        let reference: ObjectReference = self.pod.object_ref(&());
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
        if let Err(e) = self.ctx.recorder.publish(&ev, &reference).await {
            tracing::debug!(error = %e, "publishing event failed");
        }
    }

    /// Sandbox first (volumes, service-account kubeconfig), then containers.
    async fn step(&mut self) {
        let terminal = self.phase_and_reason().0;
        if terminal == "Succeeded" || terminal == "Failed" {
            return;
        }
        if self.volumes.is_none() || self.volumes_refreshed.elapsed() >= VOLUME_REFRESH {
            self.volumes_refreshed = Instant::now();
            match volumes::sync(&self.ctx.client, &self.pod, &self.dir, &self.ctx.root.join("claims")).await {
                Ok(v) => self.volumes = Some(v),
                Err(message) if self.volumes.is_none() => {
                    self.sandbox_error = Some(("ContainerCreating".into(), message.clone()));
                    self.event(EventType::Warning, "FailedMount", message).await;
                    return;
                }
                Err(message) => {
                    tracing::debug!(pod = %self.pod.name_any(), %message, "volume refresh failed")
                }
            }
        }
        let automount = self.pod.spec.as_ref().and_then(|s| s.automount_service_account_token).unwrap_or(true);
        if automount && self.kubeconfig.is_none() {
            match service_account::write_kubeconfig(&self.ctx, &self.pod, &self.dir).await {
                Ok(path) => self.kubeconfig = Some(path),
                Err(message) => {
                    self.sandbox_error = Some(("ContainerCreating".into(), message.clone()));
                    self.event(EventType::Warning, "FailedMount", message).await;
                    return;
                }
            }
        }
        self.sandbox_error = None;

        // Init containers run one at a time, in order, each to success.
        let policy = self.restart_policy();
        let init_policy = if policy == "Never" { "Never" } else { "OnFailure" };
        for i in 0..self.init.len() {
            if self.init[i].finished().is_some_and(|t| t.exit_code == 0) {
                continue;
            }
            self.step_container(true, i, init_policy).await;
            return;
        }
        for i in 0..self.app.len() {
            self.step_container(false, i, &policy).await;
        }
    }

    fn container(&mut self, init: bool, i: usize) -> &mut ContainerRuntime {
        if init { &mut self.init[i] } else { &mut self.app[i] }
    }

    async fn step_container(&mut self, init: bool, i: usize, policy: &str) {
        if let Some((pgid, terminated)) = self.container(init, i).poll_exit() {
            self.ctx.process_groups.lock().expect("pgid lock").remove(&pgid);
            let name = self.container(init, i).name().to_string();
            let code = terminated.exit_code;
            if self.container(init, i).schedule_restart(policy, code) {
                self.event(
                    EventType::Warning,
                    "BackOff",
                    format!("Back-off restarting container {name} (exit code {code})"),
                )
                .await;
            }
            return;
        }
        if self.container(init, i).is_running() {
            self.probe(init, i).await;
            return;
        }
        if !self.container(init, i).due_to_start() {
            return;
        }
        match self.prepare(init, i).await {
            Ok(launch) => {
                let cluster_id = self.ctx.cluster_id.clone();
                let name = self.container(init, i).name().to_string();
                match self.container(init, i).launch(launch, &cluster_id) {
                    Ok(pgid) => {
                        self.ctx.process_groups.lock().expect("pgid lock").insert(pgid);
                        self.event(EventType::Normal, "Started", format!("Started container {name}")).await;
                    }
                    Err(message) => {
                        self.container(init, i).set_waiting(
                            "RunContainerError",
                            Some(message.clone()),
                            Duration::from_secs(5),
                        );
                        self.event(EventType::Warning, "Failed", message).await;
                    }
                }
            }
            Err((reason, message)) => {
                self.container(init, i).set_waiting(&reason, Some(message.clone()), Duration::from_secs(2));
                self.event(EventType::Warning, "Failed", format!("{reason}: {message}")).await;
            }
        }
    }

    async fn probe(&mut self, init: bool, i: usize) {
        let ip = self.ip.to_string();
        let c = self.container(init, i);
        let spec = c.spec.clone();
        if let Some(p) = c.readiness.as_mut() {
            p.tick(&ip, &spec).await;
        }
        let mut liveness_failed = None;
        if let Some(p) = c.liveness.as_mut()
            && p.tick(&ip, &spec).await
            && !p.passing
        {
            liveness_failed = Some(p.last_message.clone());
        }
        if let Some(message) = liveness_failed {
            let grace = self.grace_period();
            let c = self.container(init, i);
            c.killed_reason = Some(format!("Liveness probe failed: {message}"));
            if let RunState::Running { child, .. } = &mut c.state {
                child.terminate(grace).await;
            }
            let name = spec.name.clone();
            self.event(
                EventType::Warning,
                "Unhealthy",
                format!("Liveness probe failed for {name}: {message}; restarting"),
            )
            .await;
        }
    }

    fn grace_period(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    /// Resolves image, environment, mounts and arguments; Err is (waiting reason, message).
    async fn prepare(&mut self, init: bool, i: usize) -> Result<Launch, (String, String)> {
        let spec = self.container(init, i).spec.clone();
        let restart_count = self.container(init, i).restart_count;
        let image_ref = spec.image.clone().unwrap_or_default();
        let image = self.ctx.images.resolve(&image_ref).map_err(|m| ("ErrImagePull".to_string(), m))?;
        let config_err = |m: String| ("CreateContainerConfigError".to_string(), m);

        let facts = env::PodFacts {
            pod: &self.pod,
            pod_ip: self.ip.to_string(),
            node_name: self.ctx.node_name.clone(),
            host_ip: "127.0.0.1".into(),
        };
        let mut vars = env::resolve(&self.ctx.client, &facts, &spec).await.map_err(config_err)?;

        let rootfs = self.dir.join("rootfs").join(&spec.name);
        std::fs::create_dir_all(&rootfs).map_err(|e| config_err(e.to_string()))?;
        let mut mounts = volumes::link_mounts(&rootfs, &spec, self.volumes.as_ref().unwrap_or(&BTreeMap::new()))
            .map_err(config_err)?;
        // The termination-message file, empty at each start, under the container's root; a
        // variable or argument naming its path gets the host path, like any mount.
        let message_path = spec.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
        let termination_log = rootfs.join(message_path.trim_start_matches('/'));
        if let Some(parent) = termination_log.parent() {
            std::fs::create_dir_all(parent).map_err(|e| config_err(e.to_string()))?;
        }
        std::fs::write(&termination_log, b"").map_err(|e| config_err(e.to_string()))?;
        mounts.push((message_path, termination_log.clone()));
        for (_, value) in vars.iter_mut() {
            *value = volumes::rewrite_paths(value, &mounts);
        }

        // Defaults every process gets; the Pod's own variables win.
        let mut defaults = vec![
            ("POD_IP".to_string(), self.ip.to_string()),
            ("HOSTNAME".to_string(), self.pod.name_any()),
            ("HOME".to_string(), rootfs.display().to_string()),
            ("PATH".to_string(), std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())),
        ];
        for passthrough in ["RAYON_NUM_THREADS", "LANG", "TMPDIR"] {
            if let Ok(v) = std::env::var(passthrough) {
                defaults.push((passthrough.to_string(), v));
            }
        }
        if let Some(kc) = &self.kubeconfig {
            defaults.push(("KUBECONFIG".to_string(), kc.display().to_string()));
        }
        defaults.retain(|(k, _)| !vars.iter().any(|(n, _)| n == k));
        let mut all_env = defaults;
        all_env.extend(vars);

        let mut argv: Vec<String> = Vec::new();
        if let Some(command) = spec.command.as_ref().filter(|c| !c.is_empty()) {
            let entry = std::path::Path::new(&command[0]).file_name().and_then(|f| f.to_str()).unwrap_or(&command[0]);
            if !image.entrypoint_names.iter().any(|n| n == entry) {
                return Err((
                    "CreateContainerError".into(),
                    format!(
                        "command {:?} is not the entrypoint of image {image_ref:?}: the process kubelet runs only the \
                         image's binary (use one of {:?} as command[0], or omit command)",
                        command[0], image.entrypoint_names
                    ),
                ));
            }
            argv.extend(command[1..].iter().cloned());
        }
        argv.extend(spec.args.iter().flatten().cloned());
        let argv = argv.iter().map(|a| volumes::rewrite_paths(&env::expand(a, &all_env), &mounts)).collect();
        let log = self.dir.join("logs").join(&spec.name).join(format!("{restart_count}.log"));
        Ok(Launch { program: image.binary, args: argv, env: all_env, cwd: rootfs, log, termination_log })
    }

    /// Graceful deletion: SIGTERM every container, SIGKILL after the grace period, report the
    /// final status and remove the Pod object (the step a real kubelet takes last).
    async fn terminate(&mut self) {
        let grace = self.grace_period();
        let name = self.pod.name_any();
        if self.init.iter().chain(self.app.iter()).any(|c| c.is_running()) {
            self.event(
                EventType::Normal,
                "Killing",
                format!("Stopping containers of {name} (grace {}s)", grace.as_secs()),
            )
            .await;
        }
        let mut stopping = Vec::new();
        for c in self.init.iter_mut().chain(self.app.iter_mut()) {
            if let RunState::Running { child, .. } = &mut c.state {
                stopping.push(child.terminate(grace));
            }
        }
        futures::future::join_all(stopping).await;
        for c in self.init.iter_mut().chain(self.app.iter_mut()) {
            if let Some((pgid, _)) = c.poll_exit() {
                self.ctx.process_groups.lock().expect("pgid lock").remove(&pgid);
            }
            c.start_at = None;
        }
        self.report().await;
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: self.pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        if let Err(e) = self.api().delete(&name, &dp).await {
            tracing::debug!(pod = %name, error = %e, "final delete failed");
        }
        let _ = std::fs::remove_dir_all(self.dir.join("volumes"));
        let _ = std::fs::remove_dir_all(self.dir.join("rootfs"));
    }

    async fn kill_all(&mut self) {
        for c in self.init.iter_mut().chain(self.app.iter_mut()) {
            if let RunState::Running { child, .. } = &mut c.state {
                child.terminate(Duration::from_secs(0)).await;
            }
            if let Some((pgid, _)) = c.poll_exit() {
                self.ctx.process_groups.lock().expect("pgid lock").remove(&pgid);
            }
        }
    }
}
