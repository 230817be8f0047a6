//! Recording a reconcile's outcome: conditions (with `observedGeneration` and a transition
//! time that moves only when the status does) and the Events that go with them.
//!
//! A [`StatusRecorder`] is pure: it edits the conditions in memory and queues [`Notice`]s;
//! the reconcile publishes the notices with [`publish`] once the status is written.

use flywheel_api::condition::{self, FALSE, TRUE, UNKNOWN};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

use crate::context::Context;

/// An Event to publish on the reconciled object.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub warning: bool,
    pub reason: String,
    pub action: &'static str,
    pub message: String,
}

/// Sets conditions of one object at one generation and time, and queues Events.
pub struct StatusRecorder<'a> {
    conditions: &'a mut Vec<Condition>,
    generation: Option<i64>,
    at: Timestamp,
    action: &'static str,
    notices: Vec<Notice>,
}

/// The result of setting one condition: whether its status changed, and the means to
/// announce that change with an Event.
pub struct Transition<'r, 'a> {
    recorder: &'r mut StatusRecorder<'a>,
    changed: bool,
    /// The status or the reason changed (or the condition is new).
    reason_changed: bool,
    warning: bool,
    reason: String,
    message: String,
}

impl<'a> StatusRecorder<'a> {
    /// Events queued by this recorder carry `action` (e.g. `Reconcile`, `VerifyArtifact`).
    pub fn new(
        conditions: &'a mut Vec<Condition>,
        generation: Option<i64>,
        at: Timestamp,
        action: &'static str,
    ) -> Self {
        Self { conditions, generation, at, action, notices: Vec::new() }
    }

    /// The time of the reconcile.
    pub fn at(&self) -> Timestamp {
        self.at
    }

    /// Sets a condition to `True`.
    pub fn ok(&mut self, type_: &str, reason: &str, message: impl Into<String>) -> Transition<'_, 'a> {
        self.set(type_, TRUE, reason, message)
    }

    /// Sets a condition to `False`.
    pub fn fail(&mut self, type_: &str, reason: &str, message: impl Into<String>) -> Transition<'_, 'a> {
        self.set(type_, FALSE, reason, message)
    }

    /// Sets a condition to `Unknown`.
    pub fn unknown(&mut self, type_: &str, reason: &str, message: impl Into<String>) -> Transition<'_, 'a> {
        self.set(type_, UNKNOWN, reason, message)
    }

    /// Sets a condition to `status` (`True`, `False` or `Unknown`).
    pub fn set(&mut self, type_: &str, status: &str, reason: &str, message: impl Into<String>) -> Transition<'_, 'a> {
        let message = message.into();
        let previous_reason = condition::find(self.conditions, type_).map(|c| c.reason.clone());
        let changed =
            condition::set_condition(self.conditions, type_, status, reason, message.clone(), self.generation, self.at);
        let reason_changed = changed || previous_reason.as_deref() != Some(reason);
        Transition {
            recorder: self,
            changed,
            reason_changed,
            warning: status != TRUE,
            reason: reason.to_string(),
            message,
        }
    }

    /// Queues an Event whatever the conditions say.
    pub fn notice(&mut self, warning: bool, reason: &str, message: impl Into<String>) {
        let action = self.action;
        self.notice_for(action, warning, reason, message);
    }

    /// Queues an Event of another action than the recorder's.
    pub fn notice_for(&mut self, action: &'static str, warning: bool, reason: &str, message: impl Into<String>) {
        self.notices.push(Notice { warning, reason: reason.to_string(), action, message: message.into() });
    }

    /// The Events queued so far, oldest first.
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }

    /// Ends recording; the Events to publish.
    pub fn into_notices(self) -> Vec<Notice> {
        self.notices
    }
}

impl Transition<'_, '_> {
    /// Whether the condition's status changed (or the condition is new).
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// On a change, queues an Event with the condition's reason and message: a Warning unless
    /// the condition became `True`.
    pub fn announce(self) -> bool {
        let reason = self.reason.clone();
        self.announce_as(&reason)
    }

    /// On a change, queues an Event with the condition's message under another reason.
    pub fn announce_as(self, reason: &str) -> bool {
        let message = self.message.clone();
        self.announce_with(reason, message)
    }

    /// On a change, queues an Event with its own reason and message.
    pub fn announce_with(self, reason: &str, message: impl Into<String>) -> bool {
        if self.changed {
            let warning = self.warning;
            self.recorder.notice(warning, reason, message);
        }
        self.changed
    }

    /// When the status or the reason changed, queues an Event with the condition's reason and
    /// message: a refusal that replaces another (`False` for a new reason) is announced too.
    pub fn announce_reason(mut self) -> bool {
        let changed = self.reason_changed;
        self.changed = changed;
        let reason = self.reason.clone();
        self.announce_as(&reason)
    }

    /// On a change to anything but `True`, queues a Warning under another reason.
    pub fn warn_as(self, reason: &str) -> bool {
        if self.warning { self.announce_as(reason) } else { self.changed }
    }
}

/// Publishes queued Events on `obj`, in order.
pub async fn publish<K>(ctx: &Context, obj: &K, notices: Vec<Notice>)
where
    K: Resource<DynamicType = ()>,
{
    for n in notices {
        ctx.event(obj, n.warning, &n.reason, n.action, n.message).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn notice(warning: bool, reason: &str, message: &str) -> Notice {
        Notice { warning, reason: reason.into(), action: "Reconcile", message: message.into() }
    }

    #[test]
    fn conditions_carry_generation_and_time_and_only_transitions_are_announced() {
        let mut conditions = Vec::new();
        let mut r = StatusRecorder::new(&mut conditions, Some(4), at(10), "Reconcile");
        assert!(r.fail("Ready", "Pending", "waiting").announce());
        assert!(!r.fail("Ready", "StillPending", "still waiting").announce(), "same status: no transition");
        assert!(r.ok("Ready", "Serving", "serving").announce());
        assert_eq!(r.notices(), &[notice(true, "Pending", "waiting"), notice(false, "Serving", "serving")]);
        drop(r);
        let ready = condition::find(&conditions, "Ready").unwrap();
        assert_eq!(
            (ready.reason.as_str(), ready.observed_generation, &ready.last_transition_time),
            ("Serving", Some(4), &Time(at(10)))
        );
    }

    #[test]
    fn announcements_can_rename_reword_or_skip() {
        let mut conditions = Vec::new();
        let mut r = StatusRecorder::new(&mut conditions, None, at(1), "Reconcile");
        r.ok("ChampionReady", "Ready", "serving m").announce_as("ChampionReady");
        r.ok("Profiled", "Profiled", "ready").announce_with("ProfilingComplete", "statistics at s3://x");
        assert!(r.ok("ModelsLoaded", "Loaded", "ok").warn_as("ModelLoadFailed"), "changed, but True: no Event");
        assert!(r.fail("ShadowReady", "NoShadow", "none").changed(), "not announced");
        assert!(r.set("Checked", UNKNOWN, "Unreachable", "timeout").warn_as("StorageUnreachable"));
        r.notice_for("Validate", true, "InvalidSpec", "bad");
        let notices = r.into_notices();
        assert_eq!(
            notices,
            vec![
                notice(false, "ChampionReady", "serving m"),
                notice(false, "ProfilingComplete", "statistics at s3://x"),
                notice(true, "StorageUnreachable", "timeout"),
                Notice { warning: true, reason: "InvalidSpec".into(), action: "Validate", message: "bad".into() },
            ]
        );
        assert_eq!(conditions.len(), 5);
        assert!(condition::find(&conditions, "ShadowReady").is_some_and(|c| c.status == FALSE));
    }

    #[test]
    fn a_new_reason_for_the_same_status_can_be_announced() {
        let mut conditions = Vec::new();
        let mut r = StatusRecorder::new(&mut conditions, Some(1), at(1), "Reconcile");
        assert!(r.fail("Ready", "NoReadyReplicas", "waiting").announce_reason());
        assert!(!r.fail("Ready", "NoReadyReplicas", "still waiting").announce_reason());
        assert!(!r.fail("Ready", "InvalidSpec", "spec.x is wrong").changed(), "same status");
        assert!(!r.fail("Ready", "InvalidSpec", "spec.x is wrong").announce_reason(), "same reason again");
        assert!(r.fail("Ready", "ConflictingCredentials", "two Secrets").announce_reason());
        assert_eq!(
            r.notices(),
            &[notice(true, "NoReadyReplicas", "waiting"), notice(true, "ConflictingCredentials", "two Secrets")]
        );
    }

    #[test]
    fn a_failure_that_stays_a_failure_is_not_announced_again() {
        let mut conditions = Vec::new();
        StatusRecorder::new(&mut conditions, Some(1), at(1), "Reconcile")
            .fail("ModelsLoaded", "LoadFailed", "bad file")
            .warn_as("ModelLoadFailed");
        let mut r = StatusRecorder::new(&mut conditions, Some(1), at(2), "Reconcile");
        assert!(!r.fail("ModelsLoaded", "LoadFailed", "still bad").warn_as("ModelLoadFailed"));
        assert!(r.notices().is_empty());
        drop(r);
        assert_eq!(condition::find(&conditions, "ModelsLoaded").unwrap().last_transition_time, Time(at(1)));
    }
}
