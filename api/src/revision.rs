//! Revision: an immutable snapshot of a Configuration's template.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, HostAlias, LocalObjectReference, PodDNSConfig, PodSecurityContext, Toleration,
    TopologySpreadConstraint, Volume,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::template::Container;

/// The spec of a revision, as written in `spec.template.spec`: Knative's fields beside the
/// PodSpec fields Knative accepts, inlined as Knative inlines them. The fields marked "flag"
/// are refused unless their config-features flag is on (see
/// [`PodSpecFeatures`](crate::validation::PodSpecFeatures)).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serving.knative.dev",
    version = "v1",
    kind = "Revision",
    namespaced,
    status = "RevisionStatus",
    shortname = "rev",
    category = "all",
    category = "knative",
    category = "serving",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Config Name","type":"string","jsonPath":".metadata.labels['serving\\.knative\\.dev/configuration']"}"#,
    printcolumn = r#"{"name":"Generation","type":"string","jsonPath":".metadata.labels['serving\\.knative\\.dev/configurationGeneration']"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].reason"}"#,
    printcolumn = r#"{"name":"Actual Replicas","type":"integer","jsonPath":".status.actualReplicas"}"#,
    printcolumn = r#"{"name":"Desired Replicas","type":"integer","jsonPath":".status.desiredReplicas"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    /// The containers: exactly one serves (the one with a port, or the only one); the others
    /// are sidecars (Kubernetes only).
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Containers run to completion, in order, before the others start (Kubernetes only;
    /// flag `kubernetes.podspec-init-containers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    /// Volumes the containers mount: `configMap`, `secret`, `projected`; `emptyDir`
    /// (flag `kubernetes.podspec-volumes-emptydir`, on by default), `persistentVolumeClaim`
    /// (flag `kubernetes.podspec-persistent-volume-claim`), `hostPath`, `csi`, `ephemeral`,
    /// `image` behind theirs (Kubernetes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Secrets to pull the images with (Kubernetes only; ignored locally, where images are
    /// not pulled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Hard limit of in-flight requests per replica; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    /// Maximum duration of a request, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Maximum time until the first response byte, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<i64>,
    /// Maximum time between response bytes, in seconds; 0 means infinite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,
    /// The service account (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Whether Kubernetes service links are injected (Knative defaults it to false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_service_links: Option<bool>,
    /// Only `false` is allowed: no service account token is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    /// Pod scheduling (anti-)affinity (flag `kubernetes.podspec-affinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Node labels the pod must land on (flag `kubernetes.podspec-nodeselector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pod tolerates (flag `kubernetes.podspec-tolerations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// How pods spread over topology domains (flag
    /// `kubernetes.podspec-topologyspreadconstraints`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// The pod's security context (flag `kubernetes.podspec-securitycontext`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// The RuntimeClass to run the pod with (flag `kubernetes.podspec-runtimeclassname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// The PriorityClass of the pod (flag `kubernetes.podspec-priorityclassname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// The scheduler to place the pod (flag `kubernetes.podspec-schedulername`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// The pod's DNS policy (flag `kubernetes.podspec-dnspolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,
    /// The pod's DNS settings (flag `kubernetes.podspec-dnsconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDNSConfig>,
    /// Extra `/etc/hosts` entries (flag `kubernetes.podspec-hostaliases`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_aliases: Vec<HostAlias>,
    /// One process namespace for all containers (flag
    /// `kubernetes.podspec-shareprocessnamespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_process_namespace: Option<bool>,
    /// The host's IPC namespace (flag `kubernetes.podspec-hostipc`).
    #[serde(default, rename = "hostIPC", skip_serializing_if = "Option::is_none")]
    pub host_ipc: Option<bool>,
    /// The host's PID namespace (flag `kubernetes.podspec-hostpid`).
    #[serde(default, rename = "hostPID", skip_serializing_if = "Option::is_none")]
    pub host_pid: Option<bool>,
    /// The host's network (flag `kubernetes.podspec-hostnetwork`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
}

/// The observed state of a revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, ResourcesAvailable, ContainerHealthy, Active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the revision's logs are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    /// Replicas ready now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_replicas: Option<i32>,
    /// Replicas wanted now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Each user container and the image digest its pods run (kn shows it and
    /// `--lock-to-digest` pins to it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
}

/// A user container of a revision and the digest of the image it runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// The container's name.
    pub name: String,
    /// `REPOSITORY@sha256:...` as the node resolved the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

impl RevisionSpec {
    /// The serving container (the one with a port, else the first).
    pub fn serving_container(&self) -> Option<&Container> {
        self.containers.get(self.serving_index()?)
    }

    /// The index of the serving container in `containers` (the one with a port, else the
    /// first), `None` without containers.
    pub fn serving_index(&self) -> Option<usize> {
        if self.containers.is_empty() {
            return None;
        }
        Some(
            self.containers
                .iter()
                .position(|c| !c.ports.is_empty())
                .unwrap_or(0),
        )
    }

    /// `containerConcurrency`, 0 when unset.
    pub fn concurrency(&self) -> u32 {
        self.container_concurrency
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0)
    }
}

impl Revision {
    /// The `serving.knative.dev/configurationGeneration` label as a number.
    pub fn configuration_generation(&self) -> Option<i64> {
        self.metadata
            .labels
            .as_ref()?
            .get(crate::keys::CONFIGURATION_GENERATION)?
            .parse()
            .ok()
    }

    /// Whether the Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| crate::condition::is_ready(&s.conditions))
    }

    /// The Ready condition, if computed.
    pub fn ready_condition(&self) -> Option<&Condition> {
        crate::condition::find(&self.status.as_ref()?.conditions, "Ready")
    }
}

#[cfg(test)]
mod tests {
    /// The schema of `spec.template.spec` (or a Revision's `spec`) in each generated CRD.
    fn pod_schemas() -> Vec<(&'static str, serde_json::Value)> {
        crate::crd::all_yaml()
            .into_iter()
            .filter(|(file, _)| !file.contains("routes"))
            .map(|(file, yaml)| {
                let crd: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
                let spec =
                    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
                let pod = if file.contains("revisions") {
                    spec.clone()
                } else {
                    spec["properties"]["template"]["properties"]["spec"].clone()
                };
                (file, pod)
            })
            .collect()
    }

    #[test]
    fn crd_schemas_keep_knatives_pod_fields() {
        for (file, pod) in pod_schemas() {
            let fields = &pod["properties"];
            for field in [
                "volumes",
                "imagePullSecrets",
                "initContainers",
                "serviceAccountName",
                "automountServiceAccountToken",
                "affinity",
                "nodeSelector",
                "tolerations",
                "topologySpreadConstraints",
                "securityContext",
                "runtimeClassName",
                "priorityClassName",
                "schedulerName",
                "dnsPolicy",
                "dnsConfig",
                "hostAliases",
                "shareProcessNamespace",
                "hostIPC",
                "hostPID",
                "hostNetwork",
            ] {
                assert!(fields.get(field).is_some(), "{file}: no {field}");
            }
            let volume = &fields["volumes"]["items"]["properties"];
            for source in [
                "configMap",
                "secret",
                "projected",
                "emptyDir",
                "persistentVolumeClaim",
            ] {
                assert!(
                    volume.get(source).is_some(),
                    "{file}: no volumes[].{source}"
                );
            }
            for list in ["containers", "initContainers"] {
                let container = &fields[list]["items"]["properties"];
                for field in [
                    "volumeMounts",
                    "startupProbe",
                    "readinessProbe",
                    "livenessProbe",
                    "terminationMessagePath",
                    "terminationMessagePolicy",
                    "securityContext",
                    "resources",
                ] {
                    assert!(
                        container.get(field).is_some(),
                        "{file}: no {list}[].{field}"
                    );
                }
                let probe = &container["livenessProbe"]["properties"];
                for field in [
                    "httpGet",
                    "tcpSocket",
                    "exec",
                    "grpc",
                    "terminationGracePeriodSeconds",
                ] {
                    assert!(probe.get(field).is_some(), "{file}: no probe {field}");
                }
                assert_eq!(
                    probe["tcpSocket"]["properties"]["port"]["x-kubernetes-int-or-string"], true,
                    "{file}: probe ports are numbers or names"
                );
            }
        }
    }
}
