//! Data-plane benchmark: Sluice's queue-proxy and activator side by side with nginx and
//! Knative's own queue-proxy, in one run on this machine. `bench/run` builds everything and
//! runs it; see `bench/README.md`.
//!
//! For every path (direct, Sluice queue-proxy, Sluice activator + queue-proxy, nginx, Knative
//! queue-proxy) and both upstreams (one answers at once, one after 100 ms):
//! - latency under open-loop constant rate (500 and 2000 req/s), reported as the added
//!   latency over direct at p50, p90 and p99;
//! - closed-loop throughput (wrk) with the proxy pinned to one core, and the proxy's CPU time
//!   during it, giving requests per core-second;
//! - the proxy's resident memory idle and at its peak under load.
//!
//! Then the activator with 10 and with 10,000 routes in its table. Latency runs keep every
//! process on CPU 0; a throughput run moves the proxy alone to CPU 1. Loopback only; every
//! load is bounded in time.

mod load;
use sluice_bench::net;
mod paths;
mod report;
mod upstream;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use load::{Latencies, OpenLoop, Throughput};
use paths::{Binaries, Kind, LOAD_CPU, PROXY_CPU, Running};

/// Which upstream a run ends at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Upstream {
    /// Answers at once.
    Fast,
    /// Answers after 100 ms.
    Slow,
}

/// Everything measured for one path.
#[derive(Debug)]
pub struct PathResult {
    /// The path.
    pub kind: Kind,
    /// Open-loop latencies by upstream and rate.
    pub latency: Vec<(Upstream, u32, Latencies)>,
    /// Closed-loop throughput to the fast upstream, and the proxy's CPU use (cores) during it.
    pub throughput: Option<(Throughput, f64)>,
    /// Resident memory of the proxy processes, KiB: idle after start, and the peak under load.
    pub rss_idle_kib: u64,
    /// The peak under load.
    pub rss_load_kib: u64,
    /// Resident memory per idle keep-alive connection, KiB.
    pub idle_kib_per_connection: Option<f64>,
    /// How the proxies were started.
    pub commands: Vec<String>,
}

/// The activator with a given table size.
#[derive(Debug)]
pub struct RoutesResult {
    /// Routes in the table.
    pub routes: usize,
    /// Open-loop latency at the highest rate, fast upstream.
    pub latency: Latencies,
    /// Closed-loop throughput.
    pub throughput: Throughput,
    /// The activator's resident memory with that table, idle.
    pub activator_rss_kib: u64,
}

/// Command-line settings.
#[derive(Clone, Debug)]
pub struct Args {
    bins: Binaries,
    duration: Duration,
    warmup: Duration,
    throughput_duration: Duration,
    rates: Vec<u32>,
    rounds: u32,
    connections: u32,
    out: Option<PathBuf>,
    only: Option<Vec<Kind>>,
    /// Cleartext HTTP/2 end to end (`--protocol h2c`) instead of HTTP/1.1.
    h2c: bool,
}

const USAGE: &str = "usage: dataplane [--sluice PATH] [--knative-queue PATH] [--nginx PATH] [--wrk PATH]
                 [--h2load PATH] [--protocol http1|h2c]
                 [--duration SECS] [--warmup SECS] [--throughput-duration SECS]
                 [--rates 500,2000] [--rounds N] [--connections N] [--only direct,sluice,activator,nginx,knative]
                 [--out FILE]
       dataplane upstream PORT";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bins: Binaries {
            sluice: "target/release/sluice".into(),
            knative_queue: "target/peers/queue".into(),
            nginx: "/usr/sbin/nginx".into(),
            wrk: "/usr/bin/wrk".into(),
            h2load: "/usr/bin/h2load".into(),
        },
        duration: Duration::from_secs(24),
        warmup: Duration::from_secs(1),
        throughput_duration: Duration::from_secs(10),
        rates: vec![500, 2000],
        rounds: 6,
        connections: 64,
        out: None,
        only: None,
        h2c: false,
    };
    let secs = |v: String, flag: &str| {
        v.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{flag}: want whole seconds, got {v:?}"))
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value; see --help"));
        match flag.as_str() {
            "--sluice" => args.bins.sluice = value()?.into(),
            "--knative-queue" => args.bins.knative_queue = value()?.into(),
            "--nginx" => args.bins.nginx = value()?.into(),
            "--wrk" => args.bins.wrk = value()?.into(),
            "--h2load" => args.bins.h2load = value()?.into(),
            "--protocol" => {
                args.h2c = match value()?.as_str() {
                    "http1" => false,
                    "h2c" => true,
                    other => return Err(format!("--protocol: want http1 or h2c, got {other:?}")),
                };
            }
            "--duration" => args.duration = secs(value()?, "--duration")?,
            "--warmup" => args.warmup = secs(value()?, "--warmup")?,
            "--throughput-duration" => {
                args.throughput_duration = secs(value()?, "--throughput-duration")?;
            }
            "--rates" => {
                args.rates = value()?
                    .split(',')
                    .map(|r| r.trim().parse::<u32>().ok().filter(|r| *r > 0))
                    .collect::<Option<_>>()
                    .ok_or("--rates: want positive whole numbers, e.g. 500,2000")?;
            }
            "--rounds" => {
                args.rounds = value()?
                    .parse::<u32>()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("--rounds: want a positive whole number")?;
            }
            "--connections" => {
                args.connections = value()?
                    .parse()
                    .map_err(|_| "--connections: want a whole number")?;
            }
            "--only" => {
                let kinds = value()?
                    .split(',')
                    .map(|k| match k.trim() {
                        "direct" => Ok(Kind::Direct),
                        "sluice" => Ok(Kind::SluiceQueueProxy),
                        "activator" => Ok(Kind::ActivatorQueueProxy),
                        "nginx" => Ok(Kind::Nginx),
                        "knative" => Ok(Kind::KnativeQueueProxy),
                        other => Err(format!(
                            "--only: unknown path {other:?}; want direct, sluice, activator, nginx or knative"
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                args.only = Some(kinds);
            }
            "--out" => args.out = Some(value()?.into()),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    for (path, what) in [
        (
            &mut args.bins.sluice,
            "build it with `cargo build --release -p sluice`",
        ),
        (
            &mut args.bins.knative_queue,
            "build it with `GOBIN=$PWD/target/peers go install knative.dev/serving/cmd/queue@v0.50.0`",
        ),
        (
            &mut args.bins.nginx,
            "install Debian's nginx (`apt-get install nginx-light`)",
        ),
        (&mut args.bins.wrk, "install wrk (`apt-get install wrk`)"),
        (
            &mut args.bins.h2load,
            "install h2load (`apt-get install nghttp2-client`)",
        ),
    ] {
        *path = path
            .canonicalize()
            .map_err(|_| format!("{} not found: {what}, or pass its path", path.display()))?;
    }
    Ok(args)
}

/// Samples the summed resident memory of each group of pids every 50 ms until stopped; the
/// peak of each group, KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Vec<AtomicU64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(groups: Vec<Vec<u32>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Arc<Vec<AtomicU64>> =
            Arc::new(groups.iter().map(|_| AtomicU64::new(0)).collect());
        let thread = std::thread::spawn({
            let (stop, peaks) = (stop.clone(), peaks.clone());
            move || {
                // Off the loaded core: the latency runs share CPU 0, and this thread should
                // not add to their noise.
                move_this_thread(PROXY_CPU);
                while !stop.load(Ordering::Relaxed) {
                    for (pids, peak) in groups.iter().zip(peaks.iter()) {
                        peak.fetch_max(rss_total(pids), Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Self {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peaks
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }
}

/// Moves the calling thread to `cpu` (best effort).
fn move_this_thread(cpu: usize) {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok());
    if let Some(tid) = tid {
        let _ = Command::new("taskset")
            .args(["-p", "-c", &cpu.to_string(), &tid.to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

fn rss_total(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| paths::rss_kib(*p)).sum()
}

fn cpu_total(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| paths::cpu_ticks(*p)).sum()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Closed-loop throughput against a running path with its proxies moved to a core of their
/// own, and the proxies' CPU use in cores.
fn throughput(args: &Args, running: &Running) -> Result<((Throughput, f64), String), String> {
    let pids = running.pids();
    paths::pin(&pids, PROXY_CPU)?;
    let before = cpu_total(&pids);
    let tool = if args.h2c { load::h2load } else { load::wrk };
    let bin = if args.h2c {
        &args.bins.h2load
    } else {
        &args.bins.wrk
    };
    let measured = tool(
        bin,
        LOAD_CPU,
        running.target,
        &running.host,
        args.connections,
        args.throughput_duration,
    );
    let used = (cpu_total(&pids) - before) as f64 / clock_ticks_per_second();
    paths::pin(&pids, LOAD_CPU)?;
    let (t, command) = measured?;
    Ok(((t, used / args.throughput_duration.as_secs_f64()), command))
}

/// Open-loop runs at `rate` against every running path, `args.rounds` times in turn so that
/// drift in the machine falls on every path alike; each path's samples merged.
///
/// The path under test shares CPU 0 with the generator and the upstream; the others wait on
/// CPU 1, so their timers and runtimes do not add to its tail.
fn interleaved(
    args: &Args,
    running: &[Running],
    path: &'static str,
    rate: u32,
) -> Result<Vec<Latencies>, String> {
    let mut merged: Vec<Latencies> = running.iter().map(|_| Latencies::default()).collect();
    let per_round = args.duration / args.rounds;
    for r in running {
        paths::pin(&r.pids(), PROXY_CPU)?;
    }
    for _ in 0..args.rounds {
        for (r, into) in running.iter().zip(merged.iter_mut()) {
            paths::pin(&r.pids(), LOAD_CPU)?;
            let l = load::open_loop(&OpenLoop {
                target: r.target,
                host: r.host.clone(),
                path,
                rate,
                duration: per_round,
                warmup: args.warmup,
                h2c: args.h2c,
            });
            into.sorted_ns.extend(l.sorted_ns);
            into.errors += l.errors;
            into.unfinished += l.unfinished;
            into.connections += l.connections;
            into.max_lag = into.max_lag.max(l.max_lag);
            paths::pin(&r.pids(), PROXY_CPU)?;
        }
    }
    for (r, l) in running.iter().zip(merged.iter_mut()) {
        l.sorted_ns.sort_unstable();
        eprintln!(
            "  {:<32} {path:<6} {rate:>5}/s  p50 {:>7.0} µs  p99 {:>7.0} µs  errors {}",
            r.kind.label(),
            l.percentile_us(50.0),
            l.percentile_us(99.0),
            l.errors
        );
    }
    Ok(merged)
}

/// Runs every measurement; the report, and how many requests failed in all.
fn run(args: &Args) -> Result<(String, u64), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = net::free_port();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut upstream = Command::new("taskset")
        .args(["-c", &LOAD_CPU.to_string()])
        .arg(&exe)
        .args(["upstream", &port.to_string()])
        .args(args.h2c.then_some("h2c"))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the upstream: {e}"))?;
    let guard = scopeguard(move || {
        let _ = upstream.kill();
        let _ = upstream.wait();
    });
    let kinds = args.only.clone().unwrap_or_else(|| Kind::ALL.to_vec());
    let kinds: Vec<Kind> = std::iter::once(Kind::Direct)
        .chain(kinds.into_iter().filter(|k| *k != Kind::Direct))
        .collect();

    // Every path up at once, idle memory read once they have settled.
    let mut running = Vec::new();
    for &kind in &kinds {
        running.push(paths::start(
            kind,
            &args.bins,
            port,
            10,
            dir.path(),
            args.h2c,
        )?);
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut results: Vec<PathResult> = running
        .iter()
        .map(|r| PathResult {
            kind: r.kind,
            latency: Vec::new(),
            throughput: None,
            rss_idle_kib: rss_total(&r.pids()),
            rss_load_kib: 0,
            idle_kib_per_connection: None,
            commands: r.commands.clone(),
        })
        .collect();

    let sampler = RssSampler::start(running.iter().map(Running::pids).collect());
    for (upstream, path) in [(Upstream::Fast, "/"), (Upstream::Slow, upstream::SLOW_PATH)] {
        for &rate in &args.rates {
            let merged = interleaved(args, &running, path, rate)?;
            for (result, l) in results.iter_mut().zip(merged) {
                result.latency.push((upstream, rate, l));
            }
        }
    }
    // Throughput: the proxy under test alone on CPU 1, the idle ones back with the load.
    for r in &running {
        paths::pin(&r.pids(), LOAD_CPU)?;
    }
    let mut commands = Vec::new();
    for (r, result) in running.iter().zip(results.iter_mut()) {
        let (t, command) = throughput(args, r)?;
        eprintln!(
            "  {:<32} throughput {:.0} req/s on {:.2} cores, errors {}",
            r.kind.label(),
            t.0.rps,
            t.1,
            t.0.errors
        );
        if commands.is_empty() {
            commands.push(command.replace(&r.target.to_string(), "TARGET"));
        }
        result.throughput = Some(t);
    }
    for (result, peak) in results.iter_mut().zip(sampler.finish()) {
        result.rss_load_kib = peak;
    }
    // Idle connections are measured in HTTP/1.1 (they are what the front door holds most).
    for (r, result) in running.iter().zip(results.iter_mut()) {
        if r.kind != Kind::Direct && !args.h2c {
            let per = idle_memory(r, IDLE_CONNECTIONS)?;
            eprintln!(
                "  {:<32} {per:.1} KiB per idle keep-alive connection",
                r.kind.label()
            );
            result.idle_kib_per_connection = Some(per);
        }
    }
    drop(running);

    let routes = if kinds.contains(&Kind::ActivatorQueueProxy) && !args.h2c {
        measure_routes(args, port, dir.path())?
    } else {
        Vec::new()
    };
    drop(guard);
    let errors = results
        .iter()
        .map(|r| {
            r.latency.iter().map(|(_, _, l)| l.errors).sum::<u64>()
                + r.throughput.as_ref().map_or(0, |(t, _)| t.errors)
        })
        .chain(
            routes
                .iter()
                .map(|r| r.latency.errors + r.throughput.errors),
        )
        .sum();
    Ok((report::render(args, &results, &routes, &commands), errors))
}

/// How many idle keep-alive connections the memory measure holds (below nginx's
/// `worker_connections`).
const IDLE_CONNECTIONS: usize = 2000;

/// What an idle keep-alive connection costs a path in resident memory: `n` connections have
/// each had one request answered and then sit idle for 2 s (past the relay's one-second
/// linger, after which it gives an idle connection's buffers back); the proxies' RSS growth
/// divided by `n`.
fn idle_memory(r: &Running, n: usize) -> Result<f64, String> {
    use std::io::{Read, Write};
    let before = rss_total(&r.pids());
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", r.host);
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = std::net::TcpStream::connect(r.target)
            .map_err(|e| format!("idle connections to {}: {e}", r.kind.label()))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"Hello World!\n") {
            let k = s
                .read(&mut buf)
                .map_err(|e| format!("idle connections to {}: {e}", r.kind.label()))?;
            if k == 0 {
                return Err(format!("{} closed a keep-alive connection", r.kind.label()));
            }
            got.extend_from_slice(&buf[..k]);
        }
        held.push(s);
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_total(&r.pids());
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// The activator with 10 and with 10,000 routes in its table, both up at once and loaded in
/// turn at the highest rate.
fn measure_routes(
    args: &Args,
    port: u16,
    dir: &std::path::Path,
) -> Result<Vec<RoutesResult>, String> {
    let rate = args.rates.iter().copied().max().unwrap_or(2000);
    let sizes = [10, 10_000];
    let mut running = Vec::new();
    for routes in sizes {
        running.push(paths::start(
            Kind::ActivatorQueueProxy,
            &args.bins,
            port,
            routes,
            dir,
            false,
        )?);
    }
    std::thread::sleep(Duration::from_secs(1));
    let activator_rss: Vec<u64> = running
        .iter()
        .map(|r| {
            r.procs
                .iter()
                .find(|(name, _)| *name == "activator")
                .and_then(|(_, p)| paths::rss_kib(p.pid()))
                .unwrap_or(0)
        })
        .collect();
    let latencies = interleaved(args, &running, "/", rate)?;
    for r in &running {
        paths::pin(&r.pids(), LOAD_CPU)?;
    }
    let mut out = Vec::new();
    for (((routes, r), latency), activator_rss_kib) in sizes
        .into_iter()
        .zip(&running)
        .zip(latencies)
        .zip(activator_rss)
    {
        let ((throughput, _), _) = self::throughput(args, r)?;
        out.push(RoutesResult {
            routes,
            latency,
            throughput,
            activator_rss_kib,
        });
    }
    Ok(out)
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("upstream") {
        let Some(port) = argv.get(2).and_then(|p| p.parse::<u16>().ok()) else {
            eprintln!("{USAGE}");
            return std::process::ExitCode::from(2);
        };
        let h2c = argv.get(3).map(String::as_str) == Some("h2c");
        return match upstream::main(port, h2c) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("upstream: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok((markdown, errors)) => {
            println!("{markdown}");
            if let Some(out) = &args.out {
                if let Err(e) = std::fs::write(out, &markdown) {
                    eprintln!("{}: {e}", out.display());
                    return std::process::ExitCode::FAILURE;
                }
                eprintln!("wrote {}", out.display());
            }
            if errors > 0 {
                eprintln!("{errors} requests failed; see the tables");
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dataplane: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
