//! Cold-start overhead: the time to the first response from a revision at zero, minus the
//! app's own time to start and answer.
//!
//! 1. Baseline: the app (`sluice example-hello`, Knative's helloworld) is started directly
//!    `--trials` times; each time is spawn to the first 200, polling every 0.2 ms.
//! 2. Cold: a real `sluice local up` with `--trials` services (`--scale-window 6s`, a 1 s
//!    scale-to-zero grace). Once every revision is at zero, each service gets one request
//!    through the activator, in turn, timed from connect to the full response.
//!
//! Overhead = cold − baseline, at p50 and p95. Run it on a release build:
//!
//! ```text
//! cargo build --release -p sluice -p sluice-bench
//! target/release/cold-start --sluice target/release/sluice --trials 20
//! ```

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use net::free_port;

use sluice_bench::net;

/// One GET with `Host: host` to the loopback `port`, waiting up to 30 s (a cold start).
fn get(port: u16, host: &str) -> Option<u16> {
    net::get(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        host,
        Duration::from_secs(30),
    )
}

struct Args {
    sluice: PathBuf,
    trials: usize,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        sluice: PathBuf::from("target/release/sluice"),
        trials: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--sluice" => out.sluice = value()?.into(),
            "--trials" => {
                out.trials = value()?
                    .parse()
                    .map_err(|_| "--trials: want a whole number".to_owned())?;
            }
            "-h" | "--help" => {
                return Err("usage: cold-start [--sluice PATH] [--trials N]".into());
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    if !out.sluice.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p sluice` or pass --sluice",
            out.sluice.display()
        ));
    }
    out.sluice = out.sluice.canonicalize().map_err(|e| e.to_string())?;
    Ok(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let (p50, p95) = (percentile(&ms, 50.0), percentile(&ms, 95.0));
    eprintln!(
        "{name}: p50 {p50:.1} ms, p95 {p95:.1} ms, min {:.1}, max {:.1} (n={})",
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    );
    (p50, p95)
}

/// The app started directly: spawn to first 200.
fn baseline(sluice: &Path, trials: usize) -> Vec<f64> {
    (0..trials)
        .map(|_| {
            let port = free_port();
            let start = Instant::now();
            let mut child = Command::new(sluice)
                .arg("example-hello")
                .env("PORT", port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the app");
            while get(port, "app") != Some(200) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "app never answered"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let _ = child.kill();
            let _ = child.wait();
            ms
        })
        .collect()
}

struct Daemon {
    child: Child,
    home: tempfile::TempDir,
    sluice: PathBuf,
}

impl Daemon {
    fn start(sluice: &Path, port: u16) -> Self {
        let home = tempfile::tempdir().expect("temp home");
        let config = home.path().join("config");
        std::fs::create_dir_all(&config).expect("config dir");
        std::fs::write(
            config.join("config-autoscaler.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-autoscaler\ndata:\n  scale-to-zero-grace-period: 1s\n",
        )
        .expect("config-autoscaler");
        let log = std::fs::File::create(home.path().join("daemon.out")).expect("log");
        let child = Command::new(sluice)
            .args(["local", "up", "--http-port", &port.to_string()])
            .env("SLUICE_HOME", home.path())
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sluice local up");
        let d = Self {
            child,
            home,
            sluice: sluice.to_owned(),
        };
        let start = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "daemon not up");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn sluice(&self, args: &[&str]) -> String {
        let out = Command::new(&self.sluice)
            .args(args)
            .env("SLUICE_HOME", self.home.path())
            .output()
            .expect("run sluice");
        assert!(
            out.status.success(),
            "sluice {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (actual, desired) replicas of every revision.
    fn replicas(&self) -> Vec<(i64, i64)> {
        let list: serde_json::Value =
            serde_json::from_str(&self.sluice(&["revision", "list", "-o", "json"]))
                .expect("revision list JSON");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let st = &r["status"];
                (
                    st["actualReplicas"].as_i64().unwrap_or(-1),
                    st["desiredReplicas"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn cold(sluice: &Path, trials: usize) -> Vec<f64> {
    let port = free_port();
    let d = Daemon::start(sluice, port);
    let app = sluice.display().to_string();
    for i in 0..trials {
        let name = format!("cold{i:02}");
        d.sluice(&[
            "service",
            "create",
            &name,
            "--cmd",
            &app,
            "--arg",
            "example-hello",
            "--scale-window",
            "6s",
        ]);
    }
    let start = Instant::now();
    loop {
        let r = d.replicas();
        if r.len() == trials && r.iter().all(|&(a, w)| a == 0 && w == 0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "revisions never reached zero: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("all {trials} revisions at zero after {:?}", start.elapsed());
    // Let stopped replicas finish draining so they do not compete for the CPU.
    std::thread::sleep(Duration::from_secs(2));
    (0..trials)
        .map(|i| {
            let host = format!("cold{i:02}.default.localhost");
            let start = Instant::now();
            let status = get(port, &host);
            let ms = start.elapsed().as_secs_f64() * 1e3;
            assert_eq!(status, Some(200), "{host}");
            ms
        })
        .collect()
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cold-start: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let own = baseline(&args.sluice, args.trials);
    let from_zero = cold(&args.sluice, args.trials);
    let (b50, b95) = summary("app alone (spawn → first 200)", own);
    let (c50, c95) = summary("through Sluice from zero", from_zero);
    println!(
        "| trials | app alone p50 | app alone p95 | from zero p50 | from zero p95 | overhead p50 | overhead p95 |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {b50:.1} ms | {b95:.1} ms | {c50:.1} ms | {c95:.1} ms | {:.1} ms | {:.1} ms |",
        args.trials,
        c50 - b50,
        c95 - b95
    );
    std::process::ExitCode::SUCCESS
}
