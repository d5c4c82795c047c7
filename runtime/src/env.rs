//! Where configuration comes from: the process environment in production, a map in tests
//! (which never set process variables).

use std::collections::HashMap;

/// A source of configuration values by name.
pub trait Env {
    /// The value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// A bad environment variable: its name and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {key}: {message}")]
pub struct EnvError {
    /// The variable.
    pub key: &'static str,
    /// What is wrong, and what it should be.
    pub message: String,
}

/// `key` parsed, or `default` when unset or blank.
pub fn parse_or<T: std::str::FromStr>(
    env: &impl Env,
    key: &'static str,
    default: T,
) -> Result<T, EnvError> {
    match env.get(key) {
        None => Ok(default),
        Some(raw) if raw.trim().is_empty() => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| EnvError {
            key,
            message: format!("{raw:?} is not valid"),
        }),
    }
}
