//! The paths under test and the processes behind them. Every process starts pinned to
//! [`LOAD_CPU`], beside the load generator and the upstream; for its throughput run a proxy is
//! moved to [`PROXY_CPU`] alone. Everything listens on 127.0.0.1 (Knative's queue-proxy also binds its fixed admin and metrics ports, 8022 and
//! 9090, on every interface: it has no setting for that).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluice_platform::RevisionKey;

use crate::net::{free_port, get};
use sluice_platform::routing::{
    HostRoute, RevisionBackends, RoutingSnapshot, RoutingUpdate, WeightedTarget,
};

/// The core a proxy has to itself during its throughput run.
pub const PROXY_CPU: usize = 1;
/// The core of the load generators, the upstream, and the proxies during latency runs.
pub const LOAD_CPU: usize = 0;

/// The binaries the benchmark runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// Sluice's CLI (`sluice queue-proxy`, `sluice activator`).
    pub sluice: PathBuf,
    /// Knative's queue-proxy (`go install knative.dev/serving/cmd/queue@v0.50.0`).
    pub knative_queue: PathBuf,
    /// Debian's nginx.
    pub nginx: PathBuf,
    /// wrk.
    pub wrk: PathBuf,
    /// h2load (Debian's nghttp2-client), for HTTP/2 throughput.
    pub h2load: PathBuf,
}

/// A path from the load generator to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Straight to the upstream.
    Direct,
    /// Sluice's queue-proxy.
    SluiceQueueProxy,
    /// Sluice's activator, then Sluice's queue-proxy.
    ActivatorQueueProxy,
    /// nginx as a reverse proxy with keep-alive upstream connections.
    Nginx,
    /// Knative's queue-proxy v0.50.0.
    KnativeQueueProxy,
}

impl Kind {
    /// Every path, in table order.
    pub const ALL: [Kind; 5] = [
        Kind::Direct,
        Kind::SluiceQueueProxy,
        Kind::ActivatorQueueProxy,
        Kind::Nginx,
        Kind::KnativeQueueProxy,
    ];

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::SluiceQueueProxy => "Sluice queue-proxy",
            Kind::ActivatorQueueProxy => "Sluice activator + queue-proxy",
            Kind::Nginx => "nginx 1.22 (keepalive)",
            Kind::KnativeQueueProxy => "Knative queue-proxy v0.50.0",
        }
    }
}

/// A child process, killed when dropped.
pub struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Self, String> {
        let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        Ok(Self { name, child })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("{} exited: {status}", self.name)),
            _ => Ok(()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // nginx's workers are the master's children and outlive a killed master.
        for pid in children(self.child.id()) {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running path: where to send requests, and the proxy processes to measure.
pub struct Running {
    /// The path.
    pub kind: Kind,
    /// Where the load goes.
    pub target: SocketAddr,
    /// The `Host` header to send.
    pub host: String,
    /// The proxies (empty for direct), each a name and its process.
    pub procs: Vec<(&'static str, Proc)>,
    /// The commands that started them, for the report.
    pub commands: Vec<String>,
    /// Requests go in cleartext HTTP/2 (and the upstream speaks it).
    pub h2c: bool,
    _control: Option<Control>,
}

impl Running {
    /// Every process id of the proxies, including nginx's workers.
    pub fn pids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (_, p) in &self.procs {
            out.push(p.pid());
            out.extend(children(p.pid()));
        }
        out
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn pinned(program: &Path, cpu: usize) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string()).arg(program);
    cmd
}

/// A shell-like rendering of a command with its environment, for the report.
fn shown(env: &[(&str, String)], program: &str, args: &[&str]) -> String {
    let mut s = String::new();
    for (k, v) in env {
        let _ = write!(s, "{k}={v} ");
    }
    let _ = write!(s, "taskset -c {LOAD_CPU} {program}");
    for a in args {
        let _ = write!(s, " {a}");
    }
    s
}

/// Waits (at most 20 s) until `target` answers 200 for `host`.
fn await_ok(running: &mut Running) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = if running.h2c {
            crate::load::get_h2(running.target, &running.host, Duration::from_secs(5))
        } else {
            get(running.target, &running.host, Duration::from_secs(5))
        };
        if status == Some(200) {
            return Ok(());
        }
        for (_, p) in &mut running.procs {
            p.check_alive()?;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not answer 200 on {} within 20 s",
                running.kind.label(),
                running.target
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `kind` in front of the upstream on `upstream`, with `routes` routes in the
/// activator's table, logging into `dir`; returns once it answers 200. With `h2c` the path
/// takes cleartext HTTP/2 and speaks it to an HTTP/2 upstream (a revision whose port is
/// named h2c; nginx with `listen ... http2` and `grpc_pass`).
pub fn start(
    kind: Kind,
    bins: &Binaries,
    upstream: u16,
    routes: usize,
    dir: &Path,
    h2c: bool,
) -> Result<Running, String> {
    let dir = &dir.join(format!("{kind:?}-{routes}"));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut running = Running {
        kind,
        target: loopback(upstream),
        host: "bench.example.com".into(),
        procs: Vec::new(),
        commands: Vec::new(),
        h2c,
        _control: None,
    };
    match kind {
        Kind::Direct => {}
        Kind::SluiceQueueProxy => {
            let (qp, command, port) = sluice_queue_proxy(bins, upstream, dir, h2c)?;
            running.target = loopback(port);
            running.procs.push(("queue-proxy", qp));
            running.commands.push(command);
        }
        Kind::ActivatorQueueProxy => {
            let (qp, command, qp_port) = sluice_queue_proxy(bins, upstream, dir, h2c)?;
            running.procs.push(("queue-proxy", qp));
            running.commands.push(command);
            let socket = dir.join("routing.sock");
            let (snapshot, host) = snapshot(routes, loopback(qp_port));
            let control = Control::serve(&socket, &snapshot)?;
            let port = free_port();
            let env = [
                ("SLUICE_ROUTING_SOCKET", socket.display().to_string()),
                ("ACTIVATOR_PORT", port.to_string()),
                ("RUST_LOG", "warn".to_owned()),
            ];
            let mut cmd = pinned(&bins.sluice, LOAD_CPU);
            cmd.arg("activator").envs(env.iter().map(|(k, v)| (k, v)));
            running.procs.push((
                "activator",
                Proc::spawn("activator", cmd, &dir.join("activator.log"))?,
            ));
            running.commands.push(shown(&env, "sluice", &["activator"]));
            running.target = loopback(port);
            running.host = host;
            running._control = Some(control);
        }
        Kind::Nginx => {
            let port = free_port();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(dir, port, upstream, h2c))
                .map_err(|e| format!("{}: {e}", conf.display()))?;
            let mut cmd = pinned(&bins.nginx, LOAD_CPU);
            cmd.arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("error.log"));
            running
                .procs
                .push(("nginx", Proc::spawn("nginx", cmd, &dir.join("nginx.log"))?));
            running.commands.push(format!(
                "taskset -c {LOAD_CPU} nginx -p DIR -c DIR/nginx.conf  # nginx.conf: {}",
                nginx_conf(Path::new("DIR"), port, upstream, h2c)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            running.target = loopback(port);
        }
        Kind::KnativeQueueProxy => {
            let port = free_port();
            let env = [
                ("CONTAINER_CONCURRENCY", "0".to_owned()),
                ("QUEUE_SERVING_PORT", port.to_string()),
                ("QUEUE_SERVING_TLS_PORT", free_port().to_string()),
                ("USER_PORT", upstream.to_string()),
                ("REVISION_TIMEOUT_SECONDS", "300".to_owned()),
                ("SERVING_LOGGING_CONFIG", String::new()),
                ("SERVING_LOGGING_LEVEL", "warn".to_owned()),
                ("SERVING_NAMESPACE", "bench".to_owned()),
                ("SERVING_CONFIGURATION", "bench".to_owned()),
                ("SERVING_REVISION", "bench-00001".to_owned()),
                ("SERVING_POD", "bench-00001-deployment-0".to_owned()),
                ("SERVING_POD_IP", "127.0.0.1".to_owned()),
            ];
            let mut cmd = pinned(&bins.knative_queue, LOAD_CPU);
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
            running.procs.push((
                "knative queue",
                Proc::spawn("knative queue", cmd, &dir.join("knative-queue.log"))?,
            ));
            running.commands.push(shown(&env, "queue", &[]));
            running.target = loopback(port);
        }
    }
    await_ok(&mut running)?;
    Ok(running)
}

fn sluice_queue_proxy(
    bins: &Binaries,
    upstream: u16,
    dir: &Path,
    h2c: bool,
) -> Result<(Proc, String, u16), String> {
    let port = free_port();
    let protocol = if h2c { "h2c" } else { "http1" };
    let env = [
        ("USER_PROTOCOL", protocol.to_owned()),
        ("CONTAINER_CONCURRENCY", "0".to_owned()),
        ("QUEUE_SERVING_PORT", port.to_string()),
        ("QUEUE_ADMIN_PORT", free_port().to_string()),
        ("USER_PORT", upstream.to_string()),
        ("REVISION_TIMEOUT_SECONDS", "300".to_owned()),
        ("SERVING_NAMESPACE", "bench".to_owned()),
        ("SERVING_REVISION", "bench-00001".to_owned()),
        ("SERVING_POD", "bench-00001-0".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let mut cmd = pinned(&bins.sluice, LOAD_CPU);
    cmd.arg("queue-proxy").envs(env.iter().map(|(k, v)| (k, v)));
    let proc = Proc::spawn("queue-proxy", cmd, &dir.join("queue-proxy.log"))?;
    Ok((proc, shown(&env, "sluice", &["queue-proxy"]), port))
}

fn nginx_conf(dir: &Path, port: u16, upstream: u16, h2c: bool) -> String {
    let d = dir.display();
    // HTTP/2 in and out: nginx's gRPC proxy is its only HTTP/2 upstream.
    // 1,000 streams a connection, as Sluice's activator (nginx's default is 128).
    let streams = if h2c {
        " http2_max_concurrent_streams 1000;"
    } else {
        ""
    };
    let (listen, pass) = if h2c {
        (" http2", "grpc_pass grpc://app;")
    } else {
        (
            "",
            "proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\";",
        )
    };
    format!(
        "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port}{listen} reuseport;
    keepalive_requests 1000000;{streams}
    location / {{ {pass} }}
  }}
}}
"
    )
}

/// A routing table of `routes` routes, each with one revision behind the queue-proxy at
/// `endpoint`; the host in the middle of the table is the one to load.
pub fn snapshot(routes: usize, endpoint: SocketAddr) -> (RoutingSnapshot, String) {
    let mut s = RoutingSnapshot::default();
    for i in 0..routes.max(1) {
        let revision = RevisionKey::new("bench", format!("svc-{i}-00001"));
        s.hosts.insert(
            format!("svc-{i}.bench.example.com"),
            HostRoute {
                route: format!("bench/svc-{i}"),
                targets: vec![WeightedTarget {
                    revision: revision.clone(),
                    percent: 100,
                }],
                tags: Default::default(),
            },
        );
        s.revisions.insert(
            revision.clone(),
            RevisionBackends {
                container_concurrency: 0,
                timeout_seconds: 300,
                endpoints: vec![endpoint],
                buffered: false,
            },
        );
    }
    let host = format!("svc-{}.bench.example.com", routes / 2);
    (s, host)
}

/// The stand-in for the daemon's admin socket that the activator follows: one routing
/// snapshot, then a stream that stays open; stats reports are accepted and dropped.
struct Control {
    _thread: std::thread::JoinHandle<()>,
}

/// A body that sends one chunk and then stays open.
struct OneThenOpen(Option<Bytes>);

impl Body for OneThenOpen {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Poll::Pending,
        }
    }
}

impl Control {
    fn serve(socket: &Path, snapshot: &RoutingSnapshot) -> Result<Self, String> {
        // The routing stream's first line: the whole table.
        let update = RoutingUpdate::Full(snapshot.clone());
        let mut line = serde_json::to_vec(&update).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let line = Bytes::from(line);
        let _ = std::fs::remove_file(socket);
        let listener = std::os::unix::net::UnixListener::bind(socket)
            .map_err(|e| format!("{}: {e}", socket.display()))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).expect("unix listener");
                while let Ok((stream, _)) = listener.accept().await {
                    let line = line.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let line = line.clone();
                            async move {
                                let body: BoxBody<Bytes, Infallible> =
                                    if req.uri().path() == "/v1/routing/watch" {
                                        BoxBody::new(OneThenOpen(Some(line)))
                                    } else {
                                        BoxBody::new(Full::new(Bytes::new()))
                                    };
                                Ok::<_, Infallible>(Response::new(body))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        Ok(Self { _thread: thread })
    }
}

/// Moves every thread of `pids` to `cpu`.
pub fn pin(pids: &[u32], cpu: usize) -> Result<(), String> {
    for pid in pids {
        let out = Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("taskset: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "taskset -a -p -c {cpu} {pid}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// A process's resident set, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A process's CPU time so far (user + system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// A process's children (nginx's workers; taskset execs, so it is not among them).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
