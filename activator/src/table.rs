//! The routing table: an immutable, O(1)-lookup form of a [`RoutingSnapshot`], rebuilt whole on
//! every snapshot and swapped atomically. Per-endpoint in-flight counters survive rebuilds, so
//! load balancing is not reset by routing changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::HeaderValue;
use sluice_platform::routing::{RevisionKey, RoutingSnapshot};

/// One ready queue-proxy of a revision.
#[derive(Debug)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    in_flight: AtomicU32,
}

/// Counts a request against an endpoint until dropped.
#[derive(Debug)]
pub struct EndpointLoad(Arc<Endpoint>);

impl Drop for EndpointLoad {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Endpoint {
    fn load(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// A routed revision.
#[derive(Debug)]
pub struct Revision {
    /// Which revision.
    pub key: RevisionKey,
    /// Its request timeout.
    pub timeout: Duration,
    /// Its ready endpoints.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// `Knative-Serving-Revision` and `Knative-Serving-Namespace` values, built once per
    /// snapshot rather than per request.
    pub headers: (HeaderValue, HeaderValue),
}

impl Revision {
    /// Picks the less loaded of two random endpoints (power of two choices) and counts the
    /// request against it; `None` when no endpoint is ready.
    pub fn pick(&self) -> Option<(SocketAddr, EndpointLoad)> {
        self.pick_excluding(&[])
    }

    /// [`Revision::pick`] among the endpoints not in `excluded` (those that just failed).
    pub fn pick_excluding(&self, excluded: &[SocketAddr]) -> Option<(SocketAddr, EndpointLoad)> {
        let live: Vec<&Arc<Endpoint>> = if excluded.is_empty() {
            self.endpoints.iter().collect()
        } else {
            self.endpoints
                .iter()
                .filter(|e| !excluded.contains(&e.addr))
                .collect()
        };
        let n = live.len();
        let chosen = match n {
            0 => return None,
            1 => live[0],
            _ => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (ea, eb) = (live[a], live[b]);
                if eb.load() < ea.load() { eb } else { ea }
            }
        };
        chosen.in_flight.fetch_add(1, Ordering::AcqRel);
        Some((chosen.addr, EndpointLoad(chosen.clone())))
    }
}

/// The split behind one host: cumulative percents for a single draw.
#[derive(Debug)]
pub struct Host {
    /// `namespace/name` of the route.
    pub route: String,
    targets: Vec<(u32, Arc<Revision>)>,
    tags: HashMap<String, Arc<Revision>>,
}

impl Host {
    /// The revision a `Knative-Serving-Tag` value picks, if header routing knows the tag.
    pub fn tagged(&self, tag: &str) -> Option<&Arc<Revision>> {
        self.tags.get(tag)
    }

    /// Picks a revision by percent with one random draw.
    pub fn choose(&self) -> Option<&Arc<Revision>> {
        let total = self.targets.last()?.0;
        let draw = fastrand::u32(..total.max(1));
        self.targets
            .iter()
            .find(|(upto, _)| draw < *upto)
            .map(|(_, r)| r)
    }
}

/// The activator's routing table.
#[derive(Debug, Default)]
pub struct Table {
    hosts: HashMap<String, Arc<Host>>,
    revisions: HashMap<String, Arc<Revision>>,
}

impl Table {
    /// Builds a table from a snapshot, reusing endpoint counters from `previous`.
    pub fn build(snapshot: &RoutingSnapshot, previous: &Table) -> Self {
        let old: HashMap<SocketAddr, &Arc<Endpoint>> = previous
            .revisions
            .values()
            .flat_map(|r| r.endpoints.iter().map(|e| (e.addr, e)))
            .collect();
        let revisions: HashMap<String, Arc<Revision>> = snapshot
            .revisions
            .iter()
            .map(|(key, backends)| {
                let endpoints = backends
                    .endpoints
                    .iter()
                    .map(|addr| {
                        old.get(addr).map(|e| Arc::clone(e)).unwrap_or_else(|| {
                            Arc::new(Endpoint {
                                addr: *addr,
                                in_flight: AtomicU32::new(0),
                            })
                        })
                    })
                    .collect();
                let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
                let header =
                    |v: &str| HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static(""));
                let rev = Revision {
                    key: RevisionKey::new(namespace, name),
                    timeout: Duration::from_secs(backends.timeout_seconds.max(1)),
                    endpoints,
                    headers: (header(name), header(namespace)),
                };
                (key.clone(), Arc::new(rev))
            })
            .collect();
        let hosts = snapshot
            .hosts
            .iter()
            .map(|(host, route)| {
                let mut upto = 0;
                let targets = route
                    .targets
                    .iter()
                    .filter(|t| t.percent > 0)
                    .filter_map(|t| {
                        let rev = revisions.get(&t.revision.to_string())?;
                        upto += t.percent;
                        Some((upto, rev.clone()))
                    })
                    .collect();
                let tags = route
                    .tags
                    .iter()
                    .filter_map(|(tag, key)| {
                        Some((tag.clone(), revisions.get(&key.to_string())?.clone()))
                    })
                    .collect();
                let host_entry = Host {
                    route: route.route.clone(),
                    targets,
                    tags,
                };
                (host.to_ascii_lowercase(), Arc::new(host_entry))
            })
            .collect();
        Self { hosts, revisions }
    }

    /// The split for a host (already lowercased, without port).
    pub fn host(&self, host: &str) -> Option<&Arc<Host>> {
        self.hosts.get(host)
    }

    /// A revision by key.
    pub fn revision(&self, key: &RevisionKey) -> Option<&Arc<Revision>> {
        self.revisions.get(&key.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_platform::routing::{HostRoute, RevisionBackends, WeightedTarget};

    fn snapshot(split: &[(&str, u32)], endpoints: &[&str]) -> RoutingSnapshot {
        let mut s = RoutingSnapshot::default();
        let targets = split
            .iter()
            .map(|(rev, pct)| WeightedTarget {
                revision: RevisionKey::new("default", *rev),
                percent: *pct,
            })
            .collect();
        s.hosts.insert(
            "hello.default.localhost".into(),
            HostRoute {
                route: "default/hello".into(),
                targets,
                tags: Default::default(),
            },
        );
        for (rev, _) in split {
            let eps = endpoints.iter().map(|e| e.parse().unwrap()).collect();
            s.revisions.insert(
                format!("default/{rev}"),
                RevisionBackends {
                    container_concurrency: 0,
                    timeout_seconds: 300,
                    endpoints: eps,
                },
            );
        }
        s
    }

    #[test]
    fn split_follows_percents() {
        let t = Table::build(
            &snapshot(&[("a", 10), ("b", 90)], &["127.0.0.1:1"]),
            &Table::default(),
        );
        let host = t.host("hello.default.localhost").unwrap();
        let a = (0..10_000)
            .filter(|_| host.choose().unwrap().key.name == "a")
            .count();
        assert!((800..=1200).contains(&a), "a got {a} of 10000");
    }

    #[test]
    fn two_choices_prefers_the_idle_endpoint() {
        let t = Table::build(
            &snapshot(&[("a", 100)], &["127.0.0.1:1", "127.0.0.1:2"]),
            &Table::default(),
        );
        let rev = t
            .host("hello.default.localhost")
            .unwrap()
            .choose()
            .unwrap()
            .clone();
        let (first, _held) = rev.pick().unwrap();
        for _ in 0..20 {
            let (next, _) = rev.pick().unwrap();
            assert_ne!(next, first, "the loaded endpoint was picked");
        }
    }

    #[test]
    fn counters_survive_rebuilds() {
        let s = snapshot(&[("a", 100)], &["127.0.0.1:1"]);
        let t1 = Table::build(&s, &Table::default());
        let (_, held) = t1
            .host("hello.default.localhost")
            .unwrap()
            .choose()
            .unwrap()
            .pick()
            .unwrap();
        let t2 = Table::build(&s, &t1);
        let ep = &t2
            .revision(&RevisionKey::new("default", "a"))
            .unwrap()
            .endpoints[0];
        assert_eq!(ep.load(), 1);
        drop(held);
        assert_eq!(ep.load(), 0);
    }
}
