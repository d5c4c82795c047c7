//! One revision's autoscaler: its metric windows, the decider, the scale bounds and the
//! scale-to-zero state machine (Knative's `kpa/scaler.go`). It is pure; the caller records stats
//! and ticks it with the time, so tests replay traces on a driven clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use sluice_api::autoscaling::{
    ACTIVATION_SCALE, PANIC_THRESHOLD_PERCENTAGE, PANIC_WINDOW_PERCENTAGE, SCALE_DOWN_DELAY,
    SCALE_TO_ZERO_POD_RETENTION, TARGET_BURST_CAPACITY, WINDOW, scale_value,
};
use sluice_api::config::{AutoscalerConfig, parse_duration};

use crate::{Decider, DeciderSpec, Metric, ScaleBounds, Target, WindowBuckets};

/// How long a revision may stay activating before it is allowed to drop to zero: Knative's
/// default `progress-deadline` (600 s) plus 30 s.
pub const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(630);

/// Everything that shapes one revision's scaling, resolved from its annotations,
/// containerConcurrency and config-autoscaler.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalerSpec {
    /// The decider's inputs.
    pub decider: DeciderSpec,
    /// Which metric the windows hold.
    pub metric: Metric,
    /// Panic window, seconds.
    pub panic_window: u64,
    /// Replica bounds.
    pub bounds: ScaleBounds,
    /// `enable-scale-to-zero`.
    pub enable_scale_to_zero: bool,
    /// `scale-to-zero-grace-period`.
    pub grace: Duration,
    /// `scale-to-zero-pod-retention-period`.
    pub retention: Duration,
    /// `scale-down-delay`: a decision to scale down takes effect only once it has held this
    /// long (the maximum decision over the delay applies).
    pub scale_down_delay: Duration,
}

impl ScalerSpec {
    /// Resolves a revision's spec: annotations first, config-autoscaler otherwise.
    pub fn resolve(
        annotations: &BTreeMap<String, String>,
        container_concurrency: u32,
        cfg: &AutoscalerConfig,
    ) -> Self {
        let number = |key: &str, default: f64| {
            annotations
                .get(key)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(default)
        };
        let duration = |key: &str, default: Duration| {
            annotations
                .get(key)
                .and_then(|v| parse_duration(v))
                .unwrap_or(default)
        };
        let target = Target::resolve(annotations, container_concurrency, cfg);
        let stable_window = duration(WINDOW, cfg.stable_window).as_secs().max(1);
        let panic_pct = number(PANIC_WINDOW_PERCENTAGE, cfg.panic_window_percentage);
        let panic_window = ((stable_window as f64 * panic_pct / 100.0).round() as u64).max(1);
        let activation_scale = scale_value(annotations, ACTIVATION_SCALE, None)
            .and_then(Result::ok)
            .unwrap_or(1)
            .max(1);
        Self {
            decider: DeciderSpec {
                target: target.target,
                total: target.total,
                panic_threshold: number(PANIC_THRESHOLD_PERCENTAGE, cfg.panic_threshold_percentage)
                    / 100.0,
                stable_window,
                max_scale_up_rate: cfg.max_scale_up_rate,
                max_scale_down_rate: cfg.max_scale_down_rate,
                activation_scale,
                target_burst_capacity: number(TARGET_BURST_CAPACITY, cfg.target_burst_capacity),
                reachable: true,
            },
            metric: target.metric,
            panic_window,
            bounds: ScaleBounds::resolve(annotations, cfg),
            enable_scale_to_zero: cfg.enable_scale_to_zero,
            grace: cfg.scale_to_zero_grace_period,
            retention: duration(
                SCALE_TO_ZERO_POD_RETENTION,
                cfg.scale_to_zero_pod_retention_period,
            ),
            scale_down_delay: duration(SCALE_DOWN_DELAY, cfg.scale_down_delay),
        }
    }

    fn stable_window(&self) -> Duration {
        Duration::from_secs(self.decider.stable_window)
    }
}

/// One second's measurement of a revision (summed over its replicas and the activator).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stat {
    /// Average requests in flight.
    pub concurrency: f64,
    /// Requests per second.
    pub rps: f64,
}

/// Knative's `Active` condition of the revision's autoscaler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Replicas are wanted but fewer than the minimum are ready; requests are buffered.
    Activating,
    /// Enough replicas are ready.
    Active,
    /// The revision receives no traffic and is at, or on its way to, zero.
    Inactive,
}

/// The outcome of one tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    /// Replicas to run.
    pub desired: u32,
    /// The revision's activity.
    pub activity: Activity,
    /// Negative while the activator must stay in the path and buffer for the revision.
    pub excess_burst_capacity: f64,
    /// Whether the decider is in panic mode.
    pub panicking: bool,
}

/// The autoscaler of one revision.
#[derive(Clone, Debug)]
pub struct RevisionScaler {
    spec: ScalerSpec,
    stable: WindowBuckets,
    panic: WindowBuckets,
    decider: Decider,
    /// Recent decisions within the scale-down delay, oldest first.
    delayed: VecDeque<(Duration, u32)>,
    initialized: bool,
    scale: Scale,
    activity_since: Duration,
}

impl RevisionScaler {
    /// A scaler for a revision that starts at its initial scale at `now`.
    pub fn new(spec: ScalerSpec, now: Duration) -> Self {
        let initial = spec.bounds.initial_replicas();
        let excess_burst_capacity = Self::starting_burst_capacity(&spec, initial);
        Self {
            stable: WindowBuckets::new(spec.decider.stable_window),
            panic: WindowBuckets::new(spec.panic_window),
            decider: Decider::default(),
            delayed: VecDeque::new(),
            initialized: false,
            scale: Scale {
                desired: initial,
                activity: if initial == 0 {
                    Activity::Inactive
                } else {
                    Activity::Activating
                },
                excess_burst_capacity,
                panicking: false,
            },
            activity_since: now,
            spec,
        }
    }

    /// A scaler for a revision that was scaled to `desired` replicas before this process
    /// started (a restarted daemon or a new leader): it resumes there, within its bounds,
    /// rather than at the initial scale, so a revision at zero stays at zero until a request
    /// comes and a running one keeps its scale.
    pub fn resume(spec: ScalerSpec, now: Duration, desired: u32) -> Self {
        let mut scaler = Self::new(spec, now);
        let desired = scaler.spec.bounds.clamp(desired);
        // It reached its initial scale in an earlier life; min-scale alone holds now.
        scaler.initialized = true;
        scaler.scale.desired = desired;
        scaler.scale.activity = if desired == 0 {
            Activity::Inactive
        } else {
            Activity::Activating
        };
        scaler.scale.excess_burst_capacity = Self::starting_burst_capacity(&scaler.spec, desired);
        scaler
    }

    /// Excess burst capacity before any measurement, with `replicas` wanted.
    fn starting_burst_capacity(spec: &ScalerSpec, replicas: u32) -> f64 {
        let tbc = spec.decider.target_burst_capacity;
        if tbc <= 0.0 {
            tbc.max(-1.0)
        } else {
            f64::from(replicas) * spec.decider.total - tbc
        }
    }

    /// The spec in use.
    pub fn spec(&self) -> &ScalerSpec {
        &self.spec
    }

    /// Adopts a changed spec (config or reachability changed), keeping history when the
    /// windows are the same size.
    pub fn set_spec(&mut self, spec: ScalerSpec) {
        if spec.decider.stable_window != self.spec.decider.stable_window {
            self.stable = WindowBuckets::new(spec.decider.stable_window);
        }
        if spec.panic_window != self.spec.panic_window {
            self.panic = WindowBuckets::new(spec.panic_window);
        }
        self.spec = spec;
    }

    /// The last decision.
    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// Records one measurement taken at `now`.
    pub fn record(&mut self, now: Duration, stat: Stat) {
        let value = match self.spec.metric {
            Metric::Concurrency => stat.concurrency,
            Metric::Rps => stat.rps,
        };
        let t = now.as_secs();
        self.stable.record(t, value);
        self.panic.record(t, value);
    }

    /// Records demand seen by the activator; true when the revision is at zero and the caller
    /// should tick at once rather than wait for the next period (Knative's poke).
    pub fn poke(&mut self, now: Duration, stat: Stat) -> bool {
        self.record(now, stat);
        self.scale.desired == 0 && (stat.concurrency > 0.0 || stat.rps > 0.0)
    }

    fn set_activity(&mut self, activity: Activity, now: Duration) {
        if self.scale.activity != activity {
            self.scale.activity = activity;
            self.activity_since = now;
        }
    }

    /// Decides at `now` with `ready` replicas serving.
    pub fn tick(&mut self, now: Duration, ready: u32) -> Scale {
        let secs = now.as_secs();
        let bounds = self.spec.bounds;
        let initial = bounds.initial_replicas();
        if !self.initialized && ready >= initial.max(1) {
            self.initialized = true;
        }
        let mut min = bounds.min;
        if !self.initialized {
            min = min.max(initial);
        }
        if self.scale.activity == Activity::Activating && ready >= min.max(1) {
            self.set_activity(Activity::Active, now);
        }
        // No data (no replica to scrape and nothing from the activator): keep the last scale.
        let mut want = self.scale.desired;
        if !self.stable.is_empty(secs) {
            let d = self.decider.decide(
                &self.spec.decider,
                secs,
                ready,
                self.stable.average(secs),
                self.panic.average(secs),
            );
            want = self.delay_scale_down(now, d.desired);
            self.scale.excess_burst_capacity = d.excess_burst_capacity;
            self.scale.panicking = d.panicking;
        }
        want = ScaleBounds { min, ..bounds }.clamp(want);
        if want == 0 {
            want = self.scale_to_zero(now);
        } else {
            let activity = if ready >= min.max(1) {
                Activity::Active
            } else {
                Activity::Activating
            };
            self.set_activity(activity, now);
        }
        self.scale.desired = want;
        self.scale
    }

    /// The largest decision within the scale-down delay (Knative's delay window).
    fn delay_scale_down(&mut self, now: Duration, desired: u32) -> u32 {
        let delay = self.spec.scale_down_delay;
        if delay.is_zero() {
            return desired;
        }
        while self
            .delayed
            .front()
            .is_some_and(|(at, _)| *at + delay <= now)
        {
            self.delayed.pop_front();
        }
        self.delayed.push_back((now, desired));
        self.delayed
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(desired)
    }

    /// Knative's `handleScaleToZero`: zero only after a stable window of activity with no
    /// traffic, then the longer of the grace and retention periods.
    fn scale_to_zero(&mut self, now: Duration) -> u32 {
        if !self.spec.enable_scale_to_zero {
            return 1;
        }
        let held = self.scale.desired;
        let since = now.saturating_sub(self.activity_since);
        match self.scale.activity {
            Activity::Activating if since >= ACTIVATION_TIMEOUT => 0,
            Activity::Activating => held,
            Activity::Active if since >= self.spec.stable_window() => {
                self.set_activity(Activity::Inactive, now);
                held.max(1)
            }
            Activity::Active => held.max(1),
            Activity::Inactive if since >= self.spec.grace.max(self.spec.retention) => 0,
            Activity::Inactive => held,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: u64 = 2;

    fn spec(pairs: &[(&str, &str)], cc: u32) -> ScalerSpec {
        let a = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ScalerSpec::resolve(&a, cc, &AutoscalerConfig::default())
    }

    /// Replays a per-second concurrency trace: a stat every second, a decision every 2 s,
    /// replicas becoming ready `lag` seconds after they are wanted.
    struct Replay {
        scaler: RevisionScaler,
        ready: u32,
        decisions: Vec<(u64, Scale)>,
    }

    impl Replay {
        fn new(spec: ScalerSpec) -> Self {
            let scaler = RevisionScaler::new(spec, Duration::ZERO);
            let ready = scaler.scale().desired;
            Self {
                scaler,
                ready,
                decisions: Vec::new(),
            }
        }

        /// Runs seconds `from..to` at `concurrency` (recorded only while a replica exists,
        /// as scrapes are).
        fn run(&mut self, from: u64, to: u64, concurrency: f64) {
            for t in from..to {
                let now = Duration::from_secs(t);
                if self.ready > 0 {
                    self.scaler.record(
                        now,
                        Stat {
                            concurrency,
                            rps: 0.0,
                        },
                    );
                }
                if t % TICK == 0 {
                    let s = self.scaler.tick(now, self.ready);
                    self.ready = s.desired;
                    self.decisions.push((t, s));
                }
            }
        }

        fn first(&self, f: impl Fn(&Scale) -> bool) -> Option<u64> {
            self.decisions.iter().find(|(_, s)| f(s)).map(|(t, _)| *t)
        }
    }

    #[test]
    fn spec_follows_knative_defaults_and_annotations() {
        let s = spec(&[], 0);
        assert_eq!(s.decider.stable_window, 60);
        assert_eq!(s.panic_window, 6);
        assert!((s.decider.panic_threshold - 2.0).abs() < 1e-9);
        assert!((s.decider.target - 70.0).abs() < 1e-9);
        assert_eq!(s.grace, Duration::from_secs(30));
        let s = spec(
            &[
                (WINDOW, "20s"),
                (PANIC_WINDOW_PERCENTAGE, "50"),
                (SCALE_TO_ZERO_POD_RETENTION, "1m"),
                (ACTIVATION_SCALE, "3"),
            ],
            1,
        );
        assert_eq!(s.decider.stable_window, 20);
        assert_eq!(s.panic_window, 10);
        assert_eq!(s.retention, Duration::from_secs(60));
        assert_eq!(s.decider.activation_scale, 3);
        assert!((s.decider.target - 0.7).abs() < 1e-9);
    }

    #[test]
    fn idle_reaches_zero_after_window_plus_grace() {
        let mut r = Replay::new(spec(&[], 10));
        r.run(0, 100, 5.0);
        assert_eq!(r.ready, 1);
        r.run(100, 300, 0.0);
        // The last busy second (99) leaves the 60 s window at 159: Inactive then, zero 30 s on.
        let inactive = r.first(|s| s.activity == Activity::Inactive).unwrap();
        assert_eq!(inactive, 160, "{:?}", r.decisions);
        let zero = r.first(|s| s.desired == 0).unwrap();
        assert_eq!(zero, 190, "{:?}", r.decisions);
        // Inactive while the last replica waits out the grace period, and still at zero after.
        assert!(
            r.decisions
                .iter()
                .filter(|(t, _)| *t >= inactive)
                .all(|(_, s)| s.activity == Activity::Inactive)
        );
        assert_eq!(r.ready, 0);
    }

    #[test]
    fn retention_longer_than_grace_keeps_the_last_replica() {
        let mut r = Replay::new(spec(&[(SCALE_TO_ZERO_POD_RETENTION, "90s")], 10));
        r.run(0, 10, 1.0);
        r.run(10, 300, 0.0);
        let inactive = r.first(|s| s.activity == Activity::Inactive).unwrap();
        assert_eq!(r.first(|s| s.desired == 0).unwrap(), inactive + 90);
    }

    #[test]
    fn a_resumed_scaler_keeps_its_earlier_scale() {
        // At zero before the restart: stays at zero through idleness, wakes on a poke.
        let mut r = Replay::new(spec(&[], 0));
        r.scaler = RevisionScaler::resume(r.scaler.spec().clone(), Duration::ZERO, 0);
        r.ready = 0;
        assert_eq!(r.scaler.scale().activity, Activity::Inactive);
        r.run(0, 120, 0.0);
        assert!(
            r.decisions.iter().all(|(_, s)| s.desired == 0),
            "{:?}",
            r.decisions
        );
        let now = Duration::from_secs(121);
        let busy = Stat {
            concurrency: 1.0,
            rps: 1.0,
        };
        assert!(r.scaler.poke(now, busy));
        assert_eq!(r.scaler.tick(now, 0).desired, 1);

        // Running at 3 under load (20 in flight, 7 a replica): resumes at 3, not at 1.
        let mut r = Replay::new(spec(&[], 10));
        r.scaler = RevisionScaler::resume(r.scaler.spec().clone(), Duration::ZERO, 3);
        r.ready = 3;
        r.run(0, 20, 20.0);
        assert!(
            r.decisions.iter().all(|(_, s)| s.desired == 3),
            "{:?}",
            r.decisions
        );

        // Bounds still hold: min-scale 2 raises a revision that was at zero.
        let s = spec(&[(sluice_api::autoscaling::MIN_SCALE, "2")], 0);
        assert_eq!(
            RevisionScaler::resume(s, Duration::ZERO, 0).scale().desired,
            2
        );
    }

    #[test]
    fn a_poke_at_zero_scales_up_at_once_and_activates() {
        let mut r = Replay::new(spec(&[], 0));
        r.run(0, 400, 0.0);
        assert_eq!(r.ready, 0);
        let now = Duration::from_millis(400_300);
        let stat = Stat {
            concurrency: 1.0,
            rps: 1.0,
        };
        assert!(r.scaler.poke(now, stat), "a request at zero pokes");
        let s = r.scaler.tick(now, 0);
        assert_eq!(s.desired, 1);
        assert_eq!(s.activity, Activity::Activating);
        let s = r.scaler.tick(now + Duration::from_secs(2), 1);
        assert_eq!(s.activity, Activity::Active);
        assert!(!r.scaler.poke(now + Duration::from_secs(2), stat));
    }

    #[test]
    fn activation_scale_brings_up_several_replicas_from_zero() {
        let mut r = Replay::new(spec(&[(ACTIVATION_SCALE, "3")], 0));
        r.run(0, 400, 0.0);
        assert_eq!(r.ready, 0);
        let now = Duration::from_secs(401);
        r.scaler.poke(
            now,
            Stat {
                concurrency: 1.0,
                rps: 0.0,
            },
        );
        assert_eq!(r.scaler.tick(now, 0).desired, 3);
    }

    #[test]
    fn min_scale_holds_through_idleness_and_max_scale_caps() {
        let mut r = Replay::new(spec(
            &[
                (sluice_api::autoscaling::MIN_SCALE, "2"),
                (sluice_api::autoscaling::MAX_SCALE, "4"),
            ],
            1,
        ));
        assert_eq!(r.ready, 2, "min-scale raises the initial scale");
        r.run(0, 60, 50.0);
        assert!(r.decisions.iter().all(|(_, s)| s.desired <= 4));
        assert_eq!(r.ready, 4);
        r.run(60, 400, 0.0);
        assert!(r.decisions.iter().all(|(_, s)| s.desired >= 2));
        assert_eq!(r.ready, 2);
        assert_eq!(r.decisions.last().unwrap().1.activity, Activity::Active);
    }

    #[test]
    fn steady_load_holds_and_a_step_panics_then_scales_down_gradually() {
        // CC 10 → target 7: 21 in flight is 3 replicas.
        let mut r = Replay::new(spec(&[], 10));
        r.run(0, 120, 21.0);
        assert!(
            r.decisions
                .iter()
                .filter(|(t, _)| *t >= 10)
                .all(|(_, s)| s.desired == 3),
            "{:?}",
            r.decisions
        );
        r.run(120, 150, 105.0);
        let panic_at = r
            .decisions
            .iter()
            .find(|(t, s)| *t >= 120 && s.panicking)
            .unwrap()
            .0;
        assert!(panic_at <= 126, "panicked at {panic_at}");
        let at_panic = r.decisions.iter().find(|(t, _)| *t == panic_at).unwrap().1;
        assert!(at_panic.desired > 3, "scaled up at once: {at_panic:?}");
        assert_eq!(r.ready, 15);
        r.run(150, 400, 7.0);
        let after: Vec<u32> = r
            .decisions
            .iter()
            .filter(|(t, _)| *t >= 150)
            .map(|(_, s)| s.desired)
            .collect();
        assert!(after.windows(2).all(|w| w[1] >= w[0] / 2), "{after:?}");
        assert_eq!(*after.last().unwrap(), 1);
    }

    #[test]
    fn scale_down_delay_holds_the_highest_recent_decision() {
        let mut r = Replay::new(spec(&[(SCALE_DOWN_DELAY, "20s")], 10));
        r.run(0, 60, 70.0);
        assert_eq!(r.ready, 10);
        r.run(60, 200, 7.0);
        let first_down = r
            .decisions
            .iter()
            .find(|(t, s)| *t >= 60 && s.desired < 10)
            .map(|(t, _)| *t)
            .unwrap();
        // Without the delay the panic window (6 s) would let it drop within a few seconds of
        // the stable average falling; the delay keeps 10 for 20 s after the last decision for 10.
        let undelayed = {
            let mut u = Replay::new(spec(&[], 10));
            u.run(0, 60, 70.0);
            u.run(60, 200, 7.0);
            u.decisions
                .iter()
                .find(|(t, s)| *t >= 60 && s.desired < 10)
                .map(|(t, _)| *t)
                .unwrap()
        };
        assert!(first_down >= undelayed + 18, "{first_down} vs {undelayed}");
        assert_eq!(r.ready, 1);
    }

    #[test]
    fn scale_to_zero_disabled_keeps_one() {
        let cfg = AutoscalerConfig {
            enable_scale_to_zero: false,
            ..AutoscalerConfig::default()
        };
        let mut r = Replay::new(ScalerSpec::resolve(&BTreeMap::new(), 0, &cfg));
        r.run(0, 400, 0.0);
        assert_eq!(r.ready, 1);
    }
}
