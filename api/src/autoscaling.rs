//! `autoscaling.knative.dev/*` annotation keys and their validation.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::parse_duration;
use crate::validation::Errors;

/// Prefix of every autoscaling annotation.
pub const PREFIX: &str = "autoscaling.knative.dev/";
/// Autoscaler class.
pub const CLASS: &str = "autoscaling.knative.dev/class";
/// `concurrency` or `rps`.
pub const METRIC: &str = "autoscaling.knative.dev/metric";
/// Per-replica target of the metric.
pub const TARGET: &str = "autoscaling.knative.dev/target";
/// Percentage of the target to aim for.
pub const TARGET_UTILIZATION: &str = "autoscaling.knative.dev/target-utilization-percentage";
/// Stable window.
pub const WINDOW: &str = "autoscaling.knative.dev/window";
/// Panic window as a percentage of the stable window.
pub const PANIC_WINDOW_PERCENTAGE: &str = "autoscaling.knative.dev/panic-window-percentage";
/// Panic threshold percentage.
pub const PANIC_THRESHOLD_PERCENTAGE: &str = "autoscaling.knative.dev/panic-threshold-percentage";
/// Minimum replicas.
pub const MIN_SCALE: &str = "autoscaling.knative.dev/min-scale";
/// Maximum replicas (0 = unlimited).
pub const MAX_SCALE: &str = "autoscaling.knative.dev/max-scale";
/// Replicas at creation.
pub const INITIAL_SCALE: &str = "autoscaling.knative.dev/initial-scale";
/// Minimum non-zero scale.
pub const ACTIVATION_SCALE: &str = "autoscaling.knative.dev/activation-scale";
/// Delay before scaling down.
pub const SCALE_DOWN_DELAY: &str = "autoscaling.knative.dev/scale-down-delay";
/// How long the last replica is kept after the revision goes idle.
pub const SCALE_TO_ZERO_POD_RETENTION: &str =
    "autoscaling.knative.dev/scale-to-zero-pod-retention-period";
/// Spare capacity that keeps the activator out of the path.
pub const TARGET_BURST_CAPACITY: &str = "autoscaling.knative.dev/target-burst-capacity";
/// Legacy spelling of min-scale.
pub const MIN_SCALE_LEGACY: &str = "autoscaling.knative.dev/minScale";
/// Legacy spelling of max-scale.
pub const MAX_SCALE_LEGACY: &str = "autoscaling.knative.dev/maxScale";

/// Reads a whole-number annotation, honouring a legacy spelling.
pub fn scale_value(
    annotations: &BTreeMap<String, String>,
    key: &str,
    legacy: Option<&str>,
) -> Option<Result<u32, String>> {
    let raw = annotations
        .get(key)
        .or_else(|| legacy.and_then(|l| annotations.get(l)))?;
    Some(
        raw.trim()
            .parse::<u32>()
            .map_err(|_| format!("{raw:?} is not a whole number 0 or more")),
    )
}

fn number(annotations: &BTreeMap<String, String>, key: &str) -> Option<Result<f64, String>> {
    let raw = annotations.get(key)?;
    Some(
        raw.trim()
            .parse::<f64>()
            .map_err(|_| format!("{raw:?} is not a number")),
    )
}

fn duration(annotations: &BTreeMap<String, String>, key: &str) -> Option<Result<Duration, String>> {
    let raw = annotations.get(key)?;
    Some(
        parse_duration(raw)
            .ok_or_else(|| format!("{raw:?} is not a duration; write it like 60s or 2m")),
    )
}

/// Validates the autoscaling annotations of a revision template.
pub(crate) fn validate(errs: &mut Errors, path: &str, annotations: &BTreeMap<String, String>) {
    let at = |key: &str| format!("{path}.{key}");
    let min = match scale_value(annotations, MIN_SCALE, Some(MIN_SCALE_LEGACY)) {
        Some(Err(m)) => {
            errs.push(at(MIN_SCALE), m);
            None
        }
        other => other.and_then(Result::ok),
    };
    let max = match scale_value(annotations, MAX_SCALE, Some(MAX_SCALE_LEGACY)) {
        Some(Err(m)) => {
            errs.push(at(MAX_SCALE), m);
            None
        }
        other => other.and_then(Result::ok),
    };
    if let (Some(min), Some(max)) = (min, max)
        && max != 0
        && max < min
    {
        errs.push(
            at(MAX_SCALE),
            format!("max-scale={max} is less than min-scale={min}; raise it or use 0 for no limit"),
        );
    }
    if let Some(Err(m)) = scale_value(annotations, INITIAL_SCALE, None) {
        errs.push(at(INITIAL_SCALE), m);
    }
    match scale_value(annotations, ACTIVATION_SCALE, None) {
        Some(Err(m)) => errs.push(at(ACTIVATION_SCALE), m),
        Some(Ok(v)) if v < 2 => errs.push(at(ACTIVATION_SCALE), format!("{v} must be at least 2")),
        _ => {}
    }
    if let Some(m) = annotations.get(METRIC)
        && !matches!(m.as_str(), "concurrency" | "rps")
    {
        errs.push(
            at(METRIC),
            format!("{m:?} is not supported; use concurrency or rps"),
        );
    }
    let ranges: [(&str, f64, f64); 4] = [
        (TARGET, 0.01, f64::MAX),
        (TARGET_UTILIZATION, 1.0, 100.0),
        (PANIC_WINDOW_PERCENTAGE, 1.0, 100.0),
        (PANIC_THRESHOLD_PERCENTAGE, 110.0, 1000.0),
    ];
    for (key, lo, hi) in ranges {
        match number(annotations, key) {
            Some(Err(m)) => errs.push(at(key), m),
            Some(Ok(v)) if v < lo || v > hi => {
                let range = if hi == f64::MAX {
                    format!("at least {lo}")
                } else {
                    format!("between {lo} and {hi}")
                };
                errs.push(at(key), format!("{v} must be {range}"));
            }
            _ => {}
        }
    }
    match number(annotations, TARGET_BURST_CAPACITY) {
        Some(Err(m)) => errs.push(at(TARGET_BURST_CAPACITY), m),
        Some(Ok(v)) if v < 0.0 && v != -1.0 => errs.push(
            at(TARGET_BURST_CAPACITY),
            format!("{v} must be 0 or more, or exactly -1"),
        ),
        _ => {}
    }
    let hour = Duration::from_secs(3600);
    for (key, lo) in [
        (WINDOW, Duration::from_secs(6)),
        (SCALE_DOWN_DELAY, Duration::ZERO),
        (SCALE_TO_ZERO_POD_RETENTION, Duration::ZERO),
    ] {
        match duration(annotations, key) {
            Some(Err(m)) => errs.push(at(key), m),
            Some(Ok(d)) if d < lo || d > hour => {
                errs.push(at(key), format!("{d:?} must be between {lo:?} and 1h"))
            }
            Some(Ok(d)) if key != SCALE_TO_ZERO_POD_RETENTION && d.subsec_nanos() != 0 => {
                errs.push(at(key), "must be whole seconds")
            }
            _ => {}
        }
    }
}
