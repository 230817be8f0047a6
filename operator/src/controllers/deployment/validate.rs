//! Validate: never replace a serving model with one that cannot serve.

use flywheel_api::ModelVersion;
use flywheel_api::condition;
use flywheel_api::model_version::ModelPhase;
use kube::ResourceExt;

use super::read::Observed;
use crate::controllers::trust::{self, SecretUse};

/// A reason and a message for a condition.
pub type Problem = (String, String);

/// Why the served models cannot serve, if they cannot.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// The champion cannot serve: the children are left as they are.
    pub champion: Option<Problem>,
    /// The shadow cannot serve: it is left out rather than blocking the champion.
    pub shadow: Option<Problem>,
    /// The pods' storage credentials cannot be given (two Secrets, or one Flywheel may not
    /// use): the children are left as they are.
    pub credentials: Option<Problem>,
    /// The one credentials Secret the pods get, when there is one and it may be used.
    pub secret: Option<String>,
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

/// Whether the served models can serve, and the one credentials Secret their pods would get
/// (its labels are checked by the caller, who reads it).
pub fn validate(observed: &Observed) -> Verdict {
    let mut verdict = Verdict {
        champion: unservable(&observed.champion_name, observed.champion.as_ref()),
        shadow: observed.shadow_name.as_ref().and_then(|name| unservable(name, observed.shadow.as_ref())),
        ..Verdict::default()
    };
    match trust::one_secret(&credential_uses(observed, &verdict)) {
        Ok(secret) => verdict.secret = secret,
        Err(message) => verdict.credentials = Some((trust::CONFLICTING_CREDENTIALS.into(), message)),
    }
    verdict
}

/// The Secrets the inference pods would take storage credentials from: the champion's, the
/// serving shadow's and the feedback dataset's.
pub fn credential_uses(observed: &Observed, verdict: &Verdict) -> Vec<SecretUse> {
    let model =
        |role: &str, mv: &ModelVersion| {
            mv.spec.artifact.credentials.as_ref().map(|c| {
                SecretUse::new(&c.secret_name, "ModelVersion", role, &mv.name_any(), "spec.artifact.credentials")
            })
        };
    let feedback = observed.feedback.as_ref().and_then(|ds| {
        ds.spec
            .credentials
            .as_ref()
            .map(|c| SecretUse::new(&c.secret_name, "DatasetVersion", "feedback", &ds.name_any(), "spec.credentials"))
    });
    observed
        .champion
        .as_ref()
        .and_then(|c| model("champion", c))
        .into_iter()
        .chain(verdict.serving_shadow(observed).and_then(|s| model("shadow", s)))
        .chain(feedback)
        .collect()
}

impl Verdict {
    /// The shadow to serve beside the champion: the observed one, when it can serve.
    pub fn serving_shadow<'o>(&self, observed: &'o Observed) -> Option<&'o ModelVersion> {
        observed.shadow.as_ref().filter(|_| self.shadow.is_none())
    }

    /// Why no child may change: the champion cannot serve, or the pods' credentials cannot be
    /// given.
    pub fn blocked(&self) -> Option<&Problem> {
        self.champion.as_ref().or(self.credentials.as_ref())
    }
}
