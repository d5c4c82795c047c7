//! Namespaces: same-named services in two namespaces share nothing, neither revisions, nor
//! routes, nor tag URLs, nor config-gc's decisions.

use std::time::Duration;

use crate::harness::Platform;

fn service(p: &Platform, ns: &str) -> serde_json::Value {
    serde_json::from_str(&p.ok(&["service", "describe", "same", "-n", ns, "-o", "json"])).unwrap()
}

fn ready_at(p: &Platform, ns: &str, revision: &str) -> bool {
    let svc = service(p, ns);
    let ready = svc["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    ready
        && svc["status"]["observedGeneration"] == svc["metadata"]["generation"]
        && svc["status"]["latestReadyRevisionName"] == revision
}

#[test]
fn same_named_services_in_two_namespaces_share_nothing() {
    // config-gc in place before the daemon starts: read at start, no wait for the watcher.
    let gc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-gc\ndata:\n  min-non-active-revisions: \"0\"\n  max-non-active-revisions: \"0\"\n  retain-since-create-time: disabled\n  retain-since-last-active-time: disabled\n";
    let p = Platform::start_with_config(&[("config-gc.yaml", gc)]);
    let app = crate::harness::testapp().display().to_string();
    for ns in ["e1", "e2"] {
        let target = format!("TARGET={ns}-one");
        p.ok(&[
            "service", "create", "same", "-n", ns, "--cmd", &app, "--arg", "env", "--env", &target,
        ]);
    }
    // e2 tags its first revision; then e1 alone moves to a second revision.
    p.ok(&[
        "service",
        "update",
        "same",
        "-n",
        "e2",
        "--tag",
        "same-00001=first",
    ]);
    p.ok(&[
        "service",
        "update",
        "same",
        "-n",
        "e1",
        "--env",
        "TARGET=e1-two",
    ]);
    p.eventually(Duration::from_secs(15), "e1 at same-00002", || {
        ready_at(&p, "e1", "same-00002")
    });
    assert!(
        ready_at(&p, "e2", "same-00001"),
        "e2 took e1's revision: {}",
        service(&p, "e2")["status"]
    );

    let (status, body) = p.get("same.e1.localhost", "/");
    assert!(
        status == 200 && body.contains("TARGET=e1-two\n"),
        "{status} {body}"
    );
    let (status, body) = p.get("same.e2.localhost", "/");
    assert!(
        status == 200 && body.contains("TARGET=e2-one\n"),
        "{status} {body}"
    );
    let (status, body) = p.get("first-same.e2.localhost", "/");
    assert!(
        status == 200 && body.contains("TARGET=e2-one\n"),
        "{status} {body}"
    );
    let (status, _) = p.get("first-same.e1.localhost", "/");
    assert_eq!(status, 404, "the tag is e2's only");

    // config-gc keeps nothing non-active: e1's first revision goes; e2's is routed and stays.
    p.eventually(
        Duration::from_secs(15),
        "e1's old revision collected",
        || p.revision_names("e1") == ["same-00002"],
    );
    assert_eq!(p.revision_names("e2"), ["same-00001"]);

    // Deleting e1's service leaves e2's serving.
    p.ok(&["service", "delete", "same", "-n", "e1"]);
    p.eventually(Duration::from_secs(15), "e1's revisions gone", || {
        p.revision_names("e1").is_empty()
    });
    let (status, body) = p.get("same.e2.localhost", "/");
    assert!(
        status == 200 && body.contains("TARGET=e2-one\n"),
        "{status} {body}"
    );
    assert_eq!(p.get("same.e1.localhost", "/").0, 404);
}
