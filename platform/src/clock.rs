//! Time as a seam. The control loop reads the wall clock (condition transition times, the age
//! config-gc compares, rollout steps) and a monotonic clock (the autoscaler's windows) only
//! through a [`Clock`], so its tests drive time instead of sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;

/// Where the control loop gets the time.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time.
    fn now(&self) -> Timestamp;
    /// Monotonic time since the clock's origin; never goes back.
    fn elapsed(&self) -> Duration;
}

/// The machine's clocks.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to: both readings advance together.
#[derive(Debug)]
pub struct ManualClock {
    at: Mutex<(Timestamp, Duration)>,
}

impl ManualClock {
    /// A clock reading `start`, its monotonic reading zero.
    pub fn new(start: Timestamp) -> Self {
        Self {
            at: Mutex::new((start, Duration::ZERO)),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut at = self.at.lock().expect("clock lock");
        let wall = at.0 + jiff::SignedDuration::try_from(by).expect("a duration in range");
        *at = (wall, at.1 + by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.at.lock().expect("clock lock").0
    }

    fn elapsed(&self) -> Duration {
        self.at.lock().expect("clock lock").1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_both_readings_together() {
        let start: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
        assert_eq!(
            clock.now().to_string(),
            "2026-12-01T00:00:01.5Z",
            "wall time follows"
        );
    }
}
