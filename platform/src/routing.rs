//! The routing snapshot: everything the activator needs to route a request, computed by the
//! control plane. The activator never sees objects, only a snapshot and then what changed in
//! it ([`RoutingUpdate`]), from a [`RoutingFeed`].

mod feed;

pub use feed::RoutingFeed;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Names one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RevisionKey {
    /// The namespace.
    pub namespace: String,
    /// The revision name.
    pub name: String,
}

impl RevisionKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for RevisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Hosts to weighted revisions, and revisions to their ready endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingSnapshot {
    /// Every served host (route hosts and tag hosts) to its traffic split.
    pub hosts: BTreeMap<String, HostRoute>,
    /// Every routed revision to its backends (a list of `[key, backends]` pairs in JSON,
    /// whose map keys must be strings).
    #[serde(with = "by_revision")]
    pub revisions: BTreeMap<RevisionKey, RevisionBackends>,
}

/// The traffic split behind one host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostRoute {
    /// The route serving this host, `namespace/name`.
    pub route: String,
    /// Revisions with their percent; percents sum to 100.
    pub targets: Vec<WeightedTarget>,
    /// `Knative-Serving-Tag` values that pick a revision outright (only with
    /// config-features `tag-header-based-routing`); unknown tags use `targets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, RevisionKey>,
}

/// One revision's share of a host's requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedTarget {
    /// The revision.
    pub revision: RevisionKey,
    /// Its share, 1 to 100.
    pub percent: u32,
}

/// What the activator needs to forward to a revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RevisionBackends {
    /// containerConcurrency (0 = unlimited).
    pub container_concurrency: u32,
    /// The revision's request timeout, seconds.
    pub timeout_seconds: u64,
    /// Ready queue-proxy addresses.
    pub endpoints: Vec<SocketAddr>,
    /// Whether the activator buffers for this revision: it holds requests until a replica has
    /// a free slot and never sends one replica more than containerConcurrency. True while the
    /// revision's spare capacity is below its `target-burst-capacity` (Knative keeps the
    /// activator in the path then); otherwise requests go straight to the less loaded of two
    /// replicas and their queue-proxies enforce the limit.
    #[serde(default)]
    pub buffered: bool,
}

/// What the activator tells the autoscaler about one revision, every second and at once when
/// a request arrives for a revision with no ready replica (`POST /v1/stats` locally).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivatorStat {
    /// The revision.
    pub revision: RevisionKey,
    /// Time-weighted average of requests held (waiting for a replica or a free slot).
    pub held: f64,
    /// Requests forwarded and not yet answered, at the end of the period.
    pub in_flight: f64,
    /// Requests that had to be held, per second.
    pub held_requests: f64,
}

/// What changed in a snapshot: each host and revision named is set to its new value, or
/// removed (`None`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingDelta {
    /// Hosts set or removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, Option<HostRoute>>,
    /// Revisions set or removed (pairs in JSON, as in [`RoutingSnapshot`]).
    #[serde(
        default,
        with = "by_revision",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub revisions: BTreeMap<RevisionKey, Option<RevisionBackends>>,
}

impl RoutingDelta {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.revisions.is_empty()
    }

    /// Adds `later`'s changes, which win over this delta's.
    pub fn extend(&mut self, later: RoutingDelta) {
        self.hosts.extend(later.hosts);
        self.revisions.extend(later.revisions);
    }
}

/// One line of the routing stream: the whole snapshot (first, and whenever a reader fell
/// behind what the feed remembers), or what changed since the last line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RoutingUpdate {
    /// Replace everything.
    Full(RoutingSnapshot),
    /// Apply to what the last lines built.
    Delta(RoutingDelta),
}

impl RoutingSnapshot {
    /// The backends of a revision, if it is routed.
    pub fn revision(&self, key: &RevisionKey) -> Option<&RevisionBackends> {
        self.revisions.get(key)
    }

    /// Applies `delta`.
    pub fn apply(&mut self, delta: &RoutingDelta) {
        for (host, route) in &delta.hosts {
            match route {
                Some(route) => self.hosts.insert(host.clone(), route.clone()),
                None => self.hosts.remove(host),
            };
        }
        for (key, backends) in &delta.revisions {
            match backends {
                Some(backends) => self.revisions.insert(key.clone(), backends.clone()),
                None => self.revisions.remove(key),
            };
        }
    }

    /// What turns this snapshot into `next`.
    pub fn delta_to(&self, next: &RoutingSnapshot) -> RoutingDelta {
        fn diff<K: Ord + Clone, V: PartialEq + Clone>(
            old: &BTreeMap<K, V>,
            new: &BTreeMap<K, V>,
        ) -> BTreeMap<K, Option<V>> {
            let gone = old.keys().filter(|k| !new.contains_key(*k));
            let set = new.iter().filter(|(k, v)| old.get(*k) != Some(*v));
            gone.map(|k| (k.clone(), None))
                .chain(set.map(|(k, v)| (k.clone(), Some(v.clone()))))
                .collect()
        }
        RoutingDelta {
            hosts: diff(&self.hosts, &next.hosts),
            revisions: diff(&self.revisions, &next.revisions),
        }
    }
}

/// A revision map as a sequence of `[key, value]` pairs.
mod by_revision {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::RevisionKey;

    pub fn serialize<S: Serializer, V: Serialize>(
        map: &BTreeMap<RevisionKey, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<BTreeMap<RevisionKey, V>, D::Error> {
        let pairs: Vec<(RevisionKey, V)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_survives_json() {
        let mut snap = RoutingSnapshot::default();
        snap.revisions.insert(
            RevisionKey::new("e1", "same-00001"),
            RevisionBackends {
                container_concurrency: 1,
                timeout_seconds: 30,
                endpoints: vec!["127.0.0.1:9".parse().unwrap()],
                buffered: true,
            },
        );
        snap.revisions.insert(
            RevisionKey::new("e2", "same-00001"),
            RevisionBackends::default(),
        );
        let json = serde_json::to_string(&snap).unwrap();
        let back: RoutingSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
    }
}
