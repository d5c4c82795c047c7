//! Admission: Knative's defaulting and validation, what the platform an object lands on can
//! run (processes locally, not images), and the creator and last-modifier annotations. The one
//! `admit` the CLI (writing to a cluster), the local daemon (on its admin API) and a cluster's
//! admission webhook all call, so bad input gets the same error naming the field whichever
//! client sent it.

use crate::config::DefaultsConfig;
use crate::validation::{FieldError, PodSpecFeatures, ValidationError};
use crate::{Object, keys};

/// Where an object is admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// Replicas are local processes: a command is required, images cannot run.
    Local,
    /// Replicas are pods.
    Kubernetes,
}

/// Defaults and validates an object for `platform`. `existing` is the stored object on
/// update.
pub fn admit(
    obj: Object,
    existing: Option<&Object>,
    defaults: &DefaultsConfig,
    user: &str,
    platform: Platform,
) -> Result<Object, ValidationError> {
    admit_with(
        obj,
        existing,
        defaults,
        &PodSpecFeatures::default(),
        user,
        platform,
    )
}

/// [`admit`] with the PodSpec fields config-features allows (`admit` takes Knative's default
/// flags).
pub fn admit_with(
    mut obj: Object,
    existing: Option<&Object>,
    defaults: &DefaultsConfig,
    features: &PodSpecFeatures,
    user: &str,
    platform: Platform,
) -> Result<Object, ValidationError> {
    refuse_revisions(&obj)?;
    default(&mut obj, existing, defaults, user);
    validate_with(&obj, existing, defaults, features, platform)?;
    Ok(obj)
}

fn refuse_revisions(obj: &Object) -> Result<(), ValidationError> {
    if obj.kind() == crate::ObjectKind::Revision {
        return Err(ValidationError {
            object: obj.describe(),
            errors: vec![FieldError::new(
                "kind",
                "Revisions are stamped by Configurations and cannot be applied; apply a Service or Configuration instead",
            )],
        });
    }
    Ok(())
}

/// Knative's defaulting: the defaults of `config-defaults`, then who made the object. A
/// create records `user` as creator and last modifier; an update keeps the creator and names
/// `user` last modifier only when the spec (defaulted) changed, so a resync that changes
/// nothing writes nothing. Objects owned by another (a Service's Configuration and Route) are
/// the controller's, and keep the annotations their owner gave them. Idempotent: defaulting
/// a defaulted object changes nothing.
pub fn default(obj: &mut Object, existing: Option<&Object>, defaults: &DefaultsConfig, user: &str) {
    obj.set_defaults(defaults);
    if obj
        .meta()
        .owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty())
    {
        return;
    }
    let old_annotation =
        |key: &str| -> Option<String> { existing?.meta().annotations.as_ref()?.get(key).cloned() };
    let (creator, modifier) = match existing {
        None => (user.to_owned(), user.to_owned()),
        Some(old) => {
            let changed = old.to_json().get("spec") != obj.to_json().get("spec");
            let modifier = match old_annotation(keys::LAST_MODIFIER) {
                Some(previous) if !changed => previous,
                _ => user.to_owned(),
            };
            (
                old_annotation(keys::CREATOR).unwrap_or_else(|| user.to_owned()),
                modifier,
            )
        }
    };
    let annotations = obj
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(keys::CREATOR.to_owned(), creator);
    annotations.insert(keys::LAST_MODIFIER.to_owned(), modifier);
}

/// Knative's validation of a (defaulted) object, the update rules against `existing`, and
/// what `platform` can run.
pub fn validate(
    obj: &Object,
    existing: Option<&Object>,
    defaults: &DefaultsConfig,
    platform: Platform,
) -> Result<(), ValidationError> {
    validate_with(
        obj,
        existing,
        defaults,
        &PodSpecFeatures::default(),
        platform,
    )
}

/// [`validate`] with the PodSpec fields config-features allows.
pub fn validate_with(
    obj: &Object,
    existing: Option<&Object>,
    defaults: &DefaultsConfig,
    features: &PodSpecFeatures,
    platform: Platform,
) -> Result<(), ValidationError> {
    refuse_revisions(obj)?;
    crate::validation::object(obj, defaults, features)?;
    if let Some(old) = existing {
        obj.validate_update(old)?;
    }
    if platform == Platform::Local {
        local_platform_checks(obj)?;
    }
    Ok(())
}

/// What the local platform cannot honour, refused naming the field and why. A local replica is
/// the serving container's command run as the daemon's user on this machine, so fields that
/// change what that process sees (volumes and mounts, init containers, sidecars, another user,
/// `/etc/hosts` or resolver settings, a sandboxing runtime class, values from config maps and
/// secrets) are refused. Fields that only steer a cluster (image pulling and its secrets, the
/// service account, scheduling and placement, resources, liveness and startup probes, the
/// termination message, security hardening that restricts the process) are accepted and have
/// no effect here; the same manifest then runs unchanged on Kubernetes.
fn local_platform_checks(obj: &Object) -> Result<(), ValidationError> {
    let spec = match obj {
        Object::Service(s) => &s.spec.template.spec,
        Object::Configuration(c) => &c.spec.template.spec,
        _ => return Ok(()),
    };
    let mut errors = Vec::new();
    let base = "spec.template.spec";
    let mut refuse = |path: String, why: &str| {
        errors.push(FieldError::new(
            path,
            format!("not supported on the local platform: {why}"),
        ));
    };
    for (i, c) in spec.containers.iter().enumerate() {
        let path = format!("{base}.containers[{i}]");
        if c.command.is_empty() {
            let image = c
                .image
                .as_deref()
                .map(|i| format!(" (image {i:?} cannot be pulled here)"))
                .unwrap_or_default();
            refuse(
                format!("{path}.command"),
                &format!(
                    "missing: the local platform runs commands, not container images{image}; give the program to run, e.g. `command: [\"./server\"]` in YAML or `--cmd ./server` with `sluice service create`"
                ),
            );
        }
        for (j, e) in c.env.iter().enumerate() {
            if e.value_from.is_some() {
                refuse(
                    format!("{path}.env[{j}].valueFrom"),
                    "there are no config maps, secrets or pod fields to read; give a literal value",
                );
            }
        }
        if !c.env_from.is_empty() {
            refuse(
                format!("{path}.envFrom"),
                "there are no config maps or secrets to read; list env values instead",
            );
        }
        if !c.volume_mounts.is_empty() {
            refuse(
                format!("{path}.volumeMounts"),
                "a local process gets no volumes mounted, so the files it expects there would be missing; point it at files on this machine instead",
            );
        }
        if let Some(sc) = &c.security_context {
            identity(
                &mut refuse,
                &format!("{path}.securityContext"),
                [
                    ("runAsUser", sc.run_as_user.is_some()),
                    ("runAsGroup", sc.run_as_group.is_some()),
                ],
            );
        }
    }
    if spec.containers.len() > 1 {
        refuse(
            format!("{base}.containers"),
            "the local platform runs one container per revision; remove the sidecars",
        );
    }
    if !spec.init_containers.is_empty() {
        refuse(
            format!("{base}.initContainers"),
            "the local platform runs only the serving container, so the setup they do would not happen; run it before `sluice local up`, or in the serving command",
        );
    }
    if !spec.volumes.is_empty() {
        refuse(
            format!("{base}.volumes"),
            "a local process gets no volumes; point it at files on this machine instead",
        );
    }
    if let Some(sc) = &spec.security_context {
        identity(
            &mut refuse,
            &format!("{base}.securityContext"),
            [
                ("runAsUser", sc.run_as_user.is_some()),
                ("runAsGroup", sc.run_as_group.is_some()),
                ("fsGroup", sc.fs_group.is_some()),
                (
                    "supplementalGroups",
                    sc.supplemental_groups
                        .as_ref()
                        .is_some_and(|g| !g.is_empty()),
                ),
            ],
        );
    }
    if !spec.host_aliases.is_empty() {
        refuse(
            format!("{base}.hostAliases"),
            "a local process uses this machine's /etc/hosts, without these entries",
        );
    }
    if spec.dns_config.is_some() {
        refuse(
            format!("{base}.dnsConfig"),
            "a local process resolves names with this machine's resolver, without these settings",
        );
    }
    if let Some(policy) = spec.dns_policy.as_deref()
        && policy != "Default"
    {
        refuse(
            format!("{base}.dnsPolicy"),
            &format!(
                "a local process resolves names with this machine's resolver (dnsPolicy Default), not {policy}; remove it"
            ),
        );
    }
    if let Some(class) = &spec.runtime_class_name {
        refuse(
            format!("{base}.runtimeClassName"),
            &format!(
                "a local process runs directly on this machine, not in the sandbox of runtime class {class:?}; remove it"
            ),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            object: obj.describe(),
            errors,
        })
    }
}

/// Refuses the identity fields set in a security context: a local process runs as the
/// daemon's user.
fn identity<const N: usize>(
    refuse: &mut impl FnMut(String, &str),
    path: &str,
    fields: [(&str, bool); N],
) {
    for (field, set) in fields {
        if set {
            refuse(
                format!("{path}.{field}"),
                "a local process runs as the user running the daemon and cannot switch users or groups; remove it",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_documents;

    #[test]
    fn image_without_command_is_refused_with_a_fix() {
        let obj = parse_documents("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello}\nspec:\n  template:\n    spec:\n      containers: [{image: ghcr.io/knative/helloworld-go}]\n").unwrap().remove(0);
        let err = admit(obj, None, &DefaultsConfig::default(), "me", Platform::Local).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("spec.template.spec.containers[0].command"),
            "{text}"
        );
        assert!(text.contains("--cmd"), "{text}");
    }

    #[test]
    fn images_are_admitted_on_kubernetes() {
        let obj = parse_documents("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello}\nspec:\n  template:\n    spec:\n      containers: [{image: ghcr.io/knative/helloworld-go}]\n").unwrap().remove(0);
        let admitted = admit(
            obj,
            None,
            &DefaultsConfig::default(),
            "me",
            Platform::Kubernetes,
        )
        .unwrap();
        assert_eq!(
            admitted.meta().annotations.as_ref().unwrap()[keys::CREATOR],
            "me"
        );
    }

    #[test]
    fn creator_is_kept_and_modifier_updated() {
        let yaml = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello}\nspec:\n  template:\n    spec:\n      containers: [{command: [hello]}]\n";
        let first = admit(
            parse_documents(yaml).unwrap().remove(0),
            None,
            &DefaultsConfig::default(),
            "ann",
            Platform::Local,
        )
        .unwrap();
        let second = admit(
            parse_documents(&yaml.replace("[hello]", "[hello, --v2]"))
                .unwrap()
                .remove(0),
            Some(&first),
            &DefaultsConfig::default(),
            "bob",
            Platform::Local,
        )
        .unwrap();
        let a = second.meta().annotations.clone().unwrap();
        assert_eq!(a[keys::CREATOR], "ann");
        assert_eq!(a[keys::LAST_MODIFIER], "bob");
    }

    #[test]
    fn an_update_that_changes_no_spec_keeps_the_last_modifier() {
        let yaml = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello}\nspec:\n  template:\n    spec:\n      containers: [{image: example.com/hello:1}]\n";
        let obj = || parse_documents(yaml).unwrap().remove(0);
        let cfg = DefaultsConfig::default();
        let first = admit(obj(), None, &cfg, "ann", Platform::Kubernetes).unwrap();
        let resync = admit(obj(), Some(&first), &cfg, "argocd", Platform::Kubernetes).unwrap();
        assert_eq!(
            resync, first,
            "a resync of the same manifest changes nothing"
        );
        let changed = parse_documents(&yaml.replace("hello:1", "hello:2"))
            .unwrap()
            .remove(0);
        let update = admit(changed, Some(&first), &cfg, "bob", Platform::Kubernetes).unwrap();
        let a = update.meta().annotations.clone().unwrap();
        assert_eq!(
            (a[keys::CREATOR].as_str(), a[keys::LAST_MODIFIER].as_str()),
            ("ann", "bob")
        );
    }

    #[test]
    fn defaulting_is_idempotent_and_leaves_owned_objects_their_annotations() {
        let yaml = "apiVersion: serving.knative.dev/v1\nkind: Configuration\nmetadata:\n  name: hello\n  annotations: {serving.knative.dev/creator: ann}\n  ownerReferences: [{apiVersion: serving.knative.dev/v1, kind: Service, name: hello, uid: u1}]\nspec:\n  template:\n    spec:\n      containers: [{image: example.com/hello:1}]\n";
        let cfg = DefaultsConfig::default();
        let mut once = parse_documents(yaml).unwrap().remove(0);
        default(
            &mut once,
            None,
            &cfg,
            "system:serviceaccount:sluice-system:sluice-controller",
        );
        let a = once.meta().annotations.clone().unwrap();
        assert_eq!(a.get(keys::CREATOR).map(String::as_str), Some("ann"));
        assert!(!a.contains_key(keys::LAST_MODIFIER));
        let mut twice = once.clone();
        default(&mut twice, None, &cfg, "someone-else");
        assert_eq!(twice, once);
    }

    fn local(spec: &str) -> Object {
        let yaml = format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: hello}}\nspec:\n  template:\n    spec:\n{spec}"
        );
        let mut obj = parse_documents(&yaml).unwrap().remove(0);
        obj.set_defaults(&DefaultsConfig::default());
        obj
    }

    fn local_errors(obj: &Object) -> Vec<FieldError> {
        local_platform_checks(obj).map_or_else(|e| e.errors, |()| Vec::new())
    }

    #[test]
    fn volumes_are_refused_locally_naming_the_field() {
        let obj = local(
            "      containers:\n        - command: [./server]\n          volumeMounts: [{name: config, mountPath: /etc/config}]\n      volumes: [{name: config, configMap: {name: app}}]\n",
        );
        let err = admit(obj, None, &DefaultsConfig::default(), "me", Platform::Local).unwrap_err();
        let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.template.spec.containers[0].volumeMounts",
                "spec.template.spec.volumes"
            ]
        );
        assert!(
            err.errors.iter().all(|e| e
                .message
                .starts_with("not supported on the local platform: ")),
            "{err}"
        );
    }

    #[test]
    fn what_a_local_process_would_not_see_is_refused() {
        let obj = local(
            "      containers:\n        - command: [./server]\n          securityContext: {runAsUser: 1000}\n      initContainers: [{command: [./migrate]}]\n      securityContext: {runAsGroup: 10, fsGroup: 10}\n      hostAliases: [{ip: 10.0.0.1, hostnames: [db]}]\n      dnsConfig: {nameservers: [1.1.1.1]}\n      dnsPolicy: ClusterFirst\n      runtimeClassName: gvisor\n",
        );
        let errs = local_errors(&obj);
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "spec.template.spec.containers[0].securityContext.runAsUser",
            "spec.template.spec.initContainers",
            "spec.template.spec.securityContext.runAsGroup",
            "spec.template.spec.securityContext.fsGroup",
            "spec.template.spec.hostAliases",
            "spec.template.spec.dnsConfig",
            "spec.template.spec.dnsPolicy",
            "spec.template.spec.runtimeClassName",
        ] {
            assert!(paths.contains(&want), "{want} not in {paths:?}");
        }
    }

    #[test]
    fn what_only_steers_a_cluster_is_accepted_locally() {
        let obj = local(
            "      serviceAccountName: app\n      imagePullSecrets: [{name: registry}]\n      nodeSelector: {disk: ssd}\n      tolerations: [{key: k, operator: Exists}]\n      priorityClassName: high\n      dnsPolicy: Default\n      containers:\n        - command: [./server]\n          image: example.com/app\n          imagePullPolicy: Always\n          resources: {limits: {memory: 1Gi}}\n          livenessProbe: {httpGet: {path: /healthz}}\n          startupProbe: {tcpSocket: {}}\n          terminationMessagePolicy: File\n          securityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}\n",
        );
        assert_eq!(local_errors(&obj), Vec::new());
    }

    #[test]
    fn a_gated_field_is_admitted_once_config_features_enables_it() {
        let yaml = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello}\nspec:\n  template:\n    spec:\n      nodeSelector: {disk: ssd}\n      containers: [{image: example.com/hello:1}]\n";
        let obj = || parse_documents(yaml).unwrap().remove(0);
        let cfg = DefaultsConfig::default();
        let refused = admit(obj(), None, &cfg, "me", Platform::Kubernetes).unwrap_err();
        let text = refused.to_string();
        assert!(text.contains("spec.template.spec.nodeSelector"), "{text}");
        assert!(text.contains("kubernetes.podspec-nodeselector"), "{text}");
        let data = [(
            "kubernetes.podspec-nodeselector".to_owned(),
            "enabled".to_owned(),
        )]
        .into();
        let features = crate::config::FeaturesConfig::parse(&data).unwrap();
        admit_with(
            obj(),
            None,
            &cfg,
            &features.pod_spec,
            "me",
            Platform::Kubernetes,
        )
        .unwrap();
    }
}
