//! The queue-proxy's contract, as Knative spells it: the environment whoever starts a
//! queue-proxy gives it (the local supervisor, a Deployment's sidecar), the ports it takes
//! beside the user's container, and the names of the metrics the autoscaler scrapes. One
//! place, read by the queue-proxy and written by both platforms through [`QueueProxyEnv`].

/// Where the queue-proxy serves requests for its replica (Knative's 8012).
pub const SERVING_PORT: u16 = 8012;
/// Where the queue-proxy answers probes and drain requests (Knative's 8022).
pub const ADMIN_PORT: u16 = 8022;
/// Where the autoscaler scrapes the queue-proxy's metrics on a cluster (Knative's 9090).
pub const METRICS_PORT: u16 = 9090;
/// Ports a user's container may not declare: the queue-proxy's, and Knative's others.
pub const RESERVED_PORTS: [i32; 6] = [8012, 8013, 8022, 9090, 9091, 8008];

/// The queue-proxy's environment, by name.
pub mod env {
    /// Port to serve requests on.
    pub const SERVING_PORT: &str = "QUEUE_SERVING_PORT";
    /// Port of the admin (probe, drain, metrics) server.
    pub const ADMIN_PORT: &str = "QUEUE_ADMIN_PORT";
    /// The protocol the user process serves: `h2c` (cleartext HTTP/2, for a port named
    /// `h2c`) or `http1` (the default).
    pub const USER_PROTOCOL: &str = "USER_PROTOCOL";
    /// Address to bind (loopback unless set).
    pub const BIND_ADDRESS: &str = "QUEUE_BIND_ADDRESS";
    /// How long the queue-proxy waits for quiet before it exits when draining.
    pub const DRAIN_QUIET_MILLISECONDS: &str = "QUEUE_DRAIN_QUIET_MILLISECONDS";
    /// The user process's port.
    pub const USER_PORT: &str = "USER_PORT";
    /// containerConcurrency (0 = unlimited).
    pub const CONTAINER_CONCURRENCY: &str = "CONTAINER_CONCURRENCY";
    /// The revision's request timeout, seconds.
    pub const REVISION_TIMEOUT_SECONDS: &str = "REVISION_TIMEOUT_SECONDS";
    /// Time allowed until the first response byte, seconds.
    pub const RESPONSE_START_TIMEOUT_SECONDS: &str = "REVISION_RESPONSE_START_TIMEOUT_SECONDS";
    /// Time allowed between response bytes, seconds.
    pub const IDLE_TIMEOUT_SECONDS: &str = "REVISION_IDLE_TIMEOUT_SECONDS";
    /// The revision's namespace.
    pub const NAMESPACE: &str = "SERVING_NAMESPACE";
    /// The revision's service (empty without one).
    pub const SERVICE: &str = "SERVING_SERVICE";
    /// The revision's configuration.
    pub const CONFIGURATION: &str = "SERVING_CONFIGURATION";
    /// The revision.
    pub const REVISION: &str = "SERVING_REVISION";
    /// The replica (pod) name.
    pub const POD: &str = "SERVING_POD";
    /// `tcp` or `http`: how the queue-proxy probes the user process.
    pub const READINESS_PROBE: &str = "SERVING_READINESS_PROBE";
    /// The path of an `http` readiness probe.
    pub const READINESS_PATH: &str = "SERVING_READINESS_PATH";
}

/// What the user's process gets in its environment (besides its container's `env`).
pub mod user_env {
    /// The port to listen on.
    pub const PORT: &str = "PORT";
    /// The service name.
    pub const SERVICE: &str = "K_SERVICE";
    /// The configuration name.
    pub const CONFIGURATION: &str = "K_CONFIGURATION";
    /// The revision name.
    pub const REVISION: &str = "K_REVISION";
    /// Names a container's `env` may not set.
    pub const RESERVED: [&str; 4] = [PORT, SERVICE, CONFIGURATION, REVISION];
}

/// The metrics the queue-proxy renders and the autoscaler scrapes, Prometheus text format.
pub mod metrics {
    /// Time-weighted average of requests in flight over the last second.
    pub const AVERAGE_CONCURRENCY: &str = "queue_average_concurrent_requests";
    /// Requests per second over the last second.
    pub const REQUESTS_PER_SECOND: &str = "queue_requests_per_second";
}

/// How the queue-proxy probes the user process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The user port accepts a TCP connection.
    Tcp,
    /// GET on this path answers 2xx.
    Http(String),
}

/// The protocol a user process serves, from its port's name as Knative reads it: `h2c` is
/// cleartext HTTP/2 (with prior knowledge), anything else HTTP/1.1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UserProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// Cleartext HTTP/2.
    H2c,
}

impl UserProtocol {
    /// The protocol a port named `name` serves.
    pub fn of_port(name: Option<&str>) -> Self {
        if name == Some("h2c") {
            Self::H2c
        } else {
            Self::Http1
        }
    }

    /// Its name in [`env::USER_PROTOCOL`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::H2c => "h2c",
        }
    }
}

/// One queue-proxy's environment, built the same way by every platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueProxyEnv {
    /// The port to serve on.
    pub serving_port: u16,
    /// The admin port.
    pub admin_port: u16,
    /// The address to bind, when not loopback.
    pub bind_address: Option<String>,
    /// The user process's port.
    pub user_port: u16,
    /// The protocol it serves on that port.
    pub user_protocol: UserProtocol,
    /// containerConcurrency.
    pub container_concurrency: u32,
    /// Request timeout, seconds.
    pub timeout_seconds: u64,
    /// Time to the first response byte, seconds, if limited.
    pub response_start_timeout_seconds: Option<u64>,
    /// Time between response bytes, seconds, if limited.
    pub idle_timeout_seconds: Option<u64>,
    /// Namespace, service, configuration, revision.
    pub namespace: String,
    /// The service (empty without one).
    pub service: String,
    /// The configuration.
    pub configuration: String,
    /// The revision.
    pub revision: String,
    /// The replica's name, when the platform knows it here (a pod gets it from the downward
    /// API instead).
    pub pod: Option<String>,
    /// The readiness probe.
    pub probe: Probe,
    /// How long to wait for quiet when draining, milliseconds, when not the default.
    pub drain_quiet_milliseconds: Option<u64>,
}

impl QueueProxyEnv {
    /// The variables, in a stable order.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (env::SERVING_PORT, self.serving_port.to_string()),
            (env::ADMIN_PORT, self.admin_port.to_string()),
            (env::USER_PORT, self.user_port.to_string()),
            (env::USER_PROTOCOL, self.user_protocol.as_str().to_owned()),
            (
                env::CONTAINER_CONCURRENCY,
                self.container_concurrency.to_string(),
            ),
            (
                env::REVISION_TIMEOUT_SECONDS,
                self.timeout_seconds.to_string(),
            ),
        ];
        if let Some(s) = self.response_start_timeout_seconds {
            out.push((env::RESPONSE_START_TIMEOUT_SECONDS, s.to_string()));
        }
        if let Some(s) = self.idle_timeout_seconds {
            out.push((env::IDLE_TIMEOUT_SECONDS, s.to_string()));
        }
        if let Some(a) = &self.bind_address {
            out.push((env::BIND_ADDRESS, a.clone()));
        }
        out.extend([
            (env::NAMESPACE, self.namespace.clone()),
            (env::SERVICE, self.service.clone()),
            (env::CONFIGURATION, self.configuration.clone()),
            (env::REVISION, self.revision.clone()),
        ]);
        if let Some(pod) = &self.pod {
            out.push((env::POD, pod.clone()));
        }
        let (kind, path) = match &self.probe {
            Probe::Tcp => ("tcp", String::new()),
            Probe::Http(path) => ("http", path.clone()),
        };
        out.push((env::READINESS_PROBE, kind.to_owned()));
        out.push((env::READINESS_PATH, path));
        if let Some(ms) = self.drain_quiet_milliseconds {
            out.push((env::DRAIN_QUIET_MILLISECONDS, ms.to_string()));
        }
        out
    }
}
