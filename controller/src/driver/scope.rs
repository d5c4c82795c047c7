//! What a change can touch. Objects fall into groups: a Service, its Configuration and Route
//! (all of one name) and the Configuration's Revisions. A route naming another group's
//! configuration or revision, or an owner of another name, links the two groups, and a pass
//! works on a change's groups with everything linked to them (their closure), so what it reads
//! is consistent: every route that can send a request to a revision, every owner whose absence
//! makes an orphan. The [`Index`] holds only names and links, kept from what each pass read;
//! the objects themselves stay in the store.

use std::collections::{BTreeSet, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_api::{Configuration, Object, Revision, Route, Service, keys};
use sluice_autoscaler::Activity;
use sluice_platform::{RevisionKey, WorkloadStatus};

use crate::meta::{controller_of, label};

/// A group: namespace and the name of its Service, Configuration and Route.
pub(super) type Group = (String, String);

/// The objects one pass works on: all of them, or a closure of groups.
#[derive(Default)]
pub(super) struct Objects {
    pub(super) services: Vec<Service>,
    pub(super) configurations: Vec<Configuration>,
    pub(super) routes: Vec<Route>,
    pub(super) revisions: Vec<Revision>,
}

fn namespace(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned())
}

fn own_group(meta: &ObjectMeta) -> Group {
    (namespace(meta), meta.name.clone().unwrap_or_default())
}

/// A revision's group: its controlling Configuration's, else its configuration label's, else
/// its own name.
pub(super) fn revision_group(rev: &Revision) -> Group {
    let owner = match controller_of(&rev.metadata) {
        Some(("Configuration", owner)) => Some(owner),
        _ => label(&rev.metadata, keys::CONFIGURATION),
    };
    match owner {
        Some(owner) => (namespace(&rev.metadata), owner.to_owned()),
        None => own_group(&rev.metadata),
    }
}

/// What a group's Service, Configuration or Route names outside the group.
#[derive(Clone, Debug, Default, PartialEq)]
struct Refs {
    /// Other groups: configurations a route sends traffic to, owners of another name.
    groups: BTreeSet<Group>,
    /// Revisions (in the group's namespace) a route names, by name: its own group's too, as a
    /// named revision's group may not be known until the revision exists.
    revisions: BTreeSet<String>,
}

impl Refs {
    fn add_owner(&mut self, own: &Group, meta: &ObjectMeta) {
        if let Some(("Service", owner)) = controller_of(meta)
            && owner != own.1
        {
            self.groups.insert((own.0.clone(), owner.to_owned()));
        }
    }

    fn add_route(&mut self, own: &Group, rt: &Route) {
        self.add_owner(own, &rt.metadata);
        let status = rt.status.iter().flat_map(|s| s.fields.traffic.iter());
        for t in rt.spec.traffic.iter().chain(status) {
            if let Some(c) = t.configuration_name.as_deref().filter(|c| *c != own.1) {
                self.groups.insert((own.0.clone(), c.to_owned()));
            }
            if let Some(r) = t.revision_name.as_deref() {
                self.revisions.insert(r.to_owned());
            }
        }
    }

    fn merge(&mut self, other: Refs) {
        self.groups.extend(other.groups);
        self.revisions.extend(other.revisions);
    }
}

/// What revision status and routing read from outside the store: the workload's report and
/// the autoscaler's decision. A change in it is a change to the revision.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Observed {
    pub(super) workload: Option<WorkloadStatus>,
    pub(super) scale: Option<(u32, Activity, bool)>,
}

/// Names and links of every object the driver has seen, and what is timed.
#[derive(Default)]
pub(super) struct Index {
    /// Each group's revisions, by name.
    members: HashMap<Group, BTreeSet<String>>,
    /// Each revision's group name, by (namespace, revision name).
    revision_group: HashMap<Group, String>,
    /// What each group names outside itself.
    refs: HashMap<Group, Refs>,
    /// The groups naming a group.
    named_by: HashMap<Group, HashSet<Group>>,
    /// The groups naming a revision, by (namespace, revision name).
    revision_named_by: HashMap<Group, HashSet<Group>>,
    /// Groups with a revision whose readiness is still unknown (its progress deadline runs).
    pub(super) deploying: HashSet<Group>,
    /// Groups whose route has a rollout step due, and when.
    pub(super) rolling: HashMap<Group, jiff::Timestamp>,
    /// Each revision's workload and scale as the last pass saw them.
    observed: HashMap<RevisionKey, Observed>,
}

impl Index {
    /// The group of a known revision.
    pub(super) fn group_of_revision(&self, namespace: &str, name: &str) -> Option<Group> {
        let g = self
            .revision_group
            .get(&(namespace.to_owned(), name.to_owned()))?;
        Some((namespace.to_owned(), g.clone()))
    }

    /// The known revisions of `group`.
    pub(super) fn revisions(&self, group: &Group) -> impl Iterator<Item = &String> {
        self.members.get(group).into_iter().flatten()
    }

    /// Every known revision of the groups in `scope`.
    pub(super) fn revision_keys<'a>(
        &self,
        scope: impl IntoIterator<Item = &'a Group>,
    ) -> HashSet<RevisionKey> {
        scope
            .into_iter()
            .flat_map(|g| self.revisions(g).map(|r| RevisionKey::new(&g.0, r)))
            .collect()
    }

    /// `seeds` and every group linked to them, directly or through others.
    pub(super) fn closure(&self, seeds: impl IntoIterator<Item = Group>) -> BTreeSet<Group> {
        let mut out = BTreeSet::new();
        let mut queue: Vec<Group> = seeds.into_iter().collect();
        while let Some(g) = queue.pop() {
            if out.contains(&g) {
                continue;
            }
            let mut next: Vec<Group> = Vec::new();
            if let Some(refs) = self.refs.get(&g) {
                next.extend(refs.groups.iter().cloned());
                next.extend(
                    refs.revisions
                        .iter()
                        .filter_map(|r| self.group_of_revision(&g.0, r)),
                );
            }
            next.extend(self.named_by.get(&g).into_iter().flatten().cloned());
            for r in self.revisions(&g) {
                let named = self.revision_named_by.get(&(g.0.clone(), r.clone()));
                next.extend(named.into_iter().flatten().cloned());
            }
            out.insert(g);
            queue.extend(next.into_iter().filter(|n| !out.contains(n)));
        }
        out
    }

    /// Adds what a changed object links, before a pass reads its closure (links are only
    /// added here; the pass's [`Index::record`] puts back exactly what the objects say).
    /// Returns the object's group.
    pub(super) fn note(&mut self, obj: &Object) -> Group {
        let mut refs = Refs::default();
        let group = match obj {
            Object::Service(s) => own_group(&s.metadata),
            Object::Configuration(c) => {
                let g = own_group(&c.metadata);
                refs.add_owner(&g, &c.metadata);
                g
            }
            Object::Route(r) => {
                let g = own_group(&r.metadata);
                refs.add_route(&g, r);
                g
            }
            Object::Revision(r) => {
                let g = revision_group(r);
                let name = r.metadata.name.clone().unwrap_or_default();
                self.add_member(&g, name);
                g
            }
        };
        let mut all = self.refs.get(&group).cloned().unwrap_or_default();
        all.merge(refs);
        self.set_refs(&group, all);
        group
    }

    fn add_member(&mut self, g: &Group, name: String) {
        self.revision_group
            .insert((g.0.clone(), name.clone()), g.1.clone());
        self.members.entry(g.clone()).or_default().insert(name);
    }

    fn set_refs(&mut self, g: &Group, refs: Refs) {
        let old = self.refs.remove(g).unwrap_or_default();
        for o in &old.groups {
            if let Some(set) = self.named_by.get_mut(o) {
                set.remove(g);
                if set.is_empty() {
                    self.named_by.remove(o);
                }
            }
        }
        for r in &old.revisions {
            let key = (g.0.clone(), r.clone());
            if let Some(set) = self.revision_named_by.get_mut(&key) {
                set.remove(g);
                if set.is_empty() {
                    self.revision_named_by.remove(&key);
                }
            }
        }
        for o in &refs.groups {
            self.named_by
                .entry(o.clone())
                .or_default()
                .insert(g.clone());
        }
        for r in &refs.revisions {
            self.revision_named_by
                .entry((g.0.clone(), r.clone()))
                .or_default()
                .insert(g.clone());
        }
        if refs != Refs::default() {
            self.refs.insert(g.clone(), refs);
        }
    }

    /// Puts back what the groups in `scope` hold after a pass over them (`None`: every group,
    /// after a pass over everything).
    pub(super) fn record(&mut self, scope: Option<&BTreeSet<Group>>, objs: &Objects) {
        let mut refs: HashMap<Group, Refs> = HashMap::new();
        let mut members: HashMap<Group, BTreeSet<String>> = HashMap::new();
        for s in &objs.services {
            refs.entry(own_group(&s.metadata)).or_default();
        }
        for c in &objs.configurations {
            let g = own_group(&c.metadata);
            refs.entry(g.clone())
                .or_default()
                .add_owner(&g, &c.metadata);
        }
        for r in &objs.routes {
            let g = own_group(&r.metadata);
            refs.entry(g.clone()).or_default().add_route(&g, r);
        }
        for r in &objs.revisions {
            let name = r.metadata.name.clone().unwrap_or_default();
            members.entry(revision_group(r)).or_default().insert(name);
        }
        let groups: Vec<Group> = match scope {
            Some(scope) => scope.iter().cloned().collect(),
            None => {
                let mut all: BTreeSet<Group> = self.refs.keys().cloned().collect();
                all.extend(self.members.keys().cloned());
                all.extend(refs.keys().cloned());
                all.extend(members.keys().cloned());
                all.into_iter().collect()
            }
        };
        for g in groups {
            self.set_refs(&g, refs.remove(&g).unwrap_or_default());
            let now = members.remove(&g).unwrap_or_default();
            for gone in self.members.remove(&g).unwrap_or_default() {
                if !now.contains(&gone) {
                    self.revision_group.remove(&(g.0.clone(), gone.clone()));
                    self.observed.remove(&RevisionKey::new(&g.0, &gone));
                }
            }
            for name in now {
                self.add_member(&g, name);
            }
            self.deploying.remove(&g);
            self.rolling.remove(&g);
        }
    }

    /// The groups of revisions whose workload or scale is not what the last look saw, and
    /// remembers what this look sees: of every revision, or of those in `only`.
    pub(super) fn observe(
        &mut self,
        only: Option<&[RevisionKey]>,
        look: impl Fn(&RevisionKey) -> Observed,
    ) -> HashSet<Group> {
        let mut changed = HashSet::new();
        let mut see = |key: RevisionKey, group: &String| {
            let now = look(&key);
            if self.observed.get(&key) != Some(&now) {
                changed.insert((key.namespace.clone(), group.clone()));
                self.observed.insert(key, now);
            }
        };
        match only {
            None => {
                for ((ns, name), group) in &self.revision_group {
                    see(RevisionKey::new(ns, name), group);
                }
            }
            Some(keys) => {
                for key in keys {
                    let at = (key.namespace.clone(), key.name.clone());
                    if let Some(group) = self.revision_group.get(&at) {
                        see(key.clone(), group);
                    }
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::route::RouteStatusFields;
    use sluice_api::{RevisionSpec, RouteSpec, RouteStatus, TrafficTarget};

    fn revision(name: &str, config: &str) -> Revision {
        let mut r = Revision::new(name, RevisionSpec::default());
        r.metadata.namespace = Some("default".into());
        r.metadata.labels = Some([(keys::CONFIGURATION.to_owned(), config.to_owned())].into());
        r
    }

    fn route(name: &str, to_revision: &str) -> Route {
        let mut r = Route::new(name, RouteSpec::default());
        r.metadata.namespace = Some("default".into());
        r.status = Some(RouteStatus {
            fields: RouteStatusFields {
                traffic: vec![TrafficTarget {
                    revision_name: Some(to_revision.into()),
                    percent: Some(100),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        });
        r
    }

    fn g(name: &str) -> Group {
        ("default".to_owned(), name.to_owned())
    }

    #[test]
    fn a_route_naming_another_groups_revision_links_the_two() {
        let mut index = Index::default();
        let objs = Objects {
            revisions: vec![revision("a-1", "a"), revision("b-1", "b")],
            routes: vec![route("a", "a-1"), route("split", "b-1")],
            ..Default::default()
        };
        index.record(None, &objs);
        assert_eq!(index.closure([g("a")]), [g("a")].into());
        assert_eq!(index.closure([g("b")]), [g("b"), g("split")].into());
        assert_eq!(index.closure([g("split")]), [g("b"), g("split")].into());

        // The split route stops naming b's revision: the link goes with the next record.
        let objs = Objects {
            routes: vec![route("split", "a-1")],
            ..Default::default()
        };
        index.record(Some(&[g("split")].into()), &objs);
        assert_eq!(index.closure([g("b")]), [g("b")].into());
        assert_eq!(index.closure([g("a")]), [g("a"), g("split")].into());
    }

    #[test]
    fn a_revision_named_before_it_exists_links_once_it_does() {
        let mut index = Index::default();
        index.note(&Object::Route(route("r", "c-1")));
        assert_eq!(index.closure([g("c")]), [g("c")].into());
        index.note(&Object::Revision(revision("c-1", "c")));
        assert_eq!(index.closure([g("c")]), [g("c"), g("r")].into());
    }

    #[test]
    fn observing_reports_only_revisions_whose_inputs_changed() {
        let mut index = Index::default();
        let objs = Objects {
            revisions: vec![revision("a-1", "a"), revision("b-1", "b")],
            ..Default::default()
        };
        index.record(None, &objs);
        let idle = |_: &RevisionKey| Observed {
            workload: None,
            scale: None,
        };
        assert_eq!(
            index.observe(None, idle).len(),
            2,
            "the first look sees everything"
        );
        assert!(index.observe(None, idle).is_empty());
        let b_scaled = |k: &RevisionKey| Observed {
            workload: None,
            scale: (k.name == "b-1").then_some((1, Activity::Active, false)),
        };
        // A look at named revisions sees only them, and only a change.
        let a = [RevisionKey::new("default", "a-1")];
        assert!(index.observe(Some(&a), b_scaled).is_empty());
        let b = [RevisionKey::new("default", "b-1")];
        assert_eq!(index.observe(Some(&b), b_scaled), [g("b")].into());
        assert!(index.observe(None, b_scaled).is_empty());
        // A revision that left its group is forgotten with it.
        index.record(Some(&[g("b")].into()), &Objects::default());
        assert!(index.group_of_revision("default", "b-1").is_none());
        assert!(index.observe(None, b_scaled).is_empty());
    }
}
