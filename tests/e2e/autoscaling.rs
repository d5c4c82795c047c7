//! Autoscaling end to end: scale to zero after the window and grace, the first request after
//! idleness held and answered, scale-out under concurrent load within max-scale, min-scale kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Platform, http_get, processes_with, testapp};

/// config-autoscaler with a short grace period, so idleness is seen within seconds.
const SHORT_GRACE: (&str, &str) = (
    "config-autoscaler.yaml",
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-autoscaler\ndata:\n  scale-to-zero-grace-period: 2s\n",
);

fn create(p: &Platform, name: &str, mode: &str, marker: &str, extra: &[&str]) {
    let app = testapp().display().to_string();
    let mut args = vec![
        "service", "create", name, "--cmd", &app, "--arg", mode, "--arg", marker,
    ];
    args.extend_from_slice(extra);
    p.ok(&args);
}

/// The revision's (actualReplicas, desiredReplicas, Active reason).
fn replicas(p: &Platform, revision: &str) -> (i64, i64, String) {
    let out = p.ok(&["revision", "describe", revision, "-o", "json"]);
    let rev: serde_json::Value = serde_json::from_str(&out).unwrap();
    let st = &rev["status"];
    let active = st["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Active")
        .map(|c| {
            c["reason"]
                .as_str()
                .unwrap_or(c["status"].as_str().unwrap_or(""))
                .to_owned()
        })
        .unwrap_or_default();
    (
        st["actualReplicas"].as_i64().unwrap_or(-1),
        st["desiredReplicas"].as_i64().unwrap_or(-1),
        active,
    )
}

#[test]
fn idle_scales_to_zero_and_the_next_request_is_held_and_answered_while_min_scale_stays() {
    let p = Platform::start_with_config(&[SHORT_GRACE]);
    create(&p, "idle", "env", "m-idle0", &["--scale-window", "6s"]);
    create(
        &p,
        "kept",
        "env",
        "m-kept2",
        &["--scale-window", "6s", "--scale-min", "2"],
    );
    assert_eq!(p.get("idle.default.localhost", "/").0, 200);
    let idle_since = Instant::now();
    p.eventually(Duration::from_secs(40), "idle at zero", || {
        let (actual, desired, active) = replicas(&p, "idle-00001");
        actual == 0 && desired == 0 && active == "NoTraffic"
    });
    let took = idle_since.elapsed();
    // A 6 s window plus a 2 s grace, less up to one 1-second bucket.
    assert!(
        took >= Duration::from_secs(7),
        "scaled to zero after only {took:?}"
    );
    p.eventually(Duration::from_secs(10), "idle processes gone", || {
        processes_with("m-idle0").is_empty()
    });
    assert!(p.is_ready("idle"), "a service at zero stays Ready");

    // min-scale 2 went through the same idleness with both replicas.
    assert_eq!(processes_with("m-kept2").len(), 2);
    let (actual, desired, _) = replicas(&p, "kept-00001");
    assert_eq!((actual, desired), (2, 2));

    let woke = Instant::now();
    let (status, body) = p.get("idle.default.localhost", "/");
    let cold = woke.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("K_REVISION=idle-00001\n"), "{body}");
    eprintln!("idle: zero after {took:?}; first request from zero answered in {cold:?}");
    let (actual, desired, active) = replicas(&p, "idle-00001");
    assert_eq!((actual, desired), (1, 1), "back at one replica ({active})");
    assert_eq!(processes_with("m-idle0").len(), 1);
}

#[test]
fn a_hundred_concurrent_requests_scale_out_but_never_past_max_scale() {
    let p = Platform::start();
    create(
        &p,
        "burst",
        "sleep",
        "m-burst",
        &["--concurrency-limit", "1", "--scale-max", "10"],
    );
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(processes_with("m-burst").len(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let port = p.port;
    let start = Instant::now();
    let clients: Vec<_> = (0..100)
        .map(|_| std::thread::spawn(move || http_get(port, "burst.default.localhost", "/?ms=300")))
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap().0).collect();
    let took = start.elapsed();
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 100, "statuses: {statuses:?}");
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak > 1, "never scaled out (peak {peak} replicas)");
    assert!(peak <= 10, "max-scale 10 exceeded: {peak} replicas");
    let (_, desired, _) = replicas(&p, "burst-00001");
    assert!((2..=10).contains(&desired), "desired {desired}");
    eprintln!("burst: 100 requests in {took:?}, peak {peak} replicas");
}

/// A daemon restart leaves a revision that was at zero at zero (no wake-up herd): nothing
/// starts it until a request comes, and then the request is held and answered as before.
#[test]
fn a_daemon_restart_wakes_no_revision_at_zero() {
    let mut p = Platform::start_with_config(&[SHORT_GRACE]);
    create(&p, "sleepy", "env", "m-sleepy", &["--scale-window", "6s"]);
    assert_eq!(p.get("sleepy.default.localhost", "/").0, 200);
    p.eventually(Duration::from_secs(40), "sleepy at zero", || {
        replicas(&p, "sleepy-00001").1 == 0 && processes_with("m-sleepy").is_empty()
    });
    p.kill9();
    p.up();
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        assert!(
            processes_with("m-sleepy").is_empty(),
            "the restart woke a revision at zero"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(replicas(&p, "sleepy-00001").1, 0);
    let (status, body) = p.get("sleepy.default.localhost", "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("K_REVISION=sleepy-00001"), "{body}");
}
