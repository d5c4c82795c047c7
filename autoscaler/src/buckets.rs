//! Knative's bucketed window (`aggregation/bucketing.go`): values recorded into one-second
//! buckets of a ring covering the window, averaged over the part of the window that has data.
//! Time is seconds since any fixed origin, so tests drive it.

/// A ring of one-second buckets covering `window` seconds.
#[derive(Clone, Debug)]
pub struct WindowBuckets {
    buckets: Vec<f64>,
    first_write: Option<u64>,
    last_write: u64,
    total: f64,
}

impl WindowBuckets {
    /// A window of `seconds` (at least 1) buckets.
    pub fn new(seconds: u64) -> Self {
        Self {
            buckets: vec![0.0; seconds.max(1) as usize],
            first_write: None,
            last_write: 0,
            total: 0.0,
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn slot(&self, t: u64) -> usize {
        (t % self.len()) as usize
    }

    /// Adds `value` to the bucket of second `t`. Values older than the window are dropped; a gap
    /// of a whole window starts over.
    pub fn record(&mut self, t: u64, value: f64) {
        let Some(_) = self.first_write else {
            self.first_write = Some(t);
            self.last_write = t;
            let slot = self.slot(t);
            self.buckets[slot] = value;
            self.total = value;
            return;
        };
        if t + self.len() <= self.last_write {
            return;
        }
        if t >= self.last_write + self.len() {
            self.buckets.iter_mut().for_each(|b| *b = 0.0);
            self.total = 0.0;
            self.first_write = Some(t);
        } else {
            for skipped in self.last_write + 1..=t {
                let slot = self.slot(skipped);
                self.total -= self.buckets[slot];
                self.buckets[slot] = 0.0;
            }
        }
        self.last_write = self.last_write.max(t);
        let slot = self.slot(t);
        self.buckets[slot] += value;
        self.total += value;
    }

    /// Whether no value was recorded within the window before `now`.
    pub fn is_empty(&self, now: u64) -> bool {
        self.first_write.is_none() || now >= self.last_write + self.len()
    }

    /// The average per second over the filled part of the window at `now`.
    pub fn average(&self, now: u64) -> f64 {
        let Some(first) = self.first_write else {
            return 0.0;
        };
        let filled = self.last_write - first + 1;
        let avg = if now <= self.last_write {
            self.total / filled.min(self.len()) as f64
        } else if now - self.last_write < self.len() {
            // Buckets after the last write are unknown, not zero; the oldest ones fall out.
            let stale = now - self.last_write;
            let mut total = self.total;
            for i in 1..=stale {
                total -= self.buckets[self.slot(self.last_write + i)];
            }
            total / filled.min(self.len() - stale).max(1) as f64
        } else {
            0.0
        };
        (avg * 1e6).round() / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_over_the_filled_part_until_the_window_is_full() {
        let mut w = WindowBuckets::new(60);
        w.record(100, 10.0);
        w.record(101, 20.0);
        assert_eq!(w.average(101), 15.0);
        for t in 102..200 {
            w.record(t, 4.0);
        }
        assert_eq!(w.average(199), 4.0);
    }

    #[test]
    fn old_values_leave_the_window_and_a_full_gap_empties_it() {
        let mut w = WindowBuckets::new(6);
        for t in 0..6 {
            w.record(t, 6.0);
        }
        w.record(8, 0.0); // seconds 6 and 7 had nothing; 0..=2 fall out
        assert_eq!(w.average(8), 18.0 / 6.0);
        assert!(!w.is_empty(13));
        assert!(w.is_empty(14));
        w.record(30, 3.0);
        assert_eq!(w.average(30), 3.0);
        // Late values older than the window are dropped.
        w.record(20, 100.0);
        assert_eq!(w.average(30), 3.0);
    }
}
