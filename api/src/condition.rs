//! Status conditions following the Kubernetes API conventions.
//!
//! Every Flywheel kind keeps `status.conditions` as a list-map keyed by `type`
//! (`x-kubernetes-list-type: map`), so server-side apply merges conditions by type
//! instead of replacing the whole list.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use schemars::{Schema, SchemaGenerator};

/// Schema for a `conditions` field: the upstream `Condition` schema, as a list-map keyed by `type`.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema.insert(
        "description".into(),
        "Current state of the object, one entry per condition type (Kubernetes API conventions).".into(),
    );
    schema
}

/// Condition status values.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Sets a condition, keeping `lastTransitionTime` when the status did not change.
/// Returns true when the status changed (a transition worth an Event).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let transitioned = existing.status != status;
            if transitioned {
                existing.last_transition_time = Time(now);
            }
            existing.status = status.to_string();
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = observed_generation;
            transitioned
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message,
                observed_generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of a type is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, "Ready", FALSE, "Pending", "waiting", Some(1), at(10)));
        assert!(!set_condition(&mut conditions, "Ready", FALSE, "StillPending", "still", Some(2), at(20)));
        let ready = find(&conditions, "Ready").unwrap();
        assert_eq!(ready.last_transition_time, Time(at(10)));
        assert_eq!(ready.reason, "StillPending");
        assert_eq!(ready.observed_generation, Some(2));

        assert!(set_condition(&mut conditions, "Ready", TRUE, "Loaded", "ok", Some(2), at(30)));
        assert_eq!(find(&conditions, "Ready").unwrap().last_transition_time, Time(at(30)));
        assert!(is_true(&conditions, "Ready"));
        assert_eq!(conditions.len(), 1);
    }
}
