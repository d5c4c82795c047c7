//! Service → its Configuration and Route (same name), and its status from theirs.

use sluice_api::condition::{self, Condition};
use sluice_api::keys;
use sluice_api::{Configuration, ConfigurationSpec, Route, RouteSpec, Service, ServiceStatus};

use crate::meta::{annotations, labels, non_empty, owner_ref};

/// The Configuration a Service wants: its template, its labels plus the service label, its
/// annotations except kubectl's and the rollout duration.
pub fn desired_configuration(svc: &Service) -> Configuration {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut labels = labels(&svc.metadata);
    labels.insert(keys::SERVICE.to_owned(), name.clone());
    let mut annotations = annotations(&svc.metadata);
    annotations.remove(keys::LAST_APPLIED);
    annotations.remove(keys::ROLLOUT_DURATION);
    annotations.insert(keys::ROUTES.to_owned(), name.clone());
    let mut cfg = Configuration::new(
        &name,
        ConfigurationSpec {
            template: svc.spec.template.clone(),
        },
    );
    cfg.metadata.namespace.clone_from(&svc.metadata.namespace);
    cfg.metadata.labels = non_empty(labels);
    cfg.metadata.annotations = non_empty(annotations);
    cfg.metadata.owner_references = Some(vec![owner_ref("Service", &svc.metadata)]);
    cfg
}

/// The Route a Service wants: its traffic with `configurationName` filled in where no
/// revision is pinned, its labels plus the service label, its annotations except kubectl's.
pub fn desired_route(svc: &Service) -> Route {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut labels = labels(&svc.metadata);
    labels.insert(keys::SERVICE.to_owned(), name.clone());
    let mut annotations = annotations(&svc.metadata);
    annotations.remove(keys::LAST_APPLIED);
    let traffic = svc
        .spec
        .traffic
        .iter()
        .cloned()
        .map(|mut t| {
            if t.revision_name.is_none() {
                t.configuration_name = Some(name.clone());
            }
            t
        })
        .collect();
    let mut route = Route::new(&name, RouteSpec { traffic });
    route.metadata.namespace.clone_from(&svc.metadata.namespace);
    route.metadata.labels = non_empty(labels);
    route.metadata.annotations = non_empty(annotations);
    route.metadata.owner_references = Some(vec![owner_ref("Service", &svc.metadata)]);
    route
}

/// Knative's condition for a child that has not caught up with its desired state.
fn out_of_date(type_: &str, kind: &str) -> Condition {
    Condition::unknown(
        type_,
        "OutOfDate",
        format!("The {kind} is still working to reflect the latest desired specification."),
    )
}

fn child_ready(
    type_: &str,
    kind: &str,
    generation: Option<i64>,
    observed: Option<i64>,
    conditions: &[Condition],
) -> Condition {
    match condition::find(conditions, "Ready") {
        Some(ready) if generation == observed => ready.retyped(type_),
        _ => out_of_date(type_, kind),
    }
}

/// The Service's status from its children: ConfigurationsReady and RoutesReady propagate the
/// children's Ready (OutOfDate while a child has not caught up), RoutesReady waits for traffic
/// to reach the latest ready revision, and the children's status fields are inlined.
pub fn status(
    svc: &Service,
    cfg: Option<&Configuration>,
    route: Option<&Route>,
    now: jiff::Timestamp,
) -> ServiceStatus {
    let mut out = ServiceStatus {
        observed_generation: svc.metadata.generation,
        ..ServiceStatus::default()
    };
    let configs_ready = match cfg {
        None => out_of_date("ConfigurationsReady", "Configuration"),
        Some(c) => {
            let st = c.status.clone().unwrap_or_default();
            out.configuration = st.fields.clone();
            child_ready(
                "ConfigurationsReady",
                "Configuration",
                c.metadata.generation,
                st.observed_generation,
                &st.conditions,
            )
        }
    };
    let mut routes_ready = match route {
        None => out_of_date("RoutesReady", "Route"),
        Some(r) => {
            let st = r.status.clone().unwrap_or_default();
            out.route = st.fields.clone();
            child_ready(
                "RoutesReady",
                "Route",
                r.metadata.generation,
                st.observed_generation,
                &st.conditions,
            )
        }
    };
    if routes_ready.is_true() {
        let latest = out.configuration.latest_ready_revision_name.as_deref();
        let migrated = out
            .route
            .traffic
            .iter()
            .filter(|t| t.latest_revision == Some(true))
            .all(|t| t.revision_name.as_deref() == latest);
        if !migrated {
            routes_ready = Condition::unknown(
                "RoutesReady",
                "TrafficNotMigrated",
                "Traffic is not yet migrated to the latest revision.",
            );
        }
    }
    let ready = condition::ready_from(&[configs_ready.clone(), routes_ready.clone()]);
    let previous = svc
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    out.conditions = condition::merge(
        previous,
        vec![configs_ready, routes_ready, ready],
        &crate::meta::transition_time(now),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::t0;
    use sluice_api::manifest::parse_documents;
    use sluice_api::{Object, TrafficTarget};

    fn hello() -> Service {
        let yaml = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\n  namespace: default\n  uid: u1\n  labels: {team: a}\n  annotations: {kubectl.kubernetes.io/last-applied-configuration: x, note: y}\nspec:\n  template:\n    spec:\n      containers: [{command: [hello]}]\n  traffic:\n    - {latestRevision: true, percent: 100}\n";
        match parse_documents(yaml).unwrap().remove(0) {
            Object::Service(s) => s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn children_share_the_name_and_carry_labels() {
        let svc = hello();
        let cfg = desired_configuration(&svc);
        let labels = cfg.metadata.labels.unwrap();
        assert_eq!(labels.get(keys::SERVICE).map(String::as_str), Some("hello"));
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        let ann = cfg.metadata.annotations.unwrap();
        assert!(!ann.contains_key(keys::LAST_APPLIED));
        assert_eq!(ann.get("note").map(String::as_str), Some("y"));
        assert_eq!(cfg.metadata.owner_references.unwrap()[0].uid, "u1");
        let route = desired_route(&svc);
        assert_eq!(
            route.spec.traffic[0].configuration_name.as_deref(),
            Some("hello")
        );
    }

    #[test]
    fn status_waits_for_children_then_for_traffic() {
        let svc = hello();
        let st = status(&svc, None, None, t0());
        assert!(!condition::is_ready(&st.conditions));

        let mut cfg = desired_configuration(&svc);
        cfg.metadata.generation = Some(1);
        let mut cs = sluice_api::ConfigurationStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        cs.conditions = vec![Condition::true_("Ready")];
        cs.fields.latest_ready_revision_name = Some("hello-00002".into());
        cfg.status = Some(cs);
        let mut route = desired_route(&svc);
        route.metadata.generation = Some(1);
        let mut rs = sluice_api::RouteStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        rs.conditions = vec![Condition::true_("Ready")];
        rs.fields.traffic = vec![TrafficTarget {
            revision_name: Some("hello-00001".into()),
            latest_revision: Some(true),
            percent: Some(100),
            ..Default::default()
        }];
        route.status = Some(rs.clone());
        let st = status(&svc, Some(&cfg), Some(&route), t0());
        let routes_ready = condition::find(&st.conditions, "RoutesReady").unwrap();
        assert_eq!(routes_ready.reason.as_deref(), Some("TrafficNotMigrated"));

        rs.fields.traffic[0].revision_name = Some("hello-00002".into());
        route.status = Some(rs);
        let st = status(&svc, Some(&cfg), Some(&route), t0());
        assert!(condition::is_ready(&st.conditions), "{:?}", st.conditions);
        assert_eq!(
            st.configuration.latest_ready_revision_name.as_deref(),
            Some("hello-00002")
        );
    }
}
