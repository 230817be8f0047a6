//! Leader election on a coordination.k8s.io/v1 Lease, so only one operator replica
//! reconciles at a time. Updates are guarded by the Lease's resourceVersion; a replica that
//! cannot renew before the lease expires stops, and Kubernetes restarts it as a follower.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
}

/// Whether a lease held by someone else may be taken over.
pub fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else { return true };
    let duration = spec.lease_duration_seconds.unwrap_or(15) as i64;
    now.as_second() > renewed.0.as_second() + duration
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity,
            lease_duration: Duration::from_secs(15),
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let keeps = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(&self.identity));
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: if keeps { previous.and_then(|p| p.acquire_time.clone()) } else { Some(MicroTime(now)) },
            renew_time: Some(MicroTime(now)),
            lease_transitions: previous.map(|p| p.lease_transitions.unwrap_or(0) + i32::from(!keeps)),
            ..Default::default()
        }
    }

    /// One attempt to acquire or renew. Ok(true) when we hold the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                    spec: Some(self.spec(None, now)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let current = lease.spec.clone().unwrap_or_default();
                let mine = current.holder_identity.as_deref() == Some(&self.identity);
                let free = current.holder_identity.as_deref().is_none_or(str::is_empty);
                if !mine && !free && !expired(&current, now) {
                    return Ok(false);
                }
                lease.spec = Some(self.spec(Some(&current), now));
                match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Renews until a renewal fails for longer than the lease duration; returns then.
    pub async fn keep_renewing(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.lease_duration / 3).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "renewing the leader lease"),
            }
            if last_ok.elapsed() > self.lease_duration {
                return;
            }
        }
    }

    /// Gives the lease up so another replica takes over without waiting for expiry.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(&self.identity) {
                spec.holder_identity = None;
                let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_expire_after_their_duration() {
        let at = |s| MicroTime(Timestamp::from_second(s).unwrap());
        let spec = LeaseSpec { renew_time: Some(at(100)), lease_duration_seconds: Some(15), ..Default::default() };
        assert!(!expired(&spec, Timestamp::from_second(115).unwrap()));
        assert!(expired(&spec, Timestamp::from_second(116).unwrap()));
        assert!(expired(&LeaseSpec::default(), Timestamp::from_second(0).unwrap()));
    }
}
