//! The routing table: an immutable, O(1)-lookup form of a [`RoutingSnapshot`], built whole
//! from the first snapshot, then changed by each [`RoutingDelta`] into a new table that shares
//! what did not change, and swapped atomically. Per-endpoint in-flight counters and
//! per-revision demand survive changes, so load balancing and the autoscaler's view are not
//! reset by routing changes.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use sluice_platform::ActivatorStat;
use sluice_platform::routing::{
    HostRoute, RevisionBackends, RevisionKey, RoutingDelta, RoutingSnapshot,
};
use sluice_runtime::concurrency::Window;
use tokio::sync::Notify;

/// What the activator sees of one revision's demand: requests held, as a time-weighted
/// average per reporting period, and a wake-up for held requests when a slot frees. Only held
/// requests take the lock; forwarded ones touch atomics alone.
#[derive(Debug)]
pub struct Demand {
    held: AtomicU32,
    held_window: Mutex<Window>,
    freed: Notify,
    poked: AtomicBool,
}

/// Why a request cannot be held.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull(pub usize);

/// Counts a held request until dropped.
#[derive(Debug)]
pub struct Held(Arc<Demand>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
        self.0.window().request_out(Instant::now());
    }
}

impl Demand {
    fn new() -> Self {
        Self {
            held: AtomicU32::new(0),
            held_window: Mutex::new(Window::new(Instant::now())),
            freed: Notify::new(),
            poked: AtomicBool::new(false),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.held_window.lock().expect("demand lock")
    }

    /// Holds a request, unless `depth` requests are held already.
    pub fn hold(self: &Arc<Self>, depth: usize) -> Result<Held, QueueFull> {
        let admitted = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                ((n as usize) < depth).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(QueueFull(depth));
        }
        self.window().request_in(Instant::now());
        Ok(Held(self.clone()))
    }

    /// Requests held now.
    pub fn held(&self) -> u32 {
        self.held.load(Ordering::Acquire)
    }

    /// Resolves when a request to one of the revision's replicas finishes.
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// True the first time in a reporting period: the caller tells the autoscaler at once.
    pub fn first_poke(&self) -> bool {
        !self.poked.swap(true, Ordering::AcqRel)
    }

    /// Closes the reporting period: the stat to send, if anything happened. `in_flight` is
    /// the count of forwarded requests not yet answered, now.
    pub fn report(&self, revision: &RevisionKey, in_flight: u32) -> Option<ActivatorStat> {
        self.poked.store(false, Ordering::Release);
        let held = self.window().report(Instant::now());
        (held.average_concurrency > 0.0 || in_flight > 0).then(|| ActivatorStat {
            revision: revision.clone(),
            held: held.average_concurrency,
            in_flight: f64::from(in_flight),
            held_requests: held.requests as f64,
        })
    }
}

/// One ready queue-proxy of a revision.
#[derive(Debug)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    in_flight: AtomicU32,
    demand: Arc<Demand>,
}

/// Counts a request against an endpoint until dropped.
#[derive(Debug)]
pub struct EndpointLoad(Arc<Endpoint>);

impl Drop for EndpointLoad {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.demand.freed.notify_one();
    }
}

impl Endpoint {
    fn load(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes a slot if fewer than `limit` (0 = no limit) requests are in flight.
    fn reserve(self: &Arc<Self>, limit: u32) -> Option<EndpointLoad> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (limit == 0 || n < limit).then_some(n + 1)
            });
        taken.ok()?;
        Some(EndpointLoad(self.clone()))
    }
}

/// A routed revision.
#[derive(Debug)]
pub struct Revision {
    /// Which revision.
    pub key: RevisionKey,
    /// Its request timeout.
    pub timeout: Duration,
    /// containerConcurrency (0 = unlimited).
    pub container_concurrency: u32,
    /// Whether requests wait here for a free slot (see [`RevisionBackends::buffered`]).
    ///
    /// [`RevisionBackends::buffered`]: sluice_platform::routing::RevisionBackends::buffered
    pub buffered: bool,
    /// Its ready endpoints.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// What the activator sees of its demand.
    pub demand: Arc<Demand>,
    /// `Knative-Serving-Revision` and `Knative-Serving-Namespace` values, built once per
    /// snapshot rather than per request.
    pub headers: (HeaderValue, HeaderValue),
}

impl Revision {
    /// Requests forwarded to its replicas and not yet answered.
    pub fn in_flight(&self) -> u32 {
        self.endpoints.iter().map(|e| e.load()).sum()
    }

    /// Picks a replica and counts the request against it; `None` when no replica is ready or,
    /// while buffered, none has a free slot. Buffered with containerConcurrency 1 to 3 it takes
    /// the first replica with a free slot; otherwise the less loaded of two random replicas
    /// (power of two choices) among those with room.
    pub fn pick(&self) -> Option<(SocketAddr, EndpointLoad)> {
        self.pick_excluding(&[])
    }

    /// [`Revision::pick`] among the endpoints not in `excluded` (those that just failed).
    pub fn pick_excluding(&self, excluded: &[SocketAddr]) -> Option<(SocketAddr, EndpointLoad)> {
        let limit = if self.buffered {
            self.container_concurrency
        } else {
            0
        };
        let open =
            |e: &&Arc<Endpoint>| !excluded.contains(&e.addr) && (limit == 0 || e.load() < limit);
        if (1..=3).contains(&limit) {
            return self
                .endpoints
                .iter()
                .filter(open)
                .find_map(|e| Some((e.addr, e.reserve(limit)?)));
        }
        // Two random replicas of all, without allocating; when neither has room (or one was
        // excluded), choose among those that do.
        let n = self.endpoints.len();
        if n >= 2 && excluded.is_empty() {
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
            let chosen = match (open(&ea), open(&eb)) {
                (true, true) if eb.load() < ea.load() => Some(eb),
                (true, _) => Some(ea),
                (false, true) => Some(eb),
                (false, false) => None,
            };
            if let Some(load) = chosen.and_then(|e| e.reserve(limit)) {
                return Some((load.0.addr, load));
            }
        }
        // A lost race for the last slot of the chosen replica tries again with the others.
        for _ in 0..4 {
            let live: Vec<&Arc<Endpoint>> = self.endpoints.iter().filter(open).collect();
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
            if let Some(load) = chosen.reserve(limit) {
                return Some((chosen.addr, load));
            }
        }
        None
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

/// The activator's routing table. Its maps are persistent (structure-sharing), so a change
/// to one host or revision makes a new table in O(log n), sharing the rest with the old one,
/// which requests in flight keep using.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Lowercased host to its split.
    hosts: imbl::HashMap<String, Arc<Host>>,
    revisions: imbl::HashMap<RevisionKey, Arc<Revision>>,
    /// What each (lowercased) host was built from.
    routes: imbl::HashMap<String, Arc<HostRoute>>,
    /// The hosts naming each revision: they are rebuilt when it changes.
    naming: imbl::HashMap<RevisionKey, Arc<BTreeSet<String>>>,
}

/// The revisions a host sends to, once each.
fn named_by(route: &HostRoute) -> BTreeSet<&RevisionKey> {
    let targets = route.targets.iter().map(|t| &t.revision);
    targets.chain(route.tags.values()).collect()
}

/// A revision from its backends, keeping the demand and endpoint counters of `previous`
/// (the same revision in the table being replaced).
fn build_revision(
    key: &RevisionKey,
    backends: &RevisionBackends,
    previous: Option<&Arc<Revision>>,
) -> Revision {
    let demand = previous.map_or_else(|| Arc::new(Demand::new()), |r| r.demand.clone());
    let endpoints = backends
        .endpoints
        .iter()
        .map(|addr| {
            let reused = previous.and_then(|r| r.endpoints.iter().find(|e| e.addr == *addr));
            reused.cloned().unwrap_or_else(|| {
                Arc::new(Endpoint {
                    addr: *addr,
                    in_flight: AtomicU32::new(0),
                    demand: demand.clone(),
                })
            })
        })
        .collect();
    let header = |v: &str| HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static(""));
    Revision {
        key: key.clone(),
        timeout: Duration::from_secs(backends.timeout_seconds.max(1)),
        container_concurrency: backends.container_concurrency,
        buffered: backends.buffered,
        endpoints,
        demand,
        headers: (header(&key.name), header(&key.namespace)),
    }
}

fn build_host(route: &HostRoute, revisions: &imbl::HashMap<RevisionKey, Arc<Revision>>) -> Host {
    let mut upto = 0;
    let targets = route
        .targets
        .iter()
        .filter(|t| t.percent > 0)
        .filter_map(|t| {
            let rev = revisions.get(&t.revision)?;
            upto += t.percent;
            Some((upto, rev.clone()))
        })
        .collect();
    let tags = route
        .tags
        .iter()
        .filter_map(|(tag, key)| Some((tag.clone(), revisions.get(key)?.clone())))
        .collect();
    Host {
        route: route.route.clone(),
        targets,
        tags,
    }
}

impl Table {
    /// Builds a table from a snapshot, reusing endpoint counters from `previous`.
    pub fn build(snapshot: &RoutingSnapshot, previous: &Table) -> Self {
        let hosts = snapshot.hosts.iter().map(|(h, r)| (h, Some(r)));
        let revisions = snapshot.revisions.iter().map(|(k, b)| (k, Some(b)));
        Table::default().changed(hosts, revisions, previous)
    }

    /// This table with `delta` applied.
    pub fn apply(&self, delta: &RoutingDelta) -> Self {
        let hosts = delta.hosts.iter().map(|(h, r)| (h, r.as_ref()));
        let revisions = delta.revisions.iter().map(|(k, b)| (k, b.as_ref()));
        self.changed(hosts, revisions, self)
    }

    /// This table with hosts and revisions set (or removed: `None`), counters kept from
    /// `previous`; hosts naming a changed revision are rebuilt to point at the new one.
    fn changed<'a>(
        &self,
        hosts: impl Iterator<Item = (&'a String, Option<&'a HostRoute>)>,
        revisions: impl Iterator<Item = (&'a RevisionKey, Option<&'a RevisionBackends>)>,
        previous: &Table,
    ) -> Self {
        let mut next = self.clone();
        let mut rebuild: BTreeSet<String> = BTreeSet::new();
        for (key, backends) in revisions {
            match backends {
                Some(b) => {
                    let rev = build_revision(key, b, previous.revisions.get(key));
                    next.revisions.insert(key.clone(), Arc::new(rev));
                }
                None => {
                    next.revisions.remove(key);
                }
            }
            if let Some(naming) = next.naming.get(key) {
                rebuild.extend(naming.iter().cloned());
            }
        }
        for (host, route) in hosts {
            let host = host.to_ascii_lowercase();
            if let Some(old) = next.routes.remove(&host) {
                for key in named_by(&old) {
                    if let Some(naming) = next.naming.get_mut(key) {
                        Arc::make_mut(naming).remove(&host);
                        if naming.is_empty() {
                            next.naming.remove(key);
                        }
                    }
                }
            }
            if let Some(route) = route {
                for key in named_by(route) {
                    let naming = next.naming.entry(key.clone()).or_default();
                    Arc::make_mut(naming).insert(host.clone());
                }
                next.routes.insert(host.clone(), Arc::new(route.clone()));
            }
            rebuild.insert(host);
        }
        for host in rebuild {
            match next.routes.get(&host) {
                Some(route) => {
                    let built = build_host(route, &next.revisions);
                    next.hosts.insert(host, Arc::new(built));
                }
                None => {
                    next.hosts.remove(&host);
                }
            }
        }
        next
    }

    /// The split for a host (already lowercased, without port).
    pub fn host(&self, host: &str) -> Option<&Arc<Host>> {
        self.hosts.get(host)
    }

    /// A revision by key.
    pub fn revision(&self, key: &RevisionKey) -> Option<&Arc<Revision>> {
        self.revisions.get(key)
    }

    /// Every routed revision.
    pub fn revisions(&self) -> impl Iterator<Item = &Arc<Revision>> {
        self.revisions.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_platform::routing::WeightedTarget;

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
                RevisionKey::new("default", *rev),
                RevisionBackends {
                    container_concurrency: 0,
                    timeout_seconds: 300,
                    endpoints: eps,
                    buffered: false,
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

    /// A host's split: cumulative percent, revision, endpoints.
    type Split = Vec<(u32, String, Vec<SocketAddr>)>;

    /// Hosts with their splits.
    fn shape(t: &Table) -> Vec<(String, Split)> {
        let mut hosts: Vec<_> = t
            .hosts
            .iter()
            .map(|(h, host)| {
                let targets = host.targets.iter().map(|(upto, r)| {
                    let eps = r.endpoints.iter().map(|e| e.addr).collect();
                    (*upto, r.key.name.clone(), eps)
                });
                (h.clone(), targets.collect())
            })
            .collect();
        hosts.sort();
        hosts
    }

    #[test]
    fn deltas_build_what_the_whole_snapshot_builds() {
        let s1 = snapshot(&[("a", 100)], &["127.0.0.1:1"]);
        let t1 = Table::build(&s1, &Table::default());
        let (_, held) = t1
            .revision(&RevisionKey::new("default", "a"))
            .unwrap()
            .pick()
            .unwrap();

        // A new split and endpoints; the held request still counts on the kept endpoint.
        let s2 = snapshot(&[("a", 50), ("b", 50)], &["127.0.0.1:1", "127.0.0.1:2"]);
        let t2 = t1.apply(&s1.delta_to(&s2));
        assert_eq!(shape(&t2), shape(&Table::build(&s2, &t1)));
        let a = t2.revision(&RevisionKey::new("default", "a")).unwrap();
        assert_eq!(a.in_flight(), 1);
        drop(held);
        assert_eq!(a.in_flight(), 0);

        // Only a revision's endpoints change: the host naming it follows.
        let mut s3 = s2.clone();
        let key = RevisionKey::new("default", "b");
        s3.revisions.get_mut(&key).unwrap().endpoints = vec!["127.0.0.1:3".parse().unwrap()];
        let delta = s2.delta_to(&s3);
        assert!(delta.hosts.is_empty());
        let t3 = t2.apply(&delta);
        assert_eq!(shape(&t3), shape(&Table::build(&s3, &t2)));
        assert_eq!(
            shape(&t2),
            shape(&Table::build(&s2, &t1)),
            "the old table changed"
        );

        // Everything removed leaves nothing behind.
        let t4 = t3.apply(&s3.delta_to(&RoutingSnapshot::default()));
        assert!(t4.host("hello.default.localhost").is_none());
        assert_eq!(t4.revisions().count(), 0);
        assert!(t4.routes.is_empty() && t4.naming.is_empty());
    }
}
