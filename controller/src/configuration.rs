//! Configuration → one immutable Revision per generation of its template, and its status.

use sluice_api::condition::{self, Condition, ConditionStatus};
use sluice_api::configuration::ConfigurationStatusFields;
use sluice_api::{Configuration, ConfigurationStatus, Revision, keys, names};

use crate::meta::{label, non_empty, owner_ref, transition_time};

/// The name of the revision for the configuration's current generation.
pub fn revision_name(cfg: &Configuration) -> String {
    match &cfg.spec.template.metadata.name {
        Some(byo) => byo.clone(),
        None => names::revision_name(
            cfg.metadata.name.as_deref().unwrap_or_default(),
            cfg.metadata.generation.unwrap_or(1),
        ),
    }
}

/// The revision the configuration's current generation stamps: the template's spec, labels
/// and annotations, plus Knative's labels tying it to its configuration and service.
pub fn desired_revision(cfg: &Configuration) -> Revision {
    let name = revision_name(cfg);
    let tpl = &cfg.spec.template;
    let mut labels = tpl.metadata.labels.clone();
    let cfg_name = cfg.metadata.name.clone().unwrap_or_default();
    labels.insert(keys::CONFIGURATION.to_owned(), cfg_name);
    labels.insert(
        keys::CONFIGURATION_GENERATION.to_owned(),
        cfg.metadata.generation.unwrap_or(1).to_string(),
    );
    if let Some(uid) = &cfg.metadata.uid {
        labels.insert(keys::CONFIGURATION_UID.to_owned(), uid.clone());
    }
    if let Some(svc) = label(&cfg.metadata, keys::SERVICE) {
        labels.insert(keys::SERVICE.to_owned(), svc.to_owned());
    }
    let mut rev = Revision::new(&name, tpl.spec.clone());
    rev.metadata.namespace.clone_from(&cfg.metadata.namespace);
    rev.metadata.labels = non_empty(labels);
    rev.metadata.annotations = non_empty(tpl.metadata.annotations.clone());
    rev.metadata.owner_references = Some(vec![owner_ref("Configuration", &cfg.metadata)]);
    rev
}

/// Whether `rev` was stamped by `cfg`: its configuration label names `cfg`, in `cfg`'s
/// namespace (a same-named configuration elsewhere owns its own revisions).
pub fn owns(cfg: &Configuration, rev: &Revision) -> bool {
    label(&rev.metadata, keys::CONFIGURATION) == cfg.metadata.name.as_deref()
        && rev.metadata.namespace == cfg.metadata.namespace
}

/// The configuration's status: latest created is the current generation's revision; latest
/// ready is the newest Ready revision; Ready follows the latest created revision.
///
/// `revisions` may be every revision, or (as a reconcile pass gives, to stay linear in the
/// number of objects) only the configuration's own.
pub fn status<'r>(
    cfg: &Configuration,
    revisions: impl IntoIterator<Item = &'r Revision> + Clone,
    now: jiff::Timestamp,
) -> ConfigurationStatus {
    let created_name = revision_name(cfg);
    let created = revisions
        .clone()
        .into_iter()
        .find(|r| r.metadata.name.as_deref() == Some(created_name.as_str()) && owns(cfg, r));
    let latest_ready = revisions
        .into_iter()
        .filter(|r| owns(cfg, r) && r.is_ready())
        .max_by_key(|r| r.configuration_generation().unwrap_or(0));
    let ready = match created.and_then(Revision::ready_condition) {
        Some(c) if c.is_true() => Condition::true_("Ready"),
        Some(c) if c.status == ConditionStatus::False => Condition::false_(
            "Ready",
            "RevisionFailed",
            format!(
                "Revision {created_name:?} failed with message: {}.",
                c.message.as_deref().unwrap_or("")
            ),
        ),
        _ => Condition {
            type_: "Ready".into(),
            ..Condition::default()
        },
    };
    let previous = cfg
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    ConfigurationStatus {
        observed_generation: cfg.metadata.generation,
        conditions: condition::merge(previous, vec![ready], &transition_time(now)),
        fields: ConfigurationStatusFields {
            latest_created_revision_name: created.map(|_| created_name.clone()),
            latest_ready_revision_name: latest_ready.and_then(|r| r.metadata.name.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::t0;
    use sluice_api::ConfigurationSpec;

    fn config(generation: i64) -> Configuration {
        let mut c = Configuration::new("hello", ConfigurationSpec::default());
        c.metadata.namespace = Some("default".into());
        c.metadata.generation = Some(generation);
        c.metadata.labels = Some([(keys::SERVICE.to_owned(), "hello".to_owned())].into());
        c
    }

    fn ready(mut rev: Revision, status: Condition) -> Revision {
        rev.status = Some(sluice_api::RevisionStatus {
            conditions: vec![status],
            ..Default::default()
        });
        rev
    }

    #[test]
    fn revision_per_generation_with_knative_labels() {
        let rev = desired_revision(&config(3));
        assert_eq!(rev.metadata.name.as_deref(), Some("hello-00003"));
        let labels = rev.metadata.labels.unwrap();
        assert_eq!(labels[keys::CONFIGURATION_GENERATION], "3");
        assert_eq!(labels[keys::CONFIGURATION], "hello");
        assert_eq!(labels[keys::SERVICE], "hello");
    }

    #[test]
    fn latest_ready_is_the_newest_ready_revision() {
        let old = ready(desired_revision(&config(1)), Condition::true_("Ready"));
        let new = ready(
            desired_revision(&config(2)),
            Condition::unknown("Ready", "Deploying", ""),
        );
        let st = status(&config(2), &[old.clone(), new], t0());
        assert_eq!(
            st.fields.latest_created_revision_name.as_deref(),
            Some("hello-00002")
        );
        assert_eq!(
            st.fields.latest_ready_revision_name.as_deref(),
            Some("hello-00001")
        );
        assert!(!condition::is_ready(&st.conditions));
        let failed = ready(
            desired_revision(&config(2)),
            Condition::false_("Ready", "ExitCode1", "boom"),
        );
        let st = status(&config(2), &[old, failed], t0());
        let r = condition::find(&st.conditions, "Ready").unwrap();
        assert_eq!(r.reason.as_deref(), Some("RevisionFailed"));
        assert_eq!(
            r.message.as_deref(),
            Some("Revision \"hello-00002\" failed with message: boom.")
        );
    }
}
