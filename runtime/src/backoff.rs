//! Restart backoff for supervised processes: doubling from an initial pause to a ceiling, and
//! back to the initial pause once an incarnation has run healthy long enough (as the kubelet
//! resets CrashLoopBackOff), so a process that crashes once a day is back at once every time.

use std::time::Duration;

/// The pause before each restart.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    healthy: Duration,
    next: Duration,
}

impl Backoff {
    /// Pauses from `initial` doubling to `max`; an incarnation that ran `healthy` or longer
    /// starts the sequence again.
    pub fn new(initial: Duration, max: Duration, healthy: Duration) -> Self {
        Self {
            initial,
            max,
            healthy,
            next: initial,
        }
    }

    /// The pause before restarting a process whose last incarnation ran for `ran`.
    pub fn after(&mut self, ran: Duration) -> Duration {
        if ran >= self.healthy {
            self.next = self.initial;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_while_crashing_and_resets_after_a_healthy_run() {
        let mut b = Backoff::new(100 * MS, 5000 * MS, 10_000 * MS);
        let quick = 50 * MS;
        let pauses: Vec<_> = (0..8).map(|_| b.after(quick).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // Six crashes, each after ten healthy seconds: the first pause every time.
        let healthy: Vec<_> = (0..6).map(|_| b.after(10_000 * MS).as_millis()).collect();
        assert_eq!(healthy, [100; 6]);
        // A crash loop after a healthy run climbs again from the start.
        assert_eq!(b.after(quick).as_millis(), 200);
        assert_eq!(b.after(9_999 * MS).as_millis(), 400);
    }
}
