//! Scale bounds (`min-scale`, `max-scale`, `initial-scale`) as Knative resolves them.

use std::collections::BTreeMap;

use sluice_api::autoscaling::{
    INITIAL_SCALE, MAX_SCALE, MAX_SCALE_LEGACY, MIN_SCALE, MIN_SCALE_LEGACY, scale_value,
};
use sluice_api::config::AutoscalerConfig;

/// The replica bounds of one revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleBounds {
    /// Never fewer replicas than this while the revision is reachable.
    pub min: u32,
    /// Never more replicas than this; `None` is unlimited.
    pub max: Option<u32>,
    /// Replicas when the revision is created.
    pub initial: u32,
}

impl ScaleBounds {
    /// Resolves the bounds: annotations first, config-autoscaler otherwise. Values were
    /// validated at admission, so an unparsable one falls back to the config's.
    pub fn resolve(annotations: &BTreeMap<String, String>, cfg: &AutoscalerConfig) -> Self {
        let get = |key, legacy, default| {
            scale_value(annotations, key, legacy)
                .and_then(Result::ok)
                .unwrap_or(default)
        };
        let min = get(MIN_SCALE, Some(MIN_SCALE_LEGACY), cfg.min_scale);
        let max = get(MAX_SCALE, Some(MAX_SCALE_LEGACY), cfg.max_scale);
        let mut initial = get(INITIAL_SCALE, None, cfg.initial_scale);
        if initial == 0 && !cfg.allow_zero_initial_scale {
            initial = cfg.initial_scale.max(1);
        }
        Self {
            min,
            max: (max > 0).then_some(max),
            initial,
        }
    }

    /// Clamps a replica count into `[min, max]`.
    pub fn clamp(&self, replicas: u32) -> u32 {
        let floor = replicas.max(self.min);
        self.max.map_or(floor, |max| floor.min(max))
    }

    /// Replicas at creation: the initial scale, raised to min-scale, capped by max-scale
    /// (Knative raises min to initial-scale until the revision first reaches it).
    pub fn initial_replicas(&self) -> u32 {
        self.clamp(self.initial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_start_one_replica_unbounded() {
        let b = ScaleBounds::resolve(&BTreeMap::new(), &AutoscalerConfig::default());
        assert_eq!(
            b,
            ScaleBounds {
                min: 0,
                max: None,
                initial: 1
            }
        );
        assert_eq!(b.initial_replicas(), 1);
    }

    #[test]
    fn min_scale_raises_initial_and_max_caps_it() {
        let b = ScaleBounds::resolve(
            &annotations(&[(MIN_SCALE, "3")]),
            &AutoscalerConfig::default(),
        );
        assert_eq!(b.initial_replicas(), 3);
        let b = ScaleBounds::resolve(
            &annotations(&[(INITIAL_SCALE, "5"), (MAX_SCALE, "2")]),
            &AutoscalerConfig::default(),
        );
        assert_eq!(b.initial_replicas(), 2);
    }

    #[test]
    fn legacy_keys_and_zero_initial_scale() {
        let b = ScaleBounds::resolve(
            &annotations(&[(MIN_SCALE_LEGACY, "2")]),
            &AutoscalerConfig::default(),
        );
        assert_eq!(b.min, 2);
        let zero = annotations(&[(INITIAL_SCALE, "0")]);
        assert_eq!(
            ScaleBounds::resolve(&zero, &AutoscalerConfig::default()).initial,
            1
        );
        let allow = AutoscalerConfig {
            allow_zero_initial_scale: true,
            ..AutoscalerConfig::default()
        };
        assert_eq!(ScaleBounds::resolve(&zero, &allow).initial_replicas(), 0);
    }
}
