//! Request statistics: in-flight count, request count, and the time-weighted average
//! concurrency over each reporting window (Knative's `RequestStats`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Shared request statistics of one queue-proxy.
#[derive(Debug)]
pub struct Stats {
    window: Mutex<Window>,
    in_flight: AtomicU64,
    total: AtomicU64,
    last: Mutex<Report>,
}

/// Marks a request in flight until dropped.
pub struct InFlight(Arc<Stats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0
            .window
            .lock()
            .expect("stats lock")
            .request_out(Instant::now());
    }
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self {
            window: Mutex::new(Window::new(Instant::now())),
            in_flight: AtomicU64::new(0),
            total: AtomicU64::new(0),
            last: Mutex::new(Report::default()),
        }
    }

    /// Counts a request in; it counts out when the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.window
            .lock()
            .expect("stats lock")
            .request_in(Instant::now());
        InFlight(self.clone())
    }

    /// Closes the reporting window (called every second).
    pub fn tick(&self) {
        let report = self
            .window
            .lock()
            .expect("stats lock")
            .report(Instant::now());
        *self.last.lock().expect("stats lock") = report;
    }

    /// Prometheus text exposition of the counters and the last report.
    pub fn render(&self, labels: &str) -> String {
        let last = *self.last.lock().expect("stats lock");
        format!(
            "# HELP queue_requests_total Requests proxied to the user process.\n\
             # TYPE queue_requests_total counter\n\
             queue_requests_total{{{labels}}} {}\n\
             # HELP queue_in_flight_requests Requests in flight or queued now.\n\
             # TYPE queue_in_flight_requests gauge\n\
             queue_in_flight_requests{{{labels}}} {}\n\
             # HELP queue_average_concurrent_requests Time-weighted average concurrency over the last second.\n\
             # TYPE queue_average_concurrent_requests gauge\n\
             queue_average_concurrent_requests{{{labels}}} {}\n\
             # HELP queue_requests_per_second Requests in the last second.\n\
             # TYPE queue_requests_per_second gauge\n\
             queue_requests_per_second{{{labels}}} {}\n",
            self.total.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Acquire),
            last.average_concurrency,
            last.requests,
        )
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[test]
    fn render_names_the_metrics() {
        let s = Arc::new(Stats::new());
        let g = s.begin();
        let text = s.render("revision=\"r\"");
        assert!(
            text.contains("queue_in_flight_requests{revision=\"r\"} 1"),
            "{text}"
        );
        drop(g);
        assert!(s.render("").contains("queue_requests_total{} 1"));
    }
}
