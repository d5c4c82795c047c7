//! Gradual rollout: when a configuration target's latest ready revision changes and a rollout
//! duration is set (`serving.knative.dev/rollout-duration` on the Route or Service, else
//! config-network `rollout-duration`), traffic moves to the new revision in steps: 1% at once,
//! then equal increments until the whole duration has passed. The state lives in a Route
//! annotation, as in Knative, and the split at any moment is a pure function of it and `now`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sluice_api::config::{NetworkConfig, parse_duration};
use sluice_api::{Route, keys};

/// Route annotation holding the rollout in progress.
pub use sluice_api::keys::ROLLOUT as ANNOTATION;

/// One rollout of a configuration target from one revision to the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The configuration whose target rolls.
    pub configuration_name: String,
    /// The revision traffic moves from.
    pub from: String,
    /// The revision traffic moves to.
    pub to: String,
    /// When it started.
    pub started: Timestamp,
    /// How long it lasts, seconds.
    pub duration_seconds: u64,
}

impl Rollout {
    /// When it is over.
    pub fn ends(&self) -> Timestamp {
        self.started
            + SignedDuration::from_secs(i64::try_from(self.duration_seconds).unwrap_or(i64::MAX))
    }

    /// Whether it is still moving traffic at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        now < self.ends()
    }

    /// Of a target's `percent`, how much the new revision gets at `now`: 1% at the start, then
    /// equal steps, one per `duration / steps`, all of it at the end.
    pub fn new_share(&self, percent: i64, now: Timestamp) -> i64 {
        if percent <= 1 || !self.active(now) {
            return percent;
        }
        let steps = i64::try_from(self.duration_seconds)
            .unwrap_or(i64::MAX)
            .clamp(1, percent - 1);
        let step = (percent - 1 + steps - 1) / steps;
        let elapsed = now.duration_since(self.started).as_secs_f64().max(0.0);
        let done = (elapsed / self.duration_seconds as f64 * steps as f64).floor() as i64;
        (1 + done * step).min(percent)
    }

    /// The next moment the split changes, if any.
    pub fn next_step(&self, now: Timestamp) -> Option<Duration> {
        if !self.active(now) {
            return None;
        }
        let steps = self.duration_seconds.clamp(1, 99) as f64;
        let interval = self.duration_seconds as f64 / steps;
        let elapsed = now.duration_since(self.started).as_secs_f64().max(0.0);
        let next = ((elapsed / interval).floor() + 1.0) * interval - elapsed;
        Some(Duration::from_secs_f64(next.max(0.05)))
    }
}

/// The rollout duration that applies to a route.
pub fn duration(route: &Route, net: &NetworkConfig) -> Duration {
    route
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::ROLLOUT_DURATION))
        .and_then(|v| parse_duration(v))
        .unwrap_or(net.rollout_duration)
}

/// The rollout recorded on a route, if any.
pub fn recorded(route: &Route) -> Option<Rollout> {
    serde_json::from_str(route.metadata.annotations.as_ref()?.get(ANNOTATION)?).ok()
}

/// The rollout a route should carry now: a new one when `target`'s configuration moved from
/// `previous` to `latest` (restarting from the revision being rolled to, if one was running),
/// the recorded one while it runs, none otherwise.
pub fn next(
    recorded: Option<Rollout>,
    configuration: &str,
    previous: Option<&str>,
    latest: &str,
    duration: Duration,
    now: Timestamp,
) -> Option<Rollout> {
    if duration.is_zero() {
        return None;
    }
    match recorded {
        Some(r) if r.to == latest && r.active(now) => Some(r),
        Some(r) if r.to != latest && r.active(now) => Some(Rollout {
            configuration_name: configuration.to_owned(),
            from: r.to,
            to: latest.to_owned(),
            started: now,
            duration_seconds: duration.as_secs().max(1),
        }),
        _ => match previous {
            Some(prev) if prev != latest => Some(Rollout {
                configuration_name: configuration.to_owned(),
                from: prev.to_owned(),
                to: latest.to_owned(),
                started: now,
                duration_seconds: duration.as_secs().max(1),
            }),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(seconds: u64, start: Timestamp) -> Rollout {
        Rollout {
            configuration_name: "c".into(),
            from: "c-1".into(),
            to: "c-2".into(),
            started: start,
            duration_seconds: seconds,
        }
    }

    #[test]
    fn shares_step_from_one_percent_to_all() {
        let t0 = Timestamp::now();
        let r = rollout(10, t0);
        let at = |s: f64| r.new_share(100, t0 + SignedDuration::from_secs_f64(s));
        assert_eq!(at(0.0), 1);
        assert_eq!(at(1.0), 11);
        assert_eq!(at(5.5), 51);
        assert_eq!(at(9.9), 91);
        assert_eq!(at(10.0), 100);
        let shares: Vec<i64> = (0..=10).map(|s| at(f64::from(s))).collect();
        assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
        // A 50% target rolls within its own share.
        assert_eq!(r.new_share(50, t0), 1);
        assert_eq!(r.new_share(50, t0 + SignedDuration::from_secs(10)), 50);
    }

    #[test]
    fn a_new_revision_starts_a_rollout_and_a_newer_one_restarts_it() {
        let t0 = Timestamp::now();
        let ten = Duration::from_secs(10);
        assert_eq!(next(None, "c", Some("c-1"), "c-1", ten, t0), None);
        assert_eq!(
            next(None, "c", Some("c-1"), "c-2", Duration::ZERO, t0),
            None
        );
        let started = next(None, "c", Some("c-1"), "c-2", ten, t0).unwrap();
        assert_eq!((started.from.as_str(), started.to.as_str()), ("c-1", "c-2"));
        let later = t0 + SignedDuration::from_secs(3);
        assert_eq!(
            next(Some(started.clone()), "c", Some("c-2"), "c-2", ten, later),
            Some(started.clone())
        );
        let restarted = next(Some(started.clone()), "c", Some("c-2"), "c-3", ten, later).unwrap();
        assert_eq!(
            (
                restarted.from.as_str(),
                restarted.to.as_str(),
                restarted.started
            ),
            ("c-2", "c-3", later)
        );
        let over = t0 + SignedDuration::from_secs(11);
        assert_eq!(
            next(Some(started), "c", Some("c-2"), "c-2", ten, over),
            None
        );
    }

    #[test]
    fn next_step_is_within_one_interval() {
        let t0 = Timestamp::now();
        let r = rollout(10, t0);
        let d = r.next_step(t0 + SignedDuration::from_millis(300)).unwrap();
        assert!(
            d <= Duration::from_millis(700) && d >= Duration::from_millis(600),
            "{d:?}"
        );
        assert_eq!(r.next_step(t0 + SignedDuration::from_secs(10)), None);
    }
}
