//! The local [`Workloads`]: a process supervisor. Each replica of a revision is the user's
//! process plus its own queue-proxy process on loopback ports; the supervisor restarts crashed
//! replicas with backoff, probes each queue-proxy for readiness, and stops replicas by
//! draining the queue-proxy before the user process.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_runtime::backoff::Backoff;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use sluice_api::contract::{QueueProxyEnv, user_env};
use sluice_api::template::expand_env_refs;

use crate::ports::PortPool;
use crate::process::{Process, exit_reason, shimmed};
use crate::sockets;
use sluice_platform::RevisionChanges;
use sluice_platform::routing::RevisionKey;
use sluice_platform::workloads::{
    ReplicaFailure, WorkloadError, WorkloadSpec, WorkloadStatus, Workloads,
};

/// Probe period of a starting replica's queue-proxy during its first second.
const STARTUP_PROBE_PERIOD: Duration = Duration::from_millis(5);

/// How often a ready replica is probed: the kubelet's default readiness period. A user
/// process that exits is noticed at once without a probe; this catches one that hangs.
const READY_PROBE_PERIOD: Duration = Duration::from_secs(10);

/// How often a replica that is not ready yet has its listening sockets looked at.
const LISTEN_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// How the supervisor starts queue-proxies and where it keeps logs.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The program that runs a queue-proxy, and its leading arguments.
    pub queue_proxy: Vec<String>,
    /// The binary whose exec shim starts user processes (`sluice __exec`, see
    /// [`crate::process::exec_shim`]): this one.
    pub exec_shim: PathBuf,
    /// Directory for per-replica log files.
    pub log_dir: PathBuf,
    /// Grace period for a stopping process before SIGKILL.
    pub stop_grace: Duration,
    /// How long a stopping queue-proxy keeps serving after its last request.
    pub drain_quiet: Duration,
}

/// The process supervisor.
#[derive(Clone)]
pub struct Supervisor {
    cfg: Arc<SupervisorConfig>,
    revisions: Arc<Mutex<HashMap<RevisionKey, RevisionRun>>>,
    changes: Arc<RevisionChanges>,
    ports: PortPool,
}

struct RevisionRun {
    spec: WorkloadSpec,
    replicas: Vec<ReplicaRun>,
    next_id: u64,
}

impl RevisionRun {
    fn status(&self) -> WorkloadStatus {
        let mut status = WorkloadStatus {
            desired: self.spec.replicas,
            ..WorkloadStatus::default()
        };
        for r in &self.replicas {
            let s = r.state.lock().expect("lock");
            if let (Some(addr), Some(admin)) = (s.ready, s.admin) {
                status.endpoints.push(addr);
                status.metrics.push(admin);
            } else if status.failure.is_none() {
                status.failure.clone_from(&s.failure);
            }
        }
        if !status.endpoints.is_empty() {
            status.failure = None;
        }
        status
    }
}

struct ReplicaRun {
    state: Arc<Mutex<ReplicaState>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct ReplicaState {
    ready: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    failure: Option<ReplicaFailure>,
}

/// The loopback ports of one replica incarnation.
struct Ports {
    user: u16,
    queue: u16,
    admin: u16,
}

impl Supervisor {
    /// A supervisor with no revisions.
    pub fn new(cfg: SupervisorConfig) -> Self {
        Self {
            cfg: Arc::new(cfg),
            revisions: Arc::default(),
            changes: Arc::default(),
            ports: PortPool::new(),
        }
    }

    fn start_replica(&self, spec: &WorkloadSpec, id: u64) -> ReplicaRun {
        let state = Arc::new(Mutex::new(ReplicaState::default()));
        let (stop, stopped) = oneshot::channel();
        let replica = Replica {
            cfg: self.cfg.clone(),
            spec: spec.clone(),
            pod: format!("{}-{id}", spec.key.name),
            state: state.clone(),
            changes: self.changes.clone(),
            ports: self.ports.clone(),
        };
        let task = tokio::spawn(replica.run(stopped));
        ReplicaRun { state, stop, task }
    }

    /// Stops every replica of every revision (daemon shutdown).
    pub async fn shutdown(&self) {
        let runs: Vec<RevisionRun> = self
            .revisions
            .lock()
            .expect("lock")
            .drain()
            .map(|(_, r)| r)
            .collect();
        let stops = runs.into_iter().flat_map(|r| r.replicas).map(stop_replica);
        futures_join_all(stops).await;
    }
}

async fn stop_replica(run: ReplicaRun) {
    let _ = run.stop.send(());
    let _ = run.task.await;
}

async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

impl Workloads for Supervisor {
    async fn ensure(&self, spec: WorkloadSpec) -> Result<(), WorkloadError> {
        if spec.container.command.is_empty() {
            return Err(WorkloadError::Unsupported(format!(
                "revision {}: no command to run",
                spec.key
            )));
        }
        let to_stop = {
            let mut revisions = self.revisions.lock().expect("lock");
            let run = revisions
                .entry(spec.key.clone())
                .or_insert_with(|| RevisionRun {
                    spec: spec.clone(),
                    replicas: Vec::new(),
                    next_id: 1,
                });
            let mut to_stop = Vec::new();
            if run.spec.container != spec.container {
                // Revisions are immutable, so this only happens when a name is reused after a
                // delete: replace every replica.
                to_stop.append(&mut run.replicas);
            }
            run.spec = spec.clone();
            let want = spec.replicas as usize;
            while run.replicas.len() > want {
                // Replicas that are not serving go first, then the newest.
                let idle = run
                    .replicas
                    .iter()
                    .rposition(|r| r.state.lock().expect("lock").ready.is_none());
                let at = idle.unwrap_or(run.replicas.len() - 1);
                to_stop.push(run.replicas.remove(at));
            }
            while run.replicas.len() < want {
                let id = run.next_id;
                run.next_id += 1;
                run.replicas.push(self.start_replica(&spec, id));
            }
            to_stop
        };
        self.changes.touch(&spec.key);
        // Draining can take up to the revision timeout; the caller does not wait for it.
        if !to_stop.is_empty() {
            tokio::spawn(futures_join_all(to_stop.into_iter().map(stop_replica)));
        }
        Ok(())
    }

    async fn delete(&self, key: &RevisionKey) -> Result<(), WorkloadError> {
        let run = self.revisions.lock().expect("lock").remove(key);
        if let Some(run) = run {
            self.changes.touch(key);
            let (changes, key) = (self.changes.clone(), key.clone());
            tokio::spawn(async move {
                futures_join_all(run.replicas.into_iter().map(stop_replica)).await;
                changes.touch(&key);
            });
        }
        Ok(())
    }

    fn status(&self, key: &RevisionKey) -> Option<WorkloadStatus> {
        let revisions = self.revisions.lock().expect("lock");
        revisions.get(key).map(RevisionRun::status)
    }

    fn ready(&self) -> Vec<(RevisionKey, WorkloadStatus)> {
        let revisions = self.revisions.lock().expect("lock");
        revisions
            .iter()
            .filter(|(_, run)| !run.replicas.is_empty())
            .map(|(key, run)| (key, run.status()))
            .filter(|(_, status)| !status.endpoints.is_empty())
            .map(|(key, status)| (key.clone(), status))
            .collect()
    }

    fn keys(&self) -> Vec<RevisionKey> {
        self.revisions
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed_since(&self, seen: u64) -> Option<Vec<RevisionKey>> {
        self.changes.since(seen)
    }
}

/// One replica's life: start, probe, restart on crash, stop on request.
struct Replica {
    cfg: Arc<SupervisorConfig>,
    spec: WorkloadSpec,
    pod: String,
    state: Arc<Mutex<ReplicaState>>,
    changes: Arc<RevisionChanges>,
    ports: PortPool,
}

/// Why one incarnation of a replica ended.
enum Ended {
    Stopped,
    Crashed,
}

impl Replica {
    fn set(&self, f: impl FnOnce(&mut ReplicaState)) {
        f(&mut self.state.lock().expect("lock"));
        self.changes.touch(&self.spec.key);
    }

    async fn run(self, mut stop: oneshot::Receiver<()>) {
        // A replica that served for a minute before crashing is restarted at once.
        let mut backoff = Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(60),
        );
        loop {
            let started = tokio::time::Instant::now();
            match self.incarnation(&mut stop).await {
                Ended::Stopped => return,
                Ended::Crashed => {}
            }
            let pause = backoff.after(started.elapsed());
            tokio::select! {
                _ = &mut stop => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn fail(&self, reason: String, message: String) -> Ended {
        tracing::warn!(revision = %self.spec.key, pod = %self.pod, %reason, %message, "Replica failed.");
        self.set(|s| {
            s.ready = None;
            s.failure = Some(ReplicaFailure { reason, message });
        });
        Ended::Crashed
    }

    async fn incarnation(&self, stop: &mut oneshot::Receiver<()>) -> Ended {
        // Held (no other replica gets them) until this incarnation ends.
        let (user, queue, admin) = match (self.ports.take(), self.ports.take(), self.ports.take()) {
            (Ok(user), Ok(queue), Ok(admin)) => (user, queue, admin),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return self.fail(
                    "PortsExhausted".into(),
                    format!("Not the container's failure: no free loopback port ({e})"),
                );
            }
        };
        let ports = Ports {
            user: user.get(),
            queue: queue.get(),
            admin: admin.get(),
        };
        let log = self
            .cfg
            .log_dir
            .join(format!("{}_{}.log", self.spec.key.namespace, self.pod));
        tracing::debug!(revision = %self.spec.key, pod = %self.pod, "Starting replica.");
        let mut user = match Process::spawn_program(self.user_command(&ports), &log).await {
            Ok(p) => p,
            Err(e) => {
                if let Some(limit) = platform_limit(&e) {
                    return self.fail("PlatformResourceLimit".into(), limit);
                }
                return self.fail(
                    "ExecFailed".into(),
                    format!(
                        "Container failed with: cannot run {:?}: {e}",
                        self.spec.container.command[0]
                    ),
                );
            }
        };
        let qp_log = self.cfg.log_dir.join(format!(
            "{}_{}.queue-proxy.log",
            self.spec.key.namespace, self.pod
        ));
        let mut queue = match Process::spawn(self.queue_command(&ports), &qp_log).await {
            Ok(p) => p,
            Err(e) => {
                user.stop(self.cfg.stop_grace).await;
                if let Some(limit) = platform_limit(&e) {
                    return self.fail("PlatformResourceLimit".into(), limit);
                }
                return self.fail(
                    "QueueProxyFailed".into(),
                    format!("cannot start the queue-proxy: {e}"),
                );
            }
        };
        tracing::debug!(revision = %self.spec.key, pod = %self.pod, "Replica processes started.");
        let serving = SocketAddr::from((Ipv4Addr::LOCALHOST, ports.queue));
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, ports.admin));
        // Probe every 5 ms for the first second (a cold start waits on this), then Knative's
        // aggressive 50 ms until ready, then a slower health check.
        let started = tokio::time::Instant::now();
        let mut period = STARTUP_PROBE_PERIOD;
        let mut misses = 0u32;
        let mut looked = started;
        loop {
            tokio::select! {
                _ = &mut *stop => {
                    self.set(|s| s.ready = None);
                    // Drain: the queue-proxy finishes in-flight requests, then the user process goes.
                    queue.stop(self.spec.timeout + self.cfg.stop_grace).await;
                    user.stop(self.cfg.stop_grace).await;
                    return Ended::Stopped;
                }
                status = user.wait() => {
                    // Out of the routing table at once: the queue-proxy's drain below takes
                    // a while, and every request it got meanwhile would find no process.
                    self.set(|s| s.ready = None);
                    queue.stop(self.cfg.stop_grace).await;
                    let tail = user.output_tail().await;
                    let (code, reason) = match status {
                        Ok(st) => exit_reason(&st),
                        Err(_) => (-1, "ExitCode-1".to_owned()),
                    };
                    let msg = if tail.is_empty() {
                        format!("Container failed with: exit code {code}")
                    } else {
                        format!("Container failed with: {tail}")
                    };
                    return self.fail(reason, msg);
                }
                status = queue.wait() => {
                    user.stop(self.cfg.stop_grace).await;
                    let tail = queue.output_tail().await;
                    return self.fail(
                        "QueueProxyExited".into(),
                        format!("queue-proxy exited ({status:?}): {tail}"),
                    );
                }
                () = tokio::time::sleep(period) => {
                    let ok = probe_queue(serving).await;
                    let was_ready = self.state.lock().expect("lock").ready.is_some();
                    misses = if ok { 0 } else { misses + 1 };
                    if ok && !was_ready {
                        // Only the replica's own process counts: another one that took the
                        // port the replica was given must not make it Ready.
                        let tree = user.id().map(sockets::process_tree).unwrap_or_default();
                        if !sockets::owns_port(&tree, ports.user) {
                            queue.stop(self.cfg.stop_grace).await;
                            user.stop(self.cfg.stop_grace).await;
                            return self.fail(
                                "PortTaken".into(),
                                format!("another process, not this replica's, listens on its port 127.0.0.1:{}; starting the replica again on another port", ports.user),
                            );
                        }
                        self.set(|s| { s.ready = Some(serving); s.admin = Some(admin); s.failure = None; });
                        tracing::info!(revision = %self.spec.key, pod = %self.pod, %serving, "Replica ready.");
                        period = READY_PROBE_PERIOD;
                    } else if was_ready && misses >= 3 {
                        self.set(|s| s.ready = None);
                        period = Duration::from_millis(50);
                    } else if was_ready && !ok {
                        period = Duration::from_secs(1);
                    } else if !was_ready && started.elapsed() > Duration::from_secs(1) {
                        period = Duration::from_millis(50);
                        if looked.elapsed() >= LISTEN_CHECK_PERIOD {
                            looked = tokio::time::Instant::now();
                            self.explain_not_listening(&user, ports.user);
                        }
                    }
                }
            }
        }
    }
    /// A user process that listens, but not on the port it was given, is told so in the
    /// replica's failure (shown as the revision's message) while it keeps being probed.
    fn explain_not_listening(&self, user: &Process, port: u16) {
        let tree = user.id().map(sockets::process_tree).unwrap_or_default();
        let listening = sockets::listening_tcp(&tree);
        let Some(message) = sockets::mismatch_message(&listening, port) else {
            return;
        };
        let known = self
            .state
            .lock()
            .expect("lock")
            .failure
            .as_ref()
            .map(|f| f.message.clone());
        if known.as_deref() != Some(message.as_str()) {
            tracing::warn!(revision = %self.spec.key, pod = %self.pod, %message, "Replica listens on the wrong port.");
            self.set(|s| {
                s.failure = Some(ReplicaFailure {
                    reason: "PortMismatch".into(),
                    message,
                });
            });
        }
    }

    fn user_command(&self, ports: &Ports) -> Command {
        let spec = &self.spec;
        // The program is `command` then `args`; only literal env values exist here (admission
        // refuses valueFrom and envFrom on the local platform).
        let c = &spec.container;
        let mut env: HashMap<&str, String> = c
            .env
            .iter()
            .filter_map(|e| Some((e.name.as_str(), e.value.clone()?)))
            .collect();
        env.insert(user_env::PORT, ports.user.to_string());
        env.insert(user_env::SERVICE, spec.service.clone());
        env.insert(user_env::CONFIGURATION, spec.configuration.clone());
        env.insert(user_env::REVISION, spec.key.name.clone());
        // `$(PORT)` and the like in command and args, as the kubelet expands them.
        let expand = |text: &String| expand_env_refs(text, |name| env.get(name).cloned());
        let mut cmd = shimmed(&self.cfg.exec_shim, expand(&c.command[0]));
        cmd.args(c.command[1..].iter().chain(&c.args).map(expand));
        cmd.envs(&env);
        if let Some(dir) = &c.working_dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    fn queue_command(&self, ports: &Ports) -> Command {
        let spec = &self.spec;
        let mut cmd = Command::new(&self.cfg.queue_proxy[0]);
        cmd.args(&self.cfg.queue_proxy[1..]);
        let env = QueueProxyEnv {
            pod: Some(self.pod.clone()),
            drain_quiet_milliseconds: u64::try_from(self.cfg.drain_quiet.as_millis()).ok(),
            ..spec.queue_proxy_env(ports.queue, ports.admin, ports.user)
        };
        cmd.envs(env.vars());
        cmd
    }
}

/// A failure to start a process that is the machine's or the daemon's limit, not the user's
/// program: said as such, with the fix.
fn platform_limit(e: &std::io::Error) -> Option<String> {
    use nix::errno::Errno;
    let errno = Errno::from_raw(e.raw_os_error()?);
    let what = match errno {
        Errno::EMFILE => {
            let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or_else(|_| "?".to_owned(), |(soft, _)| soft.to_string());
            format!(
                "the Sluice daemon ran out of open files (limit {limit}); raise its limit (`ulimit -n`, or LimitNOFILE= in its unit) and it retries"
            )
        }
        Errno::ENFILE => {
            "the machine ran out of open files (fs.file-max); raise it and Sluice retries"
                .to_owned()
        }
        Errno::EAGAIN | Errno::ENOMEM => format!(
            "the machine cannot start another process ({errno}): raise the process or memory limits, or run fewer replicas; Sluice retries"
        ),
        _ => return None,
    };
    Some(format!("Not the container's failure: {what}"))
}

/// Asks a queue-proxy whether its user process is ready, as Knative's activator does:
/// `K-Network-Probe: queue`, expecting 200 and body `queue`.
pub async fn probe_queue(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(
                b"GET /healthz HTTP/1.1\r\nHost: queue-proxy\r\nK-Network-Probe: queue\r\nUser-Agent: Knative-Activator-Probe\r\nConnection: close\r\n\r\n",
            )
            .await
            .ok()?;
        let mut buf = Vec::with_capacity(256);
        stream.take(4096).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        Some(text.starts_with("HTTP/1.1 200") && text.ends_with("queue"))
    };
    tokio::time::timeout(Duration::from_millis(300), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
