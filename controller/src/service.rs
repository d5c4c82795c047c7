//! Service → its Configuration and Route (same name), and its status from theirs.

use sluice_api::condition::{self, Condition};
use sluice_api::config::DefaultsConfig;
use sluice_api::keys;
use sluice_api::{Configuration, ConfigurationSpec, Route, RouteSpec, Service, ServiceStatus};

use crate::meta::{annotations, labels, non_empty, owner_ref};

/// The Configuration a Service wants: its template with Knative's defaults (a Service written
/// straight to an API server, by kn or kubectl, may not have them; defaulting is idempotent,
/// so one that was admitted is unchanged), its labels plus the service label, its annotations
/// except kubectl's and the rollout duration.
pub fn desired_configuration(svc: &Service, defaults: &DefaultsConfig) -> Configuration {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut labels = labels(&svc.metadata);
    labels.insert(keys::SERVICE.to_owned(), name.clone());
    let mut annotations = annotations(&svc.metadata);
    annotations.remove(keys::LAST_APPLIED);
    annotations.remove(keys::ROLLOUT_DURATION);
    annotations.insert(keys::ROUTES.to_owned(), name.clone());
    let mut template = svc.spec.template.clone();
    sluice_api::defaults::revision_spec(&mut template.spec, defaults);
    let mut cfg = Configuration::new(&name, ConfigurationSpec { template });
    cfg.metadata.namespace.clone_from(&svc.metadata.namespace);
    cfg.metadata.labels = non_empty(labels);
    cfg.metadata.annotations = non_empty(annotations);
    cfg.metadata.owner_references = Some(vec![owner_ref("Service", &svc.metadata)]);
    cfg
}

/// The Route a Service wants: its traffic, defaulted as Knative does (none means 100% to the
/// latest revision), with `configurationName` filled in where no revision is pinned, its
/// labels plus the service label, its annotations except kubectl's.
pub fn desired_route(svc: &Service) -> Route {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut labels = labels(&svc.metadata);
    labels.insert(keys::SERVICE.to_owned(), name.clone());
    let mut annotations = annotations(&svc.metadata);
    annotations.remove(keys::LAST_APPLIED);
    let mut traffic = svc.spec.traffic.clone();
    sluice_api::defaults::traffic(&mut traffic, true);
    let traffic = traffic
        .into_iter()
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
        let cfg = desired_configuration(&svc, &DefaultsConfig::default());
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
    fn a_service_written_without_knatives_defaults_gets_them_in_its_children() {
        // What kn and client-go send: an empty container name, no traffic block.
        let yaml = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello, namespace: default}\nspec:\n  template:\n    spec:\n      containers: [{name: '', image: ghcr.io/knative/helloworld-go}]\n";
        let Object::Service(svc) = parse_documents(yaml).unwrap().remove(0) else {
            unreachable!()
        };
        let defaults = DefaultsConfig::default();
        let cfg = desired_configuration(&svc, &defaults);
        let spec = &cfg.spec.template.spec;
        assert_eq!(spec.containers[0].name.as_deref(), Some("user-container"));
        assert!(
            spec.timeout_seconds.is_some(),
            "the revision timeout is defaulted"
        );
        let route = desired_route(&svc);
        let t = &route.spec.traffic;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(
            (
                t[0].latest_revision,
                t[0].percent,
                t[0].configuration_name.as_deref()
            ),
            (Some(true), Some(100), Some("hello"))
        );
        // Idempotent: a service admitted with the defaults has the same children.
        let mut admitted = Object::Service(svc.clone());
        admitted.set_defaults(&defaults);
        let Object::Service(admitted) = admitted else {
            unreachable!()
        };
        assert_eq!(desired_configuration(&admitted, &defaults).spec, cfg.spec);
        assert_eq!(desired_route(&admitted).spec, route.spec);
    }

    #[test]
    fn status_waits_for_children_then_for_traffic() {
        let svc = hello();
        let st = status(&svc, None, None, t0());
        assert!(!condition::is_ready(&st.conditions));

        let mut cfg = desired_configuration(&svc, &DefaultsConfig::default());
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
