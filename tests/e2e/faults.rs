//! Faults a user meets: concurrent writers, and (more to come) dead replicas, crashed
//! platform processes and failing storage.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Platform, children_of, processes_with, service_yaml, sluice_bin, testapp};

/// Stops load threads however a scope ends, so a failed assertion cannot hang the test.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The names of the environment variables of `svc`'s first container.
fn env_names(svc: &serde_json::Value) -> BTreeSet<String> {
    svc["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect()
}

/// Twenty rounds of two `service update --env` racing on one Service: every acknowledged
/// update is in the stored Service at the end (the store refuses the stale write, the CLI
/// reads again and re-applies its change).
#[test]
fn concurrent_updates_all_land() {
    let p = Platform::start();
    let out = p.apply(&service_yaml("race", "serve", "race-marker", "v0", ""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut acknowledged = BTreeSet::new();
    for round in 0..20 {
        let racing: Vec<_> = ["A", "B"]
            .iter()
            .map(|who| {
                let var = format!("{who}{round}");
                let child = Command::new(sluice_bin())
                    .args(["service", "update", "race", "--no-wait", "--env"])
                    .arg(format!("{var}=x"))
                    .env("SLUICE_HOME", p.home.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (var, child)
            })
            .collect();
        for (var, child) in racing {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "update {var} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            acknowledged.insert(var);
        }
    }
    let stored = env_names(&p.service_json("race"));
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert_eq!(acknowledged.len(), 40);
}

/// A manifest that carries the resourceVersion it was read at is refused once the Service
/// has changed since, naming the conflict, and changes nothing; without one it replaces.
#[test]
fn a_stale_resource_version_is_a_conflict() {
    let p = Platform::start();
    let out = p.apply(&service_yaml("stale", "serve", "stale-marker", "v1", ""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = p.service_json("stale");
    let rv = read["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    p.ok(&[
        "service",
        "update",
        "stale",
        "--no-wait",
        "--env",
        "NEWER=1",
    ]);

    let stale = service_yaml("stale", "serve", "stale-marker", "v2", "").replace(
        "  name: stale\n",
        &format!("  name: stale\n  resourceVersion: \"{rv}\"\n"),
    );
    let out = p.apply(&stale);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a stale write was accepted");
    assert!(
        stderr.contains("was changed since it was read") && stderr.contains(&rv),
        "{stderr}"
    );
    let now = p.service_json("stale");
    assert!(env_names(&now).contains("NEWER"), "{now}");
    assert!(now.to_string().contains("\"v1\""), "{now}");

    // The same manifest without a resourceVersion is a replace, as documented.
    let out = p.apply(&service_yaml("stale", "serve", "stale-marker", "v2", ""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replaced = p.service_json("stale");
    assert!(!env_names(&replaced).contains("NEWER"), "{replaced}");
}

/// `kill -9` of the activator, three times under a steady client: the daemon holds the front
/// door's socket, so no connection is refused while the next activator starts; at most the
/// one request inside the killed process fails, and every gap is short.
#[test]
fn activator_crashes_refuse_no_connection() {
    let p = Platform::start();
    let out = p.apply(&service_yaml("door", "serve", "door-marker", "v1", ""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.eventually(Duration::from_secs(20), "door Ready", || p.is_ready("door"));
    let activator = || -> Option<u32> {
        children_of(p.daemon_pid()).into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("activator"))
        })
    };

    let stop = AtomicBool::new(false);
    let (ok, failed, longest) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let (mut ok, mut failed, mut longest) = (0u32, Vec::new(), Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (status, body) = p.get("door.default.localhost", "/");
                if status == 200 && body.contains("v1") {
                    ok += 1;
                    longest = longest.max(started.elapsed());
                } else {
                    failed.push(status);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok, failed, longest)
        });
        let stopping = Stop(&stop);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(1500));
            let victim = activator().expect("the daemon runs an activator");
            Command::new("kill")
                .args(["-9", &victim.to_string()])
                .status()
                .unwrap();
            p.eventually(Duration::from_secs(10), "a new activator", || {
                activator().is_some_and(|a| a != victim)
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        drop(stopping);
        client.join().unwrap()
    });
    eprintln!("activator kills: {ok} ok, {failed:?} failed, longest answer {longest:?}");
    assert!(ok > 100, "only {ok} requests answered");
    assert!(failed.len() <= 3, "more failures than kills: {failed:?}");
    // Three restarts in a crash loop back off 100, 200 and 400 ms; a request that arrived
    // meanwhile waited in the accept queue.
    assert!(
        longest < Duration::from_secs(2),
        "a request waited {longest:?}"
    );
}

/// Two replicas under two steady clients; `kill -9` of one replica's user process, then (once
/// it is back) of the other replica's queue-proxy. The replica leaves the routing table as
/// soon as its process exits, and a request the dead user process never took goes to the
/// other replica: at most the requests inside the killed process fail.
#[test]
fn a_dead_replica_drops_no_request() {
    let p = Platform::start();
    let app = testapp();
    p.ok(&[
        "service",
        "create",
        "dead",
        "--cmd",
        app.to_str().unwrap(),
        "--arg",
        "serve",
        "--arg",
        "m-dead-replica",
        "--scale-min",
        "2",
        "--env",
        "TARGET=v1",
    ]);
    let users = || processes_with("m-dead-replica");
    p.eventually(Duration::from_secs(20), "two replicas", || {
        users().len() == 2
    });
    let queue_proxies = || -> Vec<u32> {
        children_of(p.daemon_pid())
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("queue-proxy"))
            })
            .collect()
    };
    let stop = AtomicBool::new(false);
    let ok = AtomicU32::new(0);
    let failed = Mutex::new(Vec::new());
    let kill = |pid: u32| {
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    };
    std::thread::scope(|s| {
        let stopping = Stop(&stop);
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = p.get("dead.default.localhost", "/");
                    if status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.lock().unwrap().push(format!("{status} {body}"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        let victim = users()[0];
        kill(victim);
        std::thread::sleep(Duration::from_secs(2));
        p.eventually(Duration::from_secs(20), "the replica back", || {
            users().len() == 2 && !users().contains(&victim) && p.is_ready("dead")
        });
        std::thread::sleep(Duration::from_secs(1));
        let before_qp = ok.load(Ordering::Relaxed);
        kill(queue_proxies()[0]);
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            ok.load(Ordering::Relaxed) > before_qp + 50,
            "requests stopped"
        );
        drop(stopping);
    });
    let failed = failed.into_inner().unwrap();
    let ok = ok.into_inner();
    eprintln!(
        "dead replicas: {ok} ok, {} failed: {failed:?}",
        failed.len()
    );
    assert!(ok > 500, "only {ok} answered");
    // Two kills, each with at most the two clients' requests inside the killed process.
    assert!(failed.len() <= 4, "{failed:?}");
}

/// An app that never listens on its port is told so: past the progress deadline the revision
/// is Ready=False with Knative's ProgressDeadlineExceeded, and `service create` says why.
#[test]
fn an_app_that_never_listens_fails_at_the_progress_deadline() {
    let p = Platform::start();
    let yaml = r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: deaf
spec:
  template:
    metadata:
      annotations:
        serving.knative.dev/progress-deadline: 3s
    spec:
      containers:
        - image: example.com/deaf
          command: ["sleep", "600"]
"#;
    let out = p.apply(yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.eventually(Duration::from_secs(20), "deaf fails", || {
        revision_conditions(&p, "deaf-00001")
            .iter()
            .any(|(t, s, reason, message)| {
                t == "Ready"
                    && s == "False"
                    && reason == "ProgressDeadlineExceeded"
                    && message == "Initial scale was never achieved"
            })
    });
    let out = p.sluice(&["service", "describe", "deaf"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Initial scale was never achieved"), "{text}");
}

/// The conditions of revision `name` as (type, status, reason, message), or none yet.
fn revision_conditions(p: &Platform, name: &str) -> Vec<(String, String, String, String)> {
    let out = p.sluice(&["revision", "describe", name, "-o", "json"]);
    if !out.status.success() {
        return Vec::new();
    }
    let rev: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap_or("").to_owned();
    rev["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                text(c, "type"),
                text(c, "status"),
                text(c, "reason"),
                text(c, "message"),
            )
        })
        .collect()
}

/// An app that hard-codes its port (as python's http.server listens on 8000 whatever $PORT
/// says) is told which port it listens on and which it was given.
#[test]
fn an_app_on_another_port_is_told_which() {
    let p = Platform::start();
    let fixed = crate::harness::free_port();
    let yaml = format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: fixed
spec:
  template:
    spec:
      containers:
        - image: example.com/fixed
          command: ["{app}", "serve", "fixed-marker", "--port={fixed}"]
"#,
        app = testapp().display()
    );
    let out = p.apply(&yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wanted = format!("listening on 127.0.0.1:{fixed}, but PORT is ");
    p.eventually(Duration::from_secs(20), "the port mismatch is told", || {
        revision_conditions(&p, "fixed-00001")
            .iter()
            .any(|(t, s, reason, message)| {
                t == "Ready"
                    && s == "False"
                    && reason == "PortMismatch"
                    && message.starts_with(&wanted)
                    && message.ends_with(": listen on $PORT")
            })
    });
    let out = p.sluice(&["service", "describe", "fixed"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&wanted), "{text}");
}

/// Another process that took the port a replica was given answers its probe, but the
/// replica does not turn Ready on it: it is started again on another port, and says why.
#[test]
fn a_foreign_process_on_the_port_makes_nothing_ready() {
    use std::io::{Read, Write};
    let p = Platform::start();
    let yaml = r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: taken
spec:
  template:
    spec:
      containers:
        - image: example.com/taken
          command: ["sh", "-c", "sleep 600", "taken-marker"]
"#;
    let out = p.apply(yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut user = Vec::new();
    p.eventually(Duration::from_secs(20), "the replica starts", || {
        user = processes_with("taken-marker");
        !user.is_empty()
    });
    let environ = std::fs::read(format!("/proc/{}/environ", user[0])).unwrap();
    let port: u16 = environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"PORT="))
        .map(|v| String::from_utf8_lossy(v).parse().unwrap())
        .expect("the replica has a PORT");
    let foreign = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    foreign.set_nonblocking(true).unwrap();
    let stop = AtomicBool::new(false);
    let _stop = Stop(&stop);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match foreign.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 1024];
                        let _ = conn.read(&mut buf);
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nforeign",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut told = false;
        while Instant::now() < deadline && !told {
            let conditions = revision_conditions(&p, "taken-00001");
            assert!(
                !conditions
                    .iter()
                    .any(|(t, s, _, _)| t == "Ready" && s == "True"),
                "Ready on a foreign process: {conditions:?}"
            );
            told = conditions.iter().any(|(t, _, reason, message)| {
                t == "Ready"
                    && reason == "PortTaken"
                    && message.contains(&format!("127.0.0.1:{port}"))
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(told, "never said that the port was taken");
        stop.store(true, Ordering::Relaxed);
    });
}
