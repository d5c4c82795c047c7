//! config-gc: which old revisions are garbage-collected.

use std::time::Duration;

use super::{ConfigData, ConfigError, Reader};

/// Typed config-gc; `None` is Knative's `"disabled"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcConfig {
    /// `retain-since-create-time` (48h).
    pub retain_since_create_time: Option<Duration>,
    /// `retain-since-last-active-time` (15h).
    pub retain_since_last_active_time: Option<Duration>,
    /// `min-non-active-revisions` (20).
    pub min_non_active_revisions: usize,
    /// `max-non-active-revisions` (1000).
    pub max_non_active_revisions: Option<usize>,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            retain_since_create_time: Some(Duration::from_secs(48 * 3600)),
            retain_since_last_active_time: Some(Duration::from_secs(15 * 3600)),
            min_non_active_revisions: 20,
            max_non_active_revisions: Some(1000),
        }
    }
}

impl GcConfig {
    /// The config map's name.
    pub const NAME: &'static str = "config-gc";

    /// Parses and checks config-gc.
    pub fn parse(data: &ConfigData) -> Result<Self, ConfigError> {
        let r = Reader::new(Self::NAME, data);
        let d = Self::default();
        let disabled = |key: &str| {
            r.string(key)
                .is_some_and(|v| v.eq_ignore_ascii_case("disabled") || v == "-1")
        };
        let duration =
            |key: &str, default: Option<Duration>| -> Result<Option<Duration>, ConfigError> {
                if disabled(key) {
                    Ok(None)
                } else {
                    r.duration(key, default.unwrap_or_default()).map(Some)
                }
            };
        let count = |key: &str, default: usize| -> Result<usize, ConfigError> {
            let v = r.int(key, default as i64)?;
            usize::try_from(v).map_err(|_| {
                r.error(
                    key,
                    format!("{v} must be 0 or more (or \"disabled\" where allowed)"),
                )
            })
        };
        let cfg = Self {
            retain_since_create_time: duration(
                "retain-since-create-time",
                d.retain_since_create_time,
            )?,
            retain_since_last_active_time: duration(
                "retain-since-last-active-time",
                d.retain_since_last_active_time,
            )?,
            min_non_active_revisions: count(
                "min-non-active-revisions",
                d.min_non_active_revisions,
            )?,
            max_non_active_revisions: if disabled("max-non-active-revisions") {
                None
            } else {
                Some(count("max-non-active-revisions", 1000)?)
            },
        };
        if let Some(max) = cfg.max_non_active_revisions
            && cfg.min_non_active_revisions > max
        {
            return Err(r.error(
                "min-non-active-revisions",
                format!(
                    "{} must not exceed max-non-active-revisions ({max})",
                    cfg.min_non_active_revisions
                ),
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_disabled() {
        assert_eq!(
            GcConfig::parse(&ConfigData::new()).unwrap(),
            GcConfig::default()
        );
        let data = ConfigData::from([
            ("retain-since-create-time".into(), "disabled".into()),
            ("max-non-active-revisions".into(), "disabled".into()),
            ("min-non-active-revisions".into(), "2".into()),
        ]);
        let cfg = GcConfig::parse(&data).unwrap();
        assert_eq!(cfg.retain_since_create_time, None);
        assert_eq!(cfg.max_non_active_revisions, None);
        let bad = ConfigData::from([
            ("min-non-active-revisions".into(), "5".into()),
            ("max-non-active-revisions".into(), "2".into()),
        ]);
        assert_eq!(
            GcConfig::parse(&bad).unwrap_err().key,
            "min-non-active-revisions"
        );
    }
}
