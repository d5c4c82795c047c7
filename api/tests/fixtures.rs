//! Knative's documented example manifests parse, default, validate and round-trip.

use sluice_api::config::DefaultsConfig;
use sluice_api::manifest::parse_documents;
use sluice_api::{Object, ObjectKind};

fn load(file: &str) -> Vec<Object> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let objs = parse_documents(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(!objs.is_empty(), "{file} holds no object");
    objs
}

fn admit(objs: &mut [Object]) {
    let cfg = DefaultsConfig::default();
    for obj in objs.iter_mut() {
        obj.set_defaults(&cfg);
        obj.validate(&cfg).unwrap_or_else(|e| panic!("{e}"));
    }
}

fn round_trips(obj: &Object) {
    let yaml = serde_yaml::to_string(&obj.to_json()).unwrap();
    let back = parse_documents(&yaml).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(&back[0], obj, "round trip changed the object:\n{yaml}");
}

#[test]
fn helloworld_admits_and_round_trips() {
    let mut objs = load("helloworld.yaml");
    admit(&mut objs);
    let Object::Service(svc) = &objs[0] else {
        panic!("want a Service")
    };
    let c = &svc.spec.template.spec.containers[0];
    assert_eq!(c.env_value("TARGET"), Some("World"));
    assert_eq!(c.user_port(), 8080);
    assert_eq!(svc.spec.traffic.len(), 1);
    round_trips(&objs[0]);
}

#[test]
fn traffic_split_admits_and_round_trips() {
    let mut objs = load("traffic-split.yaml");
    admit(&mut objs);
    let Object::Service(svc) = &objs[0] else {
        panic!("want a Service")
    };
    let percents: Vec<_> = svc.spec.traffic.iter().map(|t| t.percent).collect();
    assert_eq!(percents, [Some(50), Some(50)]);
    assert_eq!(
        svc.spec.template.metadata.name.as_deref(),
        Some("hello-00002")
    );
    round_trips(&objs[0]);
}

#[test]
fn tags_and_standalone_objects_admit_and_round_trip() {
    let mut objs = load("tags.yaml");
    admit(&mut objs);
    let kinds: Vec<_> = objs.iter().map(Object::kind).collect();
    assert_eq!(
        kinds,
        [
            ObjectKind::Service,
            ObjectKind::Configuration,
            ObjectKind::Route
        ]
    );
    let Object::Service(svc) = &objs[0] else {
        panic!("want a Service")
    };
    assert_eq!(svc.spec.traffic[1].tag.as_deref(), Some("latest"));
    assert_eq!(svc.spec.traffic[1].percent, Some(0));
    let Object::Route(route) = &objs[2] else {
        panic!("want a Route")
    };
    assert_eq!(route.spec.traffic[0].latest_revision, Some(false));
    for obj in &objs {
        round_trips(obj);
    }
}
