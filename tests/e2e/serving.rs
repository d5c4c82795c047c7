//! Serving: manifests become running revisions that answer through the activator.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Platform, http_get, service_yaml, sluice_bin};

#[test]
fn helloworld_yaml_is_ready_within_5s_and_sees_runtime_env() {
    let p = Platform::start();
    let start = Instant::now();
    let out = p.apply(&service_yaml("hello", "env", "m-env", "World", ""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.eventually(Duration::from_secs(5), "hello Ready within 5 s", || {
        p.is_ready("hello")
    });
    let ready_after = start.elapsed();
    let (status, body) = p.get("hello.default.localhost", "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("K_SERVICE=hello\n"), "{body}");
    assert!(body.contains("K_CONFIGURATION=hello\n"), "{body}");
    assert!(body.contains("K_REVISION=hello-00001\n"), "{body}");
    assert!(body.contains("TARGET=World\n"), "{body}");
    let port: u16 = body
        .lines()
        .find_map(|l| l.strip_prefix("PORT="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(port > 0, "PORT not given: {body}");
    eprintln!("helloworld: Ready {ready_after:?} after apply");
}

#[test]
fn env_change_stamps_a_new_revision_and_keeps_the_old_one() {
    let p = Platform::start();
    assert!(
        p.apply(&service_yaml("hello", "env", "m-rev", "one", ""))
            .status
            .success()
    );
    p.eventually(Duration::from_secs(10), "first revision ready", || {
        p.is_ready("hello")
    });
    let first: serde_json::Value =
        serde_json::from_str(&p.ok(&["revision", "list", "-o", "json"])).unwrap();
    let first_spec = first["items"][0]["spec"].clone();

    assert!(
        p.apply(&service_yaml("hello", "env", "m-rev", "two", ""))
            .status
            .success()
    );
    p.eventually(Duration::from_secs(10), "second revision ready", || {
        p.is_ready("hello")
            && p.service_json("hello")["status"]["latestReadyRevisionName"] == "hello-00002"
    });
    let svc = p.service_json("hello");
    let traffic = &svc["status"]["traffic"];
    assert_eq!(traffic[0]["revisionName"], "hello-00002", "{traffic}");
    assert_eq!(traffic[0]["percent"], 100, "{traffic}");
    let (status, body) = p.get("hello.default.localhost", "/");
    assert_eq!(status, 200);
    assert!(
        body.contains("TARGET=two\n") && body.contains("K_REVISION=hello-00002\n"),
        "{body}"
    );

    let revs: serde_json::Value =
        serde_json::from_str(&p.ok(&["revision", "list", "-o", "json"])).unwrap();
    let old = revs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metadata"]["name"] == "hello-00001")
        .expect("hello-00001 still exists");
    assert_eq!(old["spec"], first_spec, "the old revision's spec changed");
    assert_eq!(
        old["metadata"]["labels"]["serving.knative.dev/configurationGeneration"],
        "1"
    );
}

#[test]
fn concurrency_one_with_five_clients_never_overlaps() {
    let p = Platform::start();
    let yaml = service_yaml(
        "single",
        "overlap",
        "m-cc",
        "x",
        "      containerConcurrency: 1\n",
    );
    assert!(p.apply(&yaml).status.success());
    p.eventually(Duration::from_secs(10), "single ready", || {
        p.is_ready("single")
    });
    let port = p.port;
    let total = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let total = total.clone();
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(10);
                let mut bad = Vec::new();
                while Instant::now() < end {
                    let (status, body) = http_get(port, "single.default.localhost", "/");
                    total.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        bad.push((status, body));
                    }
                }
                bad
            })
        })
        .collect();
    let bad: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let n = total.load(Ordering::Relaxed);
    assert!(
        bad.is_empty(),
        "{} of {n} responses were not 200: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    // 100 ms per request, one at a time, for 10 s: about 100 requests.
    assert!(n >= 50, "only {n} requests completed");
}

#[test]
fn revision_timeout_answers_504() {
    let p = Platform::start();
    let yaml = service_yaml(
        "slow",
        "sleep",
        "m-timeout",
        "x",
        "      timeoutSeconds: 2\n",
    );
    assert!(p.apply(&yaml).status.success());
    p.eventually(Duration::from_secs(10), "slow ready", || p.is_ready("slow"));
    let start = Instant::now();
    let (status, _) = p.get("slow.default.localhost", "/?ms=5000");
    assert_eq!(status, 504);
    assert!(
        start.elapsed() < Duration::from_millis(4500),
        "504 came after {:?}",
        start.elapsed()
    );
    assert_eq!(p.get("slow.default.localhost", "/?ms=10").0, 200);
}

#[test]
fn unknown_host_gets_404_naming_it() {
    let p = Platform::start();
    let (status, body) = p.get("nothing.default.localhost", "/");
    assert_eq!(status, 404);
    assert!(body.contains("nothing.default.localhost"), "{body}");
}

#[test]
fn quickstart_serves_hello_world() {
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(sluice_bin())
        .args(["quickstart", "--http-port", &port.to_string()])
        .env("SLUICE_HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let curl = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.trim_start().starts_with("curl "));
    let result = http_get(port, "hello.default.localhost", "/");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(
        curl.as_deref().map(str::trim),
        Some(format!("curl http://hello.default.localhost:{port}").as_str())
    );
    assert_eq!(result, (200, "Hello World!\n".to_owned()));
}

/// `$(PORT)` in a container's args is the port the replica was given, as the kubelet expands
/// it: an app that takes its port as an argument runs unchanged from a Knative manifest.
#[test]
fn port_in_args_expands_like_the_kubelet() {
    let p = Platform::start();
    let yaml = service_yaml("argport", "env", "m-argport", "v1", "")
        .replace("\"m-argport\"]", "\"m-argport\", \"--port=$(PORT)\"]");
    assert!(yaml.contains("--port=$(PORT)"), "{yaml}");
    let out = p.apply(&yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.eventually(Duration::from_secs(15), "argport Ready", || {
        p.is_ready("argport")
    });
    let (status, body) = p.get("argport.default.localhost", "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("TARGET=v1"), "{body}");
}
