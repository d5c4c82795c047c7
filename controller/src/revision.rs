//! Revision → the workload that runs it, and its status from what the workload reports.

use std::time::Duration;

use sluice_api::condition::{self, Condition};
use sluice_api::config::AutoscalerConfig;
use sluice_api::{Revision, RevisionStatus, keys};
use sluice_autoscaler::{Activity, ScalerSpec};
use sluice_platform::RevisionKey;
use sluice_platform::workloads::{Probe, WorkloadSpec, WorkloadStatus};

use crate::meta::{annotations, label};

/// The key of a revision.
pub fn key(rev: &Revision) -> RevisionKey {
    RevisionKey::new(
        rev.metadata.namespace.as_deref().unwrap_or("default"),
        rev.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The workload that runs a revision at `replicas`.
pub fn workload_spec(rev: &Revision, replicas: u32) -> WorkloadSpec {
    let spec = &rev.spec;
    let container = spec.serving_container().cloned().unwrap_or_default();
    let readiness = match container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
    {
        Some(get) => Probe::Http(get.path.clone().unwrap_or_else(|| "/".into())),
        None => Probe::Tcp,
    };
    let secs = |s: Option<i64>| {
        s.filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s.unsigned_abs()))
    };
    WorkloadSpec {
        key: key(rev),
        uid: rev.metadata.uid.clone().unwrap_or_default(),
        service: label(&rev.metadata, keys::SERVICE)
            .unwrap_or_default()
            .to_owned(),
        configuration: label(&rev.metadata, keys::CONFIGURATION)
            .unwrap_or_default()
            .to_owned(),
        container,
        pod: spec.clone(),
        replicas,
        container_concurrency: spec.concurrency(),
        timeout: secs(spec.timeout_seconds).unwrap_or(Duration::from_secs(300)),
        response_start_timeout: secs(spec.response_start_timeout_seconds),
        idle_timeout: secs(spec.idle_timeout_seconds),
        readiness,
    }
}

/// How the revision scales: its autoscaling annotations and containerConcurrency over
/// config-autoscaler.
pub fn scaler_spec(rev: &Revision, cfg: &AutoscalerConfig) -> ScalerSpec {
    ScalerSpec::resolve(&annotations(&rev.metadata), rev.spec.concurrency(), cfg)
}

fn queued() -> Condition {
    Condition::unknown(
        "Active",
        "Queued",
        "Requests to the target are being buffered as resources are provisioned.",
    )
}

fn no_traffic() -> Condition {
    Condition::false_(
        "Active",
        "NoTraffic",
        "The target is not receiving traffic.",
    )
}

/// Knative's default progress deadline (config-deployment `progress-deadline`).
pub const PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// Whether `rev`, never ready yet, has been deploying past its progress deadline
/// (`serving.knative.dev/progress-deadline`, else [`PROGRESS_DEADLINE`]) at `now`.
fn past_progress_deadline(rev: &Revision, now: jiff::Timestamp) -> bool {
    let deadline = annotations(&rev.metadata)
        .get(keys::PROGRESS_DEADLINE)
        .and_then(|v| sluice_api::config::parse_duration(v))
        .unwrap_or(PROGRESS_DEADLINE);
    let Some(created) = rev.metadata.creation_timestamp.as_ref() else {
        return false;
    };
    let Ok(deadline) = jiff::SignedDuration::try_from(deadline) else {
        return false;
    };
    now.duration_since(created.0) > deadline
}

/// The revision's status from its workload and its autoscaler's activity: Ready once a replica
/// is ready (and still Ready while scaled to zero or scaling back up), False with the exit code
/// and output tail while replicas crash; Active from the autoscaler, or from the workload for
/// a revision nothing routes to.
pub fn status(
    rev: &Revision,
    observed: Option<&WorkloadStatus>,
    activity: Option<Activity>,
    now: jiff::Timestamp,
) -> RevisionStatus {
    let previous = rev
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let was_available = condition::find(previous, "ResourcesAvailable")
        .is_some_and(|c| c.status == condition::ConditionStatus::True);
    let deploying = |t: &str| Condition::unknown(t, "Deploying", "");
    let (resources, healthy, active, actual, desired) = match observed {
        None => (
            deploying("ResourcesAvailable"),
            deploying("ContainerHealthy"),
            Condition::unknown("Active", "Deploying", ""),
            0,
            None,
        ),
        Some(w) => {
            let ready = i32::try_from(w.endpoints.len()).unwrap_or(i32::MAX);
            let desired = i32::try_from(w.desired).ok();
            if ready > 0 {
                (
                    Condition::true_("ResourcesAvailable"),
                    Condition::true_("ContainerHealthy"),
                    Condition::true_("Active"),
                    ready,
                    desired,
                )
            } else if let Some(f) = &w.failure {
                (
                    Condition::false_("ResourcesAvailable", &f.reason, f.message.clone()),
                    Condition::false_("ContainerHealthy", &f.reason, f.message.clone()),
                    queued(),
                    0,
                    desired,
                )
            } else if w.desired == 0 || was_available {
                // Scaled to zero, or coming back from zero: the revision stays Ready.
                let active = if w.desired == 0 {
                    no_traffic()
                } else {
                    queued()
                };
                (
                    Condition::true_("ResourcesAvailable"),
                    Condition::true_("ContainerHealthy"),
                    active,
                    0,
                    desired,
                )
            } else if past_progress_deadline(rev, now) {
                // Knative's verdict on a revision that never reached its initial scale.
                let failed = |t: &str| {
                    Condition::false_(
                        t,
                        "ProgressDeadlineExceeded",
                        "Initial scale was never achieved".to_owned(),
                    )
                };
                (
                    failed("ResourcesAvailable"),
                    deploying("ContainerHealthy"),
                    queued(),
                    0,
                    desired,
                )
            } else {
                (
                    deploying("ResourcesAvailable"),
                    deploying("ContainerHealthy"),
                    queued(),
                    0,
                    desired,
                )
            }
        }
    };
    let active = match activity {
        Some(Activity::Active) => Condition::true_("Active"),
        Some(Activity::Activating) => queued(),
        Some(Activity::Inactive) => no_traffic(),
        None => active,
    };
    let ready = condition::ready_from(&[resources.clone(), healthy.clone()]);
    RevisionStatus {
        observed_generation: rev.metadata.generation,
        conditions: condition::merge(
            previous,
            vec![active, healthy, resources, ready],
            &crate::meta::transition_time(now),
        ),
        log_url: None,
        actual_replicas: Some(actual),
        desired_replicas: desired,
        container_statuses: container_statuses(rev, observed),
    }
}

/// The digests the pods run, kept from the last status while no pod reports them (at zero,
/// say).
fn container_statuses(
    rev: &Revision,
    observed: Option<&WorkloadStatus>,
) -> Vec<sluice_api::revision::ContainerStatus> {
    match observed.map(|w| &w.image_digests) {
        Some(digests) if !digests.is_empty() => digests
            .iter()
            .map(|(name, digest)| sluice_api::revision::ContainerStatus {
                name: name.clone(),
                image_digest: Some(digest.clone()),
            })
            .collect(),
        _ => rev
            .status
            .as_ref()
            .map(|s| s.container_statuses.clone())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::t0;
    use sluice_api::RevisionSpec;
    use sluice_api::template::Container;
    use sluice_platform::workloads::ReplicaFailure;

    fn rev() -> Revision {
        let container = Container {
            command: vec!["app".into()],
            args: vec!["--x".into()],
            ..Default::default()
        };
        let mut r = Revision::new(
            "hello-00001",
            RevisionSpec {
                containers: vec![container],
                container_concurrency: Some(1),
                timeout_seconds: Some(2),
                ..Default::default()
            },
        );
        r.metadata.namespace = Some("default".into());
        r.metadata.labels = Some(
            [
                (keys::SERVICE.to_owned(), "hello".to_owned()),
                (keys::CONFIGURATION.to_owned(), "hello".to_owned()),
            ]
            .into(),
        );
        r
    }

    #[test]
    fn workload_runs_command_and_args_with_limits() {
        let w = workload_spec(&rev(), 1);
        let argv: Vec<&String> = w
            .container
            .command
            .iter()
            .chain(&w.container.args)
            .collect();
        assert_eq!(argv, ["app", "--x"]);
        assert_eq!(w.service, "hello");
        assert_eq!(w.container_concurrency, 1);
        assert_eq!(w.timeout, Duration::from_secs(2));
    }

    #[test]
    fn scaled_to_zero_and_scaling_back_up_stay_ready() {
        let mut r = rev();
        r.metadata.annotations = Some(
            [(
                sluice_api::autoscaling::MIN_SCALE.to_owned(),
                "2".to_owned(),
            )]
            .into(),
        );
        assert_eq!(scaler_spec(&r, &AutoscalerConfig::default()).bounds.min, 2);
        let idle = WorkloadStatus {
            desired: 0,
            ..WorkloadStatus::default()
        };
        let st = status(&r, Some(&idle), Some(Activity::Inactive), t0());
        assert!(
            condition::is_ready(&st.conditions),
            "an inactive revision stays Ready"
        );
        let reason = |st: &RevisionStatus| {
            condition::find(&st.conditions, "Active")
                .and_then(|c| c.reason.clone())
                .unwrap_or_default()
        };
        assert_eq!(reason(&st), "NoTraffic");
        r.status = Some(st);
        let waking = WorkloadStatus {
            desired: 1,
            ..WorkloadStatus::default()
        };
        let st = status(&r, Some(&waking), Some(Activity::Activating), t0());
        assert!(condition::is_ready(&st.conditions), "{st:?}");
        assert_eq!(reason(&st), "Queued");
        assert_eq!(
            (st.actual_replicas, st.desired_replicas),
            (Some(0), Some(1))
        );
    }

    #[test]
    fn never_ready_past_the_progress_deadline_fails_the_revision() {
        let mut r = rev();
        r.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t0()));
        let deploying = WorkloadStatus {
            desired: 1,
            ..WorkloadStatus::default()
        };
        let at = |secs: i64| t0() + jiff::SignedDuration::from_secs(secs);
        let reason = |st: &RevisionStatus| {
            let ready = condition::find(&st.conditions, "Ready").unwrap();
            (ready.status, ready.reason.clone().unwrap_or_default())
        };
        let st = status(&r, Some(&deploying), Some(Activity::Activating), at(600));
        assert_eq!(reason(&st).0, condition::ConditionStatus::Unknown, "{st:?}");
        let st = status(&r, Some(&deploying), Some(Activity::Activating), at(601));
        assert_eq!(
            reason(&st),
            (
                condition::ConditionStatus::False,
                "ProgressDeadlineExceeded".to_owned()
            )
        );
        let message = condition::find(&st.conditions, "ResourcesAvailable").unwrap();
        assert_eq!(
            message.message.as_deref(),
            Some("Initial scale was never achieved")
        );

        // The annotation sets it; a replica turning ready clears it.
        r.metadata.annotations =
            Some([(keys::PROGRESS_DEADLINE.to_owned(), "30s".to_owned())].into());
        let st = status(&r, Some(&deploying), Some(Activity::Activating), at(31));
        assert_eq!(reason(&st).1, "ProgressDeadlineExceeded");
        r.status = Some(st);
        let ok = WorkloadStatus {
            desired: 1,
            endpoints: vec!["127.0.0.1:1".parse().unwrap()],
            ..WorkloadStatus::default()
        };
        let st = status(&r, Some(&ok), Some(Activity::Active), at(40));
        assert!(condition::is_ready(&st.conditions), "{st:?}");
    }

    #[test]
    fn crash_gives_exit_code_reason_and_ready_replica_clears_it() {
        let failing = WorkloadStatus {
            desired: 1,
            failure: Some(ReplicaFailure {
                reason: "ExitCode3".into(),
                message: "Container failed with: boom".into(),
            }),
            ..WorkloadStatus::default()
        };
        let st = status(&rev(), Some(&failing), Some(Activity::Activating), t0());
        let ready = condition::find(&st.conditions, "Ready").unwrap();
        assert_eq!(ready.reason.as_deref(), Some("ExitCode3"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Container failed with: boom")
        );
        let ok = WorkloadStatus {
            desired: 1,
            endpoints: vec!["127.0.0.1:1".parse().unwrap()],
            ..WorkloadStatus::default()
        };
        let st = status(&rev(), Some(&ok), Some(Activity::Active), t0());
        assert!(condition::is_ready(&st.conditions));
        assert_eq!(st.actual_replicas, Some(1));
    }

    #[test]
    fn image_digests_are_reported_and_kept_at_zero() {
        let mut r = rev();
        let running = WorkloadStatus {
            desired: 1,
            endpoints: vec!["10.0.0.1:8012".parse().unwrap()],
            metrics: vec!["10.0.0.1:9090".parse().unwrap()],
            image_digests: vec![("user-container".into(), "dev.local/app@sha256:01".into())],
            ..WorkloadStatus::default()
        };
        let st = status(&r, Some(&running), None, t0());
        assert_eq!(
            st.container_statuses[0].image_digest.as_deref(),
            Some("dev.local/app@sha256:01")
        );
        r.status = Some(st);
        let idle = WorkloadStatus {
            desired: 0,
            ..WorkloadStatus::default()
        };
        let st = status(&r, Some(&idle), None, t0());
        assert_eq!(
            st.container_statuses[0].name, "user-container",
            "kept with no pods"
        );
    }
}
