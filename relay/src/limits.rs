//! The relay's time and space limits, with nginx's defaults where nginx has one, each with an
//! environment variable read once at start ([`Limits::from_env`]).

use std::time::Duration;

use sluice_runtime::env::{Env, EnvError, parse_or};

/// Bounds on what one client connection may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A request head must arrive whole within this long of its first byte (or of the
    /// connection's start, for the first request); past it the client gets 408 and the
    /// connection closes. `SLUICE_HTTP_HEAD_TIMEOUT_SECONDS`, default 60 (nginx's
    /// `client_header_timeout`).
    pub head_timeout: Duration,
    /// An idle keep-alive connection is closed after this long without a request.
    /// `SLUICE_HTTP_KEEPALIVE_TIMEOUT_SECONDS`, default 75 (nginx's `keepalive_timeout`).
    pub keepalive_timeout: Duration,
    /// The longest silence while a request body is read; past it the client gets 408, the
    /// connection closes and any replica slot the request held is freed.
    /// `SLUICE_HTTP_BODY_TIMEOUT_SECONDS`, default 60 (nginx's `client_body_timeout`).
    pub body_timeout: Duration,
    /// Largest request or response head (431 for a request, 502 for a response).
    /// `SLUICE_HTTP_MAX_HEAD_BYTES`, default 32 KiB (nginx's 4 × 8 KiB header buffers).
    pub max_head: usize,
    /// How much of a request body is read before the request takes a replica slot: a body
    /// this small is forwarded whole, so a slow client never holds a slot while it sends it.
    /// `SLUICE_HTTP_BODY_BUFFER_BYTES`, default 16 KiB (nginx's `client_body_buffer_size`).
    pub body_buffer: usize,
    /// Most client connections open at once per listener; more wait in the kernel's backlog.
    /// `SLUICE_HTTP_MAX_CONNECTIONS`, default 10,000.
    pub max_connections: usize,
    /// How long an idle upstream connection stays pooled; kept below the keep-alive timeout
    /// so that a pooled connection to a Sluice proxy is dropped here before the other end
    /// closes it. `SLUICE_HTTP_POOL_IDLE_SECONDS`, default 60.
    pub pool_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            max_head: 32 * 1024,
            body_buffer: 16 * 1024,
            max_connections: 10_000,
            pool_idle: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// The limits from `env`, defaults for what is unset.
    pub fn from_env(env: &impl Env) -> Result<Self, EnvError> {
        let d = Self::default();
        let secs = |key, default: Duration| -> Result<Duration, EnvError> {
            let s: u64 = parse_or(env, key, default.as_secs())?;
            if s == 0 {
                return Err(EnvError {
                    key,
                    message: "must be at least 1 (seconds)".into(),
                });
            }
            Ok(Duration::from_secs(s))
        };
        let at_least = |key, default: usize, min: usize| -> Result<usize, EnvError> {
            let n = parse_or(env, key, default)?;
            if n < min {
                return Err(EnvError {
                    key,
                    message: format!("{n} is too small; use at least {min}"),
                });
            }
            Ok(n)
        };
        Ok(Self {
            head_timeout: secs("SLUICE_HTTP_HEAD_TIMEOUT_SECONDS", d.head_timeout)?,
            keepalive_timeout: secs("SLUICE_HTTP_KEEPALIVE_TIMEOUT_SECONDS", d.keepalive_timeout)?,
            body_timeout: secs("SLUICE_HTTP_BODY_TIMEOUT_SECONDS", d.body_timeout)?,
            max_head: at_least("SLUICE_HTTP_MAX_HEAD_BYTES", d.max_head, 1024)?,
            body_buffer: at_least("SLUICE_HTTP_BODY_BUFFER_BYTES", d.body_buffer, 0)?,
            max_connections: at_least("SLUICE_HTTP_MAX_CONNECTIONS", d.max_connections, 1)?,
            pool_idle: secs("SLUICE_HTTP_POOL_IDLE_SECONDS", d.pool_idle)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let none: HashMap<String, String> = HashMap::new();
        assert_eq!(Limits::from_env(&none).unwrap(), Limits::default());
        let env: HashMap<String, String> = [
            (
                "SLUICE_HTTP_HEAD_TIMEOUT_SECONDS".to_owned(),
                "5".to_owned(),
            ),
            ("SLUICE_HTTP_MAX_CONNECTIONS".to_owned(), "100".to_owned()),
        ]
        .into();
        let limits = Limits::from_env(&env).unwrap();
        assert_eq!(limits.head_timeout, Duration::from_secs(5));
        assert_eq!(limits.max_connections, 100);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (key, value) in [
            ("SLUICE_HTTP_BODY_TIMEOUT_SECONDS", "0"),
            ("SLUICE_HTTP_MAX_HEAD_BYTES", "12"),
            ("SLUICE_HTTP_KEEPALIVE_TIMEOUT_SECONDS", "soon"),
        ] {
            let env: HashMap<String, String> = [(key.to_owned(), value.to_owned())].into();
            let err = Limits::from_env(&env).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
