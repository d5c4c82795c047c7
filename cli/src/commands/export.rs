//! `sluice service export`: YAML that re-applies to the same state. One Service document per
//! routed revision, oldest first, each naming its revision (`spec.template.metadata.name`) and
//! carrying that revision's spec; the last document is the current template with the traffic
//! block. `sluice apply` stamps each revision before applying the next document, so names and
//! split come back exactly (kn's export loses splits, knative/client#1946).

use std::collections::BTreeMap;

use anyhow::bail;
use sluice_api::{
    Object, ObjectKind, Revision, RevisionTemplateSpec, Service, ServiceSpec, TemplateMeta, keys,
};

use super::output::{self, Format};
use crate::client::Client;

/// Annotations and labels that belong to the cluster that stored the object, not to its intent.
fn keep_label(key: &str) -> bool {
    !key.starts_with(keys::SERVING_PREFIX)
}

fn keep_annotation(key: &str) -> bool {
    ![
        keys::CREATOR,
        keys::LAST_MODIFIER,
        keys::LAST_APPLIED,
        keys::ROUTES,
        keys::CLIENT_UPDATE_TIMESTAMP,
    ]
    .contains(&key)
}

fn filtered(
    map: Option<&BTreeMap<String, String>>,
    keep: fn(&str) -> bool,
) -> BTreeMap<String, String> {
    map.map(|m| {
        m.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// The documents that recreate `svc` with `revisions` (its own revisions).
pub fn documents(svc: &Service, revisions: &[Revision]) -> Vec<Service> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let base = |template: RevisionTemplateSpec, traffic| {
        let mut doc = Service::new(&name, ServiceSpec { template, traffic });
        doc.metadata.namespace.clone_from(&svc.metadata.namespace);
        let labels = filtered(svc.metadata.labels.as_ref(), keep_label);
        let annotations = filtered(svc.metadata.annotations.as_ref(), keep_annotation);
        doc.metadata.labels = (!labels.is_empty()).then_some(labels);
        doc.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
        doc
    };
    let status = svc.status.clone().unwrap_or_default();
    let latest_created = status.configuration.latest_created_revision_name.clone();
    let mut routed: Vec<&Revision> = revisions
        .iter()
        .filter(|r| {
            let n = r.metadata.name.as_deref();
            n != latest_created.as_deref()
                && status
                    .route
                    .traffic
                    .iter()
                    .any(|t| t.revision_name.as_deref() == n)
        })
        .collect();
    routed.sort_by_key(|r| r.configuration_generation().unwrap_or(0));
    let mut docs: Vec<Service> = routed
        .into_iter()
        .map(|r| {
            let template = RevisionTemplateSpec {
                metadata: TemplateMeta {
                    name: r.metadata.name.clone(),
                    labels: filtered(r.metadata.labels.as_ref(), keep_label),
                    annotations: filtered(r.metadata.annotations.as_ref(), keep_annotation),
                },
                spec: r.spec.clone(),
            };
            base(template, Vec::new())
        })
        .collect();
    let mut current = svc.spec.template.clone();
    if current.metadata.name.is_none() {
        current.metadata.name = latest_created;
    }
    docs.push(base(current, svc.spec.traffic.clone()));
    docs
}

/// Prints the export of service `name`.
pub async fn run(
    client: &Client,
    namespace: &str,
    name: &str,
    format: Format,
) -> anyhow::Result<()> {
    let Some(Object::Service(svc)) = client.get(ObjectKind::Service, namespace, name).await? else {
        bail!("service '{name}' not found in namespace '{namespace}'");
    };
    let revisions = client.revisions(namespace, Some(name)).await?;
    let docs: Vec<serde_json::Value> = documents(&svc, &revisions)
        .into_iter()
        .map(|d| Object::Service(d).to_json())
        .collect();
    match format {
        Format::Json => output::print(format, &output::list(docs)),
        Format::Yaml => {
            for doc in docs {
                print!("---\n{}", serde_yaml::to_string(&doc)?);
            }
            Ok(())
        }
    }
}
