//! Safe rollouts: a new revision gets traffic only once Ready, and the old one drains without
//! cutting a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{KeepAlive, Platform, testapp};

#[test]
fn updates_under_constant_load_fail_no_request() {
    let p = Platform::start();
    let app = testapp().display().to_string();
    p.ok(&[
        "service",
        "create",
        "steady",
        "--cmd",
        &app,
        "--arg",
        "env",
        "--env",
        "TARGET=v1",
    ]);
    let port = p.port;
    let stop = Arc::new(AtomicBool::new(false));
    // 4 clients × 50 requests/s = 200 requests/s, paced, for as long as the test runs (≤ 30 s).
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client = KeepAlive::connect(port);
                let (mut ok, mut failures, mut targets) =
                    (0usize, Vec::new(), std::collections::BTreeSet::new());
                let start = Instant::now();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
                    let (status, body) = client.get("steady.default.localhost", "/", &[]);
                    if status == 200 {
                        ok += 1;
                        targets.extend(
                            body.lines()
                                .find_map(|l| l.strip_prefix("TARGET="))
                                .map(str::to_owned),
                        );
                    } else {
                        failures.push((status, body));
                    }
                    n += 1;
                    let next = start + Duration::from_millis(20) * n;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                (ok, failures, targets)
            })
        })
        .collect();
    let load_start = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    p.ok(&["service", "update", "steady", "--env", "TARGET=v2"]);
    std::thread::sleep(Duration::from_secs(4));
    p.ok(&["service", "update", "steady", "--env", "TARGET=v3"]);
    std::thread::sleep(Duration::from_secs(20).saturating_sub(load_start.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failures, mut seen) = (0, Vec::new(), std::collections::BTreeSet::new());
    for c in clients {
        // A connection error panics the client thread, which fails the test here.
        let (o, f, t) = c.join().expect("a client saw a connection error");
        ok += o;
        failures.extend(f);
        seen.extend(t);
    }
    eprintln!(
        "rollout under load: {ok} ok, {} failed, targets {seen:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(ok >= 3500, "only {ok} requests in 20 s at 200/s");
    assert!(seen.contains("v1") && seen.contains("v3"), "{seen:?}");
}

#[test]
fn gradual_rollout_moves_traffic_in_steps() {
    let p = Platform::start();
    let yaml = |target: &str| {
        crate::harness::service_yaml("gradual", "env", "m-gradual", target, "")
            .replace("metadata:\n  name: gradual\n", "metadata:\n  name: gradual\n  annotations:\n    serving.knative.dev/rollout-duration: \"10s\"\n")
    };
    assert!(p.apply(&yaml("v1")).status.success());
    p.eventually(Duration::from_secs(10), "v1 ready", || {
        p.is_ready("gradual")
    });
    assert!(p.apply(&yaml("v2")).status.success());
    let start = Instant::now();
    let mut client = KeepAlive::connect(p.port);
    let mut shares = Vec::new();
    let mut saw_in_progress = false;
    while start.elapsed() < Duration::from_secs(16) {
        let counts = crate::harness::count_targets(&mut client, "gradual.default.localhost", 40);
        shares.push((
            start.elapsed().as_secs_f32(),
            counts.get("v2").copied().unwrap_or(0) * 100 / 40,
        ));
        let svc = p.service_json("gradual");
        saw_in_progress |= svc["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "Unknown"
                    && c["message"] == "A gradual rollout of the latest revision(s) is in progress."
            });
        std::thread::sleep(Duration::from_millis(400));
    }
    eprintln!("v2 share over time: {shares:?}");
    assert!(
        shares.iter().any(|(_, s)| *s > 5 && *s < 95),
        "no intermediate split: {shares:?}"
    );
    assert_eq!(shares.last().unwrap().1, 100, "{shares:?}");
    assert!(
        saw_in_progress,
        "Ready never said the rollout was in progress"
    );
    p.eventually(Duration::from_secs(5), "ready after the rollout", || {
        p.is_ready("gradual")
    });
}
