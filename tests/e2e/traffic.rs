//! Traffic: blue/green and canaries with kn's flags, tag URLs, split accuracy.

use std::time::Duration;

use crate::harness::{KeepAlive, Platform, count_targets, testapp};

fn create(p: &Platform, name: &str, target: &str, revision: &str) {
    let app = testapp().display().to_string();
    p.ok(&[
        "service",
        "create",
        name,
        "--cmd",
        &app,
        "--arg",
        "env",
        "--env",
        &format!("TARGET={target}"),
        "--revision-name",
        revision,
    ]);
}

#[test]
fn blue_green_walkthrough_with_the_cli() {
    let p = Platform::start();
    create(&p, "demo", "blue", "blue");
    // Green deployed dark: tagged, 0%, blue keeps 100%.
    p.ok(&[
        "service",
        "update",
        "demo",
        "--env",
        "TARGET=green",
        "--revision-name",
        "green",
        "--tag",
        "demo-blue=blue",
        "--tag",
        "@latest=green",
        "--traffic",
        "blue=100",
    ]);
    let mut c = KeepAlive::connect(p.port);
    assert_eq!(
        count_targets(&mut c, "green-demo.default.localhost", 50),
        [("green".to_owned(), 50)].into()
    );
    assert_eq!(
        count_targets(&mut c, "blue-demo.default.localhost", 50),
        [("blue".to_owned(), 50)].into()
    );
    assert_eq!(
        count_targets(&mut c, "demo.default.localhost", 50),
        [("blue".to_owned(), 50)].into()
    );
    let svc = p.service_json("demo");
    let urls: Vec<_> = svc["status"]["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["url"].as_str().map(str::to_owned))
        .collect();
    assert!(
        urls.iter()
            .any(|u| u.starts_with("http://green-demo.default.localhost")),
        "{urls:?}"
    );

    let describe = p.ok(&["service", "describe", "demo"]);
    assert!(
        describe.contains("URL #green:  http://green-demo.default.localhost:"),
        "{describe}"
    );
    p.ok(&["service", "update", "demo", "--traffic", "blue=50,green=50"]);
    let split = count_targets(&mut c, "demo.default.localhost", 200);
    assert!(
        split["blue"] >= 50 && split["green"] >= 50,
        "50/50 gave {split:?}"
    );

    p.ok(&["service", "update", "demo", "--traffic", "green=100"]);
    assert_eq!(
        count_targets(&mut c, "demo.default.localhost", 50),
        [("green".to_owned(), 50)].into()
    );
}

#[test]
fn canary_at_10_percent_lands_within_2_points_over_10000_requests() {
    let p = Platform::start();
    create(&p, "canary", "stable", "stable");
    p.ok(&[
        "service",
        "update",
        "canary",
        "--env",
        "TARGET=canary",
        "--revision-name",
        "canary",
        "--traffic",
        "canary-stable=90,@latest=10",
    ]);
    p.eventually(Duration::from_secs(10), "canary ready", || {
        p.is_ready("canary")
    });
    let mut c = KeepAlive::connect(p.port);
    let counts = count_targets(&mut c, "canary.default.localhost", 10_000);
    let canary = counts.get("canary").copied().unwrap_or(0);
    eprintln!("canary split over 10000 requests: {counts:?}");
    assert!(
        (800..=1200).contains(&canary),
        "canary got {canary} of 10000: {counts:?}"
    );
}

#[test]
fn invalid_traffic_is_refused_and_changes_nothing() {
    let p = Platform::start();
    create(&p, "hello", "one", "one");
    let before = p.service_json("hello")["spec"].clone();
    let refused = |args: &[&str], message: &str| {
        let out = p.sluice(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted {args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    };
    refused(
        &[
            "service",
            "update",
            "hello",
            "--traffic",
            "hello-one=60,@latest=50",
        ],
        "given traffic percents sum to 110, want <=100",
    );
    refused(
        &["service", "update", "hello", "--untag", "nope"],
        "tag(s) nope not present for any revisions of service hello",
    );
    let yaml = |traffic: &str| {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\nspec:\n  template:\n    metadata:\n      name: hello-one\n    spec:\n      containers:\n        - command: [\"{}\", \"env\"]\n          env: [{{name: TARGET, value: one}}]\n  traffic:\n{traffic}",
            testapp().display()
        )
    };
    for (traffic, message) in [
        (
            "    - {latestRevision: true, percent: 90}\n",
            "spec.traffic: Traffic targets sum to 90, want 100",
        ),
        (
            "    - {latestRevision: true, percent: 50, tag: a}\n    - {revisionName: hello-one, percent: 50, tag: a}\n",
            "spec.traffic[1].tag: Multiple definitions for \"a\"",
        ),
        (
            "    - {latestRevision: true, percent: 100, tag: Bad_Tag}\n",
            "spec.traffic[0].tag",
        ),
        (
            "    - {revisionName: hello-one, latestRevision: true, percent: 100}\n",
            "spec.traffic[0].latestRevision",
        ),
    ] {
        let out = p.apply(&yaml(traffic));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(message),
            "{traffic}: {stderr}"
        );
    }
    assert_eq!(p.service_json("hello")["spec"], before);

    // An unknown revision is stored (kn does not check) but the route says which one is missing,
    // and the old split keeps serving.
    p.ok(&[
        "service",
        "update",
        "hello",
        "--traffic",
        "hello-nope=100",
        "--no-wait",
    ]);
    p.eventually(Duration::from_secs(10), "RevisionMissing", || {
        let svc = p.service_json("hello");
        svc["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| {
                c["type"] == "Ready"
                    && c["reason"] == "RevisionMissing"
                    && c["message"].as_str().unwrap_or("").contains("hello-nope")
            })
    });
    assert_eq!(p.get("hello.default.localhost", "/").0, 200);
}

#[test]
fn tag_header_routing_follows_config_features() {
    let p = Platform::start();
    create(&p, "hdr", "one", "rev1");
    p.ok(&[
        "service",
        "update",
        "hdr",
        "--env",
        "TARGET=two",
        "--revision-name",
        "rev2",
        "--tag",
        "hdr-rev1=rev1",
        "--traffic",
        "@latest=100",
    ]);
    let mut c = KeepAlive::connect(p.port);
    let target = |c: &mut KeepAlive, tag: Option<&str>| {
        let headers: Vec<(&str, &str)> = tag
            .map(|t| ("Knative-Serving-Tag", t))
            .into_iter()
            .collect();
        let (status, body) = c.get("hdr.default.localhost", "/", &headers);
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix("TARGET="))
            .unwrap_or("?")
            .to_owned()
    };
    // Disabled by default: the header changes nothing.
    assert_eq!(target(&mut c, Some("rev1")), "two");

    let features = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-features\ndata:\n  tag-header-based-routing: Enabled\n";
    std::fs::write(p.home.path().join("config/config-features.yaml"), features).unwrap();
    p.eventually(Duration::from_secs(10), "header routing enabled", || {
        target(&mut KeepAlive::connect(p.port), Some("rev1")) == "one"
    });
    assert_eq!(target(&mut c, Some("rev1")), "one");
    assert_eq!(target(&mut c, Some("rev-wrong")), "two");
    assert_eq!(target(&mut c, None), "two");
}

#[test]
fn standalone_configuration_and_route_serve() {
    let p = Platform::start();
    let app = testapp().display().to_string();
    let yaml = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Configuration\nmetadata:\n  name: blue-green-demo\nspec:\n  template:\n    spec:\n      containers:\n        - command: [\"{app}\", \"env\"]\n          env: [{{name: TARGET, value: blue}}]\n---\napiVersion: serving.knative.dev/v1\nkind: Route\nmetadata:\n  name: blue-green-demo\nspec:\n  traffic:\n    - configurationName: blue-green-demo\n      percent: 100\n      tag: current\n"
    );
    let out = p.apply(&yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.eventually(Duration::from_secs(10), "route serves", || {
        p.get("blue-green-demo.default.localhost", "/").0 == 200
    });
    let routes = p.ok(&["route", "list"]);
    assert!(
        routes.contains("http://blue-green-demo.default.localhost"),
        "{routes}"
    );
    let (status, body) = p.get("current-blue-green-demo.default.localhost", "/");
    assert_eq!(status, 200);
    assert!(
        body.contains("K_REVISION=blue-green-demo-00001\n") && body.contains("K_SERVICE=\n"),
        "{body}"
    );
}

#[test]
fn export_reapplies_to_the_same_revisions_and_split_on_a_fresh_home() {
    let p = Platform::start();
    let app = testapp().display().to_string();
    p.ok(&[
        "service",
        "create",
        "hello",
        "--cmd",
        &app,
        "--arg",
        "env",
        "--env",
        "TARGET=one",
    ]);
    p.ok(&["service", "update", "hello", "--env", "TARGET=two"]);
    p.ok(&[
        "service",
        "update",
        "hello",
        "--env",
        "TARGET=three",
        "--tag",
        "hello-00001=old",
        "--traffic",
        "hello-00002=60,@latest=40",
    ]);
    let exported = p.ok(&["service", "export", "hello"]);
    let resolved = |p: &Platform| {
        let svc = p.service_json("hello");
        let mut traffic: Vec<(String, i64, String)> = svc["status"]["traffic"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["revisionName"].as_str().unwrap().to_owned(),
                    t["percent"].as_i64().unwrap(),
                    t["tag"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        traffic.sort();
        traffic
    };
    let want_traffic = resolved(&p);
    assert_eq!(want_traffic.len(), 3, "{want_traffic:?}");

    let fresh = Platform::start();
    let out = fresh.apply(&exported);
    assert!(
        out.status.success(),
        "{}\n{exported}",
        String::from_utf8_lossy(&out.stderr)
    );
    fresh.eventually(Duration::from_secs(20), "re-applied service ready", || {
        fresh.is_ready("hello") && resolved(&fresh) == want_traffic
    });
    assert_eq!(
        fresh.revision_names("default"),
        ["hello-00001", "hello-00002", "hello-00003"]
    );
    let (_, body) = fresh.get("old-hello.default.localhost", "/");
    assert!(body.contains("TARGET=one\n"), "{body}");
}

#[test]
fn prune_deletes_only_revisions_without_traffic() {
    let p = Platform::start();
    let app = testapp().display().to_string();
    p.ok(&["service", "create", "r", "--cmd", &app, "--arg", "env"]);
    p.ok(&["service", "update", "r", "--env", "A=1"]);
    p.ok(&[
        "service",
        "update",
        "r",
        "--env",
        "A=2",
        "--tag",
        "r-00002=prev",
    ]);
    assert_eq!(
        p.ok(&["revision", "delete", "--prune", "r"]).trim(),
        "Revision 'r-00001' deleted in namespace 'default'."
    );
    let names = p.ok(&["revision", "list"]);
    assert!(
        names.contains("r-00002") && names.contains("r-00003") && !names.contains("r-00001"),
        "{names}"
    );
    assert_eq!(
        p.ok(&["revision", "delete", "--prune", "r"]).trim(),
        "No unreferenced revisions found."
    );
    let route = p.ok(&["route", "describe", "r"]);
    assert!(
        route.contains("#prev") && route.contains("URL:  http://prev-r.default.localhost"),
        "{route}"
    );
}
