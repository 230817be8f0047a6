//! Status: what a Deployment's reconcile writes back and announces (pure), and when it
//! looks again.

use std::time::Duration;

use flywheel_api::DeploymentStatus;
use flywheel_api::deployment::{MonitoringSummary, Promotion, conditions};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::desired::Children;
use super::monitoring;
use super::promotion;
use super::read::{Observed, Pods};
use super::validate::Verdict;
use crate::controllers::recorder::{Notice, StatusRecorder};

/// Records served models, ready replicas, monitoring figures and conditions into `status`.
/// Returns the Events of the transitions.
pub fn record(
    status: &mut DeploymentStatus,
    generation: Option<i64>,
    observed: &Observed,
    verdict: &Verdict,
    children: Option<&Children>,
    pods: &Pods,
    at: Timestamp,
) -> Vec<Notice> {
    let mut rec = StatusRecorder::new(&mut status.conditions, generation, at, "Reconcile");
    served_models(&mut rec, observed, verdict);
    if let Some(c) = children {
        if status.champion.as_deref() != Some(&c.champion) || status.shadow != c.shadow {
            // Figures of the previous pair must not decide about the new one.
            status.monitoring = None;
        }
        status.champion = Some(c.champion.clone());
        status.shadow = c.shadow.clone();
        status.endpoint = Some(c.endpoint.clone());
    }
    status.ready_replicas = Some(pods.ready);
    if pods.ready > 0 {
        pod_figures(&mut rec, &mut status.monitoring, &pods.statuses, at);
    }
    match (&verdict.champion, &verdict.credentials, pods.ready) {
        // Announced through ChampionReady.
        (Some((reason, message)), _, _) => rec.fail(conditions::READY, reason, message.clone()).changed(),
        (None, Some((reason, message)), _) => rec.fail(conditions::READY, reason, message.clone()).announce_reason(),
        (None, None, 0) => {
            rec.fail(conditions::READY, "NoReadyReplicas", "waiting for inference pods to become ready").changed()
        }
        (None, None, n) => rec
            .ok(conditions::READY, "Serving", format!("{n} ready replicas serving {}", observed.champion_name))
            .changed(),
    };
    status.observed_generation = generation;
    rec.into_notices()
}

/// A spec that contradicts itself: `Ready` False with reason `InvalidSpec` (announced once,
/// naming the field); the rest of the status, and every child, stays as it is.
pub fn invalid_spec(
    status: &mut DeploymentStatus,
    generation: Option<i64>,
    message: String,
    at: Timestamp,
) -> Vec<Notice> {
    let mut rec = StatusRecorder::new(&mut status.conditions, generation, at, "Validate");
    rec.fail(conditions::READY, "InvalidSpec", message).announce_reason();
    status.observed_generation = generation;
    rec.into_notices()
}

fn served_models(rec: &mut StatusRecorder, observed: &Observed, verdict: &Verdict) {
    match &verdict.champion {
        Some((reason, message)) => rec.fail(conditions::CHAMPION_READY, reason, message.clone()).announce(),
        None => rec
            .ok(conditions::CHAMPION_READY, "Ready", format!("serving {}", observed.champion_name))
            .announce_as("ChampionReady"),
    };
    match (&observed.shadow_name, &verdict.shadow) {
        (Some(_), Some((reason, message))) => rec.fail(conditions::SHADOW_READY, reason, message.clone()).announce(),
        (Some(name), None) => rec.ok(conditions::SHADOW_READY, "Ready", format!("shadowing with {name}")).changed(),
        (None, _) => rec.fail(conditions::SHADOW_READY, "NoShadow", "no shadow configured").changed(),
    };
}

/// The pods' monitoring figures (when they moved) and whether they loaded the served models.
fn pod_figures(
    rec: &mut StatusRecorder,
    monitoring: &mut Option<MonitoringSummary>,
    statuses: &[serde_json::Value],
    at: Timestamp,
) {
    let summary = monitoring::summarise(statuses);
    if !monitoring::same_figures(summary.as_ref(), monitoring.as_ref()) {
        *monitoring = summary.map(|m| MonitoringSummary { time: Some(Time(at)), ..m });
    }
    if statuses.is_empty() {
        return;
    }
    match monitoring::load_errors(statuses).as_slice() {
        [] => rec.ok(conditions::MODELS_LOADED, "Loaded", "the inference pods loaded the served models").changed(),
        errors => rec
            .fail(
                conditions::MODELS_LOADED,
                "LoadFailed",
                format!("the previous models keep serving: {}", errors.join("; ")),
            )
            .announce_as("ModelLoadFailed"),
    };
}

/// Events for the history entries this reconcile appended: promotions a pipeline asked for,
/// then changes of the spec.
pub fn history_notices(promoted: &[Promotion], spec_changes: &[Promotion]) -> Vec<Notice> {
    let promoted = promoted.iter().map(|p| Notice {
        warning: false,
        reason: "Promoted".into(),
        action: "Promote",
        message: promotion::note(p),
    });
    let spec = spec_changes.iter().map(|change| Notice {
        warning: false,
        reason: "SpecChanged".into(),
        action: "Promote",
        message: format!(
            "{:?} set to {} by the spec (was {})",
            change.role,
            change.model_version.as_deref().unwrap_or("none"),
            change.previous.as_deref().unwrap_or("none")
        ),
    });
    promoted.chain(spec).collect()
}

/// Models become Ready without touching the Deployment (poll while the champion is not);
/// pod readiness arrives through the owned apps/v1 Deployment's watch; monitoring figures
/// move with reviews, so refresh them every 15 s while serving. Nothing to poll at 0 replicas.
pub fn requeue(verdict: &Verdict, ready: i32) -> Duration {
    let seconds = match (&verdict.champion, &verdict.credentials, ready) {
        (Some(_), _, _) => 5,
        // A Secret may be labelled (or a model's Secret changed) without touching the Deployment.
        (None, Some(_), _) => 30,
        (None, None, 0) => 60,
        (None, None, _) => 15,
    };
    Duration::from_secs(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_api::condition;
    use flywheel_api::deployment::Role;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn observed(shadow: Option<&str>) -> Observed {
        Observed {
            champion_name: "m-v1".into(),
            champion: None,
            shadow_name: shadow.map(Into::into),
            shadow: None,
            pipeline: None,
            feedback: None,
        }
    }

    fn children(shadow: Option<&str>) -> Children {
        Children {
            config_map: Default::default(),
            apps: Default::default(),
            service: Default::default(),
            autoscaler: None,
            champion: "m-v1".into(),
            shadow: shadow.map(Into::into),
            endpoint: "http://shapes-inference.ns.svc:80".into(),
        }
    }

    fn pods(ready: i32, statuses: Vec<serde_json::Value>) -> Pods {
        Pods { ready, statuses }
    }

    fn reasons(notices: &[Notice]) -> Vec<(bool, &str)> {
        notices.iter().map(|n| (n.warning, n.reason.as_str())).collect()
    }

    #[test]
    fn a_champion_that_cannot_serve_is_refused_and_announced_once() {
        let mut status = DeploymentStatus { champion: Some("m-v0".into()), ..Default::default() };
        let verdict = Verdict {
            champion: Some(("ModelVersionNotFound".into(), "ModelVersion \"m-v1\" does not exist".into())),
            ..Verdict::default()
        };
        let notices = record(&mut status, Some(2), &observed(None), &verdict, None, &pods(1, vec![]), at(1));
        assert_eq!(reasons(&notices), [(true, "ModelVersionNotFound")]);
        assert_eq!(status.champion.as_deref(), Some("m-v0"), "the previous champion stays");
        let ready = condition::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ModelVersionNotFound"));
        assert_eq!(condition::find(&status.conditions, conditions::SHADOW_READY).unwrap().reason, "NoShadow");
        assert_eq!(status.observed_generation, Some(2));
        assert!(record(&mut status, Some(2), &observed(None), &verdict, None, &pods(1, vec![]), at(2)).is_empty());
        assert_eq!(requeue(&verdict, 1), Duration::from_secs(5));
    }

    #[test]
    fn serving_a_new_pair_forgets_the_old_figures_and_announces_the_champion() {
        let mut status = DeploymentStatus {
            champion: Some("m-v1".into()),
            monitoring: Some(MonitoringSummary { max_drift: Some(0.3), ..Default::default() }),
            ..Default::default()
        };
        let verdict = Verdict::default();
        let notices = record(
            &mut status,
            Some(1),
            &observed(Some("m-v2")),
            &verdict,
            Some(&children(Some("m-v2"))),
            &pods(0, vec![]),
            at(1),
        );
        assert_eq!(reasons(&notices), [(false, "ChampionReady")]);
        assert_eq!((status.champion.as_deref(), status.shadow.as_deref()), (Some("m-v1"), Some("m-v2")));
        assert_eq!(status.monitoring, None);
        assert_eq!(status.endpoint.as_deref(), Some("http://shapes-inference.ns.svc:80"));
        assert_eq!(condition::find(&status.conditions, conditions::READY).unwrap().reason, "NoReadyReplicas");
        assert!(condition::is_true(&status.conditions, conditions::SHADOW_READY));
        assert_eq!(requeue(&verdict, 0), Duration::from_secs(60));
    }

    #[test]
    fn load_failures_are_announced_and_figures_recorded_when_they_move() {
        let mut status = DeploymentStatus::default();
        let failing = serde_json::json!({"reload": {"errors": ["champion m-v1: not an ONNX file"]}, "quality": {"reviewedSamples": 3, "champion": 0.5}});
        let notices = record(
            &mut status,
            Some(1),
            &observed(None),
            &Verdict::default(),
            Some(&children(None)),
            &pods(1, vec![failing.clone()]),
            at(1),
        );
        assert_eq!(reasons(&notices), [(false, "ChampionReady"), (true, "ModelLoadFailed")]);
        let loaded = condition::find(&status.conditions, conditions::MODELS_LOADED).unwrap();
        assert!(loaded.status == "False" && loaded.message.contains("not an ONNX file"), "{loaded:?}");
        assert!(condition::is_true(&status.conditions, conditions::READY));
        assert_eq!(
            status.monitoring.as_ref().map(|m| (m.champion_metric, m.reviewed_samples, m.time.clone())),
            Some((Some(0.5), Some(3), Some(Time(at(1)))))
        );
        let notices = record(
            &mut status,
            Some(1),
            &observed(None),
            &Verdict::default(),
            Some(&children(None)),
            &pods(1, vec![failing]),
            at(2),
        );
        assert!(notices.is_empty(), "{notices:?}");
        assert_eq!(status.monitoring.unwrap().time, Some(Time(at(1))), "same figures: the time stays");
        assert_eq!(requeue(&Verdict::default(), 1), Duration::from_secs(15));
    }

    #[test]
    fn history_entries_are_announced_promotions_first() {
        let entry = |reason: &str, model: Option<&str>| Promotion {
            time: Time(at(1)),
            role: Role::Shadow,
            model_version: model.map(Into::into),
            previous: Some("m-v2".into()),
            reason: reason.into(),
            message: String::new(),
        };
        let notices = history_notices(&[entry("ContinuousDeployment", Some("p-r1"))], &[entry("Spec", None)]);
        assert_eq!(notices[0].message, "Shadow is now p-r1 (ContinuousDeployment)");
        assert_eq!(notices[1].message, "Shadow set to none by the spec (was m-v2)");
        assert!(notices.iter().all(|n| n.action == "Promote" && !n.warning));
        assert_eq!(reasons(&notices), [(false, "Promoted"), (false, "SpecChanged")]);
    }
}
