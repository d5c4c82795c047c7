//! Child processes of the daemon: spawned in their own process group, killed with the daemon,
//! stopped gracefully (SIGTERM, then SIGKILL after a grace period), their output kept in a log
//! file and its last lines in memory for failure messages.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How many output lines are kept for failure messages.
const TAIL_LINES: usize = 12;

/// Longest line kept whole: a longer one is split (an app's output never grows a buffer
/// without bound).
const MAX_LINE: u64 = 16 * 1024;

/// A running child process.
pub struct Process {
    child: Child,
    pid: Option<Pid>,
    tail: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<JoinHandle<()>>,
}

/// The environment variable naming the daemon's pid to a child it starts: the child (this
/// binary, see [`die_with_parent`]) asks the kernel to kill it when the daemon dies.
pub const PARENT_ENV: &str = "SLUICE_PARENT_PID";

/// The hidden command of this binary that runs another program as a child of the daemon:
/// `sluice __exec PROGRAM ARGS...` (see [`exec_shim`]).
pub const EXEC_SHIM: &str = "__exec";

/// Makes `cmd` a process-group leader that dies with the daemon, with no stdin.
///
/// No `pre_exec` closure: with one, std must `fork` the daemon, copying the page tables of
/// its whole heap (hundreds of MB with 10,000 Services) for every replica it starts. Without
/// one std uses `posix_spawn`, whose cost does not grow with the daemon. The child sets its
/// own death signal instead ([`die_with_parent`]).
fn harden(cmd: &mut Command) {
    cmd.stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .env(PARENT_ENV, std::process::id().to_string());
}

/// Called first thing by a child this module started: the kernel kills the process when the
/// daemon dies (`PR_SET_PDEATHSIG`), and a process whose daemon died before that was set
/// exits at once. Does nothing in a process not started by the daemon.
pub fn die_with_parent() {
    let Some(parent) = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
        || nix::unistd::getppid().as_raw() != parent
    {
        std::process::exit(1);
    }
}

/// `sluice __exec PROGRAM ARGS...`: replaces this process with `PROGRAM`, as started by
/// [`Process::spawn_program`]. Descriptor 0 is a pipe back to the daemon: it is moved off
/// stdin (stdin becomes `/dev/null`), closed by a successful exec, and given the errno of a
/// failed one, so the daemon reports "cannot run" exactly as a failed spawn.
pub fn exec_shim(mut args: impl Iterator<Item = std::ffi::OsString>) -> ! {
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::process::CommandExt;
    // Off stdin, and closed by exec: F_DUPFD_CLOEXEC.
    let mut report = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::fs::File::from);
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    let error = match args.next() {
        Some(program) => std::process::Command::new(program)
            .args(args)
            .env_remove(PARENT_ENV)
            .exec(),
        None => std::io::Error::from_raw_os_error(nix::libc::EINVAL),
    };
    let errno = error.raw_os_error().unwrap_or(nix::libc::EINVAL);
    if let Some(report) = &mut report {
        let _ = report.write_all(&errno.to_le_bytes());
    }
    std::process::exit(127);
}

/// Gives `cmd`'s process `listener` as descriptor [`PASSED_LISTENER_FD`] (see
/// [`sluice_runtime::adopt_listener`]); the caller keeps its own copy open, so the socket
/// outlives the child. This needs a `pre_exec` closure, so std forks the daemon for this
/// child: fine for the activator, started once, not for replicas.
///
/// [`PASSED_LISTENER_FD`]: sluice_runtime::PASSED_LISTENER_FD
#[allow(unsafe_code)]
pub fn pass_listener(cmd: &mut Command, listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    let target = sluice_runtime::PASSED_LISTENER_FD;
    // SAFETY: the closure runs in the forked child before exec and only calls dup2(2) and
    // fcntl(2), which are async-signal-safe, on descriptors of the child's own table.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set: clear it instead.
            let done = if fd == target {
                nix::libc::fcntl(target, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(fd, target)
            };
            if done == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A command that runs `program` through this binary's exec shim ([`exec_shim`]), for
/// [`Process::spawn_program`]; its arguments, environment and directory are the program's.
pub fn shimmed(exe: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg(EXEC_SHIM).arg(program);
    cmd
}

impl Process {
    /// Spawns `cmd` with its stdout and stderr appended to `log` and kept as a tail. A log
    /// that cannot be opened (a full or read-only disk) does not stop the process: its output
    /// is then only kept as the tail.
    ///
    /// `cmd` runs this binary (a queue-proxy, the activator): it must call
    /// [`die_with_parent`] first. Any other program goes through [`Process::spawn_program`].
    pub async fn spawn(mut cmd: Command, log: &Path) -> std::io::Result<Self> {
        harden(&mut cmd);
        Self::start(cmd, log).await
    }

    /// Spawns any program as [`Process::spawn`] does, through this binary's exec shim: `cmd`
    /// comes from [`shimmed`]. Returns once the program was exec'd, or with the error that
    /// stopped it (a missing program, a directory that is not there), as a spawn would.
    pub async fn spawn_program(mut cmd: Command, log: &Path) -> std::io::Result<Self> {
        harden(&mut cmd);
        let (report, theirs) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        cmd.stdin(Stdio::from(theirs));
        let mut process = Self::start(cmd, log).await?;
        let mut report = tokio::net::unix::pipe::Receiver::from_owned_fd(report)?;
        let mut errno = [0u8; 4];
        let mut read = 0;
        // The shim's own start is bounded; past that, the program counts as started.
        let reading = async {
            while read < errno.len() {
                match report.read(&mut errno[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), reading).await;
        if read == errno.len() {
            let _ = process.child.wait().await;
            return Err(std::io::Error::from_raw_os_error(i32::from_le_bytes(errno)));
        }
        Ok(process)
    }

    /// Spawns a hardened `cmd`, then drops it: its copy of a descriptor given to the child
    /// (the report pipe) closes.
    async fn start(mut cmd: Command, log: &Path) -> std::io::Result<Self> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let file = match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .await
        {
            Ok(file) => Some(Arc::new(tokio::sync::Mutex::new(file))),
            Err(error) => {
                tracing::warn!(log = %log.display(), %error, "Cannot open the log; keeping only the last lines of output.");
                None
            }
        };
        let mut child = cmd.spawn()?;
        drop(cmd);
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw);
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(pump(out, file.clone(), tail.clone())));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(pump(err, file, tail.clone())));
        }
        Ok(Self {
            child,
            pid,
            tail,
            readers,
        })
    }

    /// The process's id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.pid.and_then(|p| u32::try_from(p.as_raw()).ok())
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The last lines the process wrote, after its output pipes closed (bounded wait).
    pub async fn output_tail(&mut self) -> String {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_millis(300), reader).await;
        }
        let tail = self.tail.lock().expect("tail lock poisoned");
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Sends SIGTERM to the process group, waits up to `grace`, then SIGKILLs the group.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.pid {
            let _ = killpg(pid, Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait())
                .await
                .is_err()
            {
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = self.child.wait().await;
            }
            // Children the process left behind in its group go too.
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

/// Copies a child's output to its log and tail, line by line, whatever bytes it writes: the
/// pipe is drained until the child closes it, so a child never blocks on its own output.
async fn pump(
    stream: impl AsyncRead + Unpin,
    file: Option<Arc<tokio::sync::Mutex<tokio::fs::File>>>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(file) = &file {
            let mut f = file.lock().await;
            let _ = f.write_all(&line).await;
            if line.last() != Some(&b'\n') {
                let _ = f.write_all(b"\n").await;
            }
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let mut t = tail.lock().expect("tail lock poisoned");
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(text.to_owned());
    }
}

/// Knative's reason for a container that exited: `ExitCode<N>` (signals as 128 + N).
pub fn exit_reason(status: &ExitStatus) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    (code, format!("ExitCode{code}"))
}
