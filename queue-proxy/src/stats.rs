//! The queue-proxy's request statistics: in-flight count, request count, and the
//! time-weighted average concurrency of each one-second window, rendered for Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sluice_api::contract::metrics;
use sluice_runtime::concurrency::{Report, Window};

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
        let (avg, rps) = (metrics::AVERAGE_CONCURRENCY, metrics::REQUESTS_PER_SECOND);
        format!(
            "# HELP queue_requests_total Requests proxied to the user process.\n\
             # TYPE queue_requests_total counter\n\
             queue_requests_total{{{labels}}} {}\n\
             # HELP queue_in_flight_requests Requests in flight or queued now.\n\
             # TYPE queue_in_flight_requests gauge\n\
             queue_in_flight_requests{{{labels}}} {}\n\
             # HELP {avg} Time-weighted average concurrency over the last second.\n\
             # TYPE {avg} gauge\n\
             {avg}{{{labels}}} {}\n\
             # HELP {rps} Requests in the last second.\n\
             # TYPE {rps} gauge\n\
             {rps}{{{labels}}} {}\n",
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
