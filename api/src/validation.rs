//! Validation with field paths. Every error names the field and says what would be valid,
//! e.g. `spec.traffic: Traffic targets sum to 90, want 100`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{KeyToPath, Volume};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::{ConfigData, ConfigError, DefaultsConfig, Reader};
use crate::revision::RevisionSpec;
use crate::route::TrafficTarget;
use crate::template::{Container, Probe, RevisionTemplateSpec};
use crate::{Object, names};

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.template.spec.containerConcurrency`.
    pub path: String,
    /// What is wrong, and the fix when it is not obvious.
    pub message: String,
    /// More on what would be valid, on a line of its own (Knative's `Details`).
    pub details: Option<String>,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            details: None,
        }
    }

    /// Knative's `ErrInvalidValue`: `value` at `path` breaks `rule`. Shown as Knative shows it,
    /// `invalid value: VALUE: PATH` then the rule on the next line, which clients match on.
    pub fn invalid_value(
        path: impl Into<String>,
        value: impl fmt::Display,
        rule: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            message: format!("invalid value: {value}"),
            details: Some(rule.into()),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.details {
            None => write!(f, "{}: {}", self.path, self.message),
            Some(details) => write!(f, "{}: {}\n{details}", self.message, self.path),
        }
    }
}

/// All invalid fields of one object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// `Service default/hello`, for messages.
    pub object: String,
    /// The invalid fields, in the order found.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is invalid:", self.object)?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Collects field errors under a path prefix.
#[derive(Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    pub(crate) fn into_result(self, object: String) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                object,
                errors: self.0,
            })
        }
    }
}

/// Ports the queue-proxy and its peers own; a user process may not serve on them.
pub use crate::contract::RESERVED_PORTS;
/// Environment variables Sluice sets for the user process.
pub use crate::contract::user_env::RESERVED as RESERVED_ENV;

/// The config-features keys of the flags that gate PodSpec fields, Knative's names.
pub mod flags {
    /// More than one container (sidecars); on by default.
    pub const MULTI_CONTAINER: &str = "multi-container";
    /// Probes on sidecars.
    pub const MULTI_CONTAINER_PROBING: &str = "multi-container-probing";
    /// `affinity`.
    pub const AFFINITY: &str = "kubernetes.podspec-affinity";
    /// `dnsConfig`.
    pub const DNS_CONFIG: &str = "kubernetes.podspec-dnsconfig";
    /// `dnsPolicy`.
    pub const DNS_POLICY: &str = "kubernetes.podspec-dnspolicy";
    /// `env[].valueFrom.fieldRef` and `resourceFieldRef`.
    pub const FIELD_REF: &str = "kubernetes.podspec-fieldref";
    /// `hostAliases`.
    pub const HOST_ALIASES: &str = "kubernetes.podspec-hostaliases";
    /// `hostIPC`.
    pub const HOST_IPC: &str = "kubernetes.podspec-hostipc";
    /// `hostNetwork`.
    pub const HOST_NETWORK: &str = "kubernetes.podspec-hostnetwork";
    /// `hostPID`.
    pub const HOST_PID: &str = "kubernetes.podspec-hostpid";
    /// `initContainers`.
    pub const INIT_CONTAINERS: &str = "kubernetes.podspec-init-containers";
    /// `nodeSelector`.
    pub const NODE_SELECTOR: &str = "kubernetes.podspec-nodeselector";
    /// `persistentVolumeClaim` volumes.
    pub const PERSISTENT_VOLUME_CLAIM: &str = "kubernetes.podspec-persistent-volume-claim";
    /// Writable `persistentVolumeClaim` volumes.
    pub const PERSISTENT_VOLUME_WRITE: &str = "kubernetes.podspec-persistent-volume-write";
    /// `priorityClassName`.
    pub const PRIORITY_CLASS_NAME: &str = "kubernetes.podspec-priorityclassname";
    /// `runtimeClassName`.
    pub const RUNTIME_CLASS_NAME: &str = "kubernetes.podspec-runtimeclassname";
    /// `schedulerName`.
    pub const SCHEDULER_NAME: &str = "kubernetes.podspec-schedulername";
    /// The pod's `securityContext`.
    pub const SECURITY_CONTEXT: &str = "kubernetes.podspec-securitycontext";
    /// `shareProcessNamespace`.
    pub const SHARE_PROCESS_NAMESPACE: &str = "kubernetes.podspec-shareprocessnamespace";
    /// `tolerations`.
    pub const TOLERATIONS: &str = "kubernetes.podspec-tolerations";
    /// `topologySpreadConstraints`.
    pub const TOPOLOGY_SPREAD_CONSTRAINTS: &str = "kubernetes.podspec-topologyspreadconstraints";
    /// `emptyDir` volumes; on by default.
    pub const VOLUMES_EMPTYDIR: &str = "kubernetes.podspec-volumes-emptydir";
    /// `hostPath` volumes.
    pub const VOLUMES_HOSTPATH: &str = "kubernetes.podspec-volumes-hostpath";
    /// `csi` volumes.
    pub const VOLUMES_CSI: &str = "kubernetes.podspec-volumes-csi";
    /// `ephemeral` volumes.
    pub const VOLUMES_EPHEMERAL: &str = "kubernetes.podspec-volumes-ephemeral";
    /// `image` volumes.
    pub const VOLUMES_IMAGE: &str = "kubernetes.podspec-volumes-image";
    /// `volumeMounts[].mountPropagation`.
    pub const VOLUMES_MOUNT_PROPAGATION: &str = "kubernetes.podspec-volumes-mount-propagation";
    /// `securityContext.capabilities.add` of a container (beyond nothing).
    pub const ADD_CAPABILITIES: &str = "kubernetes.containerspec-addcapabilities";
}

/// The config-features flags that gate what a revision's pod may set, with Knative's keys
/// and defaults: all off except `multi-container` and `kubernetes.podspec-volumes-emptydir`.
/// `Enabled` and `Allowed` both turn a flag on. Validation refuses a gated field whose flag
/// is off, saying which flag to enable.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // Each field is the flag of the same name in [`flags`].
pub struct PodSpecFeatures {
    pub multi_container: bool,
    pub multi_container_probing: bool,
    pub affinity: bool,
    pub dns_config: bool,
    pub dns_policy: bool,
    pub field_ref: bool,
    pub host_aliases: bool,
    pub host_ipc: bool,
    pub host_network: bool,
    pub host_pid: bool,
    pub init_containers: bool,
    pub node_selector: bool,
    pub persistent_volume_claim: bool,
    pub persistent_volume_write: bool,
    pub priority_class_name: bool,
    pub runtime_class_name: bool,
    pub scheduler_name: bool,
    pub security_context: bool,
    pub share_process_namespace: bool,
    pub tolerations: bool,
    pub topology_spread_constraints: bool,
    pub volumes_emptydir: bool,
    pub volumes_hostpath: bool,
    pub volumes_csi: bool,
    pub volumes_ephemeral: bool,
    pub volumes_image: bool,
    pub volumes_mount_propagation: bool,
    pub add_capabilities: bool,
}

impl Default for PodSpecFeatures {
    fn default() -> Self {
        let mut f = Self::none();
        f.multi_container = true;
        f.volumes_emptydir = true;
        f
    }
}

impl PodSpecFeatures {
    fn none() -> Self {
        Self {
            multi_container: false,
            multi_container_probing: false,
            affinity: false,
            dns_config: false,
            dns_policy: false,
            field_ref: false,
            host_aliases: false,
            host_ipc: false,
            host_network: false,
            host_pid: false,
            init_containers: false,
            node_selector: false,
            persistent_volume_claim: false,
            persistent_volume_write: false,
            priority_class_name: false,
            runtime_class_name: false,
            scheduler_name: false,
            security_context: false,
            share_process_namespace: false,
            tolerations: false,
            topology_spread_constraints: false,
            volumes_emptydir: false,
            volumes_hostpath: false,
            volumes_csi: false,
            volumes_ephemeral: false,
            volumes_image: false,
            volumes_mount_propagation: false,
            add_capabilities: false,
        }
    }

    fn table(&mut self) -> [(&'static str, &mut bool); 28] {
        [
            (flags::MULTI_CONTAINER, &mut self.multi_container),
            (
                flags::MULTI_CONTAINER_PROBING,
                &mut self.multi_container_probing,
            ),
            (flags::AFFINITY, &mut self.affinity),
            (flags::DNS_CONFIG, &mut self.dns_config),
            (flags::DNS_POLICY, &mut self.dns_policy),
            (flags::FIELD_REF, &mut self.field_ref),
            (flags::HOST_ALIASES, &mut self.host_aliases),
            (flags::HOST_IPC, &mut self.host_ipc),
            (flags::HOST_NETWORK, &mut self.host_network),
            (flags::HOST_PID, &mut self.host_pid),
            (flags::INIT_CONTAINERS, &mut self.init_containers),
            (flags::NODE_SELECTOR, &mut self.node_selector),
            (
                flags::PERSISTENT_VOLUME_CLAIM,
                &mut self.persistent_volume_claim,
            ),
            (
                flags::PERSISTENT_VOLUME_WRITE,
                &mut self.persistent_volume_write,
            ),
            (flags::PRIORITY_CLASS_NAME, &mut self.priority_class_name),
            (flags::RUNTIME_CLASS_NAME, &mut self.runtime_class_name),
            (flags::SCHEDULER_NAME, &mut self.scheduler_name),
            (flags::SECURITY_CONTEXT, &mut self.security_context),
            (
                flags::SHARE_PROCESS_NAMESPACE,
                &mut self.share_process_namespace,
            ),
            (flags::TOLERATIONS, &mut self.tolerations),
            (
                flags::TOPOLOGY_SPREAD_CONSTRAINTS,
                &mut self.topology_spread_constraints,
            ),
            (flags::VOLUMES_EMPTYDIR, &mut self.volumes_emptydir),
            (flags::VOLUMES_HOSTPATH, &mut self.volumes_hostpath),
            (flags::VOLUMES_CSI, &mut self.volumes_csi),
            (flags::VOLUMES_EPHEMERAL, &mut self.volumes_ephemeral),
            (flags::VOLUMES_IMAGE, &mut self.volumes_image),
            (
                flags::VOLUMES_MOUNT_PROPAGATION,
                &mut self.volumes_mount_propagation,
            ),
            (flags::ADD_CAPABILITIES, &mut self.add_capabilities),
        ]
    }

    /// Every flag on: the whole of what Knative can accept.
    pub fn all() -> Self {
        let mut f = Self::none();
        for (_, on) in f.table() {
            *on = true;
        }
        f
    }

    /// The flags in config-features' data (`Enabled`, `Allowed` or `Disabled`, any case);
    /// absent keys keep Knative's defaults, keys of other flags are not looked at.
    pub fn parse(data: &ConfigData) -> Result<Self, ConfigError> {
        let r = Reader::new("config-features", data);
        let mut f = Self::default();
        for (key, on) in f.table() {
            if let Some(v) = r.string(key) {
                *on = match v.to_ascii_lowercase().as_str() {
                    "enabled" | "allowed" => true,
                    "disabled" => false,
                    _ => {
                        return Err(
                            r.error(key, format!("{v:?} is not Enabled, Disabled or Allowed"))
                        );
                    }
                };
            }
        }
        Ok(f)
    }
}

/// A gated field set while its flag is off.
fn gated(errs: &mut Errors, path: impl Into<String>, on: bool, flag: &str) {
    if !on {
        errs.push(
            path,
            format!(
                "not allowed while feature flag {flag} is off: must enable feature flag {flag} in config-features, or remove the field"
            ),
        );
    }
}

/// A field Knative never accepts.
fn disallowed(errs: &mut Errors, path: impl Into<String>, set: bool, fix: &str) {
    if set {
        errs.push(path, format!("must not set the field: {fix}"));
    }
}

/// Validates a new object (or the new state of an existing one) as
/// [`Object::validate`](crate::Object::validate) does, with the PodSpec fields gated by
/// `features` (config-features) instead of Knative's default flags.
pub fn object(
    obj: &Object,
    defaults: &DefaultsConfig,
    features: &PodSpecFeatures,
) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    let meta = obj.meta();
    match meta.name.as_deref() {
        None | Some("") => errs.push("metadata.name", "missing: every object needs a name"),
        Some(name) => {
            if let Err(msg) = names::check_dns1035_label(name) {
                errs.push("metadata.name", msg);
            }
        }
    }
    if let Some(ns) = &meta.namespace
        && let Err(msg) = names::check_dns1123_label(ns)
    {
        errs.push("metadata.namespace", msg);
    }
    let name = obj.name();
    match obj {
        Object::Service(s) => {
            template_with(
                &mut errs,
                "spec.template",
                name,
                &s.spec.template,
                defaults,
                features,
            );
            traffic(&mut errs, "spec.traffic", &s.spec.traffic, true);
        }
        Object::Configuration(c) => template_with(
            &mut errs,
            "spec.template",
            name,
            &c.spec.template,
            defaults,
            features,
        ),
        Object::Route(r) => traffic(&mut errs, "spec.traffic", &r.spec.traffic, false),
        Object::Revision(r) => revision_spec_with(&mut errs, "spec", &r.spec, defaults, features),
    }
    errs.into_result(obj.describe())
}

/// Validates a revision template of a Service or Configuration named `parent` under
/// config-features' `features`.
pub(crate) fn template_with(
    errs: &mut Errors,
    path: &str,
    parent: &str,
    tpl: &RevisionTemplateSpec,
    defaults: &DefaultsConfig,
    features: &PodSpecFeatures,
) {
    if let Some(name) = &tpl.metadata.name {
        let p = format!("{path}.metadata.name");
        if let Err(msg) = names::check_dns1035_label(name) {
            errs.push(&p, msg);
        } else if !name.starts_with(&format!("{parent}-")) {
            errs.push(&p, format!("{name:?} must have prefix \"{parent}-\""));
        }
    }
    crate::autoscaling::validate(
        errs,
        &format!("{path}.metadata.annotations"),
        &tpl.metadata.annotations,
    );
    progress_deadline(
        errs,
        &format!("{path}.metadata.annotations"),
        &tpl.metadata.annotations,
    );
    revision_spec_with(errs, &format!("{path}.spec"), &tpl.spec, defaults, features);
}

/// `serving.knative.dev/progress-deadline`: a positive duration of whole seconds (it becomes a
/// Deployment's `progressDeadlineSeconds` on Kubernetes).
fn progress_deadline(errs: &mut Errors, path: &str, annotations: &BTreeMap<String, String>) {
    let Some(text) = annotations.get(crate::keys::PROGRESS_DEADLINE) else {
        return;
    };
    let at = format!("{path}.{}", crate::keys::PROGRESS_DEADLINE);
    match crate::config::parse_duration(text) {
        None => errs.push(
            &at,
            format!("{text:?} is not a duration; write it like 600s or 10m"),
        ),
        Some(d) if d.is_zero() || d.subsec_nanos() != 0 => errs.push(
            &at,
            format!("{text:?} must be a positive whole number of seconds, like 600s"),
        ),
        Some(_) => {}
    }
}

/// Validates a revision spec against Knative's rules under config-features' `features`.
pub(crate) fn revision_spec_with(
    errs: &mut Errors,
    path: &str,
    spec: &RevisionSpec,
    defaults: &DefaultsConfig,
    features: &PodSpecFeatures,
) {
    if spec.containers.is_empty() {
        errs.push(
            format!("{path}.containers"),
            "missing: give one container to run",
        );
    }
    if spec.containers.len() > 1 {
        gated(
            errs,
            format!("{path}.containers"),
            features.multi_container,
            flags::MULTI_CONTAINER,
        );
    }
    let serving = spec
        .containers
        .iter()
        .filter(|c| !c.ports.is_empty())
        .count();
    if spec.containers.len() > 1 && serving != 1 {
        errs.push(
            format!("{path}.containers"),
            if serving == 0 {
                "with more than one container, exactly one must declare a port (the serving container); give it `ports: [{containerPort: N}]`"
            } else {
                "more than one container declares a port: only the serving container may; remove ports from the sidecars"
            },
        );
    }
    pod_fields(errs, path, spec, features);
    let volumes = volumes(errs, path, spec, features);
    let serving_index = spec.serving_index();
    let serving_port_name = spec
        .serving_container()
        .and_then(|c| c.ports.first())
        .and_then(|p| p.name.as_deref());
    let mut names: Vec<&str> = Vec::new();
    let all = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let role = if Some(i) == serving_index {
                Role::Serving
            } else {
                Role::Sidecar
            };
            (format!("{path}.containers[{i}]"), c, role)
        })
        .chain(
            spec.init_containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("{path}.initContainers[{i}]"), c, Role::Init)),
        );
    for (p, c, role) in all {
        if let Some(name) = c.name.as_deref().filter(|n| !n.is_empty()) {
            if names.contains(&name) {
                errs.push(
                    format!("{p}.name"),
                    format!("duplicate container name {name:?}; give each container its own name"),
                );
            }
            names.push(name);
        }
        let port_name = if role == Role::Serving {
            serving_port_name
        } else {
            None
        };
        container(errs, &p, c, role, &volumes, port_name, features);
    }
    if !spec.init_containers.is_empty() {
        gated(
            errs,
            format!("{path}.initContainers"),
            features.init_containers,
            flags::INIT_CONTAINERS,
        );
    }
    let max_cc = defaults.container_concurrency_max_limit;
    if let Some(cc) = spec.container_concurrency {
        if !(0..=max_cc).contains(&cc) {
            errs.push(
                format!("{path}.containerConcurrency"),
                format!(
                    "expected 0 <= {cc} <= {max_cc}; use 0 for no limit or a value up to {max_cc}"
                ),
            );
        } else if cc == 0 && !defaults.allow_container_concurrency_zero {
            errs.push(
                format!("{path}.containerConcurrency"),
                "0 is not allowed by config-defaults",
            );
        }
    }
    let max_t = defaults.max_revision_timeout_seconds;
    for (field, value) in [
        ("timeoutSeconds", spec.timeout_seconds),
        (
            "responseStartTimeoutSeconds",
            spec.response_start_timeout_seconds,
        ),
        ("idleTimeoutSeconds", spec.idle_timeout_seconds),
    ] {
        if let Some(t) = value
            && !(0..=max_t).contains(&t)
        {
            errs.push(
                format!("{path}.{field}"),
                format!("expected 0 <= {t} <= {max_t} (max-revision-timeout-seconds)"),
            );
        }
    }
    if let (Some(rs), Some(t)) = (spec.response_start_timeout_seconds, spec.timeout_seconds)
        && rs > t
        && t > 0
    {
        errs.push(
            format!("{path}.responseStartTimeoutSeconds"),
            format!("{rs} exceeds timeoutSeconds ({t})"),
        );
    }
    if let Some(sa) = &spec.service_account_name
        && let Err(rule) = names::check_dns1123_subdomain(sa)
    {
        errs.0.push(FieldError::invalid_value(
            format!("{path}.serviceAccountName"),
            sa,
            rule,
        ));
    }
}

/// The pod-level fields: gated ones, and the few values Knative (or Kubernetes) limits.
fn pod_fields(errs: &mut Errors, path: &str, spec: &RevisionSpec, features: &PodSpecFeatures) {
    let f = features;
    for (field, set, on, flag) in [
        (
            "affinity",
            spec.affinity.is_some(),
            f.affinity,
            flags::AFFINITY,
        ),
        (
            "nodeSelector",
            !spec.node_selector.is_empty(),
            f.node_selector,
            flags::NODE_SELECTOR,
        ),
        (
            "tolerations",
            !spec.tolerations.is_empty(),
            f.tolerations,
            flags::TOLERATIONS,
        ),
        (
            "topologySpreadConstraints",
            !spec.topology_spread_constraints.is_empty(),
            f.topology_spread_constraints,
            flags::TOPOLOGY_SPREAD_CONSTRAINTS,
        ),
        (
            "securityContext",
            spec.security_context.is_some(),
            f.security_context,
            flags::SECURITY_CONTEXT,
        ),
        (
            "runtimeClassName",
            spec.runtime_class_name.is_some(),
            f.runtime_class_name,
            flags::RUNTIME_CLASS_NAME,
        ),
        (
            "priorityClassName",
            spec.priority_class_name.is_some(),
            f.priority_class_name,
            flags::PRIORITY_CLASS_NAME,
        ),
        (
            "schedulerName",
            spec.scheduler_name.is_some(),
            f.scheduler_name,
            flags::SCHEDULER_NAME,
        ),
        (
            "dnsPolicy",
            spec.dns_policy.is_some(),
            f.dns_policy,
            flags::DNS_POLICY,
        ),
        (
            "dnsConfig",
            spec.dns_config.is_some(),
            f.dns_config,
            flags::DNS_CONFIG,
        ),
        (
            "hostAliases",
            !spec.host_aliases.is_empty(),
            f.host_aliases,
            flags::HOST_ALIASES,
        ),
        (
            "shareProcessNamespace",
            spec.share_process_namespace.is_some(),
            f.share_process_namespace,
            flags::SHARE_PROCESS_NAMESPACE,
        ),
        (
            "hostIPC",
            spec.host_ipc.is_some(),
            f.host_ipc,
            flags::HOST_IPC,
        ),
        (
            "hostPID",
            spec.host_pid.is_some(),
            f.host_pid,
            flags::HOST_PID,
        ),
        (
            "hostNetwork",
            spec.host_network.is_some(),
            f.host_network,
            flags::HOST_NETWORK,
        ),
    ] {
        if set {
            gated(errs, format!("{path}.{field}"), on, flag);
        }
    }
    if spec.automount_service_account_token == Some(true) {
        errs.push(
            format!("{path}.automountServiceAccountToken"),
            "only false is allowed (the token is mounted by default); remove the field or set it to false",
        );
    }
    for (i, s) in spec.image_pull_secrets.iter().enumerate() {
        if s.name.is_empty() {
            errs.push(
                format!("{path}.imagePullSecrets[{i}].name"),
                "missing: name the Secret holding the registry credentials",
            );
        }
    }
    if let Some(policy) = &spec.dns_policy {
        if !matches!(
            policy.as_str(),
            "ClusterFirst" | "ClusterFirstWithHostNet" | "Default" | "None"
        ) {
            errs.push(
                format!("{path}.dnsPolicy"),
                format!(
                    "{policy:?} is not one of ClusterFirst, ClusterFirstWithHostNet, Default, None"
                ),
            );
        } else if policy == "None" && spec.dns_config.is_none() {
            errs.push(
                format!("{path}.dnsConfig"),
                "missing: dnsPolicy None takes the pod's DNS settings from dnsConfig",
            );
        }
    }
    if let Some(sc) = &spec.security_context
        && f.security_context
    {
        let p = format!("{path}.securityContext");
        let fix = "Knative does not pass it to the pod; remove it";
        disallowed(
            errs,
            format!("{p}.seLinuxOptions"),
            sc.se_linux_options.is_some(),
            fix,
        );
        disallowed(
            errs,
            format!("{p}.seLinuxChangePolicy"),
            sc.se_linux_change_policy.is_some(),
            fix,
        );
        disallowed(
            errs,
            format!("{p}.windowsOptions"),
            sc.windows_options.is_some(),
            fix,
        );
        disallowed(errs, format!("{p}.sysctls"), sc.sysctls.is_some(), fix);
        disallowed(
            errs,
            format!("{p}.fsGroupChangePolicy"),
            sc.fs_group_change_policy.is_some(),
            fix,
        );
        disallowed(
            errs,
            format!("{p}.appArmorProfile"),
            sc.app_armor_profile.is_some(),
            fix,
        );
        disallowed(
            errs,
            format!("{p}.supplementalGroupsPolicy"),
            sc.supplemental_groups_policy.is_some(),
            fix,
        );
        for (field, id) in [
            ("runAsUser", sc.run_as_user),
            ("runAsGroup", sc.run_as_group),
            ("fsGroup", sc.fs_group),
        ] {
            id_range(errs, format!("{p}.{field}"), id);
        }
        for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
            id_range(errs, format!("{p}.supplementalGroups[{i}]"), Some(*g));
        }
    }
}

fn id_range(errs: &mut Errors, path: String, id: Option<i64>) {
    if let Some(id) = id
        && !(0..=i64::from(i32::MAX)).contains(&id)
    {
        errs.push(path, format!("expected 0 <= {id} <= {}", i32::MAX));
    }
}

/// The volumes by name; errors for duplicates, unmounted volumes, sources Knative refuses
/// or gates.
fn volumes<'a>(
    errs: &mut Errors,
    path: &str,
    spec: &'a RevisionSpec,
    features: &PodSpecFeatures,
) -> BTreeMap<&'a str, &'a Volume> {
    let mounted: BTreeSet<&str> = spec
        .containers
        .iter()
        .chain(&spec.init_containers)
        .flat_map(|c| &c.volume_mounts)
        .map(|m| m.name.as_str())
        .collect();
    let mut out = BTreeMap::new();
    let f = features;
    for (i, v) in spec.volumes.iter().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        if v.name.is_empty() {
            errs.push(format!("{vp}.name"), "missing: every volume needs a name");
        } else if let Err(msg) = names::check_dns1123_label(&v.name) {
            errs.push(format!("{vp}.name"), msg);
        } else if out.contains_key(v.name.as_str()) {
            errs.push(
                format!("{vp}.name"),
                format!(
                    "duplicate volume name {:?}; give each volume its own name",
                    v.name
                ),
            );
        } else if !mounted.contains(v.name.as_str()) {
            errs.push(
                format!("{vp}.name"),
                format!(
                    "volume with name {:?} not mounted: mount it in a container's volumeMounts, or remove it",
                    v.name
                ),
            );
        }
        let gated_sources = [
            ("secret", v.secret.is_some(), None),
            ("configMap", v.config_map.is_some(), None),
            ("projected", v.projected.is_some(), None),
            (
                "emptyDir",
                v.empty_dir.is_some(),
                Some((f.volumes_emptydir, flags::VOLUMES_EMPTYDIR)),
            ),
            (
                "persistentVolumeClaim",
                v.persistent_volume_claim.is_some(),
                Some((f.persistent_volume_claim, flags::PERSISTENT_VOLUME_CLAIM)),
            ),
            (
                "hostPath",
                v.host_path.is_some(),
                Some((f.volumes_hostpath, flags::VOLUMES_HOSTPATH)),
            ),
            (
                "csi",
                v.csi.is_some(),
                Some((f.volumes_csi, flags::VOLUMES_CSI)),
            ),
            (
                "ephemeral",
                v.ephemeral.is_some(),
                Some((f.volumes_ephemeral, flags::VOLUMES_EPHEMERAL)),
            ),
            (
                "image",
                v.image.is_some(),
                Some((f.volumes_image, flags::VOLUMES_IMAGE)),
            ),
        ];
        let refused = [
            ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
            ("azureDisk", v.azure_disk.is_some()),
            ("azureFile", v.azure_file.is_some()),
            ("cephfs", v.cephfs.is_some()),
            ("cinder", v.cinder.is_some()),
            ("downwardAPI", v.downward_api.is_some()),
            ("fc", v.fc.is_some()),
            ("flexVolume", v.flex_volume.is_some()),
            ("flocker", v.flocker.is_some()),
            ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
            ("gitRepo", v.git_repo.is_some()),
            ("glusterfs", v.glusterfs.is_some()),
            ("iscsi", v.iscsi.is_some()),
            ("nfs", v.nfs.is_some()),
            ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
            ("portworxVolume", v.portworx_volume.is_some()),
            ("quobyte", v.quobyte.is_some()),
            ("rbd", v.rbd.is_some()),
            ("scaleIO", v.scale_io.is_some()),
            ("storageos", v.storageos.is_some()),
            ("vsphereVolume", v.vsphere_volume.is_some()),
        ];
        let mut specified: Vec<&str> = Vec::new();
        for (field, set, gate) in gated_sources {
            if set {
                specified.push(field);
                if let Some((on, flag)) = gate {
                    gated(errs, format!("{vp}.{field}"), on, flag);
                }
            }
        }
        for (field, set) in refused {
            if set {
                specified.push(field);
                let hint = if field == "downwardAPI" {
                    "use a projected volume with a downwardAPI source"
                } else {
                    "Knative mounts configMap, secret, projected, emptyDir, persistentVolumeClaim, hostPath, csi, ephemeral and image volumes"
                };
                errs.push(
                    format!("{vp}.{field}"),
                    format!("must not set the field: {hint}"),
                );
            }
        }
        match specified.len() {
            0 => {
                let mut choices = vec!["secret", "configMap", "projected"];
                for (field, _, gate) in gated_sources {
                    if gate.is_some_and(|(on, _)| on) {
                        choices.push(field);
                    }
                }
                errs.push(
                    &vp,
                    format!("expected exactly one, got neither: {}", choices.join(", ")),
                );
            }
            1 => {}
            _ => errs.push(
                &vp,
                format!("expected exactly one, got both: {}", specified.join(", ")),
            ),
        }
        let items = |errs: &mut Errors, p: &str, items: &[KeyToPath]| {
            for (j, k) in items.iter().enumerate() {
                if k.key.is_empty() {
                    errs.push(format!("{p}.items[{j}].key"), "missing: the key to project");
                }
                if k.path.is_empty() {
                    errs.push(
                        format!("{p}.items[{j}].path"),
                        "missing: the file to project the key to",
                    );
                }
            }
        };
        if let Some(s) = &v.secret {
            items(
                errs,
                &format!("{vp}.secret"),
                s.items.as_deref().unwrap_or(&[]),
            );
            if s.secret_name.as_deref().is_none_or(str::is_empty) {
                errs.push(
                    format!("{vp}.secret.secretName"),
                    "missing: name the Secret to mount",
                );
            }
        }
        if let Some(c) = &v.config_map {
            items(
                errs,
                &format!("{vp}.configMap"),
                c.items.as_deref().unwrap_or(&[]),
            );
            if c.name.is_empty() {
                errs.push(
                    format!("{vp}.configMap.name"),
                    "missing: name the ConfigMap to mount",
                );
            }
        }
        if let Some(p) = &v.projected {
            for (j, src) in p.sources.iter().flatten().enumerate() {
                let sp = format!("{vp}.projected.sources[{j}]");
                let mut kinds = Vec::new();
                if let Some(s) = &src.secret {
                    kinds.push("secret");
                    if s.name.is_empty() {
                        errs.push(format!("{sp}.secret.name"), "missing: name the Secret");
                    }
                    items(
                        errs,
                        &format!("{sp}.secret"),
                        s.items.as_deref().unwrap_or(&[]),
                    );
                }
                if let Some(c) = &src.config_map {
                    kinds.push("configMap");
                    if c.name.is_empty() {
                        errs.push(
                            format!("{sp}.configMap.name"),
                            "missing: name the ConfigMap",
                        );
                    }
                    items(
                        errs,
                        &format!("{sp}.configMap"),
                        c.items.as_deref().unwrap_or(&[]),
                    );
                }
                if let Some(t) = &src.service_account_token {
                    kinds.push("serviceAccountToken");
                    if t.path.is_empty() {
                        errs.push(
                            format!("{sp}.serviceAccountToken.path"),
                            "missing: the file to write the token to",
                        );
                    }
                }
                if let Some(d) = &src.downward_api {
                    kinds.push("downwardAPI");
                    for (k, file) in d.items.iter().flatten().enumerate() {
                        let fp = format!("{sp}.downwardAPI.items[{k}]");
                        match (&file.field_ref, &file.resource_field_ref) {
                            (None, None) => errs.push(
                                &fp,
                                "expected exactly one, got neither: fieldRef, resourceFieldRef",
                            ),
                            (Some(_), Some(_)) => errs.push(
                                &fp,
                                "expected exactly one, got both: fieldRef, resourceFieldRef",
                            ),
                            _ => {}
                        }
                        if file.path.is_empty() {
                            errs.push(format!("{fp}.path"), "missing: the file to write");
                        }
                    }
                }
                let fix = "Knative projects secret, configMap, serviceAccountToken and downwardAPI sources";
                disallowed(
                    errs,
                    format!("{sp}.clusterTrustBundle"),
                    src.cluster_trust_bundle.is_some(),
                    fix,
                );
                disallowed(
                    errs,
                    format!("{sp}.podCertificate"),
                    src.pod_certificate.is_some(),
                    fix,
                );
                match kinds.len() {
                    0 if src.cluster_trust_bundle.is_none() && src.pod_certificate.is_none() => {
                        errs.push(
                            &sp,
                            "expected exactly one, got neither: secret, configMap, serviceAccountToken, downwardAPI",
                        )
                    }
                    0 | 1 => {}
                    _ => errs.push(
                        &sp,
                        format!("expected exactly one, got both: {}", kinds.join(", ")),
                    ),
                }
            }
        }
        if let Some(d) = &v.empty_dir
            && let Some(m) = d.medium.as_deref()
            && !matches!(m, "" | "Memory")
        {
            errs.push(
                format!("{vp}.emptyDir.medium"),
                format!("{m:?} is not allowed; use Memory or leave it empty (the node's disk)"),
            );
        }
        if let Some(pvc) = &v.persistent_volume_claim {
            if pvc.claim_name.is_empty() {
                errs.push(
                    format!("{vp}.persistentVolumeClaim.claimName"),
                    "missing: name the PersistentVolumeClaim",
                );
            }
            if pvc.read_only != Some(true) && f.persistent_volume_claim {
                gated(
                    errs,
                    format!("{vp}.persistentVolumeClaim.readOnly"),
                    f.persistent_volume_write,
                    flags::PERSISTENT_VOLUME_WRITE,
                );
            }
        }
        if let Some(img) = &v.image {
            if img.reference.as_deref().is_none_or(str::is_empty) {
                errs.push(
                    format!("{vp}.image.reference"),
                    "missing: the image to mount",
                );
            }
            if let Some(p) = img.pull_policy.as_deref()
                && !matches!(p, "" | "Always" | "IfNotPresent" | "Never")
            {
                errs.push(
                    format!("{vp}.image.pullPolicy"),
                    format!("{p:?} is not one of Always, IfNotPresent, Never"),
                );
            }
        }
        out.entry(v.name.as_str()).or_insert(v);
    }
    out
}

/// What a container is to its revision.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The container with the port: requests go to it.
    Serving,
    /// Another of `containers`.
    Sidecar,
    /// One of `initContainers`.
    Init,
}

fn container(
    errs: &mut Errors,
    path: &str,
    c: &Container,
    role: Role,
    volumes: &BTreeMap<&str, &Volume>,
    serving_port_name: Option<&str>,
    features: &PodSpecFeatures,
) {
    if let Some(name) = &c.name
        && let Err(msg) = names::check_dns1123_label(name)
    {
        errs.push(format!("{path}.name"), msg);
    }
    if c.name.as_deref() == Some("queue-proxy") {
        errs.push(
            format!("{path}.name"),
            "\"queue-proxy\" is a reserved container name (the sidecar Sluice adds); pick another",
        );
    }
    if role == Role::Serving && c.ports.len() > 1 {
        errs.push(
            format!("{path}.ports"),
            "more than one container port is set; a revision serves on exactly one port",
        );
    }
    for (i, p) in c.ports.iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        // 0 is Knative's "unset": the port is 8080 (a port given only to name the protocol).
        if !(0..=65535).contains(&p.container_port) {
            errs.push(
                format!("{pp}.containerPort"),
                format!(
                    "{} is not within 0..=65535 (0 means 8080)",
                    p.container_port
                ),
            );
        } else if RESERVED_PORTS.contains(&p.container_port) {
            errs.push(
                format!("{pp}.containerPort"),
                format!(
                    "{} is reserved (8012, 8013, 8022, 9090, 9091, 8008 belong to the queue-proxy); pick another port",
                    p.container_port
                ),
            );
        }
        if role != Role::Init {
            if let Some(name) = &p.name
                && !matches!(name.as_str(), "" | "h2c" | "http1")
            {
                errs.push(
                    format!("{pp}.name"),
                    format!("{name:?} is not allowed; use h2c, http1 or leave it empty"),
                );
            }
            if let Some(proto) = &p.protocol
                && !matches!(proto.as_str(), "" | "TCP")
            {
                errs.push(
                    format!("{pp}.protocol"),
                    format!("{proto:?} is not allowed; the serving port is TCP"),
                );
            }
        }
        if p.host_port.is_some() {
            errs.push(
                format!("{pp}.hostPort"),
                "hostPort is not allowed; remove it",
            );
        }
        if p.host_ip.is_some() {
            errs.push(format!("{pp}.hostIP"), "hostIP is not allowed; remove it");
        }
    }
    for (i, e) in c.env.iter().enumerate() {
        let reserved = match role {
            Role::Serving => RESERVED_ENV.contains(&e.name.as_str()),
            // Sidecars and init containers may use PORT; the K_ names are Sluice's.
            Role::Sidecar | Role::Init => {
                e.name != "PORT" && RESERVED_ENV.contains(&e.name.as_str())
            }
        };
        if reserved {
            errs.push(
                format!("{path}.env[{i}].name"),
                format!(
                    "{} is a reserved environment variable set by Sluice; remove it",
                    e.name
                ),
            );
        } else if e.name.is_empty() {
            errs.push(
                format!("{path}.env[{i}].name"),
                "missing: every env entry needs a name",
            );
        }
        if let Some(from) = &e.value_from {
            let vp = format!("{path}.env[{i}].valueFrom");
            if from.field_ref.is_some() {
                gated(
                    errs,
                    format!("{vp}.fieldRef"),
                    features.field_ref,
                    flags::FIELD_REF,
                );
            }
            if from.resource_field_ref.is_some() {
                gated(
                    errs,
                    format!("{vp}.resourceFieldRef"),
                    features.field_ref,
                    flags::FIELD_REF,
                );
            }
            disallowed(
                errs,
                format!("{vp}.fileKeyRef"),
                from.file_key_ref.is_some(),
                "Knative takes values from configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef",
            );
        }
    }
    for (i, from) in c.env_from.iter().enumerate() {
        let fp = format!("{path}.envFrom[{i}]");
        match (&from.config_map_ref, &from.secret_ref) {
            (None, None) => errs.push(
                fp,
                "expected exactly one, got neither: configMapRef, secretRef",
            ),
            (Some(_), Some(_)) => errs.push(
                fp,
                "expected exactly one, got both: configMapRef, secretRef",
            ),
            _ => {}
        }
    }
    let probes = [
        ("readinessProbe", &c.readiness_probe, true),
        ("livenessProbe", &c.liveness_probe, false),
        ("startupProbe", &c.startup_probe, false),
    ];
    for (field, p, readiness) in probes {
        let Some(p) = p else { continue };
        let pp = format!("{path}.{field}");
        match role {
            Role::Init => errs.push(
                pp,
                "field not allowed in an init container (it runs to completion; nothing probes it)",
            ),
            Role::Sidecar if !features.multi_container_probing => {
                gated(errs, pp, false, flags::MULTI_CONTAINER_PROBING)
            }
            Role::Sidecar => probe(errs, &pp, p, readiness, None, true),
            Role::Serving => probe(errs, &pp, p, readiness, serving_port_name, false),
        }
    }
    if let Some(sc) = &c.security_context {
        let p = format!("{path}.securityContext");
        let fix = "Knative does not pass it to the pod; remove it";
        disallowed(
            errs,
            format!("{p}.seLinuxOptions"),
            sc.se_linux_options.is_some(),
            fix,
        );
        disallowed(
            errs,
            format!("{p}.windowsOptions"),
            sc.windows_options.is_some(),
            fix,
        );
        disallowed(errs, format!("{p}.procMount"), sc.proc_mount.is_some(), fix);
        disallowed(
            errs,
            format!("{p}.appArmorProfile"),
            sc.app_armor_profile.is_some(),
            fix,
        );
        if sc.privileged == Some(true) {
            errs.push(
                format!("{p}.privileged"),
                "only false is allowed; remove it or set it to false",
            );
        }
        if let Some(caps) = &sc.capabilities
            && caps.add.as_ref().is_some_and(|a| !a.is_empty())
        {
            gated(
                errs,
                format!("{p}.capabilities.add"),
                features.add_capabilities,
                flags::ADD_CAPABILITIES,
            );
        }
        id_range(errs, format!("{p}.runAsUser"), sc.run_as_user);
        id_range(errs, format!("{p}.runAsGroup"), sc.run_as_group);
    }
    if let Some(policy) = &c.termination_message_policy
        && !matches!(policy.as_str(), "" | "File" | "FallbackToLogsOnError")
    {
        errs.push(
            format!("{path}.terminationMessagePolicy"),
            format!("{policy:?} is not one of File, FallbackToLogsOnError"),
        );
    }
    if let Some(policy) = &c.image_pull_policy
        && !matches!(policy.as_str(), "" | "Always" | "IfNotPresent" | "Never")
    {
        errs.push(
            format!("{path}.imagePullPolicy"),
            format!("{policy:?} is not one of Always, IfNotPresent, Never"),
        );
    }
    volume_mounts(errs, path, c, volumes, features);
}

fn volume_mounts(
    errs: &mut Errors,
    path: &str,
    c: &Container,
    volumes: &BTreeMap<&str, &Volume>,
    features: &PodSpecFeatures,
) {
    let mut seen: Vec<String> = Vec::new();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        let volume = volumes.get(m.name.as_str());
        if volume.is_none() {
            errs.push(
                format!("{mp}.name"),
                format!(
                    "volumeMount has no matching volume: no volume named {:?} in volumes; add the volume or fix the name",
                    m.name
                ),
            );
        }
        if m.mount_path.is_empty() {
            errs.push(
                format!("{mp}.mountPath"),
                "missing: where to mount the volume",
            );
        } else if !m.mount_path.starts_with('/') {
            errs.push(
                format!("{mp}.mountPath"),
                format!("{:?} is not an absolute path", m.mount_path),
            );
        } else {
            let clean = clean_path(&m.mount_path);
            if matches!(clean.as_str(), "/" | "/dev" | "/dev/log") {
                errs.push(
                    format!("{mp}.mountPath"),
                    format!("mountPath {clean:?} is a reserved path; mount elsewhere"),
                );
            } else if seen.contains(&clean) {
                errs.push(
                    format!("{mp}.mountPath"),
                    format!("{:?} must be unique within the container", m.mount_path),
                );
            }
            seen.push(clean);
        }
        if let Some(v) = volume {
            let writable = v.empty_dir.is_some()
                || v.persistent_volume_claim.is_some()
                || v.ephemeral.is_some();
            if !writable && m.read_only != Some(true) {
                errs.push(
                    format!("{mp}.readOnly"),
                    "volume mount should be readOnly for this type of volume; set readOnly: true",
                );
            }
            if v.persistent_volume_claim
                .as_ref()
                .is_some_and(|p| p.read_only == Some(true))
                && m.read_only != Some(true)
            {
                errs.push(
                    format!("{mp}.readOnly"),
                    "volume is readOnly but volume mount is not; set readOnly: true",
                );
            }
        }
        if let Some(prop) = &m.mount_propagation {
            gated(
                errs,
                format!("{mp}.mountPropagation"),
                features.volumes_mount_propagation,
                flags::VOLUMES_MOUNT_PROPAGATION,
            );
            if !matches!(prop.as_str(), "None" | "HostToContainer") {
                errs.push(
                    format!("{mp}.mountPropagation"),
                    "mount propagation should be set to None or HostToContainer",
                );
            }
        }
        let fix = "Knative does not pass it to the pod; remove it";
        disallowed(
            errs,
            format!("{mp}.subPathExpr"),
            m.sub_path_expr.is_some(),
            fix,
        );
        disallowed(
            errs,
            format!("{mp}.recursiveReadOnly"),
            m.recursive_read_only.is_some(),
            fix,
        );
        disallowed(
            errs,
            format!("{mp}.bindMountOptions"),
            m.bind_mount_options.is_some(),
            fix,
        );
    }
}

/// `path.Clean` of an absolute path, as far as mount paths need it.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A probe: one handler; ports a sidecar must name and the serving container may leave out;
/// Knative's readiness rules (periodSeconds 0 is its aggressive probing).
fn probe(
    errs: &mut Errors,
    path: &str,
    p: &Probe,
    readiness: bool,
    serving_port_name: Option<&str>,
    sidecar: bool,
) {
    let handlers = p.handlers();
    match handlers.len() {
        0 => errs.push(
            path,
            "expected exactly one, got neither: httpGet, tcpSocket, exec, grpc",
        ),
        1 => {}
        _ => errs.push(
            path,
            format!("expected exactly one, got both: {}", handlers.join(", ")),
        ),
    }
    let ports = [
        ("httpGet", p.http_get.as_ref().map(|h| h.port.as_ref())),
        ("tcpSocket", p.tcp_socket.as_ref().map(|t| t.port.as_ref())),
    ];
    for (handler, port) in ports {
        let Some(port) = port else { continue };
        let pp = format!("{path}.{handler}.port");
        match port {
            None | Some(IntOrString::Int(0)) if sidecar => {
                errs.push(pp, "Probe port must be specified: a sidecar's probe names its own port")
            }
            Some(IntOrString::String(name)) if !sidecar && Some(name.as_str()) != serving_port_name => {
                errs.push(
                    pp,
                    format!("{name:?}: Probe port must match container port; give the port's number or leave it out for the serving port"),
                )
            }
            Some(IntOrString::Int(n)) if !(0..=65535).contains(n) => {
                errs.push(pp, format!("{n} is not within 0..=65535"))
            }
            _ => {}
        }
    }
    if let Some(g) = &p.grpc {
        let pp = format!("{path}.grpc.port");
        match g.port {
            None | Some(0) if sidecar => errs.push(
                pp,
                "Probe port must be specified: a sidecar's probe names its own port",
            ),
            Some(n) if !(0..=65535).contains(&n) => {
                errs.push(pp, format!("{n} is not within 0..=65535"))
            }
            _ => {}
        }
    }
    if let Some(e) = &p.exec
        && e.command.is_empty()
    {
        errs.push(
            format!("{path}.exec.command"),
            "missing: the command to run",
        );
    }
    for (field, value) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("periodSeconds", p.period_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = value
            && v < 0
        {
            errs.push(format!("{path}.{field}"), format!("expected 0 <= {v}"));
        }
    }
    if readiness {
        if let Some(s) = p.success_threshold
            && s < 1
        {
            errs.push(
                format!("{path}.successThreshold"),
                format!("expected 1 <= {s}"),
            );
        }
        if p.period_seconds.unwrap_or(0) == 0 {
            if p.failure_threshold.unwrap_or(0) != 0 {
                errs.push(
                    format!("{path}.failureThreshold"),
                    "failureThreshold is disallowed when periodSeconds is zero (Knative's aggressive probing); set periodSeconds or remove it",
                );
            }
            if p.timeout_seconds.unwrap_or(0) != 0 {
                errs.push(
                    format!("{path}.timeoutSeconds"),
                    "timeoutSeconds is disallowed when periodSeconds is zero (Knative's aggressive probing); set periodSeconds or remove it",
                );
            }
        } else {
            if p.timeout_seconds.is_some_and(|t| t < 1) {
                errs.push(
                    format!("{path}.timeoutSeconds"),
                    "expected 1 <= timeoutSeconds",
                );
            }
            if p.failure_threshold.is_some_and(|t| t < 1) {
                errs.push(
                    format!("{path}.failureThreshold"),
                    "expected 1 <= failureThreshold",
                );
            }
        }
    } else if let Some(s) = p.success_threshold
        && s != 1
    {
        errs.push(
            format!("{path}.successThreshold"),
            format!("{s}: must be 1 for liveness and startup probes"),
        );
    }
}

/// Validates a traffic block. `in_service` forbids `configurationName`.
pub(crate) fn traffic(errs: &mut Errors, path: &str, targets: &[TrafficTarget], in_service: bool) {
    let mut sum = 0i64;
    let mut tags: Vec<&str> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let tp = format!("{path}[{i}]");
        if let Some(p) = t.percent {
            if !(0..=100).contains(&p) {
                errs.push(format!("{tp}.percent"), format!("expected 0 <= {p} <= 100"));
            }
            sum += p;
        }
        match (&t.revision_name, &t.configuration_name) {
            (Some(_), Some(_)) => errs.push(
                &tp,
                "expected exactly one, got both: revisionName, configurationName",
            ),
            (None, Some(_)) if in_service => errs.push(
                format!("{tp}.configurationName"),
                "not allowed in a Service; its own configuration is the default (use latestRevision: true)",
            ),
            (None, None) if !in_service && t.latest_revision != Some(true) => errs.push(
                &tp,
                "expected exactly one, got neither: revisionName, configurationName",
            ),
            _ => {}
        }
        if let Some(rev) = &t.revision_name
            && let Err(rule) = names::check_dns1123_subdomain(rev)
        {
            errs.0.push(FieldError::invalid_value(
                format!("{tp}.revisionName"),
                rev,
                rule,
            ));
        }
        match (t.latest_revision, &t.revision_name) {
            (Some(true), Some(rev)) => errs.push(
                format!("{tp}.latestRevision"),
                format!("may not set revisionName {rev:?} when latestRevision is true"),
            ),
            (Some(false), None) if t.configuration_name.is_none() => errs.push(
                format!("{tp}.latestRevision"),
                "may not set revisionName \"\" when latestRevision is false",
            ),
            _ => {}
        }
        if t.url.is_some() {
            errs.push(
                format!("{tp}.url"),
                "must not be set in spec (it is reported in status)",
            );
        }
        if let Some(tag) = &t.tag {
            if let Err(msg) = names::check_dns1035_label(tag) {
                errs.push(format!("{tp}.tag"), msg);
            } else if tags.contains(&tag.as_str()) {
                errs.push(
                    format!("{tp}.tag"),
                    format!("Multiple definitions for {tag:?}"),
                );
            }
            tags.push(tag);
        }
    }
    if !targets.is_empty() && sum != 100 {
        errs.push(path, format!("Traffic targets sum to {sum}, want 100"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_documents;

    /// A Service whose `spec.template.spec` is `spec` (YAML indented six spaces), defaulted.
    fn service(spec: &str) -> Object {
        let yaml = format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: hello}}\nspec:\n  template:\n    spec:\n{spec}"
        );
        let mut obj = parse_documents(&yaml).unwrap().remove(0);
        obj.set_defaults(&DefaultsConfig::default());
        obj
    }

    /// The errors of `spec` under `features`, as `path: message`.
    fn errors(spec: &str, features: &PodSpecFeatures) -> Vec<FieldError> {
        match object(&service(spec), &DefaultsConfig::default(), features) {
            Ok(()) => Vec::new(),
            Err(e) => e.errors,
        }
    }

    #[test]
    fn progress_deadline_is_positive_whole_seconds() {
        let check = |value: &str| {
            let yaml = format!(
                "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: hello}}\nspec:\n  template:\n    metadata:\n      annotations:\n        serving.knative.dev/progress-deadline: \"{value}\"\n    spec:\n      containers:\n        - image: example.com/hello\n"
            );
            let mut obj = parse_documents(&yaml).unwrap().remove(0);
            obj.set_defaults(&DefaultsConfig::default());
            match object(
                &obj,
                &DefaultsConfig::default(),
                &PodSpecFeatures::default(),
            ) {
                Ok(()) => None,
                Err(e) => Some(e.errors),
            }
        };
        assert!(check("600s").is_none());
        assert!(check("10m").is_none());
        let path = "spec.template.metadata.annotations.serving.knative.dev/progress-deadline";
        for (bad, says) in [
            ("soon", "is not a duration"),
            ("0s", "positive whole number"),
            ("1.5s", "positive whole number"),
        ] {
            let errs = check(bad).unwrap_or_else(|| panic!("{bad} was accepted"));
            assert!(error_at(&errs, path).message.contains(says), "{errs:?}");
        }
    }

    fn error_at<'a>(errs: &'a [FieldError], path: &str) -> &'a FieldError {
        errs.iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error at {path}: {errs:?}"))
    }

    const APP: &str = "      containers:\n        - image: example.com/app\n";

    #[test]
    fn knative_default_flags_parse_and_unknown_values_name_the_key() {
        let d = PodSpecFeatures::parse(&ConfigData::new()).unwrap();
        assert_eq!(d, PodSpecFeatures::default());
        assert!(d.multi_container && d.volumes_emptydir && !d.affinity && !d.init_containers);
        let on = ConfigData::from([
            ("kubernetes.podspec-affinity".into(), "Enabled".into()),
            (
                "kubernetes.podspec-init-containers".into(),
                "allowed".into(),
            ),
            (
                "kubernetes.podspec-volumes-emptydir".into(),
                "Disabled".into(),
            ),
        ]);
        let f = PodSpecFeatures::parse(&on).unwrap();
        assert!(f.affinity && f.init_containers && !f.volumes_emptydir);
        let bad = ConfigData::from([("kubernetes.podspec-tolerations".into(), "yes".into())]);
        assert_eq!(
            PodSpecFeatures::parse(&bad).unwrap_err().key,
            "kubernetes.podspec-tolerations"
        );
    }

    #[test]
    fn every_gated_pod_field_names_its_flag_and_passes_when_it_is_on() {
        let spec = format!(
            "{APP}      affinity: {{podAntiAffinity: {{}}}}\n      nodeSelector: {{disk: ssd}}\n      tolerations: [{{key: k, operator: Exists}}]\n      topologySpreadConstraints: [{{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}}]\n      securityContext: {{runAsUser: 1000}}\n      runtimeClassName: gvisor\n      priorityClassName: high\n      schedulerName: custom\n      dnsPolicy: ClusterFirst\n      dnsConfig: {{nameservers: [1.1.1.1]}}\n      hostAliases: [{{ip: 10.0.0.1, hostnames: [db]}}]\n      shareProcessNamespace: true\n      hostIPC: false\n      hostPID: false\n      hostNetwork: false\n      initContainers: [{{image: example.com/setup}}]\n"
        );
        let errs = errors(&spec, &PodSpecFeatures::default());
        for (field, flag) in [
            ("affinity", flags::AFFINITY),
            ("nodeSelector", flags::NODE_SELECTOR),
            ("tolerations", flags::TOLERATIONS),
            (
                "topologySpreadConstraints",
                flags::TOPOLOGY_SPREAD_CONSTRAINTS,
            ),
            ("securityContext", flags::SECURITY_CONTEXT),
            ("runtimeClassName", flags::RUNTIME_CLASS_NAME),
            ("priorityClassName", flags::PRIORITY_CLASS_NAME),
            ("schedulerName", flags::SCHEDULER_NAME),
            ("dnsPolicy", flags::DNS_POLICY),
            ("dnsConfig", flags::DNS_CONFIG),
            ("hostAliases", flags::HOST_ALIASES),
            ("shareProcessNamespace", flags::SHARE_PROCESS_NAMESPACE),
            ("hostIPC", flags::HOST_IPC),
            ("hostPID", flags::HOST_PID),
            ("hostNetwork", flags::HOST_NETWORK),
            ("initContainers", flags::INIT_CONTAINERS),
        ] {
            let e = error_at(&errs, &format!("spec.template.spec.{field}"));
            assert!(
                e.message
                    .contains(&format!("must enable feature flag {flag}")),
                "{e}"
            );
        }
        assert_eq!(errors(&spec, &PodSpecFeatures::all()), Vec::new());
    }

    #[test]
    fn knative_volumes_mount_and_unmatched_ones_are_refused() {
        let ok = "      containers:\n        - image: example.com/app\n          volumeMounts:\n            - {name: config, mountPath: /etc/config}\n            - {name: creds, mountPath: /etc/creds}\n            - {name: both, mountPath: /etc/both}\n            - {name: scratch, mountPath: /tmp/scratch}\n      volumes:\n        - {name: config, configMap: {name: app-config}}\n        - {name: creds, secret: {secretName: app-creds}}\n        - name: both\n          projected:\n            sources:\n              - configMap: {name: app-config}\n              - serviceAccountToken: {path: token, audience: api}\n              - downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}\n        - {name: scratch, emptyDir: {}}\n";
        assert_eq!(errors(ok, &PodSpecFeatures::default()), Vec::new());

        let no_volume = "      containers:\n        - image: example.com/app\n          volumeMounts: [{name: missing, mountPath: /data}]\n";
        let errs = errors(no_volume, &PodSpecFeatures::default());
        let e = error_at(
            &errs,
            "spec.template.spec.containers[0].volumeMounts[0].name",
        );
        assert!(e.message.contains("no matching volume"), "{e}");

        let unmounted = format!("{APP}      volumes: [{{name: config, configMap: {{name: c}}}}]\n");
        let errs = errors(&unmounted, &PodSpecFeatures::default());
        let e = error_at(&errs, "spec.template.spec.volumes[0].name");
        assert!(e.message.contains("not mounted"), "{e}");
    }

    #[test]
    fn gated_and_foreign_volume_sources_are_refused_by_name() {
        let spec = "      containers:\n        - image: example.com/app\n          volumeMounts:\n            - {name: data, mountPath: /data}\n            - {name: share, mountPath: /share, readOnly: true}\n            - {name: scratch, mountPath: /scratch}\n      volumes:\n        - {name: data, persistentVolumeClaim: {claimName: data}}\n        - {name: share, nfs: {server: nfs.local, path: /export}}\n        - {name: scratch, emptyDir: {medium: Disk}}\n";
        let errs = errors(spec, &PodSpecFeatures::default());
        let pvc = error_at(&errs, "spec.template.spec.volumes[0].persistentVolumeClaim");
        assert!(
            pvc.message
                .contains("must enable feature flag kubernetes.podspec-persistent-volume-claim"),
            "{pvc}"
        );
        let nfs = error_at(&errs, "spec.template.spec.volumes[1].nfs");
        assert!(nfs.message.contains("must not set"), "{nfs}");
        error_at(&errs, "spec.template.spec.volumes[2].emptyDir.medium");
        // With the claim flag on, a writable claim still needs its own flag.
        let f = PodSpecFeatures {
            persistent_volume_claim: true,
            ..PodSpecFeatures::default()
        };
        let errs = errors(spec, &f);
        let write = error_at(
            &errs,
            "spec.template.spec.volumes[0].persistentVolumeClaim.readOnly",
        );
        assert!(
            write
                .message
                .contains("kubernetes.podspec-persistent-volume-write"),
            "{write}"
        );
        let off = PodSpecFeatures {
            volumes_emptydir: false,
            ..PodSpecFeatures::default()
        };
        let errs = errors(spec, &off);
        let e = error_at(&errs, "spec.template.spec.volumes[2].emptyDir");
        assert!(
            e.message
                .contains("must enable feature flag kubernetes.podspec-volumes-emptydir"),
            "{e}"
        );
    }

    #[test]
    fn mount_paths_and_read_only_follow_knative() {
        let spec = "      containers:\n        - image: example.com/app\n          volumeMounts:\n            - {name: a, mountPath: /dev}\n            - {name: b, mountPath: relative}\n            - {name: c, mountPath: /x, subPathExpr: $(POD)}\n            - {name: c, mountPath: /x/}\n      volumes:\n        - {name: a, emptyDir: {}}\n        - {name: b, emptyDir: {}}\n        - {name: c, emptyDir: {}}\n";
        let errs = errors(spec, &PodSpecFeatures::default());
        let m = "spec.template.spec.containers[0].volumeMounts";
        assert!(
            error_at(&errs, &format!("{m}[0].mountPath"))
                .message
                .contains("reserved")
        );
        assert!(
            error_at(&errs, &format!("{m}[1].mountPath"))
                .message
                .contains("absolute")
        );
        error_at(&errs, &format!("{m}[2].subPathExpr"));
        assert!(
            error_at(&errs, &format!("{m}[3].mountPath"))
                .message
                .contains("unique")
        );
        // A config map mounted writable (only possible past defaulting, which sets readOnly).
        let mut obj = service(
            "      containers:\n        - image: example.com/app\n          volumeMounts: [{name: c, mountPath: /c}]\n      volumes: [{name: c, configMap: {name: c}}]\n",
        );
        if let Object::Service(s) = &mut obj {
            s.spec.template.spec.containers[0].volume_mounts[0].read_only = Some(false);
        }
        let errs = object(
            &obj,
            &DefaultsConfig::default(),
            &PodSpecFeatures::default(),
        )
        .unwrap_err()
        .errors;
        error_at(&errs, &format!("{m}[0].readOnly"));
    }

    #[test]
    fn containers_ports_and_names_follow_knative() {
        let two_ports = "      containers:\n        - {image: example.com/a, ports: [{containerPort: 8080}]}\n        - {image: example.com/b, ports: [{containerPort: 9000}]}\n";
        let errs = errors(two_ports, &PodSpecFeatures::default());
        assert!(
            error_at(&errs, "spec.template.spec.containers")
                .message
                .contains("only the serving container")
        );
        let no_port = "      containers:\n        - {image: example.com/a}\n        - {image: example.com/b}\n";
        let errs = errors(no_port, &PodSpecFeatures::default());
        assert!(
            error_at(&errs, "spec.template.spec.containers")
                .message
                .contains("exactly one must declare a port")
        );
        let one = PodSpecFeatures {
            multi_container: false,
            ..PodSpecFeatures::default()
        };
        let sidecar = "      containers:\n        - {image: example.com/a, ports: [{containerPort: 8080}]}\n        - {image: example.com/b}\n";
        assert_eq!(errors(sidecar, &PodSpecFeatures::default()), Vec::new());
        let errs = errors(sidecar, &one);
        assert!(
            error_at(&errs, "spec.template.spec.containers")
                .message
                .contains("multi-container")
        );
        let dup = "      containers:\n        - {name: app, image: example.com/a, ports: [{containerPort: 8080}]}\n        - {name: app, image: example.com/b}\n        - {name: queue-proxy, image: example.com/c}\n      initContainers: [{name: app, image: example.com/d}]\n";
        let errs = errors(dup, &PodSpecFeatures::all());
        error_at(&errs, "spec.template.spec.containers[1].name");
        error_at(&errs, "spec.template.spec.initContainers[0].name");
        assert!(
            error_at(&errs, "spec.template.spec.containers[2].name")
                .message
                .contains("reserved")
        );
        let udp = "      containers:\n        - {image: example.com/a, ports: [{containerPort: 8080, protocol: UDP}]}\n";
        error_at(
            &errors(udp, &PodSpecFeatures::default()),
            "spec.template.spec.containers[0].ports[0].protocol",
        );
    }

    #[test]
    fn probes_follow_knative() {
        let spec = "      containers:\n        - image: example.com/a\n          ports: [{containerPort: 8080}]\n          readinessProbe: {httpGet: {path: /ready}, tcpSocket: {}}\n          livenessProbe: {grpc: {port: 9000}, successThreshold: 2}\n          startupProbe: {exec: {command: []}}\n        - image: example.com/b\n          readinessProbe: {httpGet: {path: /}}\n      initContainers:\n        - image: example.com/c\n          livenessProbe: {tcpSocket: {port: 1}}\n";
        let errs = errors(spec, &PodSpecFeatures::all());
        let c = "spec.template.spec.containers";
        assert!(
            error_at(&errs, &format!("{c}[0].readinessProbe"))
                .message
                .contains("got both: httpGet, tcpSocket")
        );
        error_at(&errs, &format!("{c}[0].livenessProbe.successThreshold"));
        error_at(&errs, &format!("{c}[0].startupProbe.exec.command"));
        assert!(
            error_at(&errs, &format!("{c}[1].readinessProbe.httpGet.port"))
                .message
                .contains("must be specified")
        );
        assert!(
            error_at(&errs, "spec.template.spec.initContainers[0].livenessProbe")
                .message
                .contains("init container")
        );
        // Sidecar probes need multi-container-probing.
        let errs = errors(spec, &PodSpecFeatures::default());
        assert!(
            error_at(&errs, &format!("{c}[1].readinessProbe"))
                .message
                .contains("must enable feature flag multi-container-probing")
        );
        // Knative's aggressive probing (periodSeconds 0) takes no timeout.
        let aggressive = "      containers:\n        - image: example.com/a\n          readinessProbe: {tcpSocket: {}, timeoutSeconds: 3}\n";
        error_at(
            &errors(aggressive, &PodSpecFeatures::default()),
            &format!("{c}[0].readinessProbe.timeoutSeconds"),
        );
        let good = "      containers:\n        - image: example.com/a\n          readinessProbe: {grpc: {}, periodSeconds: 5}\n          livenessProbe: {httpGet: {path: /healthz}, periodSeconds: 10}\n          startupProbe: {tcpSocket: {}, failureThreshold: 30, periodSeconds: 2}\n";
        assert_eq!(errors(good, &PodSpecFeatures::default()), Vec::new());
    }

    #[test]
    fn env_and_security_context_follow_knative() {
        let spec = "      containers:\n        - image: example.com/a\n          env:\n            - name: POD\n              valueFrom: {fieldRef: {fieldPath: metadata.name}}\n          envFrom: [{prefix: X_}]\n          securityContext:\n            privileged: true\n            capabilities: {add: [NET_ADMIN], drop: [ALL]}\n            seLinuxOptions: {level: s0}\n";
        let errs = errors(spec, &PodSpecFeatures::default());
        let c = "spec.template.spec.containers[0]";
        assert!(
            error_at(&errs, &format!("{c}.env[0].valueFrom.fieldRef"))
                .message
                .contains("kubernetes.podspec-fieldref")
        );
        error_at(&errs, &format!("{c}.envFrom[0]"));
        error_at(&errs, &format!("{c}.securityContext.privileged"));
        assert!(
            error_at(&errs, &format!("{c}.securityContext.capabilities.add"))
                .message
                .contains("kubernetes.containerspec-addcapabilities")
        );
        error_at(&errs, &format!("{c}.securityContext.seLinuxOptions"));
        // A sidecar may use PORT; the serving container may not.
        let port = "      containers:\n        - {image: example.com/a, ports: [{containerPort: 8080}]}\n        - {image: example.com/b, env: [{name: PORT, value: '9'}]}\n";
        assert_eq!(errors(port, &PodSpecFeatures::default()), Vec::new());
    }

    #[test]
    fn object_validation_matches_the_manifest_path() {
        let obj = service(APP);
        assert_eq!(obj.validate(&DefaultsConfig::default()), Ok(()));
        assert_eq!(
            object(
                &obj,
                &DefaultsConfig::default(),
                &PodSpecFeatures::default()
            ),
            Ok(())
        );
        let gated = service(&format!("{APP}      nodeSelector: {{disk: ssd}}\n"));
        assert!(gated.validate(&DefaultsConfig::default()).is_err());
    }

    #[test]
    fn an_invalid_service_account_reads_as_knatives_error() {
        let mut errs = Errors::default();
        let spec = RevisionSpec {
            service_account_name: Some("foo@bar.baz".into()),
            containers: vec![Container::default()],
            ..RevisionSpec::default()
        };
        revision_spec_with(
            &mut errs,
            "spec.template.spec",
            &spec,
            &DefaultsConfig::default(),
            &PodSpecFeatures::default(),
        );
        let text = errs
            .into_result("Service default/s".into())
            .unwrap_err()
            .to_string();
        // What Knative's TestServiceAccountValidation looks for, verbatim.
        let want = "foo@bar.baz: spec.template.spec.serviceAccountName\na lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
        assert!(text.contains(want), "{text}");
    }
}
