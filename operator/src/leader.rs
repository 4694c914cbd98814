//! Leader election through a `coordination.k8s.io/v1` Lease, so that of
//! several operator replicas exactly one reconciles.
//!
//! The holder renews the Lease every `renew` interval; another replica takes
//! it over once `duration` has passed without a renewal. Every write is a
//! replace with the read `resourceVersion`, so two candidates racing for an
//! expired Lease cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::chrono::{self, Utc};
use kube::api::PostParams;
use kube::{Api, Client};

/// Which Lease to hold, as whom, and for how long.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity, unique among the replicas.
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews, and candidates retry.
    pub renew: Duration,
}

/// Acquires, renews and releases one Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl Elector {
    /// An elector for the Lease `settings` names.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// The settings this elector uses.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Takes the Lease if it is free or expired, or renews it if held;
    /// returns whether this replica holds it afterwards. Losing a race is
    /// `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Utc::now();
        let me = &self.settings.identity;
        let duration_seconds = i32::try_from(self.settings.duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1);
        let Some(lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return lost_race_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let held_by_me = spec.holder_identity.as_ref() == Some(me);
        if !held_by_me && !expired(&spec, now) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let renewed = LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: if held_by_me {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if held_by_me {
                transitions
            } else {
                transitions + 1
            }),
            ..spec
        };
        let lease = Lease {
            metadata: lease.metadata,
            spec: Some(renewed),
        };
        lost_race_is_false(
            self.api
                .replace(&self.settings.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Gives the Lease up if this replica holds it, so another takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.clone() else {
            return Ok(());
        };
        if spec.holder_identity.as_ref() != Some(&self.settings.identity) {
            return Ok(());
        }
        let released = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            ..spec
        };
        let lease = Lease {
            metadata: lease.metadata,
            spec: Some(released),
        };
        lost_race_is_false(
            self.api
                .replace(&self.settings.name, &PostParams::default(), &lease)
                .await,
        )
        .map(|_| ())
    }
}

/// Whether nobody holds the Lease or its holder stopped renewing it.
fn expired(spec: &LeaseSpec, now: chrono::DateTime<Utc>) -> bool {
    let (Some(_), Some(renewed)) = (&spec.holder_identity, &spec.renew_time) else {
        return true;
    };
    let valid_for = chrono::Duration::seconds(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed.0 + valid_for < now
}

/// A conflict (someone else wrote first) or an existing Lease means "not ours".
fn lost_race_is_false<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let now = Utc::now();
        let spec = |holder: Option<&str>, renewed_ago: i64| LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(now - chrono::Duration::seconds(renewed_ago))),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec(Some("a"), 5), now));
        assert!(expired(&spec(Some("a"), 16), now));
        assert!(expired(&spec(None, 0), now));
    }
}
