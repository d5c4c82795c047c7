//! `sluice local up`: the local platform in one foreground process. It holds the home's lock,
//! keeps objects in SQLite, runs the controllers, supervises replicas (each a user process plus
//! its own queue-proxy process), runs the activator as a child process on the HTTP port, and
//! serves the admin API on a Unix socket only its owner can use.
//!
//! Owns the local platform's process: lock, admin API, config-file settings, wiring of the
//! controller, autoscaler, supervisor and activator. Must not depend on the CLI (`sluice`'s
//! commands and client) or on anything Kubernetes.

pub mod admin;
pub mod settings;

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener as StdTcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use serde_json::json;
use sluice_controller::{Autoscaler, Controller};
use sluice_platform::routing::RoutingFeed;
use sluice_platform::{Clock, SystemClock};
use sluice_platform_local::process::{Process, pass_listener};
use sluice_platform_local::{SqliteStore, Supervisor, SupervisorConfig};
use sluice_runtime::accept::Acceptor;
use sluice_runtime::backoff::Backoff;
use tokio::net::UnixListener;
use tokio::process::Command;
use tokio::sync::{oneshot, watch};

use sluice_platform_local::Home;

/// How many connections the admin socket holds at once (the CLI, the activator's routing
/// stream and reports).
const ADMIN_CONNECTIONS: usize = 1024;

/// Options of `sluice local up`.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The home directory.
    pub home: Home,
    /// Port of the activator on 127.0.0.1.
    pub http_port: u16,
    /// Default domain of routes.
    pub domain: String,
}

/// Takes the home's lock, or explains who holds it.
fn lock_home(home: &Home) -> anyhow::Result<Flock<File>> {
    let path = home.lock();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)?;
            write!(lock, "{}", std::process::id())?;
            Ok(lock)
        }
        Err((_, _)) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another sluice daemon (pid {}) is already running on home {}; stop it first, or pass a different --home",
                pid.trim(),
                home.root().display()
            )
        }
    }
}

/// Opens the object store. While its storage is unavailable (the file locked by another
/// process, a full disk) says why once and retries every second, so the daemon starts as soon
/// as the cause is gone.
async fn open_store(path: &std::path::Path) -> anyhow::Result<SqliteStore> {
    let mut told = false;
    loop {
        match SqliteStore::open(path) {
            Ok(store) => return Ok(store),
            Err(sluice_platform::StoreError::Unavailable(why)) => {
                if !told {
                    eprintln!("Waiting for the object store: {why}");
                    told = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("cannot open {}", path.display()));
            }
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every warm replica costs the daemon
/// a handful of descriptors (pipes, sockets), and the common default soft limit of 1,024 would
/// stop it near 150 replicas.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Runs the local platform until `shutdown` resolves. `ready` is told once the admin API and
/// the activator are up.
pub async fn run(
    opts: UpOptions,
    ready: Option<oneshot::Sender<()>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let home = &opts.home;
    std::fs::create_dir_all(home.root())
        .with_context(|| format!("cannot create {}", home.root().display()))?;
    std::fs::set_permissions(home.root(), std::fs::Permissions::from_mode(0o700))?;
    std::fs::create_dir_all(home.logs())?;
    std::fs::create_dir_all(home.config())?;
    let _lock = lock_home(home)?;
    let files = raise_fd_limit();
    tracing::debug!(files, "Open-file limit.");

    // The front door's socket: bound here (refusing early and clearly when the port is
    // taken) and held for the daemon's life, each activator incarnation serving it.
    let front_door = sluice_runtime::listen((Ipv4Addr::LOCALHOST, opts.http_port).into())
        .and_then(tokio::net::TcpListener::into_std)
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{}; is something else using it? pass --http-port",
                opts.http_port
            )
        })?;

    let configs = settings::load(&home.config(), &opts.domain)?;
    let (settings_tx, settings_rx) = watch::channel(Arc::new(configs));
    tokio::spawn(settings::watch_files(
        home.config(),
        opts.domain.clone(),
        settings_tx,
    ));

    let store = Arc::new(open_store(&home.database()).await?);
    let exe = std::env::current_exe().context("cannot locate the sluice binary")?;
    let supervisor = Arc::new(Supervisor::new(SupervisorConfig {
        queue_proxy: vec![exe.display().to_string(), "queue-proxy".to_owned()],
        exec_shim: exe.clone(),
        log_dir: home.logs(),
        stop_grace: Duration::from_secs(5),
        drain_quiet: Duration::from_millis(300),
    }));
    let routing = Arc::new(RoutingFeed::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let autoscaler = Autoscaler::new(clock.clone());
    let autoscaler_task = tokio::spawn(sluice_controller::autoscaling::run(
        autoscaler.clone(),
        supervisor.clone(),
        stopped(stop_rx.clone()),
    ));
    let controller = Controller::new(
        store.clone(),
        supervisor.clone(),
        autoscaler.clone(),
        settings_rx.clone(),
        routing.clone(),
        clock,
    );
    let controller_task = tokio::spawn(controller.run(stopped(stop_rx.clone())));

    let socket = home.socket();
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("cannot bind {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let admin = Arc::new(admin::Admin {
        store: store.clone(),
        settings: settings_rx,
        routing,
        autoscaler,
        user: sluice_runtime::user_name(),
        info: json!({
            "domain": opts.domain,
            "httpPort": opts.http_port,
            "home": home.root().display().to_string(),
        }),
    });
    let acceptor = Acceptor::new(listener, ADMIN_CONNECTIONS, "admin socket");
    let admin_task = tokio::spawn(sluice_runtime::admin::serve(acceptor, move |req| {
        let admin = admin.clone();
        async move {
            match admin.handle(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        }
    }));

    let activator_task = tokio::spawn(keep_activator(
        exe,
        socket.clone(),
        front_door,
        home.logs(),
        stop_rx,
    ));
    eprintln!(
        "Sluice is running: http://NAME.NAMESPACE.{}:{} (home {}). Press Ctrl-C to stop.",
        opts.domain,
        opts.http_port,
        home.root().display()
    );
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    shutdown.await;
    eprintln!("Stopping: draining replicas.");
    stop_tx.send_replace(true);
    let _ = controller_task.await;
    let _ = autoscaler_task.await;
    admin_task.abort();
    supervisor.shutdown().await;
    let _ = activator_task.await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Runs the activator as a child process, restarting it if it dies, until stopped. Every
/// incarnation serves `listener`, which the daemon holds: while one is being replaced,
/// clients wait in the accept queue rather than being refused.
async fn keep_activator(
    exe: PathBuf,
    socket: PathBuf,
    listener: StdTcpListener,
    logs: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    // Back within 100 ms of a crash unless it keeps crashing within 10 s of starting.
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(5),
        Duration::from_secs(10),
    );
    loop {
        let mut cmd = Command::new(&exe);
        cmd.arg("activator")
            .env("SLUICE_ROUTING_SOCKET", &socket)
            .env(
                "SLUICE_ACTIVATOR_FD",
                sluice_runtime::PASSED_LISTENER_FD.to_string(),
            );
        pass_listener(&mut cmd, &listener);
        let started = tokio::time::Instant::now();
        let mut child = match Process::spawn(cmd, &logs.join("activator.log")).await {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(%error, "Cannot start the activator; retrying.");
                let pause = backoff.after(Duration::ZERO);
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let exited = tokio::select! {
            _ = stop.wait_for(|s| *s) => None,
            status = child.wait() => Some(status),
        };
        match exited {
            None => {
                child.stop(Duration::from_secs(5)).await;
                return;
            }
            Some(status) => {
                let tail = child.output_tail().await;
                tracing::error!(?status, %tail, "The activator exited; restarting it.");
            }
        }
        tokio::time::sleep(backoff.after(started.elapsed())).await;
    }
}
