//! Defaulting as Knative's webhook does it, from config-defaults.

use crate::config::DefaultsConfig;
use crate::revision::RevisionSpec;
use crate::route::TrafficTarget;
use crate::template::{Probe, TcpSocketAction};

/// Fills a revision spec's unset fields from config-defaults.
pub fn revision_spec(spec: &mut RevisionSpec, cfg: &DefaultsConfig) {
    if spec.container_concurrency.is_none() {
        spec.container_concurrency = Some(cfg.container_concurrency);
    }
    if spec.timeout_seconds.is_none_or(|t| t == 0) {
        spec.timeout_seconds = Some(cfg.revision_timeout_seconds);
    }
    let timeout = spec.timeout_seconds.unwrap_or(cfg.revision_timeout_seconds);
    // Knative defaults these two only when the default is set and below the timeout.
    let rs = cfg.revision_response_start_timeout_seconds;
    if spec.response_start_timeout_seconds.is_none() && rs > 0 && rs < timeout {
        spec.response_start_timeout_seconds = Some(rs);
    }
    let idle = cfg.revision_idle_timeout_seconds;
    if spec.idle_timeout_seconds.is_none() && idle > 0 && idle < timeout {
        spec.idle_timeout_seconds = Some(idle);
    }
    if spec.enable_service_links.is_none() {
        spec.enable_service_links = Some(cfg.enable_service_links);
    }
    let many = spec.containers.len() > 1;
    let serving = spec
        .containers
        .iter()
        .position(|c| !c.ports.is_empty())
        .unwrap_or(0);
    for (i, c) in spec.containers.iter_mut().enumerate() {
        if c.name.as_deref().is_none_or(str::is_empty) {
            let base = &cfg.container_name_template;
            c.name = Some(if many {
                format!("{base}-{i}")
            } else {
                base.clone()
            });
        }
        if i == serving {
            let probe = c.readiness_probe.get_or_insert_with(Probe::default);
            if probe.http_get.is_none() && probe.tcp_socket.is_none() && probe.exec.is_none() {
                probe.tcp_socket = Some(TcpSocketAction { port: Some(0) });
            }
            if probe.success_threshold.is_none() {
                probe.success_threshold = Some(1);
            }
        }
    }
}

/// Fills a traffic block: a Service with none gets 100% on the latest revision; each target's
/// `latestRevision` defaults to "no revisionName" and a missing percent to 0.
pub fn traffic(targets: &mut Vec<TrafficTarget>, in_service: bool) {
    if targets.is_empty() && in_service {
        targets.push(TrafficTarget {
            percent: Some(100),
            latest_revision: Some(true),
            ..TrafficTarget::default()
        });
    }
    for t in targets {
        if t.latest_revision.is_none() {
            t.latest_revision = Some(t.revision_name.is_none());
        }
        if t.percent.is_none() {
            t.percent = Some(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Container;

    #[test]
    fn revision_spec_gets_knative_defaults() {
        let mut spec = RevisionSpec {
            containers: vec![Container::default()],
            ..RevisionSpec::default()
        };
        revision_spec(&mut spec, &DefaultsConfig::default());
        assert_eq!(spec.container_concurrency, Some(0));
        assert_eq!(spec.timeout_seconds, Some(300));
        // Response-start default (300) equals the timeout, so it stays unset, as in Knative.
        assert_eq!(spec.response_start_timeout_seconds, None);
        assert_eq!(spec.containers[0].name.as_deref(), Some("user-container"));
        let probe = spec.containers[0].readiness_probe.as_ref().unwrap();
        assert_eq!(probe.tcp_socket, Some(TcpSocketAction { port: Some(0) }));
        assert_eq!(probe.success_threshold, Some(1));
    }

    #[test]
    fn empty_service_traffic_goes_to_latest() {
        let mut t = Vec::new();
        traffic(&mut t, true);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].percent, Some(100));
        assert_eq!(t[0].latest_revision, Some(true));
        let mut pinned = vec![TrafficTarget {
            revision_name: Some("a-00001".into()),
            ..Default::default()
        }];
        traffic(&mut pinned, true);
        assert_eq!(pinned[0].latest_revision, Some(false));
        assert_eq!(pinned[0].percent, Some(0));
    }
}
