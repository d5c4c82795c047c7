//! The routing snapshot from routes' resolved traffic and revisions' ready endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use sluice_api::{Revision, Route};
use sluice_platform::RevisionKey;
use sluice_platform::routing::{HostRoute, RevisionBackends, RoutingSnapshot, WeightedTarget};

use crate::route::consolidate;

fn host_of(url: &str) -> &str {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
}

/// Builds the snapshot: each route's main host gets its consolidated split (and, with
/// `tag_headers`, its tags for `Knative-Serving-Tag`), each tag host 100% of its revision;
/// every routed revision gets its ready endpoints, and whether the activator buffers for it,
/// from `backends`.
pub fn snapshot(
    routes: &[Route],
    revisions: &[Revision],
    tag_headers: bool,
    backends: impl Fn(&RevisionKey) -> (Vec<SocketAddr>, bool),
) -> RoutingSnapshot {
    let mut snap = RoutingSnapshot::default();
    let by_name: std::collections::HashMap<(&str, &str), &Revision> = revisions
        .iter()
        .filter_map(|r| {
            let ns = r.metadata.namespace.as_deref().unwrap_or("default");
            Some(((ns, r.metadata.name.as_deref()?), r))
        })
        .collect();
    for route in routes {
        let Some(status) = &route.status else {
            continue;
        };
        let namespace = route.metadata.namespace.as_deref().unwrap_or("default");
        let route_key = format!(
            "{namespace}/{}",
            route.metadata.name.as_deref().unwrap_or_default()
        );
        let key = |rev: &str| RevisionKey::new(namespace, rev);
        let mut hosts: Vec<HostRoute> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        if let Some(url) = &status.fields.url {
            let targets = consolidate(&status.fields.traffic)
                .into_iter()
                .map(|(rev, percent)| WeightedTarget {
                    revision: key(&rev),
                    percent,
                })
                .collect();
            let tags: BTreeMap<String, RevisionKey> = if tag_headers {
                let tagged = status.fields.traffic.iter();
                tagged
                    .filter_map(|t| Some((t.tag.clone()?, key(t.revision_name.as_deref()?))))
                    .collect()
            } else {
                BTreeMap::new()
            };
            names.push(host_of(url).to_owned());
            hosts.push(HostRoute {
                route: route_key.clone(),
                targets,
                tags,
            });
        }
        for t in &status.fields.traffic {
            if let (Some(url), Some(rev)) = (&t.url, &t.revision_name) {
                let targets = vec![WeightedTarget {
                    revision: key(rev),
                    percent: 100,
                }];
                names.push(host_of(url).to_owned());
                hosts.push(HostRoute {
                    route: route_key.clone(),
                    targets,
                    tags: BTreeMap::new(),
                });
            }
        }
        for (name, host) in names.into_iter().zip(hosts) {
            let referenced = host
                .targets
                .iter()
                .map(|t| &t.revision)
                .chain(host.tags.values());
            for revision in referenced {
                let Some(rev) = by_name.get(&(namespace, revision.name.as_str())) else {
                    continue;
                };
                snap.revisions.entry(revision.clone()).or_insert_with(|| {
                    let (endpoints, buffered) = backends(revision);
                    RevisionBackends {
                        container_concurrency: rev.spec.concurrency(),
                        timeout_seconds: rev.spec.timeout_seconds.unwrap_or(300).unsigned_abs(),
                        endpoints,
                        buffered,
                    }
                });
            }
            snap.hosts.insert(name, host);
        }
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::route::RouteStatusFields;
    use sluice_api::{RevisionSpec, RouteSpec, RouteStatus, TrafficTarget};

    #[test]
    fn main_and_tag_hosts_with_endpoints() {
        let mut route = Route::new("hello", RouteSpec::default());
        route.metadata.namespace = Some("default".into());
        let t = |rev: &str, pct, tag: Option<&str>| TrafficTarget {
            revision_name: Some(rev.into()),
            percent: Some(pct),
            url: tag.map(|tag| format!("http://{tag}-hello.default.localhost")),
            tag: tag.map(Into::into),
            ..Default::default()
        };
        route.status = Some(RouteStatus {
            fields: RouteStatusFields {
                url: Some("http://hello.default.localhost".into()),
                traffic: vec![t("a", 90, None), t("b", 10, Some("canary"))],
                ..Default::default()
            },
            ..Default::default()
        });
        let revs: Vec<Revision> = ["a", "b"]
            .iter()
            .map(|n| {
                let mut r = Revision::new(n, RevisionSpec::default());
                r.metadata.namespace = Some("default".into());
                r
            })
            .collect();
        let snap = snapshot(&[route], &revs, true, |k| {
            if k.name == "a" {
                (vec!["127.0.0.1:9".parse().unwrap()], false)
            } else {
                (vec![], true)
            }
        });
        let main = &snap.hosts["hello.default.localhost"];
        assert_eq!(main.targets.iter().map(|t| t.percent).sum::<u32>(), 100);
        assert_eq!(
            snap.hosts["canary-hello.default.localhost"].targets[0].percent,
            100
        );
        assert_eq!(
            snap.revisions[&RevisionKey::new("default", "a")]
                .endpoints
                .len(),
            1
        );
        assert!(
            snap.revisions[&RevisionKey::new("default", "b")]
                .endpoints
                .is_empty()
        );
        assert!(snap.revisions[&RevisionKey::new("default", "b")].buffered);
        assert_eq!(main.tags["canary"].name, "b");
    }
}
