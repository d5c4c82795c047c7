//! config-autoscaler: the KPA's knobs with Knative's keys and defaults.

use std::time::Duration;

use super::{ConfigData, ConfigError, Reader};

/// Typed config-autoscaler.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerConfig {
    /// `container-concurrency-target-percentage` as a fraction (0.7).
    pub container_concurrency_target_fraction: f64,
    /// `container-concurrency-target-default` (100).
    pub container_concurrency_target_default: f64,
    /// `requests-per-second-target-default` (200).
    pub rps_target_default: f64,
    /// `target-burst-capacity` (211; -1 keeps the activator always in the path).
    pub target_burst_capacity: f64,
    /// `stable-window` (60 s).
    pub stable_window: Duration,
    /// `panic-window-percentage` (10).
    pub panic_window_percentage: f64,
    /// `panic-threshold-percentage` (200).
    pub panic_threshold_percentage: f64,
    /// `max-scale-up-rate` (1000).
    pub max_scale_up_rate: f64,
    /// `max-scale-down-rate` (2).
    pub max_scale_down_rate: f64,
    /// `enable-scale-to-zero` (true).
    pub enable_scale_to_zero: bool,
    /// `scale-to-zero-grace-period` (30 s).
    pub scale_to_zero_grace_period: Duration,
    /// `scale-to-zero-pod-retention-period` (0 s).
    pub scale_to_zero_pod_retention_period: Duration,
    /// `activator-capacity` (100).
    pub activator_capacity: f64,
    /// `initial-scale` (1).
    pub initial_scale: u32,
    /// `allow-zero-initial-scale` (false).
    pub allow_zero_initial_scale: bool,
    /// `min-scale` (0).
    pub min_scale: u32,
    /// `max-scale` (0 = unlimited).
    pub max_scale: u32,
    /// `scale-down-delay` (0 s).
    pub scale_down_delay: Duration,
    /// `max-scale-limit` (0 = any).
    pub max_scale_limit: u32,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            container_concurrency_target_fraction: 0.7,
            container_concurrency_target_default: 100.0,
            rps_target_default: 200.0,
            target_burst_capacity: 211.0,
            stable_window: Duration::from_secs(60),
            panic_window_percentage: 10.0,
            panic_threshold_percentage: 200.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            enable_scale_to_zero: true,
            scale_to_zero_grace_period: Duration::from_secs(30),
            scale_to_zero_pod_retention_period: Duration::ZERO,
            activator_capacity: 100.0,
            initial_scale: 1,
            allow_zero_initial_scale: false,
            min_scale: 0,
            max_scale: 0,
            scale_down_delay: Duration::ZERO,
            max_scale_limit: 0,
        }
    }
}

fn whole_count(r: &Reader<'_>, key: &str, default: u32) -> Result<u32, ConfigError> {
    let v = r.int(key, i64::from(default))?;
    u32::try_from(v).map_err(|_| r.error(key, format!("{v} must be 0 or more")))
}

impl AutoscalerConfig {
    /// The config map's name.
    pub const NAME: &'static str = "config-autoscaler";

    /// Parses and checks config-autoscaler.
    pub fn parse(data: &ConfigData) -> Result<Self, ConfigError> {
        let r = Reader::new(Self::NAME, data);
        let d = Self::default();
        let mut fraction = r.float(
            "container-concurrency-target-percentage",
            d.container_concurrency_target_fraction * 100.0,
        )?;
        if !(fraction > 0.0 && fraction <= 100.0) {
            return Err(r.error(
                "container-concurrency-target-percentage",
                "must be in (0, 100]",
            ));
        }
        if fraction > 1.0 {
            fraction /= 100.0;
        }
        let cfg = Self {
            container_concurrency_target_fraction: fraction,
            container_concurrency_target_default: r.float(
                "container-concurrency-target-default",
                d.container_concurrency_target_default,
            )?,
            rps_target_default: r
                .float("requests-per-second-target-default", d.rps_target_default)?,
            target_burst_capacity: r.float("target-burst-capacity", d.target_burst_capacity)?,
            stable_window: r.duration("stable-window", d.stable_window)?,
            panic_window_percentage: r
                .float("panic-window-percentage", d.panic_window_percentage)?,
            panic_threshold_percentage: r
                .float("panic-threshold-percentage", d.panic_threshold_percentage)?,
            max_scale_up_rate: r.float("max-scale-up-rate", d.max_scale_up_rate)?,
            max_scale_down_rate: r.float("max-scale-down-rate", d.max_scale_down_rate)?,
            enable_scale_to_zero: r.bool("enable-scale-to-zero", d.enable_scale_to_zero)?,
            scale_to_zero_grace_period: r
                .duration("scale-to-zero-grace-period", d.scale_to_zero_grace_period)?,
            scale_to_zero_pod_retention_period: r.duration(
                "scale-to-zero-pod-retention-period",
                d.scale_to_zero_pod_retention_period,
            )?,
            activator_capacity: r.float("activator-capacity", d.activator_capacity)?,
            initial_scale: whole_count(&r, "initial-scale", d.initial_scale)?,
            allow_zero_initial_scale: r
                .bool("allow-zero-initial-scale", d.allow_zero_initial_scale)?,
            min_scale: whole_count(&r, "min-scale", d.min_scale)?,
            max_scale: whole_count(&r, "max-scale", d.max_scale)?,
            scale_down_delay: r.duration("scale-down-delay", d.scale_down_delay)?,
            max_scale_limit: whole_count(&r, "max-scale-limit", d.max_scale_limit)?,
        };
        let check =
            |ok: bool, key: &str, msg: &str| if ok { Ok(()) } else { Err(r.error(key, msg)) };
        check(
            cfg.container_concurrency_target_default * cfg.container_concurrency_target_fraction
                >= 0.01,
            "container-concurrency-target-default",
            "target × utilization must be at least 0.01",
        )?;
        check(
            cfg.rps_target_default >= 0.01,
            "requests-per-second-target-default",
            "must be at least 0.01",
        )?;
        check(
            cfg.target_burst_capacity >= 0.0 || cfg.target_burst_capacity == -1.0,
            "target-burst-capacity",
            "must be 0 or more, or exactly -1",
        )?;
        check(
            cfg.stable_window >= Duration::from_secs(6)
                && cfg.stable_window <= Duration::from_secs(3600),
            "stable-window",
            "must be between 6s and 1h",
        )?;
        check(
            cfg.stable_window.subsec_nanos() == 0,
            "stable-window",
            "must be whole seconds",
        )?;
        check(
            (1.0..=100.0).contains(&cfg.panic_window_percentage),
            "panic-window-percentage",
            "must be between 1 and 100",
        )?;
        check(
            cfg.max_scale_up_rate > 1.0,
            "max-scale-up-rate",
            "must be greater than 1",
        )?;
        check(
            cfg.max_scale_down_rate > 1.0,
            "max-scale-down-rate",
            "must be greater than 1",
        )?;
        check(
            cfg.scale_to_zero_grace_period > Duration::ZERO,
            "scale-to-zero-grace-period",
            "must be greater than 0",
        )?;
        check(
            cfg.activator_capacity >= 1.0,
            "activator-capacity",
            "must be at least 1",
        )?;
        check(
            cfg.initial_scale >= 1 || cfg.allow_zero_initial_scale,
            "initial-scale",
            "must be at least 1 unless allow-zero-initial-scale is true",
        )?;
        check(
            cfg.max_scale == 0 || cfg.max_scale >= cfg.min_scale,
            "max-scale",
            "must be 0 (unlimited) or at least min-scale",
        )?;
        check(
            cfg.scale_down_delay <= Duration::from_secs(3600)
                && cfg.scale_down_delay.subsec_nanos() == 0,
            "scale-down-delay",
            "must be whole seconds, at most 1h",
        )?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_map_gives_knative_defaults() {
        let cfg = AutoscalerConfig::parse(&ConfigData::new()).unwrap();
        assert_eq!(cfg, AutoscalerConfig::default());
    }

    #[test]
    fn percentage_is_stored_as_fraction() {
        let data = ConfigData::from([(
            "container-concurrency-target-percentage".into(),
            "80".into(),
        )]);
        let cfg = AutoscalerConfig::parse(&data).unwrap();
        assert!((cfg.container_concurrency_target_fraction - 0.8).abs() < 1e-9);
    }

    #[test]
    fn short_stable_window_is_rejected() {
        let data = ConfigData::from([("stable-window".into(), "2s".into())]);
        assert_eq!(
            AutoscalerConfig::parse(&data).unwrap_err().key,
            "stable-window"
        );
    }
}
