//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does
//! it: a candidate takes the lease when it is free or when its record has not changed for a
//! whole lease duration *as this candidate observed it* (so clocks need not agree), renews it
//! every retry period, and counts itself deposed when it could not renew within the renew
//! deadline. Writes are replaces carrying the resourceVersion read, so two candidates cannot
//! both win.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// Timings of an election (client-go's and Knative's defaults: 15 s, 10 s, 2 s).
#[derive(Clone, Debug)]
pub struct LeaseTimings {
    /// How long a lease is honoured without a renewal.
    pub duration: Duration,
    /// The leader gives up when it could not renew for this long.
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate for one lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: LeaseTimings,
    /// The holder, renew time and transitions last seen, and when they were first seen.
    observed: Option<(LeaseSpec, Instant)>,
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    /// A candidate `identity` (unique per process, e.g. the pod name) for the Lease
    /// `namespace/name`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: LeaseTimings,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
            observed: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this candidate leads.
    pub async fn acquire(&mut self) {
        let mut logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "Became the leader.");
                    return;
                }
                Ok(false) => {
                    if !logged {
                        let holder = self.holder().unwrap_or_default();
                        tracing::info!(lease = %self.name, %holder, "Another candidate leads; waiting.");
                        logged = true;
                    }
                }
                Err(error) => tracing::warn!(lease = %self.name, %error, "Cannot read the lease."),
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    /// Renews the lease every retry period; returns when leadership is lost (renewals failed
    /// for the renew deadline, or another candidate holds it).
    pub async fn hold(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, holder = %self.holder().unwrap_or_default(), "Lost the lease to another candidate.");
                    return;
                }
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "Cannot renew the lease.");
                    if last_renewed.elapsed() >= self.timings.renew_deadline {
                        tracing::error!(lease = %self.name, "Could not renew the lease within the renew deadline.");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up (on a clean shutdown), so the next candidate need not wait for it to
    /// expire.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(error) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.name, %error, "Cannot release the lease.");
        }
    }

    /// The current holder, as last observed.
    pub fn holder(&self) -> Option<String> {
        self.observed.as_ref()?.0.holder_identity.clone()
    }

    /// One round: takes or renews the lease when this candidate may; true when it holds it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let (identity, duration) = (self.identity.clone(), seconds(self.timings.duration));
        let mine = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(identity.clone()),
            lease_duration_seconds: Some(duration),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(mine(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created.spec.unwrap_or_default());
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let record = lease.spec.clone().unwrap_or_default();
        self.observe(record.clone());
        let holder = record.holder_identity.as_deref().unwrap_or_default();
        let held_by_me = holder == self.identity;
        if !held_by_me && !holder.is_empty() && !self.expired(&record) {
            return Ok(false);
        }
        let transitions = record.lease_transitions.unwrap_or(0);
        lease.spec = Some(if held_by_me {
            mine(transitions, record.acquire_time.clone())
        } else {
            mine(transitions + 1, None)
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(written.spec.unwrap_or_default());
                Ok(true)
            }
            // Someone else wrote first; they may have taken it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Remembers the record, restarting the expiry clock when it changed.
    fn observe(&mut self, record: LeaseSpec) {
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != record);
        if changed {
            self.observed = Some((record, Instant::now()));
        }
    }

    /// Whether the record has gone unrenewed for its duration since this candidate saw it.
    fn expired(&self, record: &LeaseSpec) -> bool {
        let duration = record
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timings.duration, Duration::from_secs);
        self.observed
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= duration)
    }
}
