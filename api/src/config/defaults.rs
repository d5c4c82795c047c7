//! config-defaults: revision timeouts, concurrency and container naming defaults.

use super::{ConfigData, ConfigError, Reader};

/// Typed config-defaults with Knative's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct DefaultsConfig {
    /// `revision-timeout-seconds` (300).
    pub revision_timeout_seconds: i64,
    /// `max-revision-timeout-seconds` (600).
    pub max_revision_timeout_seconds: i64,
    /// `revision-response-start-timeout-seconds` (defaults to the revision timeout).
    pub revision_response_start_timeout_seconds: i64,
    /// `revision-idle-timeout-seconds` (0, infinite).
    pub revision_idle_timeout_seconds: i64,
    /// `container-name-template` (`user-container`).
    pub container_name_template: String,
    /// `container-concurrency` (0).
    pub container_concurrency: i64,
    /// `container-concurrency-max-limit` (1000).
    pub container_concurrency_max_limit: i64,
    /// `allow-container-concurrency-zero` (true).
    pub allow_container_concurrency_zero: bool,
    /// `enable-service-links` (false).
    pub enable_service_links: bool,
}

impl Default for DefaultsConfig {
    fn default() -> Self {
        Self {
            revision_timeout_seconds: 300,
            max_revision_timeout_seconds: 600,
            revision_response_start_timeout_seconds: 300,
            revision_idle_timeout_seconds: 0,
            container_name_template: "user-container".to_owned(),
            container_concurrency: 0,
            container_concurrency_max_limit: 1000,
            allow_container_concurrency_zero: true,
            enable_service_links: false,
        }
    }
}

impl DefaultsConfig {
    /// The config map's name.
    pub const NAME: &'static str = "config-defaults";

    /// Parses and checks config-defaults.
    pub fn parse(data: &ConfigData) -> Result<Self, ConfigError> {
        let r = Reader::new(Self::NAME, data);
        let d = Self::default();
        let timeout = r.int("revision-timeout-seconds", d.revision_timeout_seconds)?;
        let max_timeout = r.int(
            "max-revision-timeout-seconds",
            d.max_revision_timeout_seconds,
        )?;
        let response_start = r.int("revision-response-start-timeout-seconds", timeout)?;
        let cfg = Self {
            revision_timeout_seconds: timeout,
            max_revision_timeout_seconds: max_timeout,
            revision_response_start_timeout_seconds: response_start,
            revision_idle_timeout_seconds: r.int(
                "revision-idle-timeout-seconds",
                d.revision_idle_timeout_seconds,
            )?,
            container_name_template: r
                .string("container-name-template")
                .unwrap_or(&d.container_name_template)
                .to_owned(),
            container_concurrency: r.int("container-concurrency", d.container_concurrency)?,
            container_concurrency_max_limit: r.int(
                "container-concurrency-max-limit",
                d.container_concurrency_max_limit,
            )?,
            allow_container_concurrency_zero: r.bool(
                "allow-container-concurrency-zero",
                d.allow_container_concurrency_zero,
            )?,
            enable_service_links: r.bool("enable-service-links", d.enable_service_links)?,
        };
        if cfg.revision_timeout_seconds <= 0 {
            return Err(r.error("revision-timeout-seconds", "must be greater than 0"));
        }
        if cfg.revision_timeout_seconds > cfg.max_revision_timeout_seconds {
            return Err(r.error(
                "revision-timeout-seconds",
                format!(
                    "{} is above max-revision-timeout-seconds ({}); lower it or raise the max",
                    cfg.revision_timeout_seconds, cfg.max_revision_timeout_seconds
                ),
            ));
        }
        if cfg.revision_response_start_timeout_seconds > cfg.revision_timeout_seconds {
            return Err(r.error(
                "revision-response-start-timeout-seconds",
                "must not exceed revision-timeout-seconds",
            ));
        }
        if !(0..=cfg.container_concurrency_max_limit).contains(&cfg.container_concurrency) {
            return Err(r.error(
                "container-concurrency",
                format!("must be within 0..={}", cfg.container_concurrency_max_limit),
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_map_gives_knative_defaults() {
        let cfg = DefaultsConfig::parse(&ConfigData::new()).unwrap();
        assert_eq!(cfg, DefaultsConfig::default());
        assert_eq!(cfg.revision_timeout_seconds, 300);
        assert_eq!(cfg.max_revision_timeout_seconds, 600);
    }

    #[test]
    fn bad_value_names_config_map_and_key() {
        let data = ConfigData::from([("revision-timeout-seconds".into(), "soon".into())]);
        let err = DefaultsConfig::parse(&data).unwrap_err();
        assert_eq!(err.key, "revision-timeout-seconds");
        assert!(
            err.to_string()
                .starts_with("config-defaults: key \"revision-timeout-seconds\"")
        );
    }

    #[test]
    fn timeout_above_max_is_rejected() {
        let data = ConfigData::from([("revision-timeout-seconds".into(), "700".into())]);
        assert!(DefaultsConfig::parse(&data).is_err());
    }
}
