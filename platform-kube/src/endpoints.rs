//! Ready queue-proxy addresses from a revision's EndpointSlices, as Knative's activator and
//! autoscaler find them: each ready endpoint's addresses, on the slice's `http` or `http2`
//! port (serving; `http2` for an `h2c` revision) and `http-autometric` port (the autoscaler's
//! metrics), which the endpoint controller resolves from the `<revision>-private` Service's
//! target ports.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use sluice_platform::routing::RevisionKey;

pub use sluice_api::contract::{
    METRICS_PORT as QUEUE_METRICS_PORT, SERVING_PORT as QUEUE_SERVING_PORT,
};
pub use sluice_api::keys::REVISION as REVISION_LABEL;
/// The private Service's serving port name, as Knative names it: `http` for HTTP/1.1
/// revisions, `http2` (with app protocol `kubernetes.io/h2c`) for `h2c` ones.
pub const SERVING_PORT_NAMES: [&str; 2] = ["http", "http2"];
/// The app protocol of a Service port that speaks cleartext HTTP/2 (KEP-3726's standard
/// name, which Knative sets).
pub const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";
/// The private Service's port for the autoscaler's metrics, as Knative names it.
pub const METRICS_PORT_NAME: &str = "http-autometric";

/// The revision an object belongs to, from its `serving.knative.dev/revision` label.
pub fn revision_of(meta: &ObjectMeta) -> Option<RevisionKey> {
    let rev = meta.labels.as_ref()?.get(REVISION_LABEL)?;
    Some(RevisionKey::new(
        meta.namespace.as_deref().unwrap_or("default"),
        rev,
    ))
}

/// Pod IPs to the addresses that reach them, from `SLUICE_POD_ADDRESS_MAP`
/// (`FROM=TO,...`): for components run outside the cluster network, such as the end-to-end
/// tests, where pods are processes on loopback addresses (which EndpointSlices refuse).
fn address_map() -> &'static HashMap<IpAddr, IpAddr> {
    static MAP: OnceLock<HashMap<IpAddr, IpAddr>> = OnceLock::new();
    MAP.get_or_init(|| {
        let text = std::env::var("SLUICE_POD_ADDRESS_MAP").unwrap_or_default();
        parse_address_map(&text)
    })
}

fn parse_address_map(text: &str) -> HashMap<IpAddr, IpAddr> {
    text.split(',')
        .filter_map(|pair| {
            let (from, to) = pair.trim().split_once('=')?;
            Some((from.trim().parse().ok()?, to.trim().parse().ok()?))
        })
        .collect()
}

/// One slice's ready replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceEndpoints {
    /// Queue-proxy serving addresses.
    pub serving: Vec<SocketAddr>,
    /// Queue-proxy metrics addresses, in the same order.
    pub metrics: Vec<SocketAddr>,
}

/// The ready endpoints of a revision's slice, or `None` when the slice is not a revision's.
/// An endpoint without a `ready` condition counts as ready, as the API documents.
pub fn ready_endpoints(slice: &EndpointSlice) -> Option<(RevisionKey, SliceEndpoints)> {
    let key = revision_of(&slice.metadata)?;
    let port = |names: &[&str], default: u16| {
        slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().is_some_and(|n| names.contains(&n)))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(default)
    };
    let serving = port(&SERVING_PORT_NAMES, QUEUE_SERVING_PORT);
    let metrics = port(&[METRICS_PORT_NAME], QUEUE_METRICS_PORT);
    let mut ips: Vec<IpAddr> = slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse().ok())
        .map(|ip| address_map().get(&ip).copied().unwrap_or(ip))
        .collect();
    ips.sort();
    ips.dedup();
    Some((
        key,
        SliceEndpoints {
            serving: ips.iter().map(|ip| SocketAddr::new(*ip, serving)).collect(),
            metrics: ips.iter().map(|ip| SocketAddr::new(*ip, metrics)).collect(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use std::collections::BTreeMap;

    fn slice(ports: Vec<(&str, i32)>, endpoints: Vec<(&str, Option<bool>)>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some("hello-00001-private-x1".into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([(
                    REVISION_LABEL.to_owned(),
                    "hello-00001".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                endpoints
                    .into_iter()
                    .map(|(ip, ready)| Endpoint {
                        addresses: vec![ip.into()],
                        conditions: Some(EndpointConditions {
                            ready,
                            ..EndpointConditions::default()
                        }),
                        ..Endpoint::default()
                    })
                    .collect(),
            ),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port)| EndpointPort {
                        name: Some(name.into()),
                        port: Some(port),
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn ready_addresses_on_the_named_ports() {
        let s = slice(
            vec![("http-autometric", 19090), ("http2", 18012)],
            vec![
                ("10.0.0.2", Some(true)),
                ("10.0.0.1", None),
                ("10.0.0.3", Some(false)),
            ],
        );
        let (key, eps) = ready_endpoints(&s).unwrap();
        assert_eq!(key, RevisionKey::new("ns", "hello-00001"));
        let addrs = |v: &[&str]| v.iter().map(|a| a.parse().unwrap()).collect::<Vec<_>>();
        assert_eq!(eps.serving, addrs(&["10.0.0.1:18012", "10.0.0.2:18012"]));
        assert_eq!(eps.metrics, addrs(&["10.0.0.1:19090", "10.0.0.2:19090"]));
    }

    #[test]
    fn knative_ports_when_the_slice_names_none() {
        let (_, eps) = ready_endpoints(&slice(vec![], vec![("10.0.0.1", None)])).unwrap();
        assert_eq!(eps.serving, vec!["10.0.0.1:8012".parse().unwrap()]);
        assert_eq!(eps.metrics, vec!["10.0.0.1:9090".parse().unwrap()]);
    }

    #[test]
    fn address_map_pairs() {
        let map = parse_address_map("10.0.0.1=127.0.0.2, 10.0.0.2 = 127.0.0.3,junk");
        assert_eq!(map.len(), 2);
        assert_eq!(
            map[&"10.0.0.2".parse::<IpAddr>().unwrap()].to_string(),
            "127.0.0.3"
        );
    }

    #[test]
    fn slices_of_other_services_are_ignored() {
        let mut s = slice(vec![], vec![("10.0.0.1", None)]);
        s.metadata.labels = None;
        assert!(ready_endpoints(&s).is_none());
    }
}
