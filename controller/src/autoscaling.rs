//! The autoscaler's driver: one [`RevisionScaler`] per reachable revision, fed every second
//! with the queue-proxies' scraped averages and with the activator's reports, ticked every
//! 2 s (and at once when a request arrives for a revision at zero). The reconcile driver reads
//! the decided scale; a change of scale wakes it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_api::contract::metrics;
use sluice_autoscaler::{RevisionScaler, Scale, ScalerSpec, Stat};
use sluice_platform::{ActivatorStat, Clock, RevisionChanges, RevisionKey, Workloads};
use tokio::sync::watch;

/// Knative's scrape period.
pub const SCRAPE_PERIOD: Duration = Duration::from_secs(1);
/// Knative's decision period.
pub const TICK_PERIOD: Duration = Duration::from_secs(2);

/// Every revision's autoscaler, shared by the reconcile driver, the scrape loop and the
/// activator's reports.
pub struct Autoscaler {
    scalers: Mutex<HashMap<RevisionKey, RevisionScaler>>,
    /// Every revision synced in this process's life: only a first sync resumes a stored scale.
    seen: Mutex<HashSet<RevisionKey>>,
    clock: Arc<dyn Clock>,
    changes: RevisionChanges,
}

impl Autoscaler {
    /// No revisions yet; windows and decisions on `clock`'s monotonic time.
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            scalers: Mutex::default(),
            seen: Mutex::default(),
            clock,
            changes: RevisionChanges::new(),
        })
    }

    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    /// A signal that changes whenever a decision changes a revision's scale or activity.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The version [`Autoscaler::changes`] is at.
    pub fn version(&self) -> u64 {
        self.changes.version()
    }

    /// The revisions whose decision changed after the [`Autoscaler::changes`] value `seen`, or
    /// `None` when that is too long ago to say.
    pub fn changed_since(&self, seen: u64) -> Option<Vec<RevisionKey>> {
        self.changes.since(seen)
    }

    /// The scale of a reachable revision under `spec`. Its scaler starts the first time:
    /// at `before` when the revision was scaled there before this process started (its
    /// stored status says so; a restart must not wake every revision at zero), else at the
    /// initial scale.
    pub fn sync(&self, key: &RevisionKey, spec: ScalerSpec, before: Option<u32>) -> Scale {
        let now = self.now();
        let mut scalers = self.scalers.lock().expect("autoscaler lock");
        let first = self.seen.lock().expect("seen lock").insert(key.clone());
        let resumed = before.filter(|_| first);
        let scaler = scalers.entry(key.clone()).or_insert_with(|| match resumed {
            Some(desired) => RevisionScaler::resume(spec.clone(), now, desired),
            None => RevisionScaler::new(spec.clone(), now),
        });
        if *scaler.spec() != spec {
            scaler.set_spec(spec);
        }
        scaler.scale()
    }

    /// The last decision for a revision being scaled.
    pub fn scale(&self, key: &RevisionKey) -> Option<Scale> {
        let scalers = self.scalers.lock().expect("autoscaler lock");
        scalers.get(key).map(RevisionScaler::scale)
    }

    /// Forgets every revision not in `keep` (deleted or unreachable).
    pub fn retain(&self, keep: &HashSet<RevisionKey>) {
        self.scalers
            .lock()
            .expect("autoscaler lock")
            .retain(|k, _| keep.contains(k));
    }

    /// Forgets `gone` (revisions deleted or unreachable).
    pub fn forget(&self, gone: &[RevisionKey]) {
        let mut scalers = self.scalers.lock().expect("autoscaler lock");
        for key in gone {
            scalers.remove(key);
        }
    }

    /// The revisions being scaled.
    pub fn keys(&self) -> Vec<RevisionKey> {
        let scalers = self.scalers.lock().expect("autoscaler lock");
        scalers.keys().cloned().collect()
    }

    /// Records a revision's scraped stat.
    pub fn record(&self, key: &RevisionKey, stat: Stat) {
        let now = self.now();
        if let Some(s) = self.scalers.lock().expect("autoscaler lock").get_mut(key) {
            s.record(now, stat);
        }
    }

    /// Records the activator's report; a revision at zero with requests waiting decides at
    /// once.
    pub fn report(&self, report: &ActivatorStat) {
        let now = self.now();
        let stat = Stat {
            concurrency: report.held,
            rps: report.held_requests,
        };
        let changed = {
            let mut scalers = self.scalers.lock().expect("autoscaler lock");
            let Some(s) = scalers.get_mut(&report.revision) else {
                return;
            };
            if !s.poke(now, stat) {
                return;
            }
            let before = s.scale();
            let after = s.tick(now, 0);
            tracing::info!(revision = %report.revision, desired = after.desired, "Request for a revision at zero; scaling up.");
            before != after
        };
        if changed {
            self.changes.touch(&report.revision);
        }
    }

    /// Decides every revision's scale from its ready replicas; wakes the driver on a change.
    pub fn tick(&self, ready: impl Fn(&RevisionKey) -> u32) {
        let now = self.now();
        let mut changed = Vec::new();
        for (key, s) in self.scalers.lock().expect("autoscaler lock").iter_mut() {
            let before = s.scale();
            let after = s.tick(now, ready(key));
            if before.desired != after.desired
                || before.activity != after.activity
                || (before.excess_burst_capacity < 0.0) != (after.excess_burst_capacity < 0.0)
            {
                tracing::info!(revision = %key, from = before.desired, to = after.desired, activity = ?after.activity, panicking = after.panicking, "Scale decided.");
                changed.push(key.clone());
            }
        }
        for key in &changed {
            self.changes.touch(key);
        }
    }
}

/// Scrapes every revision's ready queue-proxies each second and decides every 2 s, until
/// `shutdown`.
pub async fn run<W: Workloads>(
    autoscaler: Arc<Autoscaler>,
    workloads: Arc<W>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut scrape = tokio::time::interval(SCRAPE_PERIOD);
    scrape.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let client = scraper();
    let mut decide = tokio::time::interval(TICK_PERIOD);
    decide.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = scrape.tick() => {
                let mut scrapes = tokio::task::JoinSet::new();
                for (key, status) in workloads.ready() {
                    if status.metrics.is_empty() {
                        continue;
                    }
                    let client = client.clone();
                    scrapes.spawn(async move { (key, scrape_all(&client, &status.metrics).await) });
                }
                while let Some(Ok((key, stat))) = scrapes.join_next().await {
                    if let Some(stat) = stat {
                        autoscaler.record(&key, stat);
                    }
                }
            }
            _ = decide.tick() => {
                // Revisions at zero are not looked up one by one: at 10,000 that was most of
                // an idle daemon's CPU.
                let ready: HashMap<RevisionKey, u32> = workloads
                    .ready()
                    .into_iter()
                    .map(|(key, s)| (key, u32::try_from(s.endpoints.len()).unwrap_or(u32::MAX)))
                    .collect();
                autoscaler.tick(|key| ready.get(key).copied().unwrap_or(0));
            }
        }
    }
}

/// Scrapes queue-proxies over kept-alive connections (one per queue-proxy, reused every
/// second), so an idle replica costs no connection churn: no new socket, no TIME_WAIT, no
/// connection-tracking entry per scrape.
type Scraper = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

fn scraper() -> Scraper {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(SCRAPE_PERIOD));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(connector)
}

/// The revision-wide stat: the sum over its replicas. `None` when no replica answered.
async fn scrape_all(client: &Scraper, addrs: &[SocketAddr]) -> Option<Stat> {
    let mut set = tokio::task::JoinSet::new();
    for addr in addrs.iter().copied() {
        set.spawn(scrape(client.clone(), addr));
    }
    let mut total: Option<Stat> = None;
    while let Some(Ok(stat)) = set.join_next().await {
        if let Some(s) = stat {
            let t = total.get_or_insert_with(Stat::default);
            t.concurrency += s.concurrency;
            t.rps += s.rps;
        }
    }
    total
}

/// One queue-proxy's last-second averages from its admin `/metrics` (at most 64 KiB read).
async fn scrape(client: Scraper, addr: SocketAddr) -> Option<Stat> {
    use http_body_util::BodyExt;
    let attempt = async {
        let uri: hyper::Uri = format!("http://{addr}/metrics").parse().ok()?;
        let response = client.get(uri).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .ok()?
            .to_bytes();
        parse_metrics(&String::from_utf8_lossy(&body))
    };
    tokio::time::timeout(SCRAPE_PERIOD, attempt)
        .await
        .ok()
        .flatten()
}

/// Reads `queue_average_concurrent_requests` and `queue_requests_per_second` from Prometheus
/// text.
fn parse_metrics(text: &str) -> Option<Stat> {
    let value = |name: &str| {
        text.lines()
            .find(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some(Stat {
        concurrency: value(metrics::AVERAGE_CONCURRENCY)?,
        rps: value(metrics::REQUESTS_PER_SECOND).unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::config::AutoscalerConfig;

    #[test]
    fn reads_the_queue_proxy_averages() {
        let text = "HTTP/1.1 200 OK\r\n\r\n# HELP x\n\
            queue_average_concurrent_requests{revision=\"a\"} 2.5\n\
            queue_requests_per_second{revision=\"a\"} 12\n";
        assert_eq!(
            parse_metrics(text),
            Some(Stat {
                concurrency: 2.5,
                rps: 12.0
            })
        );
        assert_eq!(parse_metrics("nothing"), None);
    }

    #[test]
    fn a_report_for_a_revision_at_zero_decides_at_once() {
        let a = Autoscaler::new(Arc::new(sluice_platform::SystemClock::new()));
        let key = RevisionKey::new("default", "hello-00001");
        let cfg = AutoscalerConfig {
            allow_zero_initial_scale: true,
            initial_scale: 0,
            ..AutoscalerConfig::default()
        };
        let spec = ScalerSpec::resolve(&Default::default(), 0, &cfg);
        assert_eq!(a.sync(&key, spec.clone(), None).desired, 0);
        let mut changes = a.changes();
        changes.mark_unchanged();
        a.report(&ActivatorStat {
            revision: key.clone(),
            held: 1.0,
            in_flight: 0.0,
            held_requests: 1.0,
        });
        assert!(changes.has_changed().unwrap(), "the driver is woken");
        assert_eq!(a.sync(&key, spec, None).desired, 1);
    }
}
