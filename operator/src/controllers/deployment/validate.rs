//! Validate: never replace a serving model with one that cannot serve.

use flywheel_api::ModelVersion;
use flywheel_api::condition;
use flywheel_api::model_version::ModelPhase;

use super::read::Observed;

/// A reason and a message for a condition.
pub type Problem = (String, String);

/// Why the served models cannot serve, if they cannot.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// The champion cannot serve: the children are left as they are.
    pub champion: Option<Problem>,
    /// The shadow cannot serve: it is left out rather than blocking the champion.
    pub shadow: Option<Problem>,
}

/// Why a referenced ModelVersion cannot be served, or None when it can.
pub fn unservable(name: &str, mv: Option<&ModelVersion>) -> Option<Problem> {
    let Some(mv) = mv else {
        return Some(("ModelVersionNotFound".into(), format!("ModelVersion {name:?} does not exist")));
    };
    let status = mv.status.clone().unwrap_or_default();
    if status.phase == Some(ModelPhase::Ready) && status.digest.is_some() {
        return None;
    }
    let why = condition::find(&status.conditions, flywheel_api::model_version::conditions::READY)
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "not verified yet".into());
    Some(("ModelVersionNotReady".into(), format!("ModelVersion {name:?} is not Ready ({why})")))
}

pub fn validate(observed: &Observed) -> Verdict {
    Verdict {
        champion: unservable(&observed.champion_name, observed.champion.as_ref()),
        shadow: observed.shadow_name.as_ref().and_then(|name| unservable(name, observed.shadow.as_ref())),
    }
}

impl Verdict {
    /// The shadow to serve beside the champion: the observed one, when it can serve.
    pub fn serving_shadow<'o>(&self, observed: &'o Observed) -> Option<&'o ModelVersion> {
        observed.shadow.as_ref().filter(|_| self.shadow.is_none())
    }
}
