//! The routing feed: the control plane's current snapshot, changed in place, with a short log
//! of what each change did, so a reader that saw version `v` gets only what changed since.
//! A change costs what it touches: a pass over one Service's routes sets that Service's hosts
//! and revisions, never copies or compares the other 9,999.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::sync::watch;

use super::{
    HostRoute, RevisionBackends, RevisionKey, RoutingDelta, RoutingSnapshot, RoutingUpdate,
};

/// How many changes the feed remembers; a reader further behind gets the whole snapshot.
const LOG_LEN: usize = 1024;

/// A change of more hosts and revisions than this (the first publication, a settings change
/// that touches every route) is not kept: readers from before it get the whole snapshot.
const BIG_CHANGE: usize = 4096;

/// The current routing snapshot and its recent changes.
#[derive(Debug)]
pub struct RoutingFeed {
    state: Mutex<State>,
    /// The current version; 0 until the first publication.
    version: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    snapshot: RoutingSnapshot,
    version: u64,
    /// The change that made each remembered version.
    log: VecDeque<(u64, RoutingDelta)>,
    /// Each route's hosts.
    hosts_of: HashMap<String, BTreeSet<String>>,
    /// The hosts naming each revision: a revision no host names leaves the snapshot.
    named: HashMap<RevisionKey, BTreeSet<String>>,
}

/// The revisions a host sends to, once each.
fn named_by(route: &HostRoute) -> BTreeSet<&RevisionKey> {
    let targets = route.targets.iter().map(|t| &t.revision);
    targets.chain(route.tags.values()).collect()
}

impl Default for RoutingFeed {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            version: watch::channel(0).0,
        }
    }
}

impl RoutingFeed {
    /// An empty feed, unpublished.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes on every new version.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// A copy of the current snapshot (O(size): for tests and tools, not per change).
    pub fn snapshot(&self) -> RoutingSnapshot {
        self.state().snapshot.clone()
    }

    /// Replaces everything with `next`. The first publication is news even when empty: the
    /// activator waits for it before it answers.
    pub fn publish(&self, next: RoutingSnapshot) {
        let mut st = self.state();
        let delta = st.snapshot.delta_to(&next);
        self.commit(
            &mut st,
            delta.hosts.into_iter().collect(),
            delta.revisions.into_iter().collect(),
        );
    }

    /// Replaces the hosts of `routes` (`namespace/name`) with `part`'s hosts, and the
    /// revisions those hosts name with `part`'s revisions: one the old or new hosts name that
    /// `part` lacks leaves, unless a host outside `routes` names it too.
    pub fn publish_routes<'a>(
        &self,
        routes: impl IntoIterator<Item = &'a str>,
        part: RoutingSnapshot,
    ) {
        let mut st = self.state();
        let old: BTreeSet<String> = routes
            .into_iter()
            .filter_map(|r| st.hosts_of.get(r))
            .flatten()
            .cloned()
            .collect();
        let in_scope = |h: &String| old.contains(h) || part.hosts.contains_key(h);
        let named_here = old
            .iter()
            .filter_map(|h| st.snapshot.hosts.get(h))
            .chain(part.hosts.values())
            .flat_map(named_by);
        let gone: BTreeSet<RevisionKey> = named_here
            .filter(|k| !part.revisions.contains_key(*k))
            .filter(|k| {
                st.named
                    .get(*k)
                    .is_none_or(|hosts| hosts.iter().all(in_scope))
            })
            .cloned()
            .collect();
        let mut hosts: BTreeMap<String, Option<HostRoute>> =
            old.iter().map(|h| (h.clone(), None)).collect();
        hosts.extend(part.hosts.into_iter().map(|(h, r)| (h, Some(r))));
        let revisions = part.revisions.into_iter().map(|(k, b)| (k, Some(b)));
        let revisions = revisions
            .chain(gone.into_iter().map(|k| (k, None)))
            .collect();
        self.commit(&mut st, hosts.into_iter().collect(), revisions);
    }

    /// Sets the endpoints of each routed revision (or of those in `only`) to what `endpoints`
    /// says now.
    pub fn refresh_endpoints(
        &self,
        only: Option<&[RevisionKey]>,
        endpoints: impl Fn(&RevisionKey) -> Vec<SocketAddr>,
    ) {
        let mut st = self.state();
        if st.version == 0 {
            return;
        }
        let refresh = |(key, backends): (&RevisionKey, &RevisionBackends)| {
            let now = endpoints(key);
            (now != backends.endpoints).then(|| {
                let mut next = backends.clone();
                next.endpoints = now;
                (key.clone(), Some(next))
            })
        };
        let revisions = &st.snapshot.revisions;
        let changed: Vec<(RevisionKey, Option<RevisionBackends>)> = match only {
            None => revisions.iter().filter_map(refresh).collect(),
            Some(keys) => keys
                .iter()
                .filter_map(|k| revisions.get_key_value(k))
                .filter_map(refresh)
                .collect(),
        };
        if !changed.is_empty() {
            self.commit(&mut st, Vec::new(), changed);
        }
    }

    /// Applies host changes, then revision changes (a revision is set only while some host
    /// names it), then drops revisions no host names; logs what changed as a new version.
    fn commit(
        &self,
        st: &mut State,
        hosts: Vec<(String, Option<HostRoute>)>,
        revisions: Vec<(RevisionKey, Option<RevisionBackends>)>,
    ) {
        let mut delta = RoutingDelta::default();
        let mut unnamed: BTreeSet<RevisionKey> = BTreeSet::new();
        for (host, route) in hosts {
            if st.snapshot.hosts.get(&host) == route.as_ref() {
                continue;
            }
            let old = match &route {
                Some(r) => st.snapshot.hosts.insert(host.clone(), r.clone()),
                None => st.snapshot.hosts.remove(&host),
            };
            if let Some(old) = old {
                for key in named_by(&old) {
                    if let Some(hosts) = st.named.get_mut(key) {
                        hosts.remove(&host);
                    }
                    unnamed.insert(key.clone());
                }
                if let Some(of) = st.hosts_of.get_mut(&old.route) {
                    of.remove(&host);
                    if of.is_empty() {
                        st.hosts_of.remove(&old.route);
                    }
                }
            }
            if let Some(new) = &route {
                for key in named_by(new) {
                    st.named
                        .entry(key.clone())
                        .or_default()
                        .insert(host.clone());
                }
                let of = st.hosts_of.entry(new.route.clone()).or_default();
                of.insert(host.clone());
            }
            delta.hosts.insert(host, route);
        }
        let is_named =
            |st: &State, key: &RevisionKey| st.named.get(key).is_some_and(|h| !h.is_empty());
        for (key, backends) in revisions {
            match backends {
                Some(b) if is_named(st, &key) && st.snapshot.revisions.get(&key) != Some(&b) => {
                    st.snapshot.revisions.insert(key.clone(), b.clone());
                    delta.revisions.insert(key, Some(b));
                }
                None if st.snapshot.revisions.remove(&key).is_some() => {
                    delta.revisions.insert(key, None);
                }
                _ => {}
            }
        }
        for key in unnamed {
            if is_named(st, &key) {
                continue;
            }
            st.named.remove(&key);
            if st.snapshot.revisions.remove(&key).is_some() {
                delta.revisions.insert(key, None);
            }
        }
        if delta.is_empty() && st.version > 0 {
            return;
        }
        st.version += 1;
        let version = st.version;
        if delta.hosts.len() + delta.revisions.len() > BIG_CHANGE {
            // Cheaper sent whole than kept: readers from before it start over.
            st.log.clear();
        } else {
            st.log.push_back((version, delta));
        }
        while st.log.len() > LOG_LEN {
            st.log.pop_front();
        }
        self.version.send_replace(version);
    }

    /// What a reader that last saw `seen` (0: nothing) needs, with the version it brings the
    /// reader to; `None` when it is current or nothing was published yet.
    pub fn update_since(&self, seen: u64) -> Option<(u64, RoutingUpdate)> {
        let st = self.state();
        if st.version == 0 || seen == st.version {
            return None;
        }
        // The log holds every version after `seen` when its first entry is at most `seen + 1`.
        let remembered = seen > 0 && st.log.front().is_some_and(|(first, _)| *first <= seen + 1);
        if !remembered || seen > st.version {
            return Some((st.version, RoutingUpdate::Full(st.snapshot.clone())));
        }
        let mut delta = RoutingDelta::default();
        for (_, change) in st.log.iter().filter(|(v, _)| *v > seen) {
            delta.extend(change.clone());
        }
        Some((st.version, RoutingUpdate::Delta(delta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::WeightedTarget;

    fn host(route: &str, revisions: &[&str]) -> HostRoute {
        HostRoute {
            route: route.into(),
            targets: revisions
                .iter()
                .map(|r| WeightedTarget {
                    revision: RevisionKey::new("default", *r),
                    percent: 100 / revisions.len() as u32,
                })
                .collect(),
            tags: BTreeMap::new(),
        }
    }

    fn backends(port: u16) -> RevisionBackends {
        RevisionBackends {
            endpoints: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            ..RevisionBackends::default()
        }
    }

    fn part(hosts: &[(&str, HostRoute)], revisions: &[(&str, u16)]) -> RoutingSnapshot {
        RoutingSnapshot {
            hosts: hosts
                .iter()
                .map(|(h, r)| ((*h).into(), r.clone()))
                .collect(),
            revisions: revisions
                .iter()
                .map(|(r, p)| (RevisionKey::new("default", *r), backends(*p)))
                .collect(),
        }
    }

    /// Follows the feed as the activator does, from `seen`.
    fn follow(feed: &RoutingFeed, seen: &mut u64, copy: &mut RoutingSnapshot) -> RoutingUpdate {
        let (version, update) = feed.update_since(*seen).expect("news");
        match &update {
            RoutingUpdate::Full(s) => *copy = s.clone(),
            RoutingUpdate::Delta(d) => copy.apply(d),
        }
        *seen = version;
        update
    }

    #[test]
    fn readers_get_what_changed_and_end_where_the_feed_is() {
        let feed = RoutingFeed::new();
        assert!(
            feed.update_since(0).is_none(),
            "nothing is news before the first pass"
        );
        feed.publish(RoutingSnapshot::default());
        let (mut seen, mut copy) = (0, RoutingSnapshot::default());
        assert!(matches!(
            follow(&feed, &mut seen, &mut copy),
            RoutingUpdate::Full(_)
        ));

        let a = part(&[("a.example", host("default/a", &["a-1"]))], &[("a-1", 1)]);
        let b = part(&[("b.example", host("default/b", &["b-1"]))], &[("b-1", 2)]);
        feed.publish_routes(["default/a"], a);
        feed.publish_routes(["default/b"], b.clone());
        let RoutingUpdate::Delta(d) = follow(&feed, &mut seen, &mut copy) else {
            panic!("a reader one version behind gets a delta");
        };
        assert_eq!(d.hosts.len(), 2);
        assert_eq!(copy, feed.snapshot());

        // Route a moves to a new revision: its old one leaves, b's stays.
        let a2 = part(&[("a.example", host("default/a", &["a-2"]))], &[("a-2", 3)]);
        feed.publish_routes(["default/a"], a2);
        let RoutingUpdate::Delta(d) = follow(&feed, &mut seen, &mut copy) else {
            panic!("delta expected");
        };
        assert_eq!(
            d.revisions.get(&RevisionKey::new("default", "a-1")),
            Some(&None)
        );
        assert_eq!(d.revisions.len(), 2, "{d:?}");
        assert_eq!(copy, feed.snapshot());

        // Deleting route b removes its host and revision; a pass with nothing new is silent.
        feed.publish_routes(["default/b"], RoutingSnapshot::default());
        feed.publish_routes(["default/a"], feed.snapshot());
        follow(&feed, &mut seen, &mut copy);
        assert!(
            feed.update_since(seen).is_none(),
            "an unchanged pass made a version"
        );
        assert_eq!(copy, feed.snapshot());
        assert_eq!(copy.hosts.keys().collect::<Vec<_>>(), ["a.example"]);
        assert_eq!(copy.revisions.len(), 1);

        // A whole replacement agrees with applying parts.
        feed.publish(b);
        follow(&feed, &mut seen, &mut copy);
        assert_eq!(copy, feed.snapshot());
        assert_eq!(copy.hosts.keys().collect::<Vec<_>>(), ["b.example"]);
    }

    #[test]
    fn a_big_change_is_sent_whole_not_kept() {
        let feed = RoutingFeed::new();
        feed.publish(RoutingSnapshot::default());
        let before = feed.update_since(0).unwrap().0;
        let names: Vec<String> = (0..BIG_CHANGE).map(|i| format!("r{i}")).collect();
        let hosts: Vec<(String, HostRoute)> = names
            .iter()
            .map(|n| (format!("{n}.example"), host(&format!("default/{n}"), &[n])))
            .collect();
        let hosts: Vec<(&str, HostRoute)> =
            hosts.iter().map(|(h, r)| (h.as_str(), r.clone())).collect();
        let revisions: Vec<(&str, u16)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        feed.publish(part(&hosts, &revisions));
        assert!(
            feed.state().log.is_empty(),
            "the whole table was kept in the log"
        );
        let (big, update) = feed.update_since(before).unwrap();
        assert!(matches!(update, RoutingUpdate::Full(_)));
        feed.publish_routes(["default/r0"], RoutingSnapshot::default());
        let (_, update) = feed.update_since(big).unwrap();
        let RoutingUpdate::Delta(d) = update else {
            panic!("a reader current at the big change gets deltas after it");
        };
        assert_eq!(d.hosts.len(), 1);
    }

    #[test]
    fn a_revision_two_hosts_name_stays_until_neither_does() {
        let feed = RoutingFeed::new();
        let both = part(
            &[
                ("a.example", host("default/a", &["shared"])),
                ("b.example", host("default/b", &["shared"])),
            ],
            &[("shared", 1)],
        );
        feed.publish(both);
        feed.publish_routes(["default/a"], RoutingSnapshot::default());
        assert_eq!(feed.snapshot().revisions.len(), 1);
        feed.publish_routes(["default/b"], RoutingSnapshot::default());
        assert!(feed.snapshot().revisions.is_empty());
    }

    #[test]
    fn endpoints_refresh_in_place_and_far_behind_readers_start_over() {
        let feed = RoutingFeed::new();
        feed.publish(part(
            &[("a.example", host("default/a", &["a-1"]))],
            &[("a-1", 1)],
        ));
        let (mut seen, mut copy) = (0, RoutingSnapshot::default());
        follow(&feed, &mut seen, &mut copy);
        let start = seen;
        for port in 2..(LOG_LEN as u16 + 10) {
            feed.refresh_endpoints(None, |_| vec![SocketAddr::from(([127, 0, 0, 1], port))]);
        }
        let key = RevisionKey::new("default", "a-1");
        let other = [RevisionKey::new("default", "other")];
        feed.refresh_endpoints(Some(&other), |_| {
            vec![SocketAddr::from(([127, 0, 0, 1], 8))]
        });
        feed.refresh_endpoints(Some(std::slice::from_ref(&key)), |_| {
            vec![SocketAddr::from(([127, 0, 0, 1], 7))]
        });
        feed.refresh_endpoints(None, |_| vec![SocketAddr::from(([127, 0, 0, 1], 7))]);
        let (_, update) = feed.update_since(start).unwrap();
        assert!(
            matches!(update, RoutingUpdate::Full(_)),
            "a forgotten version needs everything"
        );
        follow(&feed, &mut seen, &mut copy);
        assert_eq!(copy, feed.snapshot());
        assert_eq!(copy.revisions[&key].endpoints[0].port(), 7);
    }
}
