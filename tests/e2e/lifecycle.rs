//! Lifecycle: failures reported, crashes survived, deletes complete, one daemon per home.

use std::process::Command;
use std::time::Duration;

use crate::harness::{Platform, processes_with, service_yaml, sluice_bin, testapp};

#[test]
fn crashing_process_reports_exit_code_and_output() {
    let p = Platform::start();
    let out = p.sluice(&[
        "service",
        "create",
        "boom",
        "--cmd",
        "sh",
        "--arg",
        "-c",
        "--arg",
        "echo 'fatal: no database' >&2; exit 3",
    ]);
    assert!(
        !out.status.success(),
        "create should fail while the revision fails"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("RevisionFailed"), "{stderr}");
    assert!(stderr.contains("fatal: no database"), "{stderr}");
    let revs: serde_json::Value =
        serde_json::from_str(&p.ok(&["revision", "list", "-o", "json"])).unwrap();
    let ready = revs["items"][0]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ExitCode3");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("fatal: no database"),
        "{ready}"
    );
}

#[test]
fn kill9_of_the_daemon_then_restart_brings_services_back() {
    let mut p = Platform::start();
    assert!(
        p.apply(&service_yaml("one", "env", "m-crash-1", "a", ""))
            .status
            .success()
    );
    assert!(
        p.apply(&service_yaml("two", "env", "m-crash-2", "b", ""))
            .status
            .success()
    );
    assert!(
        p.apply(&service_yaml("two", "env", "m-crash-2", "c", ""))
            .status
            .success()
    );
    p.eventually(Duration::from_secs(15), "both ready", || {
        p.is_ready("one")
            && p.is_ready("two")
            && p.service_json("two")["status"]["latestReadyRevisionName"] == "two-00002"
    });
    let before = p.ok(&["revision", "list", "-o", "json"]);
    let names = |json: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };

    p.kill9();
    p.eventually(
        Duration::from_secs(5),
        "user process dies with its daemon",
        || processes_with("m-crash-1").is_empty(),
    );
    p.up();
    // The first request after the restart is answered, not refused as an unknown host: the
    // activator accepts only once it has the controller's first routing table.
    let (status, body) = p.get("one.default.localhost", "/");
    assert_eq!(status, 200, "first request after the restart: {body}");
    p.eventually(
        Duration::from_secs(15),
        "services answer after restart",
        || {
            p.get("one.default.localhost", "/").0 == 200
                && p.get("two.default.localhost", "/").1.contains("TARGET=c\n")
        },
    );
    assert!(p.is_ready("one") && p.is_ready("two"));
    assert_eq!(
        names(&p.ok(&["revision", "list", "-o", "json"])),
        names(&before)
    );
}

/// Replicas are started without forking the daemon (posix_spawn, then `sluice __exec`): the
/// user process still gets a clean start (default SIGPIPE, stdin from /dev/null, none of the
/// daemon's own variables), and every child of the daemon still dies with a daemon killed on
/// its own.
#[test]
fn replicas_start_clean_and_die_with_a_daemon_killed_alone() {
    let mut p = Platform::start();
    // A shell as the user process: a Rust app would ignore SIGPIPE itself.
    let yaml = service_yaml("tied", "env", "m-tied-marker", "x", "").replace(
        &format!(
            r#"command: ["{}", "env", "m-tied-marker"]"#,
            testapp().display()
        ),
        &format!(
            r#"command: ["sh", "-c", "{} env m-tied-marker & wait"]"#,
            testapp().display()
        ),
    );
    assert!(yaml.contains("& wait"), "{yaml}");
    assert!(p.apply(&yaml).status.success());
    p.eventually(Duration::from_secs(10), "tied ready", || p.is_ready("tied"));
    let daemon = p.daemon_pid();
    let children = crate::harness::children_of(daemon);
    let user: Vec<u32> = processes_with("m-tied-marker")
        .into_iter()
        .filter(|pid| children.contains(pid))
        .collect();
    assert_eq!(user.len(), 1, "one user process, the shell: {children:?}");
    let user = user[0];
    let status = std::fs::read_to_string(format!("/proc/{user}/status")).unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        ignored & (1 << (13 - 1)),
        0,
        "SIGPIPE is not ignored: {status}"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{user}/fd/0")).unwrap(),
        std::path::Path::new("/dev/null")
    );
    let environ = std::fs::read(format!("/proc/{user}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("TARGET=x\0"), "{environ}");
    assert!(!environ.contains("SLUICE_PARENT_PID"), "{environ}");
    let app = processes_with("m-tied-marker");
    assert_eq!(app.len(), 2, "the shell and its app");
    assert!(
        children.len() >= 3,
        "activator, queue-proxy, user process: {children:?}"
    );

    p.kill9_daemon_only();
    p.eventually(
        Duration::from_secs(5),
        "every child dies with the daemon",
        || {
            children
                .iter()
                .all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        },
    );
    // The shell's own child outlives it, as it did when the daemon forked: only the
    // daemon's children get the death signal.
    for pid in app.iter().filter(|pid| !children.contains(pid)) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

#[test]
fn delete_leaves_no_process_behind() {
    let p = Platform::start();
    let yaml = service_yaml("gone", "env", "m-delete-marker", "x", "");
    assert!(p.apply(&yaml).status.success());
    p.eventually(Duration::from_secs(10), "gone ready", || p.is_ready("gone"));
    assert_eq!(processes_with("m-delete-marker").len(), 1);
    let daemon = p.daemon_pid();
    let queue_proxies = || {
        crate::harness::children_of(daemon)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("queue-proxy"))
            })
            .count()
    };
    assert_eq!(queue_proxies(), 1);

    let mut child = Command::new(sluice_bin())
        .args(["delete", "-f", "-"])
        .env("SLUICE_HOME", p.home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("service.serving.knative.dev/gone deleted")
    );

    p.eventually(
        Duration::from_secs(15),
        "user process and queue-proxy gone",
        || processes_with("m-delete-marker").is_empty() && queue_proxies() == 0,
    );
    assert_eq!(p.ok(&["revision", "list"]).trim(), "No revisions found.");
    assert_eq!(p.get("gone.default.localhost", "/").0, 404);
}

#[test]
fn second_daemon_on_the_same_home_refuses() {
    let p = Platform::start();
    let out = Command::new(sluice_bin())
        .args(["local", "up", "--http-port", "0"])
        .env("SLUICE_HOME", p.home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(stderr.contains(&p.daemon_pid().to_string()), "{stderr}");
}

#[test]
fn admin_socket_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let p = Platform::start();
    let mode = std::fs::metadata(p.home.path().join("sluice.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {:o}", mode & 0o777);
}

#[test]
fn config_gc_collects_old_revisions_but_never_routed_ones() {
    let p = Platform::start();
    let gc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-gc\ndata:\n  min-non-active-revisions: \"0\"\n  max-non-active-revisions: \"1\"\n  retain-since-create-time: disabled\n  retain-since-last-active-time: disabled\n";
    std::fs::write(p.home.path().join("config/config-gc.yaml"), gc).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let app = crate::harness::testapp().display().to_string();
    p.ok(&[
        "service", "create", "g", "--cmd", &app, "--arg", "env", "--env", "V=1",
    ]);
    p.ok(&[
        "service",
        "update",
        "g",
        "--env",
        "V=2",
        "--tag",
        "g-00001=pinned",
    ]);
    p.ok(&["service", "update", "g", "--env", "V=3"]);
    p.ok(&["service", "update", "g", "--env", "V=4"]);
    let names = || {
        let revs: serde_json::Value =
            serde_json::from_str(&p.ok(&["revision", "list", "-o", "json"])).unwrap();
        let mut n: Vec<String> = revs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    // g-00001 is routed by its tag; g-00004 is latest; of g-00002 and g-00003 one may stay.
    p.eventually(Duration::from_secs(15), "old revisions collected", || {
        names() == ["g-00001", "g-00003", "g-00004"]
    });
    let revs: serde_json::Value =
        serde_json::from_str(&p.ok(&["revision", "list", "-o", "json"])).unwrap();
    let state = |name: &str| {
        revs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["metadata"]["name"] == name)
            .unwrap()["metadata"]["labels"]["serving.knative.dev/routingState"]
            .clone()
    };
    assert_eq!(state("g-00001"), "active");
    assert_eq!(state("g-00003"), "reserve");
}

/// `sluice service list | head -1`: a reader that goes away ends the CLI as it ends `cat`
/// (SIGPIPE), never with a panic, in the table and in every `-o` format.
#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let p = Platform::start();
    assert!(
        p.apply(&service_yaml("piped", "env", "m-piped", "x", ""))
            .status
            .success()
    );
    for args in [
        &["service", "list"][..],
        &["service", "list", "-o", "json"],
        &["revision", "list", "-o", "yaml"],
        &["route", "list"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(sluice_bin())
            .args(args)
            .env("SLUICE_HOME", p.home.path())
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "sluice {args:?}: {stderr}");
        assert_eq!(out.status.signal(), Some(13), "sluice {args:?}: {stderr}");
    }
}
