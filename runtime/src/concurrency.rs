//! Time-weighted request concurrency over reporting windows (Knative's `RequestStats`), as
//! both proxies measure it for the autoscaler. All times are passed in, so tests drive them.

use std::time::Instant;

/// One reporting window's result.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Report {
    /// Time-weighted average of in-flight requests over the window.
    pub average_concurrency: f64,
    /// Requests that arrived in the window.
    pub requests: u64,
}

/// The time-weighted concurrency accumulator; all times are passed in, so tests drive them.
#[derive(Debug)]
pub struct Window {
    concurrency: u64,
    last_change: Instant,
    window_start: Instant,
    weighted: f64,
    requests: u64,
}

impl Window {
    /// An empty window starting at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            concurrency: 0,
            last_change: now,
            window_start: now,
            weighted: 0.0,
            requests: 0,
        }
    }

    fn advance(&mut self, now: Instant) {
        let dt = now
            .saturating_duration_since(self.last_change)
            .as_secs_f64();
        self.weighted += self.concurrency as f64 * dt;
        self.last_change = now;
    }

    /// A request arrived.
    pub fn request_in(&mut self, now: Instant) {
        self.advance(now);
        self.concurrency += 1;
        self.requests += 1;
    }

    /// A request finished.
    pub fn request_out(&mut self, now: Instant) {
        self.advance(now);
        self.concurrency = self.concurrency.saturating_sub(1);
    }

    /// Closes the window at `now` and starts the next.
    pub fn report(&mut self, now: Instant) -> Report {
        self.advance(now);
        let span = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        let report = Report {
            average_concurrency: if span > 0.0 {
                self.weighted / span
            } else {
                self.concurrency as f64
            },
            requests: self.requests,
        };
        self.window_start = now;
        self.weighted = 0.0;
        self.requests = 0;
        report
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn average_is_time_weighted() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        w.request_in(t0);
        w.request_in(t0 + Duration::from_millis(500));
        w.request_out(t0 + Duration::from_millis(1000));
        // 0.5 s at 1, 0.5 s at 2, 1 s at 1: 2.5 request-seconds over 2 s.
        let r = w.report(t0 + Duration::from_secs(2));
        assert!((r.average_concurrency - 1.25).abs() < 1e-9, "{r:?}");
        assert_eq!(r.requests, 2);
        // The next window starts with the one request still in flight.
        let r = w.report(t0 + Duration::from_secs(3));
        assert!((r.average_concurrency - 1.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.requests, 0);
    }
}
