//! Placement: where the newest trained model goes, and when the promotion gate promotes the
//! shadow. The pipeline does not write the Deployment: it asks for a promotion with a
//! [`PromotionRequest`] in its own annotation, and the Deployment controller, the one writer
//! of `status.promotionHistory`, applies it. One request at a time: while the Deployment has
//! not recorded it, the pipeline asks for nothing else; once recorded, `Promoted` says so and
//! the annotation goes.

use flywheel_api::data_pipeline::ReviewQuality;
use flywheel_api::data_pipeline::conditions;
use flywheel_api::deployment::{MonitoringSummary, Role};
use flywheel_api::{DataPipeline, FlywheelDeployment};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};

use super::decide::{self, Placement};
use crate::Result;
use crate::context::Context;
use crate::controllers::deployment::promotion::{ANNOTATION, PromotionRequest};
use crate::controllers::deployment::served;
use crate::controllers::recorder::StatusRecorder;

/// The field manager of a pipeline's promotion request (its own annotation).
pub const REQUEST_FIELD_MANAGER: &str = "flywheel-operator-data-pipeline";

pub const REASON_CONTINUOUS_DEPLOYMENT: &str = "ContinuousDeployment";
pub const REASON_PROMOTION_GATE: &str = "PromotionGate";

/// The newest model a run produced, and whether it is Ready.
pub struct Produced<'a> {
    pub name: &'a str,
    pub ready: bool,
}

/// What the pipeline asks of its Deployment after this reconcile.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// The request the annotation should hold; None removes it.
    pub request: Option<PromotionRequest>,
    /// The pipeline's request the Deployment has recorded (the promotion happened).
    pub recorded: Option<PromotionRequest>,
    /// A model waiting for a manual decision (policy `manual`).
    pub candidate: Option<String>,
}

/// Pure: decides from the pipeline (its spec and pending request), the Deployment as read now
/// (its history, served models and monitoring figures) and the review service's figures.
pub fn decide(
    p: &DataPipeline,
    d: &FlywheelDeployment,
    produced: Option<Produced>,
    reviewed: Option<&ReviewQuality>,
    at: Timestamp,
) -> Decision {
    let policy = p.spec.continuous_deployment.policy;
    let mut decision = Decision::default();
    if let (Some(m), Placement::Candidate) = (&produced, decide::placement(policy)) {
        decision.candidate = Some(m.name.to_string());
    }
    let history = d.status.as_ref().map(|s| s.promotion_history.as_slice()).unwrap_or_default();
    // A request for another Deployment (the spec moved on) is dropped.
    match PromotionRequest::of(p).and_then(Result::ok).filter(|r| r.deployment == d.name_any()) {
        Some(pending) if !pending.is_recorded(history) => {
            decision.request = Some(pending);
            return decision;
        }
        Some(recorded) => decision.recorded = Some(recorded),
        None => {}
    }
    decision.request = continuous_deployment(p, d, produced, at).or_else(|| promotion_gate(p, d, reviewed, at));
    decision
}

fn continuous_deployment(
    p: &DataPipeline,
    d: &FlywheelDeployment,
    produced: Option<Produced>,
    at: Timestamp,
) -> Option<PromotionRequest> {
    let policy = p.spec.continuous_deployment.policy;
    let (Some(m), Placement::Promote(role)) = (produced, decide::placement(policy)) else { return None };
    let history = d.status.as_ref().map(|s| s.promotion_history.as_slice()).unwrap_or_default();
    if !m.ready || decide::already_promoted(history, role, m.name) {
        return None;
    }
    let changes = [(role, Some(m.name.to_string()))];
    Some(PromotionRequest::new(
        &d.name_any(),
        &p.name_any(),
        &changes,
        REASON_CONTINUOUS_DEPLOYMENT,
        &format!("policy {policy:?}"),
        at,
    ))
}

/// A shadow that beats the champion on reviewed data becomes champion. The figures are the
/// review service's (every replica's reviews) when it has them for the pair served now, else
/// the Deployment's monitoring summary (inference pods that keep their own reviews).
fn promotion_gate(
    p: &DataPipeline,
    d: &FlywheelDeployment,
    reviewed: Option<&ReviewQuality>,
    at: Timestamp,
) -> Option<PromotionRequest> {
    let gate = p.spec.continuous_deployment.promotion_gate.as_ref()?;
    let status = d.status.clone().unwrap_or_default();
    // The history, not status.shadow, says what is served now: right after a promotion
    // status.shadow and the monitoring figures still describe the old pair.
    let shadow =
        served::served(&status.promotion_history, Role::Shadow).filter(|s| status.shadow.as_ref() == Some(s))?;
    let from_service = reviewed
        .filter(|q| {
            status.champion.as_deref() == Some(q.champion_model_version.as_str())
                && q.shadow_model_version.as_deref() == Some(shadow.as_str())
        })
        .map(|q| MonitoringSummary {
            champion_metric: q.champion,
            shadow_metric: q.shadow,
            reviewed_samples: Some(q.reviewed_samples),
            ..Default::default()
        });
    let justification = decide::gate_says_promote(gate, from_service.as_ref().or(status.monitoring.as_ref()))?;
    let changes = [(Role::Champion, Some(shadow)), (Role::Shadow, None)];
    Some(PromotionRequest::new(&d.name_any(), &p.name_any(), &changes, REASON_PROMOTION_GATE, &justification, at))
}

/// Sets `Promoted` for a request the Deployment has recorded.
pub fn record(rec: &mut StatusRecorder, decision: &Decision) {
    let Some(r) = &decision.recorded else { return };
    let model = |role: Role| {
        r.changes.iter().find(|c| c.role == role).and_then(|c| c.model_version.clone()).unwrap_or_default()
    };
    let message = match r.reason.as_str() {
        REASON_PROMOTION_GATE => format!("{} promoted to champion: {}", model(Role::Champion), r.message),
        _ => match r.changes.first() {
            Some(c) => format!("{} is the {:?}", c.model_version.as_deref().unwrap_or_default(), c.role),
            None => String::new(),
        },
    };
    rec.ok(conditions::PROMOTED, &r.reason, message);
}

/// Puts the request into the pipeline's annotation (server-side apply under the pipeline's
/// own field manager), or removes it (a merge patch, whoever wrote it), when that changes it.
/// Both are guarded by the resourceVersion of `p` (as read, or as the status write left it),
/// so a stale read never asks twice.
pub async fn ask(ctx: &Context, p: &DataPipeline, request: Option<&PromotionRequest>) -> Result<()> {
    let wanted = request.map(PromotionRequest::to_annotation);
    if p.annotations().get(ANNOTATION) == wanted.as_ref() {
        return Ok(());
    }
    let api: Api<DataPipeline> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let (params, patch) = match wanted {
        Some(value) => {
            let metadata = serde_json::json!({"name": p.name_any(), "resourceVersion": p.resource_version(), "annotations": { ANNOTATION: value }});
            let apply = serde_json::json!({"apiVersion": DataPipeline::api_version(&()), "kind": DataPipeline::kind(&()), "metadata": metadata});
            (PatchParams::apply(REQUEST_FIELD_MANAGER).force(), Patch::Apply(apply))
        }
        None => {
            let remove = serde_json::json!({"metadata": {"resourceVersion": p.resource_version(), "annotations": { ANNOTATION: null }}});
            (
                PatchParams { field_manager: Some(REQUEST_FIELD_MANAGER.into()), ..Default::default() },
                Patch::Merge(remove),
            )
        }
    };
    api.patch(&p.name_any(), &params, &patch).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_api::condition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn pipeline(deployment: &str) -> DataPipeline {
        serde_yaml::from_str(&format!(
            "apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {{name: loop, namespace: ns}}
spec:
  deployment: {deployment}
  continuousDeployment: {{policy: shadow, promotionGate: {{minReviewedSamples: 20}}}}"
        ))
        .unwrap()
    }

    fn with_request(mut p: DataPipeline, r: &PromotionRequest) -> DataPipeline {
        p.annotations_mut().insert(ANNOTATION.into(), r.to_annotation());
        p
    }

    /// A Deployment serving `base` with shadow `v2` (spec entries), monitoring `figures`.
    fn deployment(figures: Option<(f64, f64, u64)>) -> FlywheelDeployment {
        let mut d: FlywheelDeployment = serde_yaml::from_str(
            "apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {name: shapes, namespace: ns}\nspec: {champion: {modelVersion: base}, shadow: {modelVersion: v2}}",
        )
        .unwrap();
        let mut history = Vec::new();
        served::apply_spec(&d.spec, &mut history, Time(at(1)));
        let monitoring = figures.map(|(c, s, n)| MonitoringSummary {
            champion_metric: Some(c),
            shadow_metric: Some(s),
            reviewed_samples: Some(n),
            ..Default::default()
        });
        d.status = Some(flywheel_api::DeploymentStatus {
            champion: Some("base".into()),
            shadow: Some("v2".into()),
            promotion_history: history,
            monitoring,
            ..Default::default()
        });
        d
    }

    /// The Deployment controller's side: applies the request and serves what the history says.
    fn applied(mut d: FlywheelDeployment, r: &PromotionRequest) -> FlywheelDeployment {
        let status = d.status.as_mut().unwrap();
        assert!(!r.apply(&mut status.promotion_history).is_empty());
        status.champion = served::served(&status.promotion_history, Role::Champion);
        status.shadow = served::served(&status.promotion_history, Role::Shadow);
        status.monitoring = None;
        d
    }

    fn promoted(decision: &Decision) -> Option<(String, String)> {
        let mut conditions = Vec::new();
        record(&mut StatusRecorder::new(&mut conditions, Some(1), at(50), "Reconcile"), decision);
        condition::find(&conditions, conditions::PROMOTED).map(|c| (c.reason.clone(), c.message.clone()))
    }

    #[test]
    fn a_ready_model_is_requested_once_then_promoted_when_recorded() {
        let (p, d) = (pipeline("shapes"), deployment(None));
        let not_ready = decide(&p, &d, Some(Produced { name: "loop-r1", ready: false }), None, at(10));
        assert_eq!(not_ready, Decision::default());

        let decision = decide(&p, &d, Some(Produced { name: "loop-r1", ready: true }), None, at(10));
        let request = decision.request.clone().expect("a request");
        assert_eq!(
            (request.reason.as_str(), request.message.as_str(), request.requested_at.clone()),
            ("ContinuousDeployment", "policy Shadow", Time(at(10)))
        );
        assert_eq!(request.changes.len(), 1);
        assert_eq!(
            (request.changes[0].role, request.changes[0].model_version.as_deref()),
            (Role::Shadow, Some("loop-r1"))
        );
        assert_eq!(promoted(&decision), None, "not promoted before the Deployment records it");

        // Pending: the same request stays, whatever the time.
        let p = with_request(p, &request);
        let waiting = decide(&p, &d, Some(Produced { name: "loop-r1", ready: true }), None, at(15));
        assert_eq!((waiting.request.as_ref(), waiting.recorded.as_ref()), (Some(&request), None));

        // Recorded: Promoted, the annotation goes, nothing more to ask.
        let d = applied(d, &request);
        let done = decide(&p, &d, Some(Produced { name: "loop-r1", ready: true }), None, at(20));
        assert_eq!((done.request.as_ref(), done.recorded.as_ref()), (None, Some(&request)));
        assert_eq!(promoted(&done), Some(("ContinuousDeployment".into(), "loop-r1 is the Shadow".into())));
        let later = decide(&pipeline("shapes"), &d, Some(Produced { name: "loop-r1", ready: true }), None, at(25));
        assert_eq!(later, Decision::default(), "already promoted");
    }

    #[test]
    fn the_gate_promotes_the_served_shadow_and_empties_the_role() {
        let (p, d) = (pipeline("shapes"), deployment(Some((0.5, 0.7, 25))));
        let decision = decide(&p, &d, None, None, at(30));
        let request = decision.request.clone().expect("the gate asks");
        assert_eq!(request.reason, "PromotionGate");
        assert!(request.message.starts_with("shadow 0.700 beats champion 0.500"), "{}", request.message);
        let roles: Vec<_> = request.changes.iter().map(|c| (c.role, c.model_version.clone())).collect();
        assert_eq!(roles, [(Role::Champion, Some("v2".to_string())), (Role::Shadow, None)]);

        let d = applied(d, &request);
        let done = decide(&with_request(p, &request), &d, None, None, at(35));
        assert_eq!(done.request, None, "no served shadow any more");
        let (reason, message) = promoted(&done).unwrap();
        assert_eq!(reason, "PromotionGate");
        assert_eq!(message, format!("v2 promoted to champion: {}", request.message));
        assert_eq!(
            decide(&pipeline("shapes"), &deployment(Some((0.5, 0.51, 25))), None, None, at(30)),
            Decision::default(),
            "below the margin"
        );
    }

    #[test]
    fn the_gate_reads_the_review_service_for_the_pair_served_now() {
        let p = pipeline("shapes");
        let figures = |champion: &str, shadow: Option<&str>, c: f64, s: f64| ReviewQuality {
            metric: "mAP50".into(),
            champion_model_version: champion.into(),
            shadow_model_version: shadow.map(str::to_string),
            reviewed_samples: 40,
            champion: Some(c),
            shadow: Some(s),
        };
        // The pods' own figures say no; every replica's reviews say yes.
        let d = deployment(Some((0.5, 0.5, 25)));
        let decision = decide(&p, &d, None, Some(&figures("base", Some("v2"), 0.4, 0.8)), at(30));
        let request = decision.request.expect("the review service's figures promote");
        assert!(request.message.starts_with("shadow 0.800 beats champion 0.400"), "{}", request.message);
        // Figures of another pair are not this pair's: the Deployment's own decide.
        for other in [
            figures("base", Some("v1"), 0.4, 0.8),
            figures("old", Some("v2"), 0.4, 0.8),
            figures("base", None, 0.4, 0.8),
        ] {
            assert_eq!(decide(&p, &d, None, Some(&other), at(30)).request, None, "{other:?}");
        }
        // Too few reviews on the service's side refuse too.
        let few = ReviewQuality { reviewed_samples: 3, ..figures("base", Some("v2"), 0.4, 0.8) };
        assert_eq!(decide(&p, &deployment(None), None, Some(&few), at(30)).request, None);
    }

    #[test]
    fn manual_policy_names_a_candidate_and_requests_for_another_deployment_are_dropped() {
        let mut p = pipeline("shapes");
        p.spec.continuous_deployment.policy = flywheel_api::data_pipeline::Policy::Manual;
        let decision = decide(&p, &deployment(None), Some(Produced { name: "loop-r1", ready: true }), None, at(10));
        assert_eq!((decision.candidate.as_deref(), decision.request.as_ref()), (Some("loop-r1"), None));

        let old = PromotionRequest::new(
            "elsewhere",
            "loop",
            &[(Role::Shadow, Some("loop-r0".into()))],
            "ContinuousDeployment",
            "policy Shadow",
            at(5),
        );
        let p = with_request(pipeline("shapes"), &old);
        let decision = decide(&p, &deployment(None), Some(Produced { name: "loop-r1", ready: true }), None, at(10));
        assert_eq!(decision.recorded, None);
        assert_eq!(decision.request.map(|r| r.deployment), Some("shapes".to_string()));
    }
}
