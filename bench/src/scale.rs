//! Scale of one local daemon: many Services, most at zero, some warm.
//!
//! 1. A real `sluice local up` (scale-to-zero allowed at creation). The cold start of one
//!    Service at zero is timed while it is the only one (`--probes` fresh Services, each
//!    created at zero and sent one request through the activator).
//! 2. `--services` Services created at zero (`initial-scale: "0"`, the app `sluice
//!    example-hello`) with `sluice apply` in batches of 100; timed until every one is Ready:
//!    creates per second.
//! 3. Idle, everything at zero: the daemon's and the activator's CPU over `--idle` seconds,
//!    their RSS, the processes under the daemon, and `sluice service list` (median of three).
//! 4. The cold start again with all of them there.
//! 5. `--warm` more Services with `min-scale: "1"`, timed until Ready; idle again.
//!
//! ```text
//! cargo build --release -p sluice -p sluice-bench
//! target/release/scale --sluice target/release/sluice --services 10000 --warm 1000
//! ```

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_bench::net;

struct Args {
    sluice: PathBuf,
    services: usize,
    warm: usize,
    probes: usize,
    idle: u64,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        sluice: PathBuf::from("target/release/sluice"),
        services: 10_000,
        warm: 1_000,
        probes: 21,
        idle: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next();
        let number = || -> Result<usize, String> {
            value
                .as_deref()
                .ok_or(format!("{flag} needs a value"))?
                .parse()
                .map_err(|_| format!("{flag}: want a whole number"))
        };
        match flag.as_str() {
            "--sluice" => out.sluice = value.clone().ok_or("--sluice needs a value")?.into(),
            "--services" => out.services = number()?,
            "--warm" => out.warm = number()?,
            "--probes" => out.probes = number()?.max(1),
            "--idle" => out.idle = number()? as u64,
            "-h" | "--help" => {
                return Err("usage: scale [--sluice PATH] [--services N] [--warm N] [--probes N] [--idle SECONDS]".into());
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    out.sluice = out.sluice.canonicalize().map_err(|e| {
        format!(
            "{}: {e}; build it with `cargo build --release -p sluice`",
            out.sluice.display()
        )
    })?;
    Ok(out)
}

struct Daemon {
    child: Child,
    home: tempfile::TempDir,
    sluice: PathBuf,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(sluice: &Path) -> Self {
        let home = tempfile::tempdir().expect("temp home");
        let config = home.path().join("config");
        std::fs::create_dir_all(&config).expect("config dir");
        std::fs::write(
            config.join("config-autoscaler.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-autoscaler\ndata:\n  allow-zero-initial-scale: \"true\"\n",
        )
        .expect("config-autoscaler");
        let log = std::fs::File::create(home.path().join("daemon.out")).expect("log");
        let port = net::free_port();
        let child = Command::new(sluice)
            .args(["local", "up", "--http-port", &port.to_string()])
            .env("SLUICE_HOME", home.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sluice local up");
        let d = Self {
            child,
            home,
            sluice: sluice.to_owned(),
            port,
        };
        // Up once the admin API answers (the front door's socket is bound before it).
        let start = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
            || !Command::new(&d.sluice)
                .args(["service", "list"])
                .env("SLUICE_HOME", d.home.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            assert!(start.elapsed() < Duration::from_secs(30), "daemon not up");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn sluice(&self, args: &[&str], input: Option<&str>) -> String {
        let mut child = Command::new(&self.sluice)
            .args(args)
            .env("SLUICE_HOME", self.home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sluice");
        if let Some(text) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("run sluice");
        assert!(
            out.status.success(),
            "sluice {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn yaml(&self, name: &str, annotation: &str) -> String {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        {annotation}\n    spec:\n      containers:\n        - image: example.com/hello\n          command: [\"{}\", \"example-hello\"]\n---\n",
            self.sluice.display()
        )
    }

    /// Creates `names` in batches of 100 and waits until all are Ready: the seconds it took.
    fn create(&self, names: &[String], annotation: &str) -> f64 {
        let start = Instant::now();
        let mut created = 0;
        for batch in names.chunks(100) {
            let docs: String = batch.iter().map(|n| self.yaml(n, annotation)).collect();
            self.sluice(&["apply", "-f", "-"], Some(&docs));
            created += batch.len();
            eprint!("\rcreated {created}/{} ", names.len());
        }
        eprintln!();
        loop {
            let ready = self.ready(names);
            eprint!("\rready {ready}/{}   ", names.len());
            if ready == names.len() {
                eprintln!();
                return start.elapsed().as_secs_f64();
            }
            assert!(
                start.elapsed() < Duration::from_secs(7200),
                "services never got Ready"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// How many of `names` are Ready.
    fn ready(&self, names: &[String]) -> usize {
        let list: serde_json::Value =
            serde_json::from_str(&self.sluice(&["service", "list", "-o", "json"], None))
                .expect("service list JSON");
        let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                s["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| wanted.contains(n))
                    && s["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .count()
    }

    /// Fresh Services created at zero, each sent one request: milliseconds to its answer.
    fn cold_starts(&self, prefix: &str, n: usize) -> Vec<f64> {
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        self.create(&names, "autoscaling.knative.dev/initial-scale: \"0\"");
        names
            .iter()
            .map(|name| {
                let host = format!("{name}.default.localhost");
                let start = Instant::now();
                let status = net::get(
                    SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
                    &host,
                    Duration::from_secs(60),
                );
                assert_eq!(status, Some(200), "{host}");
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect()
    }

    fn activator(&self) -> Option<u32> {
        descendants(self.child.id())
            .into_iter()
            .find(|pid| cmdline(*pid).ends_with(" activator"))
    }

    /// Median wall time of `sluice service list`, in milliseconds.
    fn list_ms(&self) -> f64 {
        let mut ms: Vec<f64> = (0..3)
            .map(|_| {
                let start = Instant::now();
                self.sluice(&["service", "list"], None);
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms[1]
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Every process under `root` (by parent pid, from /proc).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent = std::collections::HashMap::<u32, Vec<u32>>::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        parent.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for child in parent.get(&pid).into_iter().flatten() {
            out.push(*child);
            queue.push(*child);
        }
    }
    out
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Percent of one core `pid` used over `seconds`.
fn idle_cpu(pids: &[u32], seconds: u64) -> Vec<f64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    std::thread::sleep(Duration::from_secs(seconds));
    pids.iter()
        .zip(before)
        .map(|(p, b)| (cpu_ticks(*p).saturating_sub(b)) as f64 / ticks / seconds as f64 * 100.0)
        .collect()
}

/// Median, lowest and highest of some timings.
struct Spread {
    p50: f64,
    min: f64,
    max: f64,
}

fn spread(mut ms: Vec<f64>) -> Spread {
    ms.sort_by(f64::total_cmp);
    Spread {
        p50: ms[ms.len() / 2],
        min: ms[0],
        max: ms[ms.len() - 1],
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} ms ({:.1}–{:.1})", self.p50, self.min, self.max)
    }
}

/// One row of the idle table.
fn idle_row(d: &Daemon, what: &str, seconds: u64) -> String {
    let daemon = d.child.id();
    let activator = d.activator().unwrap_or(0);
    let cpu = idle_cpu(&[daemon, activator], seconds);
    format!(
        "| {what} | {:.1} MB | {:.1} MB | {} | {:.2}% | {:.2}% | {:.0} ms |",
        rss_mb(daemon),
        rss_mb(activator),
        descendants(daemon).len(),
        cpu[0],
        cpu[1],
        d.list_ms()
    )
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scale: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let d = Daemon::start(&args.sluice);
    let alone = spread(d.cold_starts("alone", args.probes));
    eprintln!("cold start, alone: p50 {alone}");

    let names: Vec<String> = (0..args.services).map(|i| format!("s{i:05}")).collect();
    let secs = d.create(&names, "autoscaling.knative.dev/initial-scale: \"0\"");
    let create_rate = args.services as f64 / secs;
    eprintln!("{} services Ready in {secs:.1} s", args.services);
    // Let the creation's passes settle before measuring idle.
    std::thread::sleep(Duration::from_secs(10));
    let at_zero = idle_row(&d, &format!("{} at zero", args.services), args.idle);
    let crowded = spread(d.cold_starts("crowded", args.probes));
    eprintln!("cold start among {}: p50 {crowded}", args.services);

    let warm: Vec<String> = (0..args.warm).map(|i| format!("w{i:05}")).collect();
    let warm_secs = d.create(&warm, "autoscaling.knative.dev/min-scale: \"1\"");
    std::thread::sleep(Duration::from_secs(10));
    let warm_row = idle_row(
        &d,
        &format!("{} at zero + {} warm", args.services, args.warm),
        args.idle,
    );

    println!(
        "| state | daemon RSS | activator RSS | processes | daemon idle CPU | activator idle CPU | `service list` |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!("{at_zero}");
    println!("{warm_row}");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| create → Ready, {} at zero | {create_rate:.1} Services/s ({secs:.0} s) |",
        args.services
    );
    println!(
        "| create → Ready, {} warm | {:.1} Services/s ({warm_secs:.0} s) |",
        args.warm,
        args.warm as f64 / warm_secs
    );
    println!(
        "| cold start p50 (min–max of {}), 1 Service | {alone} |",
        args.probes
    );
    println!(
        "| cold start p50 (min–max of {}), {} Services | {crowded}, {:+.0}% |",
        args.probes,
        args.services,
        (crowded.p50 / alone.p50 - 1.0) * 100.0
    );
    std::process::ExitCode::SUCCESS
}
