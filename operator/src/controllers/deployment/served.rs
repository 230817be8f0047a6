//! Which models a Deployment serves.
//!
//! The spec says what the user (or Git) asked for; promotions a DataPipeline asks for (see
//! [`super::promotion`]) are appended to `status.promotionHistory`, whose one writer is the
//! Deployment controller. The served model of a role is the last history
//! entry of that role. A spec change appends a `Spec` entry, so the user's newest choice
//! wins over earlier promotions, and GitOps self-heal (which only sees the spec) never
//! reverts a promotion.

use flywheel_api::DeploymentSpec;
use flywheel_api::deployment::{Promotion, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// History entries are capped so status stays small.
pub const MAX_HISTORY: usize = 50;
pub const REASON_SPEC: &str = "Spec";

fn spec_choice(spec: &DeploymentSpec, role: Role) -> Option<String> {
    match role {
        Role::Champion => Some(spec.champion.model_version.clone()),
        Role::Shadow => spec.shadow.as_ref().map(|s| s.model_version.clone()),
    }
}

/// The served model of a role according to a history.
pub fn served(history: &[Promotion], role: Role) -> Option<String> {
    history.iter().rev().find(|p| p.role == role).and_then(|p| p.model_version.clone())
}

/// Appends `Spec` entries for roles whose spec choice changed since the last `Spec` entry.
/// Returns the entries appended.
pub fn apply_spec(spec: &DeploymentSpec, history: &mut Vec<Promotion>, now: Time) -> Vec<Promotion> {
    let mut added = Vec::new();
    for role in [Role::Champion, Role::Shadow] {
        let wanted = spec_choice(spec, role);
        let last_spec = history.iter().rev().find(|p| p.role == role && p.reason == REASON_SPEC);
        let changed = match last_spec {
            Some(entry) => entry.model_version != wanted,
            None => wanted.is_some(),
        };
        if changed {
            let entry = Promotion {
                time: now.clone(),
                role,
                previous: served(history, role),
                model_version: wanted,
                reason: REASON_SPEC.into(),
                message: String::new(),
            };
            history.push(entry.clone());
            added.push(entry);
        }
    }
    cap(history);
    added
}

/// Appends one entry per change, each replacing what its role served until then, and caps the
/// history. Returns the entries appended.
pub fn record(
    history: &mut Vec<Promotion>,
    changes: &[(Role, Option<String>)],
    time: Time,
    reason: &str,
    message: &str,
) -> Vec<Promotion> {
    let mut added = Vec::new();
    for (role, model) in changes {
        let entry = Promotion {
            time: time.clone(),
            role: *role,
            previous: served(history, *role),
            model_version: model.clone(),
            reason: reason.into(),
            message: message.into(),
        };
        history.push(entry.clone());
        added.push(entry);
    }
    cap(history);
    added
}

/// Drops the oldest entries beyond [`MAX_HISTORY`], but never the latest `Spec` entry of a
/// role: it is what later spec changes are compared with.
fn cap(history: &mut Vec<Promotion>) {
    let excess = history.len().saturating_sub(MAX_HISTORY);
    if excess == 0 {
        return;
    }
    let keep: Vec<usize> = [Role::Champion, Role::Shadow]
        .iter()
        .filter_map(|role| history.iter().rposition(|p| p.role == *role && p.reason == REASON_SPEC))
        .collect();
    let mut index = 0;
    let mut dropped = 0;
    history.retain(|_| {
        let i = index;
        index += 1;
        let drop = dropped < excess && !keep.contains(&i);
        dropped += drop as usize;
        !drop
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(champion: &str, shadow: Option<&str>) -> DeploymentSpec {
        let mut text = format!("champion: {{modelVersion: {champion}}}\n");
        if let Some(s) = shadow {
            text.push_str(&format!("shadow: {{modelVersion: {s}}}\n"));
        }
        serde_yaml::from_str(&text).unwrap()
    }

    fn t() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap())
    }

    fn promotion(role: Role, model: &str) -> Promotion {
        Promotion {
            time: t(),
            role,
            model_version: Some(model.into()),
            previous: None,
            reason: "ContinuousDeployment".into(),
            message: String::new(),
        }
    }

    #[test]
    fn first_reconcile_records_the_spec() {
        let mut history = Vec::new();
        let added = apply_spec(&spec("v1", Some("v2")), &mut history, t());
        assert_eq!(added.len(), 2);
        assert_eq!(served(&history, Role::Champion).as_deref(), Some("v1"));
        assert_eq!(served(&history, Role::Shadow).as_deref(), Some("v2"));
        assert!(apply_spec(&spec("v1", Some("v2")), &mut history, t()).is_empty(), "idempotent");
    }

    #[test]
    fn promotions_survive_an_unchanged_spec() {
        let mut history = Vec::new();
        apply_spec(&spec("v1", None), &mut history, t());
        history.push(promotion(Role::Champion, "v3"));
        assert!(apply_spec(&spec("v1", None), &mut history, t()).is_empty());
        assert_eq!(served(&history, Role::Champion).as_deref(), Some("v3"));
    }

    #[test]
    fn a_spec_change_wins_over_earlier_promotions() {
        let mut history = Vec::new();
        apply_spec(&spec("v1", Some("v2")), &mut history, t());
        history.push(promotion(Role::Champion, "v3"));
        let added = apply_spec(&spec("v4", None), &mut history, t());
        assert_eq!(added.len(), 2);
        assert_eq!(added[0].previous.as_deref(), Some("v3"));
        assert_eq!(served(&history, Role::Champion).as_deref(), Some("v4"));
        assert_eq!(served(&history, Role::Shadow), None, "removing the shadow from the spec empties the role");
    }

    #[test]
    fn recorded_changes_name_what_they_replace() {
        let mut history = Vec::new();
        apply_spec(&spec("v1", Some("v2")), &mut history, t());
        let changes = [(Role::Champion, Some("v2".to_string())), (Role::Shadow, None)];
        let added = record(&mut history, &changes, t(), "PromotionGate", "better");
        assert_eq!(added.len(), 2);
        assert_eq!((added[0].previous.as_deref(), added[1].previous.as_deref()), (Some("v1"), Some("v2")));
        assert_eq!(served(&history, Role::Champion).as_deref(), Some("v2"));
        assert_eq!(served(&history, Role::Shadow), None);
        assert!(history[2..].iter().all(|p| p.reason == "PromotionGate" && p.message == "better"));
    }

    #[test]
    fn history_is_capped_but_keeps_the_latest_spec_entries() {
        let mut history = Vec::new();
        apply_spec(&spec("v1", None), &mut history, t());
        history.extend((0..MAX_HISTORY + 5).map(|i| promotion(Role::Shadow, &format!("m{i}"))));
        assert!(apply_spec(&spec("v1", None), &mut history, t()).is_empty());
        assert_eq!(history.len(), MAX_HISTORY);
        assert_eq!(history[0].reason, REASON_SPEC, "the champion's Spec entry is kept");
        assert_eq!(served(&history, Role::Champion).as_deref(), Some("v1"));
        assert!(apply_spec(&spec("v1", None), &mut history, t()).is_empty(), "no spurious Spec entry after capping");
    }
}
