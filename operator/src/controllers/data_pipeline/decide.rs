//! Pure decisions of the DataPipeline controller: when to train, what a finished run
//! becomes, where a new model goes.

use flywheel_api::data_pipeline::{Policy, PromotionGate, Trigger};
use flywheel_api::deployment::{MonitoringSummary, Promotion, Role};
use k8s_openapi::jiff::Timestamp;

/// What the cluster says about one training run (read from its Job).
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    pub number: u32,
    pub job: String,
    pub reviewed_at_trigger: u64,
    pub base_model: String,
    /// The DatasetVersions the run reads (empty for Jobs that did not record them).
    pub datasets: Vec<String>,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    pub state: RunState,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    Running,
    Succeeded,
    Failed(String),
}

/// Parses a cooldown such as `90s`, `10m`, `1h30m` (one parser, shared with validation).
pub use flywheel_api::data_pipeline::parse_cooldown;

/// Reviewed samples since the last run was triggered (whatever its outcome, so a failed run
/// is retried at the next trigger, not in a loop).
pub fn reviewed_since_last_run(reviewed_total: u64, runs: &[RunInfo]) -> u64 {
    let last = runs.iter().map(|r| r.reviewed_at_trigger).max().unwrap_or(0);
    reviewed_total.saturating_sub(last)
}

/// The number of the run to start now, if any. Run numbers are consecutive, and the Job
/// name is derived from the number, so one trigger creates one Job even across restarts.
pub fn next_run(
    reviewed_total: u64,
    runs: &[RunInfo],
    trigger: &Trigger,
    now: Timestamp,
) -> Result<Option<u32>, String> {
    if runs.iter().any(|r| r.state == RunState::Running) {
        return Ok(None);
    }
    if reviewed_since_last_run(reviewed_total, runs) < u64::from(trigger.reviewed_samples) {
        return Ok(None);
    }
    let cooldown = parse_cooldown(&trigger.cooldown)?;
    let last = runs.iter().max_by_key(|r| r.number);
    if let Some(started) = last.and_then(|r| r.started) {
        let elapsed = now.duration_since(started).unsigned_abs();
        if elapsed < cooldown {
            return Ok(None);
        }
    }
    Ok(Some(last.map_or(1, |r| r.number + 1)))
}

/// Where continuous deployment puts a newly registered model.
#[derive(Debug, PartialEq)]
pub enum Placement {
    Promote(Role),
    Candidate,
}

pub fn placement(policy: Policy) -> Placement {
    match policy {
        Policy::Shadow => Placement::Promote(Role::Shadow),
        Policy::Champion => Placement::Promote(Role::Champion),
        Policy::Manual => Placement::Candidate,
    }
}

/// Whether a history already holds this promotion (so it is never applied twice).
pub fn already_promoted(history: &[Promotion], role: Role, model: &str) -> bool {
    history.iter().any(|p| p.role == role && p.model_version.as_deref() == Some(model) && p.reason != "Spec")
}

/// The promotion gate: promote the shadow when it beats the champion by the margin on
/// enough reviewed samples. Returns the justification when it should.
pub fn gate_says_promote(gate: &PromotionGate, monitoring: Option<&MonitoringSummary>) -> Option<String> {
    if !gate.enabled {
        return None;
    }
    let m = monitoring?;
    let (champion, shadow, samples) = (m.champion_metric?, m.shadow_metric?, m.reviewed_samples?);
    if samples < u64::from(gate.min_reviewed_samples) || shadow.is_nan() || champion.is_nan() {
        return None;
    }
    (shadow >= champion + gate.margin).then(|| {
        format!(
            "shadow {shadow:.3} beats champion {champion:.3} by at least {:.3} on {samples} reviewed samples",
            gate.margin
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn run(number: u32, at_trigger: u64, started: i64, state: RunState) -> RunInfo {
        RunInfo {
            number,
            job: format!("p-train-{number}"),
            reviewed_at_trigger: at_trigger,
            base_model: "m".into(),
            datasets: Vec::new(),
            started: Some(ts(started)),
            finished: None,
            state,
        }
    }

    fn trigger(n: u32, cooldown: &str) -> Trigger {
        Trigger { reviewed_samples: n, cooldown: cooldown.into() }
    }

    #[test]
    fn cooldowns_parse() {
        assert_eq!(parse_cooldown("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_cooldown("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_cooldown("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_cooldown("10").is_err());
        assert!(parse_cooldown("5d").is_err());
    }

    #[test]
    fn first_run_starts_at_the_trigger() {
        assert_eq!(next_run(4, &[], &trigger(5, "0s"), ts(100)).unwrap(), None);
        assert_eq!(next_run(5, &[], &trigger(5, "0s"), ts(100)).unwrap(), Some(1));
    }

    #[test]
    fn one_run_at_a_time_and_counted_from_the_last_trigger() {
        let runs = [run(1, 5, 0, RunState::Running)];
        assert_eq!(next_run(50, &runs, &trigger(5, "0s"), ts(100)).unwrap(), None);
        let runs = [run(1, 5, 0, RunState::Succeeded)];
        assert_eq!(reviewed_since_last_run(9, &runs), 4);
        assert_eq!(next_run(9, &runs, &trigger(5, "0s"), ts(100)).unwrap(), None);
        assert_eq!(next_run(10, &runs, &trigger(5, "0s"), ts(100)).unwrap(), Some(2));
    }

    #[test]
    fn a_failed_run_is_retried_at_the_next_trigger_not_at_once() {
        let runs = [run(1, 5, 0, RunState::Failed("OOM".into()))];
        assert_eq!(next_run(5, &runs, &trigger(5, "0s"), ts(100)).unwrap(), None);
        assert_eq!(next_run(10, &runs, &trigger(5, "0s"), ts(100)).unwrap(), Some(2));
    }

    #[test]
    fn cooldown_delays_the_next_run() {
        let runs = [run(1, 5, 0, RunState::Succeeded)];
        assert_eq!(next_run(10, &runs, &trigger(5, "10m"), ts(599)).unwrap(), None);
        assert_eq!(next_run(10, &runs, &trigger(5, "10m"), ts(600)).unwrap(), Some(2));
    }

    #[test]
    fn policies_place_models() {
        assert_eq!(placement(Policy::Shadow), Placement::Promote(Role::Shadow));
        assert_eq!(placement(Policy::Champion), Placement::Promote(Role::Champion));
        assert_eq!(placement(Policy::Manual), Placement::Candidate);
    }

    #[test]
    fn promotions_are_not_repeated() {
        let p = Promotion {
            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(1)),
            role: Role::Shadow,
            model_version: Some("p-r1".into()),
            previous: None,
            reason: "ContinuousDeployment".into(),
            message: String::new(),
        };
        assert!(already_promoted(std::slice::from_ref(&p), Role::Shadow, "p-r1"));
        assert!(!already_promoted(&[p], Role::Champion, "p-r1"));
    }

    #[test]
    fn the_gate_needs_enough_samples_and_the_margin() {
        let gate = PromotionGate { enabled: true, min_reviewed_samples: 20, margin: 0.02 };
        let m = |c: f64, s: f64, n: u64| MonitoringSummary {
            champion_metric: Some(c),
            shadow_metric: Some(s),
            reviewed_samples: Some(n),
            ..Default::default()
        };
        assert!(gate_says_promote(&gate, Some(&m(0.5, 0.6, 20))).is_some());
        assert!(gate_says_promote(&gate, Some(&m(0.5, 0.6, 19))).is_none(), "too few samples");
        assert!(gate_says_promote(&gate, Some(&m(0.5, 0.51, 100))).is_none(), "below the margin");
        assert!(gate_says_promote(&gate, Some(&m(0.5, f64::NAN, 100))).is_none());
        assert!(gate_says_promote(&gate, None).is_none());
        let off = PromotionGate { enabled: false, ..gate };
        assert!(gate_says_promote(&off, Some(&m(0.1, 0.9, 100))).is_none());
    }
}
