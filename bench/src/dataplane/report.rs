//! The Markdown report: machine, tables, targets and the exact commands.

use std::fmt::Write as _;
use std::process::Command;

use crate::load::Latencies;
use crate::paths::Kind;
use crate::{Args, PathResult, RoutesResult, Upstream};

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_owned()
        })
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn latency(r: &PathResult, upstream: Upstream, rate: u32) -> Option<&Latencies> {
    r.latency
        .iter()
        .find(|(u, q, _)| *u == upstream && *q == rate)
        .map(|(_, _, l)| l)
}

const PERCENTILES: [f64; 3] = [50.0, 90.0, 99.0];

/// Added latency over direct at percentile `p`, µs.
fn added(results: &[PathResult], kind: Kind, upstream: Upstream, rate: u32, p: f64) -> Option<f64> {
    let find = |k: Kind| results.iter().find(|r| r.kind == k);
    let base = latency(find(Kind::Direct)?, upstream, rate)?.percentile_us(p);
    Some(latency(find(kind)?, upstream, rate)?.percentile_us(p) - base)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// One target: what it says, and whether this run met it (`None` when not measured).
struct Target {
    what: String,
    measured: String,
    met: Option<bool>,
}

fn targets(results: &[PathResult], routes: &[RoutesResult], rates: &[u32]) -> Vec<Target> {
    let mut out = Vec::new();
    let find = |k: Kind| results.iter().find(|r| r.kind == k);
    for &rate in rates {
        for p in [50.0, 99.0] {
            let s = added(results, Kind::SluiceQueueProxy, Upstream::Fast, rate, p);
            let n = added(results, Kind::Nginx, Upstream::Fast, rate, p);
            let k = added(results, Kind::KnativeQueueProxy, Upstream::Fast, rate, p);
            if let (Some(s), Some(n)) = (s, n) {
                out.push(Target {
                    what: format!("queue-proxy added p{p} ≤ nginx's, {rate} req/s"),
                    measured: format!("{s:.0} µs vs {n:.0} µs"),
                    met: Some(s <= n),
                });
            }
            if let (Some(s), Some(k)) = (s, k) {
                out.push(Target {
                    what: format!("queue-proxy added p{p} ≤ ½ Knative's, {rate} req/s"),
                    measured: format!("{s:.0} µs vs ½ × {k:.0} µs"),
                    met: Some(s <= k / 2.0),
                });
            }
        }
    }
    let per_core = |k: Kind| {
        find(k)?
            .throughput
            .as_ref()
            .map(|(t, cores)| t.rps / cores.max(0.01))
    };
    if let (Some(s), Some(k)) = (
        per_core(Kind::SluiceQueueProxy),
        per_core(Kind::KnativeQueueProxy),
    ) {
        out.push(Target {
            what: "queue-proxy throughput per core ≥ 2× Knative's".into(),
            measured: format!("{s:.0} vs 2 × {k:.0} req/s per core ({:.2}×)", s / k),
            met: Some(s >= 2.0 * k),
        });
    }
    if let (Some(s), Some(k)) = (find(Kind::SluiceQueueProxy), find(Kind::KnativeQueueProxy)) {
        for (label, sv, kv) in [
            ("idle", s.rss_idle_kib, k.rss_idle_kib),
            ("under load", s.rss_load_kib, k.rss_load_kib),
        ] {
            out.push(Target {
                what: format!("queue-proxy RSS ≤ ⅓ Knative's, {label}"),
                measured: format!("{} vs ⅓ × {} MiB", mib(sv), mib(kv)),
                met: Some(sv * 3 <= kv),
            });
        }
    }
    if let Some(&rate) = rates.iter().max() {
        let a = added(
            results,
            Kind::ActivatorQueueProxy,
            Upstream::Fast,
            rate,
            99.0,
        );
        let n = added(results, Kind::Nginx, Upstream::Fast, rate, 99.0);
        if let (Some(a), Some(n)) = (a, n) {
            out.push(Target {
                what: format!("activator + queue-proxy added p99 ≤ 2× nginx's, {rate} req/s"),
                measured: format!("{a:.0} µs vs 2 × {n:.0} µs"),
                met: Some(a <= 2.0 * n),
            });
        }
    }
    if let [small, big] = routes {
        let (s, b) = (
            small.latency.percentile_us(50.0),
            big.latency.percentile_us(50.0),
        );
        out.push(Target {
            what: format!(
                "activator p50 with {} routes ≤ 110% of {} routes",
                big.routes, small.routes
            ),
            measured: format!("{b:.0} µs vs {s:.0} µs ({:+.1}%)", (b / s - 1.0) * 100.0),
            met: Some(b <= s * 1.10),
        });
    }
    let errors: u64 = results
        .iter()
        .flat_map(|r| r.latency.iter().map(|(_, _, l)| l.errors))
        .chain(
            results
                .iter()
                .filter_map(|r| r.throughput.as_ref().map(|(t, _)| t.errors)),
        )
        .chain(
            routes
                .iter()
                .map(|r| r.latency.errors + r.throughput.errors),
        )
        .sum();
    out.push(Target {
        what: "no errors in any run".into(),
        measured: format!("{errors} failed requests"),
        met: Some(errors == 0),
    });
    out
}

/// The whole report.
pub fn render(
    args: &Args,
    results: &[PathResult],
    routes: &[RoutesResult],
    load_commands: &[String],
) -> String {
    let mut s = String::new();
    let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]);
    let _ = writeln!(
        s,
        "# Data plane{}: Sluice beside nginx and Knative's queue-proxy\n",
        if args.h2c {
            ", cleartext HTTP/2 (h2c)"
        } else {
            ""
        }
    );
    if args.h2c {
        let _ = writeln!(
            s,
            "Every hop speaks HTTP/2 with prior knowledge: the generator (one connection, a stream per request), \
             each proxy (Sluice's with `USER_PROTOCOL=h2c`, a revision whose port is named h2c; nginx with `listen ... http2` and `grpc_pass`, its only HTTP/2 upstream; \
             Knative's queue-proxy, which serves h2c on its port and proxies HTTP/2 requests in HTTP/2) and the upstream. Throughput: h2load instead of wrk.\n"
        );
    }
    let _ = writeln!(
        s,
        "Run {date} at commit `{commit}` by `bench/run` (see bench/README.md).\n"
    );
    let _ = writeln!(
        s,
        "Machine: `nproc --all` = {}, CPU: {}, kernel {}; loopback only.\n",
        command_line("nproc", &["--all"]),
        cpu_model(),
        command_line("uname", &["-r"]),
    );
    let load_tool = if args.h2c {
        command_line(&args.bins.h2load.display().to_string(), &["--version"])
    } else {
        command_line(&args.bins.wrk.display().to_string(), &["-v"])
    };
    let _ = writeln!(
        s,
        "Peers: {}; {}; Knative queue-proxy v0.50.0 (`go install knative.dev/serving/cmd/queue@v0.50.0`).\n",
        command_line(&args.bins.nginx.display().to_string(), &["-v"]),
        load_tool.lines().next().unwrap_or("wrk")
    );
    let _ = writeln!(
        s,
        "Latency: open loop, {} s per path and rate, in {} rounds taken in turn across the paths (each after {} s of warm-up); \
         each request timed from when the generator starts it (taking or opening a connection) to the end of its response, while the send schedule stays fixed; added = the path's percentile minus direct's at the same rate. \
         The path under test shares CPU 0 with the generator and the upstream (the idle paths wait on CPU 1), so a proxy's added latency is its own work on the request, not cross-core wake-ups. \
         Throughput: {} on CPU 0, {} connections (h2load: streams in flight), {} s, with the proxy moved alone to CPU 1 (`taskset -a -p -c 1`); \
         per core = requests per second divided by the proxy's CPU time per second.\n",
        args.duration.as_secs(),
        args.rounds,
        args.warmup.as_secs(),
        if args.h2c { "h2load" } else { "wrk" },
        args.connections,
        args.throughput_duration.as_secs()
    );

    for upstream in [Upstream::Fast, Upstream::Slow] {
        let title = match upstream {
            Upstream::Fast => "Latency added over direct, upstream answers at once (µs)",
            Upstream::Slow => "Latency added over direct, upstream answers after 100 ms (µs)",
        };
        let _ = writeln!(s, "## {title}\n");
        let _ = write!(s, "| path |");
        for rate in &args.rates {
            for p in PERCENTILES {
                let _ = write!(s, " {rate}/s p{p} |");
            }
        }
        let _ = writeln!(s, " errors |");
        let _ = writeln!(
            s,
            "|---|{}---|",
            "---|".repeat(args.rates.len() * PERCENTILES.len())
        );
        for r in results {
            let _ = write!(s, "| {} |", r.kind.label());
            let mut errors = 0;
            for &rate in &args.rates {
                for p in PERCENTILES {
                    let cell = if r.kind == Kind::Direct {
                        latency(r, upstream, rate).map(|l| format!("({:.0})", l.percentile_us(p)))
                    } else {
                        added(results, r.kind, upstream, rate, p).map(|a| format!("{a:.0}"))
                    };
                    let _ = write!(s, " {} |", cell.unwrap_or_else(|| "–".into()));
                }
                errors += latency(r, upstream, rate).map_or(0, |l| l.errors);
            }
            let _ = writeln!(s, " {errors} |");
        }
        let lag = results
            .iter()
            .flat_map(|r| &r.latency)
            .filter(|(u, _, _)| *u == upstream)
            .map(|(_, _, l)| l.max_lag)
            .max()
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "\nThe direct row shows absolute latency in parentheses. The send schedule ran at most {} µs late in these runs.\n",
            lag.as_micros()
        );
    }

    let _ = writeln!(s, "## Throughput and memory\n");
    let _ = writeln!(
        s,
        "| path | req/s ({}) | proxy CPU (cores) | req/s per core | RSS idle (MiB) | RSS peak under load (MiB) | KiB per idle connection | errors |",
        if args.h2c { "h2load" } else { "wrk" }
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for r in results {
        let (rps, cores, per, errors) = match &r.throughput {
            Some((t, cores)) if r.kind != Kind::Direct => (
                format!("{:.0}", t.rps),
                format!("{cores:.2}"),
                format!("{:.0}", t.rps / cores.max(0.01)),
                t.errors,
            ),
            Some((t, _)) => (format!("{:.0}", t.rps), "–".into(), "–".into(), t.errors),
            None => ("–".into(), "–".into(), "–".into(), 0),
        };
        let (idle, peak) = if r.kind == Kind::Direct {
            ("–".into(), "–".into())
        } else {
            (mib(r.rss_idle_kib), mib(r.rss_load_kib))
        };
        let per_idle = r
            .idle_kib_per_connection
            .map_or_else(|| "–".into(), |k| format!("{k:.1}"));
        let _ = writeln!(
            s,
            "| {} | {rps} | {cores} | {per} | {idle} | {peak} | {per_idle} | {errors} |",
            r.kind.label()
        );
    }
    let _ = writeln!(
        s,
        "\nThe activator + queue-proxy row counts both processes' CPU and memory; nginx counts its master and worker. \
         KiB per idle connection: {} keep-alive connections that each had one request answered, then idle for 2 s; the path's RSS growth divided by their number.\n",
        crate::IDLE_CONNECTIONS
    );

    if !routes.is_empty() {
        let rate = args.rates.iter().copied().max().unwrap_or(0);
        let _ = writeln!(s, "## Activator route-table size\n");
        let _ = writeln!(
            s,
            "| routes | {rate}/s p50 (µs) | p90 | p99 | req/s (wrk) | activator RSS idle (MiB) | errors |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for r in routes {
            let l = &r.latency;
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
                r.routes,
                l.percentile_us(50.0),
                l.percentile_us(90.0),
                l.percentile_us(99.0),
                r.throughput.rps,
                mib(r.activator_rss_kib),
                l.errors + r.throughput.errors
            );
        }
        let _ = writeln!(
            s,
            "\nLatency here is the whole path (activator + queue-proxy + upstream), not added latency.\n"
        );
    }

    let _ = writeln!(s, "## Targets (issue 6)\n");
    let _ = writeln!(s, "| target | measured | met |");
    let _ = writeln!(s, "|---|---|---|");
    for t in targets(results, routes, &args.rates) {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(s, "| {} | {} | {met} |", t.what, t.measured);
    }

    let _ = writeln!(s, "\n## Commands\n\n```sh");
    let _ = writeln!(
        s,
        "bench/run   # builds, then: taskset -c 0 target/release/dataplane {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        s,
        "# upstream (GET / at once, GET /slow after 100 ms): taskset -c 0 dataplane upstream PORT"
    );
    for r in results {
        let _ = writeln!(s, "# {}", r.kind.label());
        for c in &r.commands {
            let _ = writeln!(s, "{c}");
        }
    }
    for c in load_commands {
        let _ = writeln!(s, "{c}");
    }
    let _ = writeln!(s, "```");
    s
}
