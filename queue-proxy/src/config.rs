//! Queue-proxy configuration, parsed once from an injectable environment source.

use std::time::Duration;

use sluice_relay::Limits;
pub use sluice_runtime::env::{Env, ProcessEnv};
use sluice_runtime::env::{EnvError, parse_or};

/// How readiness of the user process is checked (the contract's [`Probe`]).
pub use sluice_api::contract::Probe as ReadinessProbe;
use sluice_api::contract::{self, env as names};

/// A bad or missing environment variable.
#[derive(Debug, thiserror::Error)]
#[error("queue-proxy: environment variable {key}: {message}")]
pub struct ConfigError {
    key: &'static str,
    message: String,
}

/// Everything the queue-proxy needs to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `QUEUE_SERVING_PORT`: where requests arrive.
    pub serving_port: u16,
    /// `QUEUE_ADMIN_PORT`: `/metrics` and `/healthz`.
    pub admin_port: u16,
    /// `USER_PORT`: where the user process listens.
    pub user_port: u16,
    /// `USER_PROTOCOL`: what the user process speaks (`h2c` or `http1`).
    pub user_protocol: contract::UserProtocol,
    /// `CONTAINER_CONCURRENCY`: 0 means unlimited.
    pub container_concurrency: u32,
    /// `REVISION_TIMEOUT_SECONDS`.
    pub timeout: Duration,
    /// `REVISION_RESPONSE_START_TIMEOUT_SECONDS` (0 = off).
    pub response_start_timeout: Option<Duration>,
    /// `REVISION_IDLE_TIMEOUT_SECONDS` (0 = off).
    pub idle_timeout: Option<Duration>,
    /// `SERVING_NAMESPACE`.
    pub namespace: String,
    /// `SERVING_REVISION`.
    pub revision: String,
    /// `SERVING_POD`.
    pub pod: String,
    /// `SERVING_READINESS_PROBE` (`tcp` or `http`) and `SERVING_READINESS_PATH`.
    pub readiness: ReadinessProbe,
    /// The relay's limits on client connections (`SLUICE_HTTP_*`).
    pub limits: Limits,
}

fn required<T: std::str::FromStr>(env: &impl Env, key: &'static str) -> Result<T, ConfigError> {
    let raw = env.get(key).ok_or(ConfigError {
        key,
        message: "missing".into(),
    })?;
    raw.trim().parse().map_err(|_| ConfigError {
        key,
        message: format!("{raw:?} is not valid"),
    })
}

fn optional<T: std::str::FromStr>(
    env: &impl Env,
    key: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    parse_or(env, key, default).map_err(ConfigError::from)
}

impl From<EnvError> for ConfigError {
    fn from(e: EnvError) -> Self {
        Self {
            key: e.key,
            message: e.message,
        }
    }
}

fn seconds(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

impl Config {
    /// Parses the configuration from `env`.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let readiness = match env.get(names::READINESS_PROBE).as_deref() {
            None | Some("") | Some("tcp") => ReadinessProbe::Tcp,
            Some("http") => ReadinessProbe::Http(
                env.get(names::READINESS_PATH)
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/".into()),
            ),
            Some(other) => {
                return Err(ConfigError {
                    key: names::READINESS_PROBE,
                    message: format!("{other:?} is not tcp or http"),
                });
            }
        };
        Ok(Self {
            serving_port: optional(env, names::SERVING_PORT, contract::SERVING_PORT)?,
            admin_port: optional(env, names::ADMIN_PORT, contract::ADMIN_PORT)?,
            user_port: required(env, names::USER_PORT)?,
            user_protocol: match env.get(names::USER_PROTOCOL).as_deref() {
                None | Some("" | "http1") => contract::UserProtocol::Http1,
                Some("h2c") => contract::UserProtocol::H2c,
                Some(other) => {
                    return Err(ConfigError {
                        key: names::USER_PROTOCOL,
                        message: format!("{other:?} is not h2c or http1"),
                    });
                }
            },
            container_concurrency: optional(env, names::CONTAINER_CONCURRENCY, 0)?,
            timeout: Duration::from_secs(optional(env, names::REVISION_TIMEOUT_SECONDS, 300)?),
            response_start_timeout: seconds(optional(
                env,
                names::RESPONSE_START_TIMEOUT_SECONDS,
                0,
            )?),
            idle_timeout: seconds(optional(env, names::IDLE_TIMEOUT_SECONDS, 0)?),
            namespace: env.get(names::NAMESPACE).unwrap_or_default(),
            revision: env.get(names::REVISION).unwrap_or_default(),
            pod: env.get(names::POD).unwrap_or_default(),
            readiness,
            limits: Limits::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn knative_variables_parse() {
        let cfg = Config::from_env(&env(&[
            ("USER_PORT", "9000"),
            ("CONTAINER_CONCURRENCY", "3"),
            ("REVISION_TIMEOUT_SECONDS", "2"),
            ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "0"),
            ("SERVING_READINESS_PROBE", "http"),
            ("SERVING_READINESS_PATH", "/ready"),
        ]))
        .unwrap();
        assert_eq!(cfg.user_port, 9000);
        assert_eq!(cfg.serving_port, 8012);
        assert_eq!(cfg.container_concurrency, 3);
        assert_eq!(cfg.timeout, Duration::from_secs(2));
        assert_eq!(cfg.response_start_timeout, None);
        assert_eq!(cfg.readiness, ReadinessProbe::Http("/ready".into()));
    }

    #[test]
    fn what_the_platforms_write_is_what_the_queue_proxy_reads() {
        let written = contract::QueueProxyEnv {
            serving_port: 18012,
            admin_port: 18022,
            bind_address: None,
            user_port: 9000,
            user_protocol: contract::UserProtocol::H2c,
            container_concurrency: 4,
            timeout_seconds: 30,
            response_start_timeout_seconds: Some(5),
            idle_timeout_seconds: None,
            namespace: "e1".into(),
            service: "same".into(),
            configuration: "same".into(),
            revision: "same-00002".into(),
            pod: Some("same-00002-1".into()),
            probe: ReadinessProbe::Http("/healthz".into()),
            drain_quiet_milliseconds: Some(300),
        };
        let vars: HashMap<String, String> = written
            .vars()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let cfg = Config::from_env(&vars).unwrap();
        assert_eq!(
            (cfg.serving_port, cfg.admin_port, cfg.user_port),
            (18012, 18022, 9000)
        );
        assert_eq!(cfg.container_concurrency, 4);
        assert_eq!(cfg.user_protocol, contract::UserProtocol::H2c);
        assert_eq!(cfg.timeout, Duration::from_secs(30));
        assert_eq!(cfg.response_start_timeout, Some(Duration::from_secs(5)));
        assert_eq!(cfg.idle_timeout, None);
        assert_eq!(
            (
                cfg.namespace.as_str(),
                cfg.revision.as_str(),
                cfg.pod.as_str()
            ),
            ("e1", "same-00002", "same-00002-1")
        );
        assert_eq!(cfg.readiness, ReadinessProbe::Http("/healthz".into()));
    }

    #[test]
    fn missing_user_port_is_named() {
        let err = Config::from_env(&env(&[])).unwrap_err();
        assert!(err.to_string().contains("USER_PORT"), "{err}");
    }
}
