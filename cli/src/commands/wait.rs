//! `--wait`: follow a Service until Ready, printing what it waits for (kn's progress lines).

use std::time::{Duration, Instant};

use anyhow::bail;
use sluice_api::condition::{ConditionStatus, find};
use sluice_api::{Object, ObjectKind, Service};

use crate::client::Client;

/// How long a Ready=False may last before the wait fails (kn's `--wait-window`).
const ERROR_WINDOW: Duration = Duration::from_secs(2);

/// Polls the service until it is Ready for its current generation, printing each new Ready
/// message as `  1.234s message`. Fails with `Reason: Message` when Ready stays False for the
/// error window, or after `timeout`.
pub async fn until_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<Service> {
    let start = Instant::now();
    let mut last_message = String::new();
    let mut false_since: Option<Instant> = None;
    loop {
        let svc = match client.get(ObjectKind::Service, namespace, name).await? {
            Some(Object::Service(s)) => s,
            _ => bail!("service '{name}' not found in namespace '{namespace}'"),
        };
        let status = svc.status.clone().unwrap_or_default();
        if status.observed_generation == svc.metadata.generation
            && let Some(ready) = find(&status.conditions, "Ready")
        {
            let elapsed = start.elapsed().as_secs_f64();
            let message = ready.message.clone().unwrap_or_default();
            if !message.is_empty() && message != last_message {
                println!("{elapsed:7.3}s {message}");
                last_message = message.clone();
            }
            match ready.status {
                ConditionStatus::True => {
                    println!("{elapsed:7.3}s Ready to serve.");
                    return Ok(svc);
                }
                ConditionStatus::False => {
                    let since = *false_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= ERROR_WINDOW {
                        bail!(
                            "{}: {}",
                            ready.reason.as_deref().unwrap_or("NotReady"),
                            message
                        );
                    }
                }
                ConditionStatus::Unknown => false_since = None,
            }
        }
        if start.elapsed() >= timeout {
            bail!(
                "timeout: service '{name}' not ready after {} seconds",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
