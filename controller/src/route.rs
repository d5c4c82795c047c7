//! Route → resolved traffic (every target by revision name), URLs and status.

use std::collections::BTreeMap;

use sluice_api::condition::{self, Condition};
use sluice_api::config::NetworkConfig;
use sluice_api::route::{Addressable, RouteStatusFields};
use sluice_api::{Configuration, Revision, Route, RouteStatus, TrafficTarget};

use crate::rollout::Rollout;

/// Why a target could not be resolved: Unknown while waiting, False when it cannot work.
struct Unresolved {
    waiting: bool,
    reason: &'static str,
    message: String,
}

fn resolve_target(
    t: &TrafficTarget,
    namespace: &str,
    configs: &[Configuration],
    revisions: &[Revision],
) -> Result<String, Unresolved> {
    let find_rev = |name: &str| {
        revisions.iter().find(|r| {
            r.metadata.name.as_deref() == Some(name)
                && r.metadata.namespace.as_deref() == Some(namespace)
        })
    };
    let name = if let Some(rev) = &t.revision_name {
        rev.clone()
    } else {
        let cfg_name = t.configuration_name.as_deref().unwrap_or_default();
        let cfg = configs
            .iter()
            .find(|c| {
                c.metadata.name.as_deref() == Some(cfg_name)
                    && c.metadata.namespace.as_deref() == Some(namespace)
            })
            .ok_or_else(|| Unresolved {
                waiting: false,
                reason: "ConfigurationMissing",
                message: format!("Configuration {cfg_name:?} referenced in traffic not found."),
            })?;
        let st = cfg.status.clone().unwrap_or_default();
        match st.fields.latest_ready_revision_name {
            Some(ready) => ready,
            None => {
                let failed = condition::find(&st.conditions, "Ready")
                    .is_some_and(|c| c.status == sluice_api::ConditionStatus::False);
                return Err(if failed {
                    Unresolved {
                        waiting: false,
                        reason: "RevisionMissing",
                        message: format!(
                            "Configuration {cfg_name:?} does not have any ready Revision."
                        ),
                    }
                } else {
                    Unresolved {
                        waiting: true,
                        reason: "RevisionMissing",
                        message: format!(
                            "Configuration {cfg_name:?} is waiting for a Revision to become ready."
                        ),
                    }
                });
            }
        }
    };
    let rev = find_rev(&name).ok_or_else(|| Unresolved {
        waiting: false,
        reason: "RevisionMissing",
        message: format!("Revision {name:?} referenced in traffic not found."),
    })?;
    match rev.ready_condition() {
        Some(c) if c.is_true() => Ok(name),
        Some(c) if c.status == sluice_api::ConditionStatus::False => Err(Unresolved {
            waiting: false,
            reason: "RevisionMissing",
            message: format!("Revision {name:?} failed to become ready."),
        }),
        _ => Err(Unresolved {
            waiting: true,
            reason: "RevisionMissing",
            message: format!("Revision {name:?} is not yet ready."),
        }),
    }
}

/// The route's status: traffic resolved to revisions when every target resolves (otherwise the
/// previous traffic keeps serving and AllTrafficAssigned says why), URL and tag URLs from the
/// network templates under `domain`.
pub fn status(
    route: &Route,
    configs: &[Configuration],
    revisions: &[Revision],
    net: &NetworkConfig,
    domain: &str,
    rollout: Option<&Rollout>,
    now: jiff::Timestamp,
) -> RouteStatus {
    let name = route.metadata.name.as_deref().unwrap_or_default();
    let namespace = route.metadata.namespace.as_deref().unwrap_or("default");
    let scheme = &net.default_external_scheme;
    let mut traffic = Vec::new();
    let mut problem: Option<Unresolved> = None;
    for t in &route.spec.traffic {
        match resolve_target(t, namespace, configs, revisions) {
            Ok(rev) => {
                let mut percent = t.percent;
                let rolling = rollout.filter(|r| {
                    r.active(now)
                        && r.to == rev
                        && t.configuration_name.as_deref() == Some(r.configuration_name.as_str())
                });
                if let (Some(r), Some(total)) = (rolling, t.percent) {
                    let share = r.new_share(total, now);
                    percent = Some(share);
                    if total > share {
                        traffic.push(TrafficTarget {
                            revision_name: Some(r.from.clone()),
                            latest_revision: Some(false),
                            percent: Some(total - share),
                            ..TrafficTarget::default()
                        });
                    }
                }
                traffic.push(target_status(t, rev, percent, net, name, namespace, domain));
            }
            Err(u) => {
                if problem.as_ref().is_none_or(|p| p.waiting && !u.waiting) {
                    problem = Some(u);
                }
            }
        }
    }
    let previous = route.status.clone().unwrap_or_default();
    let rolling = rollout.is_some_and(|r| r.active(now));
    let (assigned, traffic) = match problem {
        None => (Condition::true_("AllTrafficAssigned"), traffic),
        Some(u) => {
            let c = if u.waiting {
                Condition::unknown("AllTrafficAssigned", u.reason, u.message)
            } else {
                Condition::false_("AllTrafficAssigned", u.reason, u.message)
            };
            (c, previous.fields.traffic.clone())
        }
    };
    let ingress = if rolling && assigned.is_true() {
        Condition::unknown(
            "IngressReady",
            "RolloutInProgress",
            "A gradual rollout of the latest revision(s) is in progress.",
        )
    } else if assigned.is_true() {
        Condition::true_("IngressReady")
    } else {
        Condition::unknown(
            "IngressReady",
            "IngressNotConfigured",
            "Ingress has not yet been reconciled.",
        )
    };
    let mut cert = Condition::true_("CertificateProvisioned");
    cert.reason = Some("TLSNotEnabled".into());
    let ready = condition::ready_from(&[assigned.clone(), ingress.clone(), cert.clone()]);
    RouteStatus {
        observed_generation: route.metadata.generation,
        conditions: condition::merge(
            &previous.conditions,
            vec![assigned, cert, ingress, ready],
            &crate::meta::transition_time(now),
        ),
        fields: RouteStatusFields {
            url: Some(format!("{scheme}://{}", net.host(name, namespace, domain))),
            address: Some(Addressable {
                url: Some(format!("http://{name}.{namespace}.svc.cluster.local")),
            }),
            traffic,
        },
    }
}

/// A resolved target as status reports it.
fn target_status(
    t: &TrafficTarget,
    rev: String,
    percent: Option<i64>,
    net: &NetworkConfig,
    name: &str,
    namespace: &str,
    domain: &str,
) -> TrafficTarget {
    let scheme = &net.default_external_scheme;
    TrafficTarget {
        tag: t.tag.clone(),
        revision_name: Some(rev),
        configuration_name: None,
        latest_revision: t.latest_revision,
        percent,
        url: t
            .tag
            .as_ref()
            .map(|tag| format!("{scheme}://{}", net.tag_host(tag, name, namespace, domain))),
    }
}

/// Percent per revision for the route's main host: duplicates summed, zeros dropped.
pub fn consolidate(traffic: &[TrafficTarget]) -> BTreeMap<String, u32> {
    let mut split = BTreeMap::new();
    for t in traffic {
        let (Some(rev), Some(pct)) = (&t.revision_name, t.percent) else {
            continue;
        };
        let pct = u32::try_from(pct).unwrap_or(0);
        if pct > 0 {
            *split.entry(rev.clone()).or_insert(0) += pct;
        }
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::{RevisionSpec, RevisionStatus, RouteSpec};

    fn revision(name: &str, ready: bool) -> Revision {
        let mut r = Revision::new(name, RevisionSpec::default());
        r.metadata.namespace = Some("default".into());
        let c = if ready {
            Condition::true_("Ready")
        } else {
            Condition::unknown("Ready", "Deploying", "")
        };
        r.status = Some(RevisionStatus {
            conditions: vec![c],
            ..Default::default()
        });
        r
    }

    fn route(traffic: Vec<TrafficTarget>) -> Route {
        let mut r = Route::new("hello", RouteSpec { traffic });
        r.metadata.namespace = Some("default".into());
        r
    }

    fn pinned(rev: &str, pct: i64, tag: Option<&str>) -> TrafficTarget {
        TrafficTarget {
            revision_name: Some(rev.into()),
            percent: Some(pct),
            tag: tag.map(Into::into),
            latest_revision: Some(false),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_urls_and_tags() {
        let r = route(vec![
            pinned("hello-00001", 100, None),
            pinned("hello-00002", 0, Some("green")),
        ]);
        let revs = [revision("hello-00001", true), revision("hello-00002", true)];
        let st = status(
            &r,
            &[],
            &revs,
            &NetworkConfig::default(),
            "localhost",
            None,
            jiff::Timestamp::now(),
        );
        assert!(condition::is_ready(&st.conditions));
        assert_eq!(
            st.fields.url.as_deref(),
            Some("http://hello.default.localhost")
        );
        assert_eq!(
            st.fields.traffic[1].url.as_deref(),
            Some("http://green-hello.default.localhost")
        );
        assert_eq!(
            consolidate(&st.fields.traffic),
            BTreeMap::from([("hello-00001".to_owned(), 100)])
        );
    }

    #[test]
    fn missing_revision_is_named_and_keeps_old_traffic() {
        let mut r = route(vec![pinned("hello-00009", 100, None)]);
        r.status = Some(RouteStatus {
            fields: RouteStatusFields {
                traffic: vec![pinned("hello-00001", 100, None)],
                ..Default::default()
            },
            ..Default::default()
        });
        let st = status(
            &r,
            &[],
            &[revision("hello-00001", true)],
            &NetworkConfig::default(),
            "localhost",
            None,
            jiff::Timestamp::now(),
        );
        let c = condition::find(&st.conditions, "Ready").unwrap();
        assert_eq!(c.reason.as_deref(), Some("RevisionMissing"));
        assert!(c.message.as_deref().unwrap().contains("hello-00009"));
        assert_eq!(
            st.fields.traffic[0].revision_name.as_deref(),
            Some("hello-00001")
        );
    }

    #[test]
    fn configuration_without_ready_revision_is_waiting() {
        let mut cfg = Configuration::new("hello", Default::default());
        cfg.metadata.namespace = Some("default".into());
        let t = TrafficTarget {
            configuration_name: Some("hello".into()),
            percent: Some(100),
            latest_revision: Some(true),
            ..Default::default()
        };
        let st = status(
            &route(vec![t]),
            &[cfg],
            &[],
            &NetworkConfig::default(),
            "localhost",
            None,
            jiff::Timestamp::now(),
        );
        let c = condition::find(&st.conditions, "Ready").unwrap();
        assert_eq!(c.status, sluice_api::ConditionStatus::Unknown);
        assert_eq!(
            c.message.as_deref(),
            Some("Configuration \"hello\" is waiting for a Revision to become ready.")
        );
    }
}
