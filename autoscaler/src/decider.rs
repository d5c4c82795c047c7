//! The KPA decision (Knative's `autoscaler.go: Scale`): desired replicas from the stable and
//! panic averages, limited by the scale-up and scale-down rates, with panic mode that never
//! scales down and ends a stable window after the last excess, and the excess burst capacity
//! that decides whether the activator stays in the path. Time is seconds, passed in.

/// The decider's fixed inputs for one revision.
#[derive(Clone, Debug, PartialEq)]
pub struct DeciderSpec {
    /// Metric value per replica to aim for.
    pub target: f64,
    /// Metric value per replica before utilization (for burst capacity).
    pub total: f64,
    /// Panic when panic-window demand reaches this multiple of ready replicas (2.0).
    pub panic_threshold: f64,
    /// Stable window, seconds (panic lasts this long after the last excess).
    pub stable_window: u64,
    /// Most replicas one decision may multiply by (1000).
    pub max_scale_up_rate: f64,
    /// Most replicas one decision may divide by (2).
    pub max_scale_down_rate: f64,
    /// Smallest non-zero scale (`activation-scale`, 1 = none).
    pub activation_scale: u32,
    /// `target-burst-capacity`: 0, -1 (activator always in path) or spare capacity.
    pub target_burst_capacity: f64,
    /// Whether the revision is routed (unreachable revisions may drop to zero at once).
    pub reachable: bool,
}

/// One decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Replicas wanted.
    pub desired: u32,
    /// Spare capacity beyond the burst capacity; negative keeps the activator in the path.
    pub excess_burst_capacity: f64,
    /// Whether the decider is panicking.
    pub panicking: bool,
}

/// The decider's memory between decisions.
#[derive(Clone, Debug, Default)]
pub struct Decider {
    panic_since: Option<u64>,
    max_panic_pods: u32,
}

impl Decider {
    /// A decider for a revision that already has `ready` replicas: with more than one it starts
    /// in panic, so a restart does not scale down on lost history.
    pub fn new(ready: u32, now: u64) -> Self {
        if ready > 1 {
            Self {
                panic_since: Some(now),
                max_panic_pods: ready,
            }
        } else {
            Self::default()
        }
    }

    /// Decides at second `now` from `ready` replicas and the stable and panic averages.
    pub fn decide(
        &mut self,
        spec: &DeciderSpec,
        now: u64,
        ready: u32,
        stable: f64,
        panic: f64,
    ) -> Decision {
        let ready_pods = f64::from(ready.max(1));
        let max_up = (spec.max_scale_up_rate * ready_pods).ceil();
        let max_down = if spec.reachable {
            (ready_pods / spec.max_scale_down_rate).floor()
        } else {
            0.0
        };
        let stable_pods = (stable / spec.target).ceil();
        let panic_pods = (panic / spec.target).ceil();
        let mut desired_stable = stable_pods.clamp(max_down, max_up);
        let mut desired_panic = panic_pods.clamp(max_down, max_up);
        let activation = f64::from(spec.activation_scale);
        if spec.activation_scale > 1 {
            if stable_pods > 0.0 && activation > desired_stable {
                desired_stable = activation;
            }
            if panic_pods > 0.0 && activation > desired_panic {
                desired_panic = activation;
            }
        }
        let over = panic_pods / ready_pods >= spec.panic_threshold;
        if over {
            self.panic_since = Some(now);
        } else if self
            .panic_since
            .is_some_and(|since| since + spec.stable_window < now)
        {
            self.panic_since = None;
            self.max_panic_pods = 0;
        }
        let mut desired = desired_stable;
        if self.panic_since.is_some() {
            desired = desired_stable.max(desired_panic);
            desired = desired.max(f64::from(self.max_panic_pods));
            self.max_panic_pods = desired as u32;
        }
        let tbc = spec.target_burst_capacity;
        let excess_burst_capacity = if tbc == 0.0 {
            0.0
        } else if tbc < 0.0 {
            -1.0
        } else {
            (f64::from(ready) * spec.total - tbc - panic).floor()
        };
        Decision {
            desired: desired as u32,
            excess_burst_capacity,
            panicking: self.panic_since.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buckets::WindowBuckets;

    fn spec() -> DeciderSpec {
        DeciderSpec {
            target: 10.0,
            total: 10.0,
            panic_threshold: 2.0,
            stable_window: 60,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            activation_scale: 1,
            target_burst_capacity: 211.0,
            reachable: true,
        }
    }

    /// Replays a per-second concurrency trace through 60 s and 6 s windows, deciding every 2 s
    /// as Knative does, with ready replicas following the decision at once.
    fn replay(trace: &[(u64, f64)], start_ready: u32) -> Vec<(u64, Decision)> {
        let (mut stable, mut panic) = (WindowBuckets::new(60), WindowBuckets::new(6));
        let mut decider = Decider::new(start_ready, 0);
        let mut ready = start_ready;
        let mut out = Vec::new();
        let end = trace.last().map_or(0, |(t, _)| *t);
        let mut value = 0.0;
        for t in 0..=end {
            if let Some((_, v)) = trace.iter().rev().find(|(at, _)| *at <= t) {
                value = *v;
            }
            stable.record(t, value);
            panic.record(t, value);
            if t % 2 == 0 {
                let d = decider.decide(&spec(), t, ready, stable.average(t), panic.average(t));
                ready = d.desired;
                out.push((t, d));
            }
        }
        out
    }

    #[test]
    fn steady_load_at_target_holds_the_count() {
        let decisions = replay(&[(0, 30.0), (120, 30.0)], 3);
        assert!(
            decisions
                .iter()
                .filter(|(t, _)| *t > 60)
                .all(|(_, d)| d.desired == 3),
            "{decisions:?}"
        );
    }

    #[test]
    fn a_step_to_five_times_panics_within_the_panic_window_and_scales_up_at_once() {
        let decisions = replay(&[(0, 20.0), (100, 100.0), (130, 100.0)], 2);
        let (t, d) = decisions
            .iter()
            .find(|(t, d)| *t >= 100 && d.panicking)
            .copied()
            .expect("never panicked");
        assert!(t <= 106, "panic at {t}");
        assert!(d.desired >= 4, "panic decision {d:?}");
        let at_end = decisions.last().unwrap().1;
        assert_eq!(at_end.desired, 10);
    }

    #[test]
    fn a_drop_scales_down_at_most_by_half_per_decision_and_not_while_panicking() {
        let mut decider = Decider::default();
        let d = decider.decide(&spec(), 0, 8, 10.0, 10.0);
        assert_eq!(d.desired, 4, "8 ready, demand for 1: halve at most");
        let d = decider.decide(&spec(), 2, 4, 10.0, 10.0);
        assert_eq!(d.desired, 2);
        // In panic the count never drops, until a stable window after the last excess.
        let mut p = Decider::default();
        assert_eq!(p.decide(&spec(), 0, 2, 0.0, 100.0).desired, 10);
        assert_eq!(p.decide(&spec(), 2, 10, 10.0, 10.0).desired, 10);
        assert_eq!(p.decide(&spec(), 60, 10, 10.0, 10.0).desired, 10);
        let after = p.decide(&spec(), 61, 10, 10.0, 10.0);
        assert!(!after.panicking);
        assert_eq!(after.desired, 5);
    }

    #[test]
    fn idle_reaches_zero_once_the_stable_window_is_empty() {
        let decisions = replay(&[(0, 10.0), (30, 0.0), (100, 0.0)], 1);
        let first_zero = decisions
            .iter()
            .find(|(_, d)| d.desired == 0)
            .map(|(t, _)| *t)
            .unwrap();
        // The 60 s window still averages above zero until the last busy second leaves it.
        assert_eq!(first_zero, 90, "{decisions:?}");
    }

    #[test]
    fn activation_scale_and_burst_capacity() {
        let mut s = spec();
        s.activation_scale = 3;
        assert_eq!(Decider::default().decide(&s, 0, 1, 1.0, 1.0).desired, 3);
        assert_eq!(Decider::default().decide(&s, 0, 1, 0.0, 0.0).desired, 0);
        // Knative: EBC = floor(ready × total − TBC − panic); with TBC 0 it is 0, with −1 it is −1.
        assert_eq!(
            Decider::default()
                .decide(&spec(), 0, 30, 100.0, 50.0)
                .excess_burst_capacity,
            39.0
        );
        s.target_burst_capacity = 0.0;
        assert_eq!(
            Decider::default()
                .decide(&s, 0, 1, 1.0, 1.0)
                .excess_burst_capacity,
            0.0
        );
        s.target_burst_capacity = -1.0;
        assert_eq!(
            Decider::default()
                .decide(&s, 0, 1, 1.0, 1.0)
                .excess_burst_capacity,
            -1.0
        );
    }

    #[test]
    fn knative_documented_examples() {
        // Default target without a limit: 100 × 70% = 70 per replica; 350 in flight → 5.
        let mut s = spec();
        s.target = 70.0;
        s.total = 100.0;
        assert_eq!(Decider::default().decide(&s, 0, 5, 350.0, 350.0).desired, 5);
        // One replica seeing 3× its target in the panic window panics and jumps straight there.
        let d = Decider::default().decide(&s, 0, 1, 70.0, 210.0);
        assert!(d.panicking);
        assert_eq!(d.desired, 3);
        // Scale-down is at most halving: 10 ready, no demand → 5.
        assert_eq!(Decider::default().decide(&s, 0, 10, 0.0, 0.0).desired, 5);
    }

    #[test]
    fn a_restart_with_replicas_starts_in_panic() {
        let mut d = Decider::new(5, 0);
        assert_eq!(
            d.decide(&spec(), 2, 5, 0.0, 0.0).desired,
            5,
            "no scale-down on lost history"
        );
    }
}
