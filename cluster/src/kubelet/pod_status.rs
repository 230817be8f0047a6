//! The Pod status the kubelet reports: phase from the containers' states, conditions with
//! stable transition times, container statuses, and the status patch (sent only on change).

use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, PodCondition, PodIP, PodStatus};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};

use super::container::{ContainerRuntime, now};
use super::pod_worker::PodWorker;

impl PodWorker {
    /// (phase, reason) from the containers' states.
    pub(super) fn phase_and_reason(&self) -> (&'static str, Option<String>) {
        if let Some(failed) = self.init.iter().find_map(|c| c.finished().filter(|t| t.exit_code != 0)) {
            return ("Failed", Some(format!("init container failed with exit code {}", failed.exit_code)));
        }
        let init_done = self.init.iter().all(|c| c.finished().is_some_and(|t| t.exit_code == 0));
        if !init_done {
            return ("Pending", None);
        }
        if !self.app.is_empty() && self.app.iter().all(|c| c.finished().is_some()) {
            let failed = self.app.iter().any(|c| c.finished().is_some_and(|t| t.exit_code != 0));
            return if failed { ("Failed", None) } else { ("Succeeded", None) };
        }
        let started = self.app.iter().all(|c| c.is_running() || c.restart_count > 0 || c.finished().is_some());
        if started { ("Running", None) } else { ("Pending", None) }
    }

    fn condition(&mut self, type_: &str, value: bool) -> PodCondition {
        let entry = self.conditions.entry(type_.to_string()).or_insert_with(|| (value, now()));
        if entry.0 != value {
            *entry = (value, now());
        }
        PodCondition {
            type_: type_.to_string(),
            status: if value { "True" } else { "False" }.to_string(),
            last_transition_time: Some(entry.1.clone()),
            ..Default::default()
        }
    }

    fn status(&mut self) -> PodStatus {
        let (phase, reason) = self.phase_and_reason();
        let image_of = |c: &ContainerRuntime| c.spec.image.clone().unwrap_or_default();
        let sandbox_error = self.sandbox_error.clone();
        let statuses = |list: &[ContainerRuntime]| {
            list.iter()
                .map(|c| {
                    let mut s = c.status(&image_of(c));
                    if let Some((reason, message)) = &sandbox_error
                        && !c.is_running()
                    {
                        s.state = Some(ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some(reason.clone()),
                                message: Some(message.clone()),
                            }),
                            ..Default::default()
                        });
                    }
                    s
                })
                .collect::<Vec<_>>()
        };
        let init_statuses = statuses(&self.init);
        let app_statuses = statuses(&self.app);
        let initialized = self.init.iter().all(|c| c.finished().is_some_and(|t| t.exit_code == 0));
        let containers_ready = self.app.iter().all(|c| c.ready());
        let conditions = vec![
            self.condition("Initialized", initialized),
            self.condition("Ready", containers_ready),
            self.condition("ContainersReady", containers_ready),
            self.condition("PodScheduled", true),
        ];
        let ip = self.ip.to_string();
        PodStatus {
            phase: Some(phase.to_string()),
            reason: reason.as_ref().map(|_| "InitContainerFailed".to_string()),
            message: reason,
            host_ip: Some("127.0.0.1".into()),
            pod_ip: Some(ip.clone()),
            pod_ips: Some(vec![PodIP { ip }]),
            start_time: Some(self.start_time.clone()),
            conditions: Some(conditions),
            container_statuses: Some(app_statuses),
            init_container_statuses: if self.init.is_empty() { None } else { Some(init_statuses) },
            qos_class: Some("BestEffort".into()),
            ..Default::default()
        }
    }

    /// Patches the status subresource when it changed.
    pub(super) async fn report(&mut self) {
        let status = self.status();
        let value = serde_json::to_value(&status).unwrap_or_default();
        // Timestamps of conditions only change with their status, so equality means "nothing new".
        if self.last_status.as_ref() == Some(&value) {
            return;
        }
        let patch = serde_json::json!({ "status": value });
        match self.api().patch_status(&self.pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => self.last_status = Some(value),
            Err(e) => {
                tracing::debug!(pod = %self.pod.name_any(), error = %e, "status update failed")
            }
        }
    }
}
