//! The per-replica target a revision scales to (Knative's `ResolveMetricTarget`).

use std::collections::BTreeMap;

use sluice_api::autoscaling::{METRIC, TARGET, TARGET_UTILIZATION};
use sluice_api::config::AutoscalerConfig;

/// Which metric a revision scales on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// In-flight requests per replica.
    Concurrency,
    /// Requests per second per replica.
    Rps,
}

/// The resolved target of one revision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// The metric.
    pub metric: Metric,
    /// The metric value per replica before utilization (`TotalValue`).
    pub total: f64,
    /// The value per replica the autoscaler aims for (`TargetValue`).
    pub target: f64,
}

/// Knative's minimum target.
const TARGET_MIN: f64 = 0.01;
/// Knative's hard-coded utilization for the rps metric.
const RPS_UTILIZATION: f64 = 0.7;

impl Target {
    /// Resolves the target from the revision's annotations, its containerConcurrency and
    /// config-autoscaler: `max(0.01, total × utilization)`, where total is the concurrency
    /// limit (or the default 100), or the rps default 200, overridden by the `target`
    /// annotation (capped by a non-zero containerConcurrency).
    pub fn resolve(
        annotations: &BTreeMap<String, String>,
        container_concurrency: u32,
        cfg: &AutoscalerConfig,
    ) -> Self {
        let number = |key: &str| {
            annotations
                .get(key)
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let metric = match annotations.get(METRIC).map(String::as_str) {
            Some("rps") => Metric::Rps,
            _ => Metric::Concurrency,
        };
        let (mut total, mut utilization) = match metric {
            Metric::Rps => (cfg.rps_target_default, RPS_UTILIZATION),
            Metric::Concurrency if container_concurrency > 0 => (
                f64::from(container_concurrency),
                cfg.container_concurrency_target_fraction,
            ),
            Metric::Concurrency => (
                cfg.container_concurrency_target_default,
                cfg.container_concurrency_target_fraction,
            ),
        };
        if let Some(t) = number(TARGET) {
            total = if metric == Metric::Concurrency && container_concurrency > 0 {
                t.min(f64::from(container_concurrency))
            } else {
                t
            };
        }
        if let Some(pct) = number(TARGET_UTILIZATION) {
            utilization = pct / 100.0;
        }
        Self {
            metric,
            total,
            target: (total * utilization).max(TARGET_MIN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(pairs: &[(&str, &str)], cc: u32) -> Target {
        let a = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Target::resolve(&a, cc, &AutoscalerConfig::default())
    }

    #[test]
    fn knative_documented_targets() {
        // CC=0 → 70; CC=10 → 7; rps → 140 (knative-serving.md §2.2).
        assert!((resolve(&[], 0).target - 70.0).abs() < 1e-9);
        assert!((resolve(&[], 10).target - 7.0).abs() < 1e-9);
        let rps = resolve(&[(METRIC, "rps")], 0);
        assert_eq!(rps.metric, Metric::Rps);
        assert!((rps.target - 140.0).abs() < 1e-9);
        assert!((resolve(&[], 0).total - 100.0).abs() < 1e-9);
    }

    #[test]
    fn annotations_override_and_cc_caps_the_target() {
        assert!((resolve(&[(TARGET, "50")], 10).total - 10.0).abs() < 1e-9);
        assert!(
            (resolve(&[(TARGET, "50"), (TARGET_UTILIZATION, "100")], 0).target - 50.0).abs() < 1e-9
        );
        assert!((resolve(&[(TARGET, "0.001")], 0).target - 0.01).abs() < 1e-9);
    }
}
