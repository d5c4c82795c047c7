//! Starts a local platform in a temporary home and talks to it the way a user does.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `sluice` binary under test.
pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// The test program (a cargo example of this package, built by `cargo test`).
pub fn testapp() -> PathBuf {
    example("testapp")
}

/// A cargo example of this package (built by `cargo test`) by name.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let app = dir.join("examples").join(name);
    assert!(
        app.exists(),
        "{} missing: cargo test builds it",
        app.display()
    );
    app
}

pub use sluice_test_support::free_port;

/// A running `sluice local up` in its own home.
pub struct Platform {
    /// The home directory (kept until drop).
    pub home: tempfile::TempDir,
    /// The activator's port.
    pub port: u16,
    daemon: Option<Child>,
}

impl Platform {
    /// Starts a daemon and waits until its admin API answers.
    pub fn start() -> Self {
        Self::start_with_config(&[])
    }

    /// Starts a daemon whose home has these config files (`name`, YAML) from the first moment.
    pub fn start_with_config(files: &[(&str, &str)]) -> Self {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        for (name, yaml) in files {
            std::fs::write(config.join(name), yaml).unwrap();
        }
        let port = free_port();
        let mut p = Self {
            home,
            port,
            daemon: None,
        };
        p.up();
        p
    }

    /// Starts a daemon on `home` (a directory the test prepared: a file system mounted there).
    pub fn start_on(home: tempfile::TempDir) -> Self {
        let mut p = Self {
            home,
            port: free_port(),
            daemon: None,
        };
        p.up();
        p
    }

    /// Starts the daemon on this home and port again.
    pub fn up(&mut self) {
        self.spawn_daemon();
        self.eventually(Duration::from_secs(20), "daemon answers", || {
            self.sluice(&["service", "list"]).status.success()
                && TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok()
        });
    }

    /// Whether the daemon process is still running.
    pub fn running(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|d| d.try_wait().ok().flatten().is_none())
    }

    /// What the daemon printed so far.
    pub fn daemon_output(&self) -> String {
        std::fs::read_to_string(self.home.path().join("daemon.out")).unwrap_or_default()
    }

    /// Starts the daemon without waiting for it to answer.
    pub fn spawn_daemon(&mut self) {
        let log = std::fs::File::create(self.home.path().join("daemon.out")).unwrap();
        let child = Command::new(sluice_bin())
            .args(["local", "up", "--http-port", &self.port.to_string()])
            .env("SLUICE_HOME", self.home.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
    }

    /// The daemon's pid.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    /// Kills the daemon and every child of it with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let pid = self.daemon_pid();
        for child in children_of(pid) {
            let _ = Command::new("kill")
                .args(["-9", &child.to_string()])
                .status();
        }
        let mut daemon = self.daemon.take().unwrap();
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    }

    /// Kills the daemon alone with SIGKILL: its children are left to the kernel.
    pub fn kill9_daemon_only(&mut self) {
        let mut daemon = self.daemon.take().unwrap();
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    }

    /// Runs `sluice ARGS` against this home.
    pub fn sluice(&self, args: &[&str]) -> Output {
        Command::new(sluice_bin())
            .args(args)
            .env("SLUICE_HOME", self.home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `sluice ARGS`, asserting success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.sluice(args);
        assert!(
            out.status.success(),
            "sluice {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `sluice apply -f -` with `yaml` on standard input.
    pub fn apply(&self, yaml: &str) -> Output {
        let mut cmd = Command::new(sluice_bin());
        cmd.args(["apply", "-f", "-"])
            .env("SLUICE_HOME", self.home.path());
        with_stdin(cmd, yaml)
    }

    /// A service as JSON (`sluice service describe -o json`).
    pub fn service_json(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["service", "describe", name, "-o", "json"])).unwrap()
    }

    /// The names of the revisions in `namespace`, sorted.
    pub fn revision_names(&self, namespace: &str) -> Vec<String> {
        let out = self.ok(&["revision", "list", "-n", namespace, "-o", "json"]);
        let revs: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut names: Vec<String> = revs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Whether a service is Ready for its current generation.
    pub fn is_ready(&self, name: &str) -> bool {
        let out = self.sluice(&["service", "describe", name, "-o", "json"]);
        if !out.status.success() {
            return false;
        }
        ready_for_its_generation(&serde_json::from_slice(&out.stdout).unwrap())
    }

    /// GET `path` with `Host: host` through the activator: (status, body).
    pub fn get(&self, host: &str, path: &str) -> (u16, String) {
        http_get(self.port, host, path)
    }

    /// Polls `check` until it holds or `limit` passes (then panics naming `what`).
    pub fn eventually(&self, limit: Duration, what: &str, check: impl FnMut() -> bool) {
        let log = || {
            let out = std::fs::read_to_string(self.home.path().join("daemon.out"));
            format!(
                "daemon output:
{}",
                out.unwrap_or_default()
            )
        };
        sluice_test_support::eventually_or(limit, what, log, check);
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Platform {
    /// Stops the daemon as Ctrl-C would (SIGTERM; SIGKILL for it and its children after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &daemon.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if daemon.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let pid = daemon.id();
            for child in children_of(pid) {
                let _ = Command::new("kill")
                    .args(["-9", &child.to_string()])
                    .status();
            }
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

/// One HTTP/1.1 GET on a fresh connection to 127.0.0.1:`port`: (status, body).
pub fn http_get(port: u16, host: &str, path: &str) -> (u16, String) {
    http_get_at((Ipv4Addr::LOCALHOST, port).into(), host, path)
}

/// One HTTP/1.1 GET on a fresh connection to `addr`: (status, body), status 0 when the
/// connection fails.
pub fn http_get_at(addr: std::net::SocketAddr, host: &str, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(10)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Pids whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces): state, ppid, …
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        if rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Pids of live processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// A Knative Service manifest running the test app in `mode`, with extra template spec lines.
pub fn service_yaml(
    name: &str,
    mode: &str,
    marker: &str,
    target: &str,
    spec_extra: &str,
) -> String {
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    spec:
{spec_extra}      containers:
        - image: example.com/testapp
          command: ["{app}", "{mode}", "{marker}"]
          ports:
            - containerPort: 8080
          env:
            - name: TARGET
              value: "{target}"
"#,
        app = testapp().display()
    )
}

/// Runs `cmd` with `input` on its standard input: its output.
pub fn with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Whether a service (as JSON) is Ready for its current generation.
pub fn ready_for_its_generation(svc: &serde_json::Value) -> bool {
    let observed = svc["status"]["observedGeneration"] == svc["metadata"]["generation"];
    let ready = svc["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    observed && ready
}

/// An HTTP/1.1 client on one kept-alive connection to the activator.
pub struct KeepAlive {
    reader: std::io::BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAlive {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            reader: std::io::BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// GET `path` with `Host: host` (and extra headers): (status, body).
    pub fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        use std::io::BufRead;
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"
        )
        .unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header).unwrap();
            if header == "\r\n" || header.is_empty() {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).to_string())
    }
}

/// Counts responses by the `TARGET=` line of the test app's body.
pub fn count_targets(
    client: &mut KeepAlive,
    host: &str,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let (status, body) = client.get(host, "/", &[]);
        assert_eq!(status, 200, "{body}");
        let target = body
            .lines()
            .find_map(|l| l.strip_prefix("TARGET="))
            .unwrap_or("?")
            .to_owned();
        *counts.entry(target).or_default() += 1;
    }
    counts
}
