//! Defaulting as Knative's webhook does it, from config-defaults.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::DefaultsConfig;
use crate::revision::RevisionSpec;
use crate::route::TrafficTarget;
use crate::template::{Container, Probe, TcpSocketAction};

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
    // Knative's names: the template's for a lone container, `<template>-<i>` for several,
    // never one a user already gave.
    let mut taken: BTreeSet<String> = spec
        .containers
        .iter()
        .chain(&spec.init_containers)
        .filter_map(|c| c.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    name_containers(
        &mut spec.containers,
        &cfg.container_name_template,
        &mut taken,
    );
    name_containers(&mut spec.init_containers, INIT_CONTAINER_NAME, &mut taken);
    // Mounts of volumes a pod cannot write (config maps, secrets, projections) are read-only.
    let writable: BTreeSet<&str> = spec
        .volumes
        .iter()
        .filter(|v| {
            v.empty_dir.is_some() || v.persistent_volume_claim.is_some() || v.ephemeral.is_some()
        })
        .map(|v| v.name.as_str())
        .collect();
    let serving = spec.serving_index();
    for (i, c) in spec.containers.iter_mut().enumerate() {
        if Some(i) == serving {
            let probe = c.readiness_probe.get_or_insert_with(Probe::default);
            if probe.handlers().is_empty() {
                probe.tcp_socket = Some(TcpSocketAction {
                    port: Some(IntOrString::Int(0)),
                    host: None,
                });
            }
        }
        if let Some(probe) = &mut c.readiness_probe {
            readiness_probe(probe);
        }
        container(c, &writable);
    }
    for c in &mut spec.init_containers {
        container(c, &writable);
    }
}

/// Knative's default name of init containers (config-defaults `init-container-name-template`).
pub const INIT_CONTAINER_NAME: &str = "init-container";

fn name_containers(containers: &mut [Container], base: &str, taken: &mut BTreeSet<String>) {
    let many = containers.len() > 1;
    for (i, c) in containers.iter_mut().enumerate() {
        if c.name.as_deref().is_some_and(|n| !n.is_empty()) {
            continue;
        }
        let mut n = i;
        let mut name = if many {
            format!("{base}-{n}")
        } else {
            base.to_owned()
        };
        while taken.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        taken.insert(name.clone());
        c.name = Some(name);
    }
}

/// Knative's readiness defaults: one success is enough; a probe with a period gets
/// Kubernetes' failure threshold (3) and timeout (1s).
fn readiness_probe(probe: &mut Probe) {
    if probe.success_threshold.is_none() {
        probe.success_threshold = Some(1);
    }
    if probe.period_seconds.is_some_and(|p| p != 0) {
        probe.failure_threshold.get_or_insert(3);
        probe.timeout_seconds.get_or_insert(1);
    }
}

fn container(c: &mut Container, writable: &BTreeSet<&str>) {
    for probe in [
        &mut c.readiness_probe,
        &mut c.liveness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        if let Some(grpc) = &mut probe.grpc {
            grpc.service.get_or_insert_with(String::new);
        }
    }
    for m in &mut c.volume_mounts {
        if !writable.contains(m.name.as_str()) {
            m.read_only = Some(true);
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
        assert_eq!(
            probe.tcp_socket,
            Some(TcpSocketAction {
                port: Some(IntOrString::Int(0)),
                host: None
            })
        );
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

    #[test]
    fn init_containers_sidecars_and_mounts_get_knatives_defaults() {
        use k8s_openapi::api::core::v1::{
            ConfigMapVolumeSource, ContainerPort, EmptyDirVolumeSource, Volume, VolumeMount,
        };
        let mount = |name: &str| VolumeMount {
            name: name.into(),
            mount_path: format!("/{name}"),
            ..VolumeMount::default()
        };
        let mut spec = RevisionSpec {
            containers: vec![
                Container {
                    name: Some("user-container-1".into()),
                    ..Container::default()
                },
                Container {
                    ports: vec![ContainerPort {
                        container_port: 8080,
                        ..ContainerPort::default()
                    }],
                    volume_mounts: vec![mount("config"), mount("scratch")],
                    ..Container::default()
                },
            ],
            init_containers: vec![Container {
                volume_mounts: vec![mount("config")],
                ..Container::default()
            }],
            volumes: vec![
                Volume {
                    name: "config".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: "c".into(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "scratch".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
            ],
            ..RevisionSpec::default()
        };
        spec.containers[0].readiness_probe = Some(Probe {
            tcp_socket: Some(TcpSocketAction {
                port: Some(IntOrString::Int(9000)),
                host: None,
            }),
            period_seconds: Some(5),
            ..Probe::default()
        });
        revision_spec(&mut spec, &DefaultsConfig::default());
        // A name the user gave is not reused.
        assert_eq!(spec.containers[1].name.as_deref(), Some("user-container-2"));
        assert_eq!(
            spec.init_containers[0].name.as_deref(),
            Some("init-container")
        );
        let serving = &spec.containers[1];
        assert!(serving.readiness_probe.is_some(), "the serving container's");
        let mounts: Vec<_> = serving.volume_mounts.iter().map(|m| m.read_only).collect();
        assert_eq!(mounts, [Some(true), None], "config maps mount read-only");
        assert_eq!(
            spec.init_containers[0].volume_mounts[0].read_only,
            Some(true)
        );
        // A sidecar's probe gets Kubernetes' defaults for a probe with a period.
        let sidecar = spec.containers[0].readiness_probe.as_ref().unwrap();
        assert_eq!(
            (
                sidecar.success_threshold,
                sidecar.failure_threshold,
                sidecar.timeout_seconds
            ),
            (Some(1), Some(3), Some(1))
        );
    }
}
