//! Load: an open-loop generator for latency at a constant rate, and wrk (HTTP/1.1) or h2load
//! (HTTP/2) for closed-loop throughput.
//!
//! The open-loop generator sends request *i* at `start + i / rate` whether or not earlier
//! requests have been answered (a new connection is opened when every open one is busy), so a
//! slow proxy shows up as latency, never as a lower offered rate (no coordinated omission).
//! Each request is timed from when the generator starts it (taking or opening a connection)
//! to the end of its response body; the schedule's own lateness (the clock thread's wake-ups,
//! with a 1 µs timer slack) is reported apart, so it does not blur every path's tail alike.
//! The requests run on a single-threaded tokio runtime. In HTTP/2 (`h2c`) every request is a
//! stream on one connection, opened before the schedule starts.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::http2::SendRequest as SendRequest2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// One open-loop run.
#[derive(Clone, Debug)]
pub struct OpenLoop {
    /// Where requests go.
    pub target: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The request path.
    pub path: &'static str,
    /// Requests per second.
    pub rate: u32,
    /// How long requests are sent after the warm-up.
    pub duration: Duration,
    /// Sent first and not counted: connections open and caches fill.
    pub warmup: Duration,
    /// Cleartext HTTP/2 with prior knowledge, every request a stream of one connection.
    pub h2c: bool,
}

/// What an open-loop run saw.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    /// Counted requests' latencies in nanoseconds, sorted.
    pub sorted_ns: Vec<u64>,
    /// Counted requests that failed or answered other than 200.
    pub errors: u64,
    /// Requests still unanswered when the run's time was up (also errors).
    pub unfinished: u64,
    /// Connections the generator opened.
    pub connections: usize,
    /// The schedule's worst lateness: how far behind its intended time a request was sent.
    pub max_lag: Duration,
}

impl Latencies {
    /// The `p`th percentile, in microseconds.
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.sorted_ns.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.sorted_ns.len() as f64).ceil() as usize;
        self.sorted_ns[rank.clamp(1, self.sorted_ns.len()) - 1] as f64 / 1000.0
    }

    /// Requests counted (answered or failed).
    pub fn count(&self) -> u64 {
        self.sorted_ns.len() as u64 + self.errors
    }
}

type Pool = Rc<RefCell<Vec<SendRequest<Empty<Bytes>>>>>;

async fn connect(target: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One request on a pooled (or new) connection; `Ok` only for a 200 with its whole body.
async fn one(pool: &Pool, opened: &RefCell<usize>, cfg: &OpenLoop) -> Result<(), String> {
    let idle = pool.borrow_mut().pop();
    let mut send = match idle {
        Some(send) => send,
        None => {
            *opened.borrow_mut() += 1;
            connect(cfg.target).await?
        }
    };
    send.ready().await.map_err(|e| e.to_string())?;
    let req = Request::get(cfg.path)
        .header("host", &cfg.host)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    pool.borrow_mut().push(send);
    if status == http::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

async fn connect_h2(target: SocketAddr) -> Result<SendRequest2<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One HTTP/2 request (a stream on `send`'s connection); `Ok` only for a 200 with its body.
async fn one_h2(
    mut send: SendRequest2<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> Result<(), String> {
    send.ready().await.map_err(|e| e.to_string())?;
    let req = Request::get(format!("http://{host}{path}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status == http::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// One HTTP/2 `GET /` to `target` with `host` as authority, on a fresh connection: its
/// status, or `None` when nothing answered within `wait`.
pub fn get_h2(target: SocketAddr, host: &str, wait: Duration) -> Option<u16> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        tokio::time::timeout(wait, async {
            let mut send = connect_h2(target).await.ok()?;
            send.ready().await.ok()?;
            let req = Request::get(format!("http://{host}/"))
                .body(Empty::new())
                .ok()?;
            let resp = send.send_request(req).await.ok()?;
            Some(resp.status().as_u16())
        })
        .await
        .ok()
        .flatten()
    })
}

/// Runs one open-loop load; every request is bounded by the run's end plus 5 s.
pub fn open_loop(cfg: &OpenLoop) -> Latencies {
    let interval = Duration::from_secs_f64(1.0 / f64::from(cfg.rate));
    let total = ((cfg.warmup + cfg.duration).as_secs_f64() * f64::from(cfg.rate)) as u64;
    let warmup_count = (cfg.warmup.as_secs_f64() * f64::from(cfg.rate)) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let start = Instant::now() + Duration::from_millis(20);
    let clock = std::thread::spawn(move || {
        let _ = nix::sys::prctl::set_timerslack(1_000);
        for i in 0..total {
            let at = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send((i, at)).is_err() {
                break;
            }
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let cfg = Rc::new(cfg.clone());
    let out = local.block_on(&runtime, async move {
        let pool: Pool = Rc::default();
        let opened = Rc::new(RefCell::new(0usize));
        let h2 = if cfg.h2c {
            *opened.borrow_mut() += 1;
            connect_h2(cfg.target).await.ok()
        } else {
            None
        };
        let results = Rc::new(RefCell::new(Latencies::default()));
        let mut tasks = tokio::task::JoinSet::new();
        let end = start + interval.mul_f64(total as f64) + Duration::from_secs(5);
        while let Some((i, at)) = rx.recv().await {
            let lag = Instant::now().saturating_duration_since(at);
            let (pool, opened, results, cfg, h2) = (
                pool.clone(),
                opened.clone(),
                results.clone(),
                cfg.clone(),
                h2.clone(),
            );
            tasks.spawn_local(async move {
                let started = Instant::now();
                let request = async {
                    match (cfg.h2c, h2) {
                        (false, _) => one(&pool, &opened, &cfg).await,
                        (true, Some(send)) => one_h2(send, &cfg.host, cfg.path).await,
                        (true, None) => Err("no HTTP/2 connection".to_owned()),
                    }
                };
                let outcome = tokio::time::timeout_at(end.into(), request).await;
                let took = started.elapsed();
                let mut r = results.borrow_mut();
                r.max_lag = r.max_lag.max(lag);
                if i < warmup_count {
                    return;
                }
                match outcome {
                    Ok(Ok(())) => r.sorted_ns.push(took.as_nanos() as u64),
                    Ok(Err(_)) => r.errors += 1,
                    Err(_) => {
                        r.errors += 1;
                        r.unfinished += 1;
                    }
                }
            });
            // Reap finished tasks as we go so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        let mut out = results.take();
        out.connections = *opened.borrow();
        out
    });
    let _ = clock.join();
    let mut out = out;
    out.sorted_ns.sort_unstable();
    out
}

/// What one wrk run measured.
#[derive(Clone, Debug, Default)]
pub struct Throughput {
    /// Responses per second.
    pub rps: f64,
    /// Non-2xx answers plus socket errors.
    pub errors: u64,
}

/// Runs `program ARGS` on CPU `cpu` to its end: its standard output, or an error naming the
/// command (`shown`) with both outputs.
fn pinned_output(
    cpu: usize,
    program: &Path,
    args: &[String],
    shown: &str,
) -> Result<String, String> {
    let out = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(program)
        .args(args)
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{shown}: {}\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(text)
}

/// Runs `wrk` (closed loop, `connections` connections, one thread) on CPU `cpu` for
/// `duration`.
pub fn wrk(
    wrk: &Path,
    cpu: usize,
    target: SocketAddr,
    host: &str,
    connections: u32,
    duration: Duration,
) -> Result<(Throughput, String), String> {
    let args = [
        "-t1".to_owned(),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs()),
        "-H".to_owned(),
        format!("Host: {host}"),
        format!("http://{target}/"),
    ];
    let shown = format!(
        "taskset -c {cpu} wrk -t1 -c{connections} -d{}s -H 'Host: {host}' http://{target}/",
        duration.as_secs()
    );
    let text = pinned_output(cpu, wrk, &args, &shown)?;
    Ok((parse_wrk(&text)?, shown))
}

/// Runs `h2load` (closed loop, one thread, `connections` streams in flight: `connections / 4`
/// HTTP/2 connections of 4 concurrent streams each) on CPU `cpu` for `duration`, with `host` as
/// every request's authority.
pub fn h2load(
    h2load: &Path,
    cpu: usize,
    target: SocketAddr,
    host: &str,
    connections: u32,
    duration: Duration,
) -> Result<(Throughput, String), String> {
    let conns = (connections / 4).max(1);
    let args = [
        "-t1".to_owned(),
        format!("-c{conns}"),
        "-m4".to_owned(),
        "-D".to_owned(),
        duration.as_secs().to_string(),
        "-H".to_owned(),
        format!(":authority: {host}"),
        format!("http://{target}/"),
    ];
    let shown = format!(
        "taskset -c {cpu} h2load -t1 -c{conns} -m4 -D {} -H ':authority: {host}' http://{target}/",
        duration.as_secs()
    );
    let text = pinned_output(cpu, h2load, &args, &shown)?;
    Ok((parse_h2load(&text)?, shown))
}

/// Reads the rate from h2load's `finished in 10.00s, 43210.20 req/s, ...` and the failures
/// from its `requests:` and `status codes:` lines.
pub fn parse_h2load(text: &str) -> Result<Throughput, String> {
    let mut out = Throughput::default();
    let mut saw_rate = false;
    let number_before = |line: &str, word: &str| -> Option<u64> {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let at = words.iter().position(|w| *w == word)?;
        words.get(at.checked_sub(1)?)?.parse().ok()
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            out.rps = rest
                .split(", ")
                .nth(1)
                .and_then(|r| r.strip_suffix(" req/s"))
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| format!("h2load: unreadable rate in {line:?}"))?;
            saw_rate = true;
        } else if line.starts_with("requests:") {
            out.errors += ["failed", "errored", "timeout"]
                .iter()
                .filter_map(|w| number_before(line, w))
                .sum::<u64>();
        } else if line.starts_with("status codes:") {
            out.errors += ["3xx", "4xx", "5xx"]
                .iter()
                .filter_map(|w| number_before(line, w))
                .sum::<u64>();
        }
    }
    if saw_rate {
        Ok(out)
    } else {
        Err(format!("h2load printed no \"finished in\" line:\n{text}"))
    }
}

/// Reads `Requests/sec`, `Non-2xx or 3xx responses` and `Socket errors` from wrk's report.
pub fn parse_wrk(text: &str) -> Result<Throughput, String> {
    let mut out = Throughput::default();
    let mut saw_rate = false;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            out.rps = rest
                .trim()
                .parse()
                .map_err(|_| format!("wrk: unreadable rate in {line:?}"))?;
            saw_rate = true;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            out.errors += rest.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            out.errors += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if saw_rate {
        Ok(out)
    } else {
        Err(format!("wrk printed no Requests/sec:\n{text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_report_is_read() {
        let text = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 8 connections\n\
            Socket errors: connect 0, read 2, write 0, timeout 1\n\
            Non-2xx or 3xx responses: 4\nRequests/sec:  41234.56\nTransfer/sec:      4.44MB\n";
        let t = parse_wrk(text).unwrap();
        assert!((t.rps - 41234.56).abs() < 1e-6);
        assert_eq!(t.errors, 7);
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn h2load_report_is_read() {
        let text = "finished in 10.00s, 43210.20 req/s, 1.52MB/s\n\
            requests: 432102 total, 432166 started, 432100 done, 432098 succeeded, 2 failed, 1 errored, 3 timeout\n\
            status codes: 432098 2xx, 0 3xx, 0 4xx, 2 5xx\n";
        let t = parse_h2load(text).unwrap();
        assert!((t.rps - 43210.20).abs() < 1e-6);
        assert_eq!(t.errors, 2 + 1 + 3 + 2);
        assert!(parse_h2load("nothing").is_err());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let l = Latencies {
            sorted_ns: (1..=100).map(|i| i * 1000).collect(),
            ..Latencies::default()
        };
        assert_eq!(l.percentile_us(50.0), 50.0);
        assert_eq!(l.percentile_us(99.0), 99.0);
        assert_eq!(l.percentile_us(100.0), 100.0);
        assert!(Latencies::default().percentile_us(50.0).is_nan());
    }
}
