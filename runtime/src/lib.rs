//! What every Sluice component binary shares, so that no component borrows it from another:
//! logging ([`init_logging`]), the shutdown signal ([`terminate_signal`]), the process's
//! descriptor limit ([`raise_fd_limit`]), configuration from an injectable environment
//! ([`env`]), accepting connections with a bound and a backoff ([`accept`]), restart pauses
//! ([`backoff`]), and the small
//! HTTP/1.1 server behind admin ports and sockets ([`admin`]), and the concurrency measure
//! both proxies report ([`concurrency`]).
//!
//! Owns what a Sluice process needs around its work. Must not depend on the control plane or
//! the data plane's crates.

pub mod accept;
pub mod admin;
pub mod backoff;
pub mod concurrency;
pub mod env;
pub mod uds;

/// Who is running this process, for the creator and lastModifier annotations: `$USER`, else
/// the uid.
pub fn user_name() -> String {
    std::env::var("USER").unwrap_or_else(|_| format!("uid-{}", nix::unistd::getuid()))
}

/// Logs to stderr, filtered by `$SLUICE_LOG` (default `info`), plain when not a terminal.
/// Every Sluice binary logs this way.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Lets a closed pipe end this process quietly, as it ends `cat` or `grep`: for the CLI's
/// client commands (`sluice service list | head`). Rust ignores SIGPIPE, so printing to a
/// closed pipe would otherwise panic. Servers keep it ignored: a peer that goes away is an
/// error to handle there, not a reason to die.
#[allow(unsafe_code)]
pub fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler code; called before any thread is started.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Resolves on SIGTERM or SIGINT.
pub async fn terminate_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Listens on `addr` with the system's largest accept backlog (`net.core.somaxconn`, as Go's
/// listeners do), not tokio's 1024: a burst of connections past the backlog is dropped or
/// reset by the kernel before the proxy can bound or serve it.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let backlog = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(4096);
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The descriptor a supervisor hands its child's listening socket on (the first after
/// stdin, stdout and stderr, as in systemd's socket activation).
pub const PASSED_LISTENER_FD: i32 = 3;

/// Adopts the listening TCP socket a supervisor passed on descriptor `fd` (see
/// [`PASSED_LISTENER_FD`]): the supervisor holds it across this process's restarts, so
/// connections wait in the kernel's accept queue instead of being refused while no process
/// accepts. Refuses a descriptor that is not a listening TCP socket.
#[allow(unsafe_code)]
pub fn adopt_listener(fd: i32) -> std::io::Result<tokio::net::TcpListener> {
    use nix::sys::socket::{
        AddressFamily, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
    };
    use std::os::fd::{BorrowedFd, FromRawFd};
    let not_ours = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a listening TCP socket ({what})"),
        )
    };
    // SAFETY: only borrowed for the checks below, while the descriptor is open (fcntl fails
    // otherwise and nothing else is done with it).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|e| not_ours(&e.to_string()))?;
    if !getsockopt(&borrowed, sockopt::AcceptConn).map_err(|e| not_ours(&e.to_string()))? {
        return Err(not_ours("not listening"));
    }
    let addr: SockaddrStorage = getsockname(fd).map_err(|e| not_ours(&e.to_string()))?;
    if !matches!(
        addr.family(),
        Some(AddressFamily::Inet | AddressFamily::Inet6)
    ) {
        return Err(not_ours("not TCP/IP"));
    }
    // SAFETY: a listening socket, open, handed to this process to own; nothing else in the
    // process refers to this descriptor.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// Raises the soft limit on open descriptors to the hard limit, as Go's runtime does for
/// Knative's components: a proxy's connection bound, not a default soft limit of 1024, should
/// decide how many clients it holds. Returns the soft limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}
