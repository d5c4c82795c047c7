//! The plan of a pass: from the objects a pass read, which objects are orphans, which
//! revisions are missing, routed, reachable, protected from config-gc or garbage, and what a
//! route's rollout targets. Pure, so every decision the driver acts on is tested without a
//! store, and every set is keyed by namespace as well as name: a same-named object in another
//! namespace never counts.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use sluice_api::config::GcConfig;
use sluice_api::{Configuration, ObjectKind, Revision, Route, Service, keys};
use sluice_platform::RevisionKey;

use crate::meta::{controller_of, label};
use crate::{configuration, gc};

/// An object a pass deletes or names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Its kind.
    pub kind: ObjectKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

fn key_of(
    kind: ObjectKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: namespace(meta).to_owned(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// `(namespace, name)` of an object, for lookups within a namespace.
fn id(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (&str, &str) {
    (namespace(meta), meta.name.as_deref().unwrap_or_default())
}

/// Objects whose controlling owner is gone, as Kubernetes' garbage collector finds them:
/// configurations and routes of a missing Service, then revisions of a configuration that is
/// missing or itself an orphan.
pub fn orphans(
    services: &[Service],
    configurations: &[Configuration],
    routes: &[Route],
    revisions: &[Revision],
) -> Vec<ObjectKey> {
    let services: HashSet<(&str, &str)> = services.iter().map(|s| id(&s.metadata)).collect();
    let owner_gone = |meta, kind: &str, owners: &HashSet<(&str, &str)>| {
        matches!(controller_of(meta), Some((k, owner))
            if k == kind && !owners.contains(&(namespace(meta), owner)))
    };
    let mut out = Vec::new();
    let mut configs_left = HashSet::new();
    for c in configurations {
        if owner_gone(&c.metadata, "Service", &services) {
            out.push(key_of(ObjectKind::Configuration, &c.metadata));
        } else {
            configs_left.insert(id(&c.metadata));
        }
    }
    out.extend(
        routes
            .iter()
            .filter(|r| owner_gone(&r.metadata, "Service", &services))
            .map(|r| key_of(ObjectKind::Route, &r.metadata)),
    );
    out.extend(
        revisions
            .iter()
            .filter(|r| owner_gone(&r.metadata, "Configuration", &configs_left))
            .map(|r| key_of(ObjectKind::Revision, &r.metadata)),
    );
    out
}

/// The revisions configurations' current generations stamp that do not exist yet.
pub fn missing_revisions(
    configurations: &[Configuration],
    revisions: &[Revision],
) -> Vec<Revision> {
    let existing: HashSet<(&str, &str)> = revisions.iter().map(|r| id(&r.metadata)).collect();
    configurations
        .iter()
        .map(configuration::desired_revision)
        .filter(|want| !existing.contains(&id(&want.metadata)))
        .collect()
}

/// Revisions some route's status sends traffic to (or names by tag).
pub fn routed(routes: &[Route]) -> HashSet<RevisionKey> {
    routes
        .iter()
        .flat_map(|r| {
            let ns = namespace(&r.metadata);
            r.status
                .iter()
                .flat_map(|s| s.fields.traffic.iter())
                .filter_map(move |t| Some(RevisionKey::new(ns, t.revision_name.as_deref()?)))
        })
        .collect()
}

/// Revisions that can get a request: the routed ones and each configuration's newest (which
/// a route is about to send traffic to). The rest stop at once, whatever their min-scale.
pub fn reachable(
    routed: &HashSet<RevisionKey>,
    configurations: &[Configuration],
) -> HashSet<RevisionKey> {
    let mut out = routed.clone();
    out.extend(
        configurations
            .iter()
            .map(|c| RevisionKey::new(namespace(&c.metadata), configuration::revision_name(c))),
    );
    out
}

/// Knative's `routingState` label value a revision should carry: `active` while a route
/// sends it traffic, else `reserve`.
pub fn routing_state(rev: &Revision, routed: &HashSet<RevisionKey>) -> &'static str {
    if routed.contains(&crate::revision::key(rev)) {
        "active"
    } else {
        "reserve"
    }
}

/// Whether `rev` carries `state` already.
pub fn has_routing_state(rev: &Revision, state: &str) -> bool {
    label(&rev.metadata, keys::ROUTING_STATE) == Some(state)
}

/// The revision names of `config` config-gc must keep whatever their age: of its own
/// revisions `own`, the routed ones; and the current generation's, its latest created and
/// latest ready.
pub fn protected(
    config: &Configuration,
    own: &[Revision],
    routed: &HashSet<RevisionKey>,
) -> HashSet<String> {
    let mut out: HashSet<String> = own
        .iter()
        .map(crate::revision::key)
        .filter(|k| routed.contains(k))
        .map(|k| k.name)
        .collect();
    out.insert(configuration::revision_name(config));
    let st = config.status.clone().unwrap_or_default();
    out.extend(st.fields.latest_ready_revision_name);
    out.extend(st.fields.latest_created_revision_name);
    out
}

/// The revisions config-gc deletes at `now`, configuration by configuration, each among only
/// the revisions it owns.
pub fn garbage(
    configurations: &[Configuration],
    revisions: &[Revision],
    routed: &HashSet<RevisionKey>,
    cfg: &GcConfig,
    now: Timestamp,
) -> Vec<RevisionKey> {
    // Each configuration's revisions, found in one pass over them (what `owns` tests).
    let mut by_owner: HashMap<(&str, &str), Vec<Revision>> = HashMap::new();
    for r in revisions {
        if let Some(owner) = label(&r.metadata, keys::CONFIGURATION) {
            let owner = (namespace(&r.metadata), owner);
            by_owner.entry(owner).or_default().push(r.clone());
        }
    }
    configurations
        .iter()
        .flat_map(|config| {
            let ns = namespace(&config.metadata).to_owned();
            let own = by_owner.remove(&id(&config.metadata)).unwrap_or_default();
            gc::collect(&own, &protected(config, &own, routed), cfg, now)
                .into_iter()
                .map(move |name| RevisionKey::new(&ns, &name))
        })
        .collect()
}

/// What a route's gradual rollout follows: its configuration target, that configuration's
/// latest ready revision (in the route's namespace), and the revision the route's status
/// last sent the latest traffic to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutTarget {
    /// The configuration the route's traffic follows, if any.
    pub configuration: Option<String>,
    /// Its latest ready revision.
    pub latest_ready: Option<String>,
    /// The revision the route last sent latest-revision traffic to.
    pub previous: Option<String>,
}

/// The route's rollout target among `configurations`.
pub fn rollout_target(route: &Route, configurations: &[Configuration]) -> RolloutTarget {
    let ns = route.metadata.namespace.as_deref();
    let configuration = route
        .spec
        .traffic
        .iter()
        .find_map(|t| t.configuration_name.clone());
    let latest_ready = configuration.as_ref().and_then(|name| {
        configurations
            .iter()
            .find(|c| {
                c.metadata.namespace.as_deref() == ns && c.metadata.name.as_ref() == Some(name)
            })
            .and_then(|c| c.status.as_ref()?.fields.latest_ready_revision_name.clone())
    });
    let previous = route
        .status
        .as_ref()
        .and_then(|s| {
            s.fields
                .traffic
                .iter()
                .find(|t| t.latest_revision == Some(true))
        })
        .and_then(|t| t.revision_name.clone());
    RolloutTarget {
        configuration,
        latest_ready,
        previous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{owner_ref, t0};
    use sluice_api::config::GcConfig;
    use sluice_api::route::{RouteSpec, RouteStatus, TrafficTarget};
    use sluice_api::{ConfigurationSpec, ConfigurationStatus, ServiceSpec};

    fn service(ns: &str, name: &str) -> Service {
        let mut s = Service::new(name, ServiceSpec::default());
        s.metadata.namespace = Some(ns.into());
        s.metadata.uid = Some(format!("{ns}-{name}"));
        s
    }

    fn config(ns: &str, name: &str, generation: i64) -> Configuration {
        let mut c = Configuration::new(name, ConfigurationSpec::default());
        c.metadata.namespace = Some(ns.into());
        c.metadata.generation = Some(generation);
        c.metadata.owner_references = Some(vec![owner_ref("Service", &service(ns, name).metadata)]);
        c
    }

    fn revision(c: &Configuration) -> Revision {
        configuration::desired_revision(c)
    }

    fn route(ns: &str, name: &str, to: &[&str]) -> Route {
        let mut r = Route::new(name, RouteSpec::default());
        r.metadata.namespace = Some(ns.into());
        r.metadata.owner_references = Some(vec![owner_ref("Service", &service(ns, name).metadata)]);
        r.spec.traffic = vec![TrafficTarget {
            configuration_name: Some(name.into()),
            latest_revision: Some(true),
            percent: Some(100),
            ..Default::default()
        }];
        let mut st = RouteStatus::default();
        st.fields.traffic = to
            .iter()
            .map(|rev| TrafficTarget {
                revision_name: Some((*rev).into()),
                latest_revision: Some(true),
                percent: Some(100),
                ..Default::default()
            })
            .collect();
        r.status = Some(st);
        r
    }

    fn key(ns: &str, name: &str) -> RevisionKey {
        RevisionKey::new(ns, name)
    }

    #[test]
    fn orphans_are_found_within_their_namespace() {
        // `same` lives in e1 only; e2 has a configuration, route and revision named `same`
        // too, left by a deleted service.
        let (c1, c2) = (config("e1", "same", 1), config("e2", "same", 1));
        let (r1, r2) = (revision(&c1), revision(&c2));
        let orphans = orphans(
            &[service("e1", "same")],
            &[c1, c2],
            &[route("e1", "same", &[]), route("e2", "same", &[])],
            &[r1, r2],
        );
        let names: Vec<(ObjectKind, &str)> = orphans
            .iter()
            .map(|k| (k.kind, k.namespace.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (ObjectKind::Configuration, "e2"),
                (ObjectKind::Route, "e2"),
                (ObjectKind::Revision, "e2"),
            ]
        );
    }

    #[test]
    fn a_revision_exists_only_in_its_own_namespace() {
        let (c1, c2) = (config("e1", "same", 2), config("e2", "same", 2));
        let missing = missing_revisions(&[c1.clone(), c2], &[revision(&c1)]);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].metadata.namespace.as_deref(), Some("e2"));
        assert_eq!(missing[0].metadata.name.as_deref(), Some("same-00002"));
    }

    #[test]
    fn routed_and_reachable_keep_the_namespace() {
        let routes = [
            route("e1", "same", &["same-00002"]),
            route("e2", "same", &["same-00001"]),
        ];
        let routed = routed(&routes);
        assert_eq!(
            routed,
            HashSet::from([key("e1", "same-00002"), key("e2", "same-00001")])
        );
        let reachable = reachable(&routed, &[config("e2", "same", 3)]);
        assert!(reachable.contains(&key("e2", "same-00003")));
        assert!(!reachable.contains(&key("e1", "same-00003")));
        let rev = revision(&config("e1", "same", 1));
        assert_eq!(
            routing_state(&rev, &routed),
            "reserve",
            "e2's same-00001 is not e1's"
        );
    }

    #[test]
    fn gc_protects_and_collects_within_a_namespace() {
        let cfg = GcConfig {
            retain_since_create_time: None,
            retain_since_last_active_time: None,
            min_non_active_revisions: 0,
            max_non_active_revisions: Some(0),
        };
        // e1/same is at generation 3 and routes to 3; e2/same routes to 1.
        let mut e1 = config("e1", "same", 3);
        e1.status = Some(ConfigurationStatus::default());
        let e2 = config("e2", "same", 1);
        let mut revisions: Vec<Revision> = (1..=3)
            .map(|g| revision(&config("e1", "same", g)))
            .collect();
        revisions.push(revision(&e2));
        let routed = routed(&[
            route("e1", "same", &["same-00003"]),
            route("e2", "same", &["same-00001"]),
        ]);
        // e1 owns the first three.
        let protected_e1 = protected(&e1, &revisions[..3], &routed);
        assert!(
            !protected_e1.contains("same-00001"),
            "routed in e2, not in e1"
        );
        let mut garbage = garbage(&[e1, e2], &revisions, &routed, &cfg, t0());
        garbage.sort();
        assert_eq!(garbage, [key("e1", "same-00001"), key("e1", "same-00002")]);
    }

    #[test]
    fn a_rollout_follows_the_configuration_in_the_routes_namespace() {
        let mut e1 = config("e1", "same", 2);
        let mut st = ConfigurationStatus::default();
        st.fields.latest_ready_revision_name = Some("same-00002".into());
        e1.status = Some(st);
        let e2 = config("e2", "same", 1);
        let target = rollout_target(&route("e2", "same", &["same-00001"]), &[e1, e2]);
        assert_eq!(
            target,
            RolloutTarget {
                configuration: Some("same".into()),
                latest_ready: None,
                previous: Some("same-00001".into()),
            }
        );
    }
}
