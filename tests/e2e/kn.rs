//! The real `kn` (v0.42.0, Knative 1.15; built by tests/node/knative/build-kn.sh) against
//! Sluice on the real node: a Knative user's commands give the results they give on Knative.
//! `tests/node/run` runs this with `SLUICE_KN` naming the binary, and `KUBECONFIG`,
//! `SLUICE_NODE_IP` and `SLUICE_NODE_ACTIVATOR_PORT` set.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::http_get_at;

const IMAGE: &str = "dev.local/sluice-testapp:0.1.0";

fn setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: this test runs on the real node, from tests/node/run")
    })
}

struct Kn {
    bin: String,
    ingress: SocketAddr,
    dir: tempfile::TempDir,
}

impl Kn {
    fn new() -> Self {
        Self {
            bin: setting("SLUICE_KN"),
            ingress: format!(
                "{}:{}",
                setting("SLUICE_NODE_IP"),
                setting("SLUICE_NODE_ACTIVATOR_PORT")
            )
            .parse()
            .unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        // kn reads KUBECONFIG, as it does for a Knative user.
        Command::new(&self.bin).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kn {args:?} failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn target(&self, host: &str) -> String {
        let (status, body) = http_get_at(self.ingress, host, "/");
        assert_eq!(status, 200, "{host}: {body}");
        body.lines()
            .find_map(|l| l.strip_prefix("TARGET="))
            .unwrap_or("?")
            .to_owned()
    }
}

/// The table row of `table` whose first column is `name`, split into columns.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"))
        .split_whitespace()
        .collect()
}

#[test]
#[ignore = "real node tier: run tests/node/run"]
fn kn_drives_sluice_as_it_drives_knative() {
    let kn = Kn::new();
    let _ = kn.run(&["service", "delete", "kn-hello", "kn-file"]);
    let host = "kn-hello.default.svc.cluster.local";

    let started = Instant::now();
    let created = kn.ok(&[
        "service",
        "create",
        "kn-hello",
        "--image",
        IMAGE,
        "--env",
        "TARGET=v1",
    ]);
    println!("kn service create: {:?}", started.elapsed());
    assert!(
        created.contains(
            "Service 'kn-hello' created to latest revision 'kn-hello-00001' is available at URL:"
        ),
        "{created}"
    );
    assert!(created.contains(&format!("http://{host}")), "{created}");
    assert_eq!(kn.target(host), "v1");

    let updated = kn.ok(&["service", "update", "kn-hello", "--env", "TARGET=v2"]);
    assert!(
        updated.contains(
            "Service 'kn-hello' updated to latest revision 'kn-hello-00002' is available at URL:"
        ),
        "{updated}"
    );
    assert_eq!(kn.target(host), "v2");

    kn.ok(&[
        "service",
        "update",
        "kn-hello",
        "--tag",
        "kn-hello-00001=old",
        "--traffic",
        "kn-hello-00001=50",
        "--traffic",
        "@latest=50",
    ]);
    assert_eq!(kn.target(&format!("old-{host}")), "v1");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(kn.target(host));
    }
    assert_eq!(
        seen,
        ["v1".to_owned(), "v2".to_owned()].into(),
        "a 50/50 split serves both"
    );

    let described = kn.ok(&["service", "describe", "kn-hello"]);
    for part in [
        "Name:",
        "kn-hello",
        "URL:",
        &format!("http://{host}"),
        "Revisions:",
        "50%",
        "#old",
        "@latest",
    ] {
        assert!(
            described.contains(part),
            "describe lacks {part:?}:\n{described}"
        );
    }

    let revisions = kn.ok(&["revision", "list"]);
    let first = row(&revisions, "kn-hello-00001");
    assert_eq!(&first[1..4], ["kn-hello", "50%", "old"], "{revisions}");
    let second = row(&revisions, "kn-hello-00002");
    assert_eq!(&second[1..3], ["kn-hello", "50%"], "{revisions}");
    assert!(second.contains(&"True"), "{revisions}");

    let routes = kn.ok(&["route", "list"]);
    let route = row(&routes, "kn-hello");
    assert_eq!(route[1], format!("http://{host}"), "{routes}");
    assert_eq!(route.last(), Some(&"True"), "{routes}");

    let export = kn.ok(&[
        "service",
        "export",
        "kn-hello",
        "--with-revisions",
        "-o",
        "yaml",
    ]);
    // kn exports the Service (whose template is the latest revision) and the other revisions
    // its traffic names, as it does on Knative.
    assert!(export.contains("kind: Export"), "{export}");
    assert!(export.contains("name: kn-hello-00001"), "{export}");
    assert!(
        export.contains("revisionName: kn-hello-00001") && export.contains("tag: old"),
        "{export}"
    );
    assert!(
        export.contains("value: v2"),
        "the template is the latest: {export}"
    );

    // --filename with Knative's own sample shape (no traffic, no container name), then apply.
    let manifest = kn.dir.path().join("kn-file.yaml");
    std::fs::write(
        &manifest,
        format!("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: kn-file\nspec:\n  template:\n    spec:\n      containers:\n        - image: {IMAGE}\n          env:\n            - name: TARGET\n              value: file\n"),
    )
    .unwrap();
    let from_file = kn.ok(&[
        "service",
        "create",
        "kn-file",
        "--filename",
        manifest.to_str().unwrap(),
    ]);
    assert!(
        from_file.contains("Service 'kn-file' created"),
        "{from_file}"
    );
    assert_eq!(kn.target("kn-file.default.svc.cluster.local"), "file");
    let applied = kn.ok(&[
        "service",
        "apply",
        "kn-file",
        "--image",
        IMAGE,
        "--env",
        "TARGET=applied",
    ]);
    assert!(applied.contains("kn-file"), "{applied}");
    assert_eq!(kn.target("kn-file.default.svc.cluster.local"), "applied");

    // Knative's validation reaches kn through the API server.
    let refused = kn.run(&[
        "service",
        "create",
        "kn-bad",
        "--image",
        IMAGE,
        "--concurrency-limit",
        "5000",
    ]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(message.contains("containerConcurrency"), "{message}");

    let deleted = kn.ok(&["service", "delete", "kn-hello", "kn-file"]);
    assert!(
        deleted.contains("Service 'kn-hello' successfully deleted in namespace 'default'."),
        "{deleted}"
    );
    let gone = Instant::now();
    while http_get_at(kn.ingress, host, "/").0 != 404 {
        assert!(
            gone.elapsed() < Duration::from_secs(30),
            "{host} still served after delete"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
