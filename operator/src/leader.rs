//! Leader election through a `coordination.k8s.io/v1` Lease, so that of
//! several operator replicas exactly one reconciles. It works as client-go's
//! `leaderelection` does, for the same reasons:
//!
//! - A candidate judges the holder's Lease by its own clock: the Lease is
//!   expired once its record (holder, renew time, transitions) has stayed
//!   unchanged for the lease duration *as this replica observed it*. Clocks
//!   of different nodes may disagree; the time that passes on one does not.
//! - The holder renews every retry period, each call bounded by a timeout.
//!   Once it has gone the renew deadline (shorter than the lease duration)
//!   without a successful renewal, it stops leading: a leader cut off from
//!   the API server steps down before any candidate can have seen its Lease
//!   unchanged for a whole lease duration.
//! - Every write is a replace with the resourceVersion read, so two
//!   candidates racing for an expired Lease cannot both win.
//!
//! Kube-runtime has no leader election, and the crates that offer one keep
//! leading while their renewals fail; the few rules above are kept here.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

/// Which Lease to hold, as whom, and the timing of election.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity, unique among the replicas.
    pub identity: String,
    /// How long candidates wait, after they last saw the Lease change,
    /// before taking it over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and candidates try; also the timeout of
    /// each call to the API server.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Checks that the timings can keep one leader: retry period < renew
    /// deadline < lease duration.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?}): a leader that cannot renew must stop before another may start",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "the renew interval ({:?}) must be shorter than the renew deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// Why one attempt to take or keep the Lease failed (the caller retries).
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The API server refused or failed the call.
    #[error("Lease {lease}: {source}")]
    Api {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer within the retry period.
    #[error("Lease {lease}: no answer within {timeout:?}")]
    Timeout {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The time allowed.
        timeout: Duration,
    },
}

/// The part of a Lease that changes when its holder renews or changes.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions,
        }
    }
}

/// Acquires, renews and releases one Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The record last read, and when (by this replica's clock) it was
    /// first seen.
    observed: Mutex<Option<(Record, Instant)>>,
}

impl Elector {
    /// An elector for the Lease `settings` names.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: Mutex::new(None),
        }
    }

    /// The settings this elector uses.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Takes the Lease if it is free or expired, or renews it if held;
    /// returns whether this replica holds it afterwards. Losing a race is
    /// `Ok(false)`, not an error. Bounded by the retry period.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, ElectionError> {
        self.bounded(self.acquire_or_renew()).await?
    }

    async fn acquire_or_renew(&self) -> Result<bool, ElectionError> {
        let me = &self.settings.identity;
        let now = MicroTime(Timestamp::now());
        let duration_seconds = i32::try_from(self.settings.lease_duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1);
        let Some(lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            // Outside a cluster the operator creates its Lease; in one, the
            // chart does (and grants no `create`).
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            let created = self.api.create(&PostParams::default(), &lease).await;
            return self.won(created);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = Record::of(&spec);
        let held_by_me = record.holder.as_ref() == Some(me);
        if !held_by_me && !self.expired(record) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let renewed = LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: if held_by_me {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if held_by_me {
                transitions
            } else {
                transitions + 1
            }),
            ..spec
        };
        self.replace_spec(lease, renewed).await
    }

    /// Gives the Lease up if this replica holds it, so another takes over
    /// at once. Bounded by the retry period.
    pub async fn release(&self) -> Result<(), ElectionError> {
        self.bounded(async {
            let Some(lease) = self
                .api
                .get_opt(&self.settings.name)
                .await
                .map_err(|e| self.api_error(e))?
            else {
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
            self.replace_spec(lease, released).await.map(|_| ())
        })
        .await?
    }

    /// Whether `record`, as this replica has watched it, is free or has
    /// gone unchanged for the lease duration.
    fn expired(&self, record: Record) -> bool {
        let now = Instant::now();
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        let since = match observed.as_ref() {
            Some((seen, since)) if *seen == record => *since,
            _ => {
                *observed = Some((record.clone(), now));
                now
            }
        };
        record.holder.is_none() || now.duration_since(since) >= self.settings.lease_duration
    }

    /// A write that conflicted (someone else wrote first) or found the
    /// Lease created meanwhile means "not ours".
    /// Writes `lease` back with `spec`, as of the version read (a replica
    /// that wrote in between makes this a lost race, `Ok(false)`).
    async fn replace_spec(&self, lease: Lease, spec: LeaseSpec) -> Result<bool, ElectionError> {
        let lease = Lease {
            metadata: lease.metadata,
            spec: Some(spec),
        };
        let replaced = self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await;
        self.won(replaced)
    }

    fn won<T>(&self, result: Result<T, kube::Error>) -> Result<bool, ElectionError> {
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }

    fn api_error(&self, source: kube::Error) -> ElectionError {
        ElectionError::Api {
            lease: self.lease(),
            source,
        }
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.settings.namespace, self.settings.name)
    }

    async fn bounded<T>(&self, call: impl Future<Output = T>) -> Result<T, ElectionError> {
        let timeout = self.settings.retry_period;
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ElectionError::Timeout {
                lease: self.lease(),
                timeout,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings {
            name: "lease".to_owned(),
            namespace: "ns".to_owned(),
            identity: "me".to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    #[test]
    fn timings_must_leave_a_gap_between_leaders() {
        assert_eq!(settings().check(), Ok(()));
        let late = LeaseSettings {
            renew_deadline: Duration::from_secs(15),
            ..settings()
        };
        assert!(late.check().unwrap_err().contains("renew deadline"));
        let busy = LeaseSettings {
            retry_period: Duration::from_secs(10),
            ..settings()
        };
        assert!(busy.check().unwrap_err().contains("renew interval"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_by_the_local_clock_not_by_its_timestamps() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let elector = Elector::new(client, settings());
        // A renew time far in the future (a skewed clock) does not keep the
        // Lease alive, and one far in the past does not end it early.
        let record = |holder: &str, renewed: i64| Record {
            holder: Some(holder.to_owned()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            transitions: Some(1),
        };
        assert!(!elector.expired(record("other", 1)));
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(!elector.expired(record("other", 1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            elector.expired(record("other", 1)),
            "unchanged for the lease duration"
        );
        assert!(
            !elector.expired(record("other", 4_000_000_000)),
            "a renewal starts the wait again"
        );
        assert!(elector.expired(Record {
            holder: None,
            renew_time: None,
            transitions: None
        }));
    }
}
