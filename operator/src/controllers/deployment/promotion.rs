//! Promotion requests: how a DataPipeline asks its Deployment to serve another model.
//!
//! `status.promotionHistory` has one writer, the Deployment controller. A DataPipeline that
//! wants a promotion (continuous deployment, the promotion gate) writes the request into the
//! annotation `flywheel.dev/promote-request` of its own object, as JSON:
//!
//! ```json
//! {"deployment": "shapes", "pipeline": "shapes", "changes": [{"role": "shadow", "modelVersion": "shapes-r1"}],
//!  "reason": "ContinuousDeployment", "message": "policy Shadow", "requestedAt": "2026-01-01T00:00:00Z"}
//! ```
//!
//! The Deployment controller reads the requests of the pipelines naming it and appends one
//! history entry per change, timed at `requestedAt`. That time (with the reason and the
//! change) identifies the request in the history, so a request is applied once however often
//! it is read, across restarts too; the pipeline removes its annotation once it sees the
//! entries, and asks for nothing else meanwhile.

use flywheel_api::DataPipeline;
use flywheel_api::deployment::{Promotion, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use super::served;

/// The annotation of a DataPipeline holding its promotion request.
pub const ANNOTATION: &str = "flywheel.dev/promote-request";

/// One role change a pipeline asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub role: Role,
    /// The ModelVersion for the role; absent to empty it (no shadow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
}

/// A pipeline's request to change what a Deployment serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionRequest {
    /// The Deployment asked; the pipeline's `spec.deployment` when it asked.
    pub deployment: String,
    pub pipeline: String,
    pub changes: Vec<Change>,
    /// `ContinuousDeployment` or `PromotionGate`: the history entries' reason.
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the pipeline asked: the history entries' time, and what identifies the request.
    pub requested_at: Time,
}

impl PromotionRequest {
    /// A request made at `at` (kept to whole seconds, as status times are).
    pub fn new(
        deployment: &str,
        pipeline: &str,
        changes: &[(Role, Option<String>)],
        reason: &str,
        message: &str,
        at: Timestamp,
    ) -> Self {
        let at = Timestamp::from_second(at.as_second()).expect("a whole second of a valid time");
        Self {
            deployment: deployment.into(),
            pipeline: pipeline.into(),
            changes: changes.iter().map(|(role, model)| Change { role: *role, model_version: model.clone() }).collect(),
            reason: reason.into(),
            message: message.into(),
            requested_at: Time(at),
        }
    }

    /// The request in an object's annotation: None without one, Err when it does not parse
    /// or changes nothing.
    pub fn of<K: Resource>(obj: &K) -> Option<Result<Self, String>> {
        let text = obj.annotations().get(ANNOTATION)?;
        let invalid = |why: String| format!("annotation {ANNOTATION} of {}: {why}", obj.name_any());
        Some(match serde_json::from_str::<Self>(text) {
            Ok(request) if request.changes.is_empty() => Err(invalid("no changes".into())),
            Ok(request) => Ok(request),
            Err(e) => Err(invalid(e.to_string())),
        })
    }

    /// The annotation's value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("a request serialises")
    }

    fn changes(&self) -> Vec<(Role, Option<String>)> {
        self.changes.iter().map(|c| (c.role, c.model_version.clone())).collect()
    }

    /// Whether the history holds this request's entries.
    pub fn is_recorded(&self, history: &[Promotion]) -> bool {
        history.iter().any(|p| {
            p.time == self.requested_at
                && p.reason == self.reason
                && self.changes.iter().any(|c| c.role == p.role && c.model_version == p.model_version)
        })
    }

    /// Appends the request's entries unless the history holds them already. Returns the
    /// entries appended.
    pub fn apply(&self, history: &mut Vec<Promotion>) -> Vec<Promotion> {
        if self.is_recorded(history) {
            return Vec::new();
        }
        served::record(history, &self.changes(), self.requested_at.clone(), &self.reason, &self.message)
    }
}

/// What the pipelines' requests did to a history.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    pub promoted: Vec<Promotion>,
    /// Requests that do not parse, as messages.
    pub invalid: Vec<String>,
}

/// Applies the requests of the pipelines naming `deployment`, oldest first.
pub fn apply_requests(deployment: &str, pipelines: &[DataPipeline], history: &mut Vec<Promotion>) -> Applied {
    let mut applied = Applied::default();
    let mut requests = Vec::new();
    for p in pipelines.iter().filter(|p| p.spec.deployment == deployment) {
        match PromotionRequest::of(p) {
            Some(Ok(request)) if request.deployment == deployment => requests.push(request),
            Some(Ok(_)) | None => {}
            Some(Err(message)) => applied.invalid.push(message),
        }
    }
    requests.sort_by(|a, b| (&a.requested_at.0, &a.pipeline).cmp(&(&b.requested_at.0, &b.pipeline)));
    for request in &requests {
        applied.promoted.extend(request.apply(history));
    }
    applied
}

/// Whether a pipeline carries a promotion request (the Deployment controller's watch on
/// DataPipelines triggers on these only).
pub fn requested(p: &DataPipeline) -> bool {
    p.annotations().contains_key(ANNOTATION)
}

/// The Event note of an appended entry.
pub fn note(p: &Promotion) -> String {
    let separator = if p.message.is_empty() { "" } else { ": " };
    format!(
        "{:?} is now {} ({}{separator}{})",
        p.role,
        p.model_version.as_deref().unwrap_or("none"),
        p.reason,
        p.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_api::DeploymentSpec;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn history() -> Vec<Promotion> {
        let spec: DeploymentSpec =
            serde_yaml::from_str("champion: {modelVersion: base}\nshadow: {modelVersion: v2}").unwrap();
        let mut history = Vec::new();
        served::apply_spec(&spec, &mut history, Time(at(1)));
        history
    }

    fn pipeline(name: &str, deployment: &str, request: Option<&PromotionRequest>) -> DataPipeline {
        let mut p: DataPipeline = serde_yaml::from_str(&format!(
            "apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{deployment: {deployment}}}"
        ))
        .unwrap();
        if let Some(r) = request {
            p.annotations_mut().insert(ANNOTATION.into(), r.to_annotation());
        }
        p
    }

    fn shadow_request(model: &str, s: i64) -> PromotionRequest {
        PromotionRequest::new(
            "shapes",
            "loop",
            &[(Role::Shadow, Some(model.into()))],
            "ContinuousDeployment",
            "policy Shadow",
            at(s),
        )
    }

    #[test]
    fn a_request_round_trips_through_its_annotation_at_whole_seconds() {
        let request = PromotionRequest::new(
            "shapes",
            "loop",
            &[(Role::Shadow, Some("r1".into()))],
            "ContinuousDeployment",
            "policy Shadow",
            at(5).checked_add(k8s_openapi::jiff::SignedDuration::from_millis(700)).unwrap(),
        );
        assert_eq!(request.requested_at, Time(at(5)));
        let text = request.to_annotation();
        assert!(
            text.contains(r#""changes":[{"role":"shadow","modelVersion":"r1"}]"#)
                && text.contains(r#""requestedAt":"1970-01-01T00:00:05Z""#),
            "{text}"
        );
        let p = pipeline("loop", "shapes", Some(&request));
        assert_eq!(PromotionRequest::of(&p), Some(Ok(request)));
        assert_eq!(PromotionRequest::of(&pipeline("loop", "shapes", None)), None);
    }

    #[test]
    fn a_request_appends_what_the_pipeline_used_to_append_and_only_once() {
        let mut h = history();
        let request = shadow_request("r1", 10);
        let added = request.apply(&mut h);
        let expected = Promotion {
            time: Time(at(10)),
            role: Role::Shadow,
            model_version: Some("r1".into()),
            previous: Some("v2".into()),
            reason: "ContinuousDeployment".into(),
            message: "policy Shadow".into(),
        };
        assert_eq!(added, vec![expected.clone()]);
        assert_eq!(h.last(), Some(&expected));
        assert!(request.is_recorded(&h));
        assert!(request.apply(&mut h).is_empty(), "applied once");
        assert_eq!(h.len(), 3);
        assert!(!shadow_request("r1", 11).is_recorded(&h), "another request of the same change is another request");
    }

    #[test]
    fn a_gate_request_makes_the_shadow_champion_and_empties_the_shadow() {
        let mut h = history();
        let changes = [(Role::Champion, Some("v2".to_string())), (Role::Shadow, None)];
        let request =
            PromotionRequest::new("shapes", "loop", &changes, "PromotionGate", "shadow 0.7 beats champion 0.5", at(20));
        let added = request.apply(&mut h);
        assert_eq!(added.len(), 2);
        assert_eq!(
            (added[0].role, added[0].model_version.as_deref(), added[0].previous.as_deref()),
            (Role::Champion, Some("v2"), Some("base"))
        );
        assert_eq!(
            (added[1].role, added[1].model_version.as_deref(), added[1].previous.as_deref()),
            (Role::Shadow, None, Some("v2"))
        );
        assert!(request.is_recorded(&h[..h.len() - 1]), "either entry identifies the request");
        assert_eq!(served::served(&h, Role::Champion).as_deref(), Some("v2"));
        assert_eq!(note(&added[0]), "Champion is now v2 (PromotionGate: shadow 0.7 beats champion 0.5)");
        assert_eq!(note(&added[1]), "Shadow is now none (PromotionGate: shadow 0.7 beats champion 0.5)");
    }

    #[test]
    fn only_requests_for_this_deployment_apply_oldest_first_and_bad_ones_are_reported() {
        let mut h = history();
        let mut bad = pipeline("broken", "shapes", None);
        bad.annotations_mut().insert(ANNOTATION.into(), "{not json".into());
        let empty = PromotionRequest { changes: Vec::new(), ..shadow_request("r7", 5) };
        let moved = PromotionRequest { deployment: "elsewhere".into(), ..shadow_request("r9", 5) };
        let pipelines = [
            pipeline("late", "shapes", Some(&shadow_request("r2", 30))),
            pipeline("early", "shapes", Some(&shadow_request("r1", 20))),
            pipeline("other", "elsewhere", Some(&shadow_request("r8", 10))),
            pipeline("moved", "shapes", Some(&moved)),
            pipeline("empty", "shapes", Some(&empty)),
            bad,
        ];
        let applied = apply_requests("shapes", &pipelines, &mut h);
        let models: Vec<_> = applied.promoted.iter().map(|p| p.model_version.clone().unwrap()).collect();
        assert_eq!(models, ["r1", "r2"]);
        assert_eq!(applied.promoted[1].previous.as_deref(), Some("r1"));
        assert_eq!(applied.invalid.len(), 2);
        assert!(
            applied.invalid[0].contains("empty: no changes") && applied.invalid[1].contains("broken"),
            "{:?}",
            applied.invalid
        );
        assert!(
            apply_requests("shapes", &pipelines, &mut h).promoted.is_empty(),
            "re-reading the same requests changes nothing"
        );
        assert!(requested(&pipelines[0]) && !requested(&pipeline("idle", "shapes", None)));
    }
}
