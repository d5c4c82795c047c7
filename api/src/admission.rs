//! Admission: Knative's defaulting and validation, what the platform an object lands on can
//! run (processes locally, not images), and the creator and last-modifier annotations. The one
//! `admit` the CLI (writing to a cluster), the local daemon (on its admin API) and a cluster's
//! admission webhook all call, so bad input gets the same error naming the field whichever
//! client sent it.

use crate::config::DefaultsConfig;
use crate::validation::{FieldError, ValidationError};
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
    mut obj: Object,
    existing: Option<&Object>,
    defaults: &DefaultsConfig,
    user: &str,
    platform: Platform,
) -> Result<Object, ValidationError> {
    refuse_revisions(&obj)?;
    default(&mut obj, existing, defaults, user);
    validate(&obj, existing, defaults, platform)?;
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
    refuse_revisions(obj)?;
    obj.validate(defaults)?;
    if let Some(old) = existing {
        obj.validate_update(old)?;
    }
    if platform == Platform::Local {
        local_platform_checks(obj)?;
    }
    Ok(())
}

fn local_platform_checks(obj: &Object) -> Result<(), ValidationError> {
    let spec = match obj {
        Object::Service(s) => &s.spec.template.spec,
        Object::Configuration(c) => &c.spec.template.spec,
        _ => return Ok(()),
    };
    let mut errors = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let path = format!("spec.template.spec.containers[{i}]");
        if c.command.is_empty() {
            let image = c
                .image
                .as_deref()
                .map(|i| format!(" (image {i:?} cannot be pulled here)"))
                .unwrap_or_default();
            errors.push(FieldError::new(
                format!("{path}.command"),
                format!("missing: the local platform runs commands, not container images{image}; give the program to run, e.g. `command: [\"./server\"]` in YAML or `--cmd ./server` with `sluice service create`"),
            ));
        }
        for (j, e) in c.env.iter().enumerate() {
            if e.value_from.is_some() {
                errors.push(FieldError::new(
                    format!("{path}.env[{j}].valueFrom"),
                    "not supported on the local platform (no config maps or secrets); give a literal value",
                ));
            }
        }
        if !c.env_from.is_empty() {
            errors.push(FieldError::new(
                format!("{path}.envFrom"),
                "not supported on the local platform; list env values instead",
            ));
        }
    }
    if spec.containers.len() > 1 {
        errors.push(FieldError::new(
            "spec.template.spec.containers",
            "the local platform runs one container per revision; remove the sidecars",
        ));
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
}
