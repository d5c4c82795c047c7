//! The daemon's storage failing under it: a full disk, a file system turned read-only, a WAL
//! removed by hand, a database another process wants. In each the daemon stays up, running
//! services keep serving, writes fail naming the cause and the fix and store nothing, and no
//! write that was acknowledged is lost.
//!
//! The full and read-only cases mount a file system on the home (tmpfs, ext4 on a loop device),
//! so they need root, as CI runs; without it they say so and check nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{Platform, service_yaml};

/// A file system mounted for one test; unmounted (lazily, whatever holds it) on drop.
struct Mount {
    at: PathBuf,
}

impl Mount {
    fn new(args: &[&str], at: &Path) -> Self {
        let status = Command::new("mount").args(args).arg(at).status().unwrap();
        assert!(status.success(), "mount {args:?} {}", at.display());
        Self { at: at.to_owned() }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// The marker service `name` with an env value of `size` bytes (so writes need disk space).
fn bulky(name: &str, size: usize) -> String {
    service_yaml(
        name,
        "serve",
        &format!("{name}-marker"),
        &"x".repeat(size),
        "",
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn serves(p: &Platform, name: &str) -> bool {
    p.get(&format!("{name}.default.localhost"), "/").0 == 200
}

fn exists(p: &Platform, name: &str) -> bool {
    p.sluice(&["service", "describe", name, "-o", "json"])
        .status
        .success()
}

/// Applies `name` and waits until it answers through the front door.
fn serving(p: &Platform, name: &str) {
    let out = p.apply(&bulky(name, 8));
    assert!(out.status.success(), "{}", stderr(&out));
    p.eventually(Duration::from_secs(30), "service serves", || {
        serves(p, name)
    });
}

/// A home on a 16 MiB tmpfs, filled to the last byte: creates fail with the disk named as
/// full and store nothing, the daemon and the running service carry on, and once space is
/// freed the next create succeeds.
#[test]
fn a_full_disk_refuses_writes_and_recovers() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _mount = Mount::new(&["-t", "tmpfs", "-o", "size=16m", "tmpfs"], dir.path());
    let mut p = Platform::start_on(dir);
    serving(&p, "before");

    let filler = p.home.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    let mut refused = 0;
    for i in 0..20 {
        let name = format!("full{i}");
        let out = p.apply(&bulky(&name, 100_000));
        if out.status.success() {
            assert!(exists(&p, &name), "{name} acknowledged but not stored");
        } else {
            refused += 1;
            let err = stderr(&out);
            assert!(err.contains("is full"), "{err}");
            assert!(err.contains("Free some space"), "{err}");
            assert!(!exists(&p, &name), "{name} refused but stored");
        }
    }
    assert!(refused > 0, "a full disk refused no write");
    assert!(p.running(), "the daemon died:\n{}", p.daemon_output());
    assert!(serves(&p, "before"), "the running service stopped serving");

    std::fs::remove_file(&filler).unwrap();
    serving(&p, "after");
    assert!(p.running());
}

/// The ext4 file system holding the home hits an error and turns read-only (`errors=
/// remount-ro`, as a failing disk does): writes fail naming the read-only file system, reads
/// and the running service carry on, and after the disk is repaired and the daemon restarted
/// every acknowledged write is there.
#[test]
fn a_read_only_home_keeps_serving_and_loses_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a loop device needs root");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let image = scratch.path().join("home.img");
    let made = Command::new("truncate")
        .args(["-s", "64M"])
        .arg(&image)
        .status()
        .unwrap()
        .success()
        && Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .status()
            .unwrap()
            .success();
    assert!(made, "cannot make an ext4 image");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_owned();
    let mount_args = ["-o", "loop,errors=remount-ro", image.to_str().unwrap()];
    let mount = Mount::new(&mount_args, &home);
    let mut p = Platform::start_on(dir);
    serving(&p, "before");
    let out = p.sluice(&[
        "service",
        "update",
        "before",
        "--no-wait",
        "--env",
        "SAVED=1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let source = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE"])
        .arg(&home)
        .output()
        .unwrap();
    let device = String::from_utf8_lossy(&source.stdout).trim().to_owned();
    let device = device.rsplit('/').next().unwrap().to_owned();
    std::fs::write(
        format!("/sys/fs/ext4/{device}/trigger_fs_error"),
        "sluice test: disk error",
    )
    .unwrap();

    let out = p.apply(&bulky("refused", 8));
    assert!(
        !out.status.success(),
        "a write on a read-only disk succeeded"
    );
    let err = stderr(&out);
    assert!(err.contains("read-only"), "{err}");
    assert!(p.running(), "the daemon died:\n{}", p.daemon_output());
    assert!(serves(&p, "before"), "the running service stopped serving");
    assert!(exists(&p, "before"), "reads failed");

    // Repair the disk as an operator would, and start again.
    p.stop();
    drop(mount);
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(fsck.status.code().is_some_and(|c| c <= 1), "{fsck:?}");
    let _mount = Mount::new(&mount_args, &home);
    p.up();
    let svc = p.service_json("before");
    let env = svc["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("SAVED"),
        "an acknowledged update was lost: {env}"
    );
    assert!(!exists(&p, "refused"));
    p.eventually(Duration::from_secs(30), "service serves", || {
        serves(&p, "before")
    });
}

/// `sluice.db-wal` deleted by hand under a running daemon, then an update, then a crash: the
/// update is there after the restart (the daemon notices the WAL gone and saves its contents
/// into the database before it answers).
#[test]
fn a_deleted_wal_loses_no_acknowledged_write() {
    let mut p = Platform::start();
    let out = p.apply(&bulky("wal", 8));
    assert!(out.status.success(), "{}", stderr(&out));
    let wal = p.home.path().join("sluice.db-wal");
    assert!(wal.exists(), "no WAL at {}", wal.display());
    std::fs::remove_file(&wal).unwrap();
    p.ok(&["service", "update", "wal", "--no-wait", "--env", "AFTER=1"]);
    p.kill9();
    p.up();
    let svc = p.service_json("wal");
    let env = svc["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("AFTER"),
        "an acknowledged update was lost: {env}"
    );
    assert!(wal.exists(), "no new WAL was started");
}

/// The database is the daemon's alone: while it runs another process cannot lock it, and a
/// daemon started while another process holds it says so and starts once it is let go.
#[test]
fn a_locked_database_waits_and_others_cannot_lock_it() {
    let mut p = Platform::start();
    let out = p.apply(&bulky("locked", 8));
    assert!(out.status.success(), "{}", stderr(&out));
    let db = p.home.path().join("sluice.db");
    {
        let other = rusqlite::Connection::open(&db).unwrap();
        other.busy_timeout(Duration::from_millis(200)).unwrap();
        assert!(
            other.execute_batch("BEGIN IMMEDIATE; COMMIT;").is_err(),
            "another process locked the daemon's database"
        );
        p.ok(&["service", "update", "locked", "--no-wait", "--env", "B=1"]);
    }
    p.stop();

    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    p.spawn_daemon();
    p.eventually(
        Duration::from_secs(10),
        "the daemon says why it waits",
        || p.daemon_output().contains("locked by another process"),
    );
    assert!(p.running(), "{}", p.daemon_output());
    assert!(!p.sluice(&["service", "list"]).status.success());
    drop(other);
    p.eventually(Duration::from_secs(10), "daemon answers", || {
        p.sluice(&["service", "list"]).status.success()
    });
    let svc = p.service_json("locked");
    assert!(
        svc["spec"]["template"]["spec"]["containers"][0]["env"]
            .to_string()
            .contains("\"B\"")
    );
}
