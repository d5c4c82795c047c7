//! The operator's config maps, with Knative's names, keys and defaults, parsed once into typed
//! structs. Each parser takes the `data` map of a ConfigMap, so the source (a file in the local
//! home, a ConfigMap in a cluster, a test's literal) is the caller's business.

pub mod autoscaler;
pub mod defaults;
pub mod domain;
pub mod features;
pub mod gc;
pub mod network;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

pub use autoscaler::AutoscalerConfig;
pub use defaults::DefaultsConfig;
pub use domain::DomainConfig;
pub use features::FeaturesConfig;
pub use gc::GcConfig;
pub use network::NetworkConfig;

/// A config map's `data`.
pub type ConfigData = BTreeMap<String, String>;

/// A bad value in a config map, naming the config map and key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{config_map}: key {key:?}: {message}")]
pub struct ConfigError {
    /// The config map's name, e.g. `config-defaults`.
    pub config_map: String,
    /// The key holding the bad value.
    pub key: String,
    /// What is wrong and what would be right.
    pub message: String,
}

/// All config maps Sluice reads, each defaulted when absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Configs {
    /// config-defaults.
    pub defaults: DefaultsConfig,
    /// config-autoscaler.
    pub autoscaler: AutoscalerConfig,
    /// config-network.
    pub network: NetworkConfig,
    /// config-domain.
    pub domain: DomainConfig,
    /// config-features.
    pub features: FeaturesConfig,
    /// config-gc.
    pub gc: GcConfig,
}

impl Configs {
    /// The names of the config maps Sluice reads.
    pub const NAMES: [&'static str; 6] = [
        DefaultsConfig::NAME,
        AutoscalerConfig::NAME,
        NetworkConfig::NAME,
        DomainConfig::NAME,
        GcConfig::NAME,
        FeaturesConfig::NAME,
    ];

    /// Every config from its config map's data (`data(name)`, empty when absent);
    /// `domain` is the default domain when config-domain names none.
    pub fn parse(data: impl Fn(&str) -> ConfigData, domain: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            defaults: DefaultsConfig::parse(&data(DefaultsConfig::NAME))?,
            autoscaler: AutoscalerConfig::parse(&data(AutoscalerConfig::NAME))?,
            network: NetworkConfig::parse(&data(NetworkConfig::NAME))?,
            domain: DomainConfig::parse(&data(DomainConfig::NAME), domain)?,
            features: FeaturesConfig::parse(&data(FeaturesConfig::NAME))?,
            gc: GcConfig::parse(&data(GcConfig::NAME))?,
        })
    }
}

/// Parses the YAML of a ConfigMap object (`kind: ConfigMap`, `data: {...}`) into its name and
/// data. Keys starting with `_` (Knative's `_example` block) are dropped.
pub fn parse_config_map(yaml: &str) -> Result<(String, ConfigData), String> {
    #[derive(Deserialize)]
    struct Meta {
        name: String,
    }
    #[derive(Deserialize)]
    struct ConfigMap {
        kind: String,
        metadata: Meta,
        #[serde(default)]
        data: BTreeMap<String, serde_yaml::Value>,
    }
    let cm: ConfigMap = serde_yaml::from_str(yaml).map_err(|e| format!("not a ConfigMap: {e}"))?;
    if cm.kind != "ConfigMap" {
        return Err(format!("kind is {:?}, want ConfigMap", cm.kind));
    }
    let mut data = ConfigData::new();
    for (key, value) in cm.data {
        if key.starts_with('_') {
            continue;
        }
        let text = match value {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            other => {
                return Err(format!("data.{key}: want a string, got {other:?}"));
            }
        };
        data.insert(key, text);
    }
    Ok((cm.metadata.name, data))
}

/// Reads typed values out of one config map, remembering its name for errors.
pub(crate) struct Reader<'a> {
    name: &'static str,
    data: &'a ConfigData,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(name: &'static str, data: &'a ConfigData) -> Self {
        Self { name, data }
    }

    pub(crate) fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            config_map: self.name.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn string(&self, key: &str) -> Option<&'a str> {
        self.data.get(key).map(|s| s.trim())
    }

    pub(crate) fn int(&self, key: &str, default: i64) -> Result<i64, ConfigError> {
        match self.string(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| self.error(key, format!("{v:?} is not a whole number"))),
        }
    }

    pub(crate) fn float(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        match self.string(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| self.error(key, format!("{v:?} is not a number"))),
        }
    }

    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.string(key) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.error(key, format!("{v:?} is not true or false"))),
            },
        }
    }

    pub(crate) fn duration(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.string(key) {
            None => Ok(default),
            Some(v) => parse_duration(v).ok_or_else(|| {
                self.error(
                    key,
                    format!("{v:?} is not a duration; write it like 30s, 2m or 1h30m"),
                )
            }),
        }
    }
}

/// Parses a Go-style duration (`0`, `30s`, `1m30s`, `1.5h`, `250ms`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let value: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * seconds;
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn config_map_yaml_parses_and_drops_example() {
        let (name, data) = parse_config_map(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-defaults\ndata:\n  _example: ignored\n  revision-timeout-seconds: \"120\"\n  container-concurrency: 4\n",
        )
        .unwrap();
        assert_eq!(name, "config-defaults");
        assert_eq!(
            data.get("revision-timeout-seconds").map(String::as_str),
            Some("120")
        );
        assert_eq!(
            data.get("container-concurrency").map(String::as_str),
            Some("4")
        );
        assert!(!data.contains_key("_example"));
    }
}
