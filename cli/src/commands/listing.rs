//! `sluice revision list` and `sluice route list`.

use std::collections::BTreeMap;

use sluice_api::{Object, ObjectKind, keys};

use super::output::{self, Format};
use super::service::local_url;
use crate::client::Client;

/// Lists revisions (of one service with `service`), newest generation first.
pub async fn revisions(
    client: &Client,
    namespace: &str,
    service: Option<&str>,
    format: Option<Format>,
) -> anyhow::Result<()> {
    let mut revs = client.revisions(namespace, service).await?;
    if let Some(format) = format {
        let values = revs
            .into_iter()
            .map(|r| Object::Revision(r).to_json())
            .collect();
        return output::print(format, &output::list(values));
    }
    if revs.is_empty() {
        println!("No revisions found.");
        return Ok(());
    }
    // Traffic and tags come from each owning service's status.
    let mut traffic: BTreeMap<String, (i64, Vec<String>)> = BTreeMap::new();
    for obj in client.list(ObjectKind::Service, Some(namespace)).await? {
        let Object::Service(svc) = obj else { continue };
        for t in svc.status.map(|s| s.route.traffic).unwrap_or_default() {
            let Some(rev) = t.revision_name else { continue };
            let entry = traffic.entry(rev).or_default();
            entry.0 += t.percent.unwrap_or(0);
            entry.1.extend(t.tag);
        }
    }
    let svc_of = |r: &sluice_api::Revision| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::SERVICE))
            .cloned()
            .unwrap_or_default()
    };
    revs.sort_by_key(|r| {
        (
            svc_of(r),
            std::cmp::Reverse(r.configuration_generation().unwrap_or(0)),
        )
    });
    let rows: Vec<Vec<String>> = revs
        .iter()
        .map(|r| {
            let name = r.metadata.name.clone().unwrap_or_default();
            let (pct, tags) = traffic.get(&name).cloned().unwrap_or_default();
            let (conditions, ready, reason) =
                output::condition_columns(&r.status.clone().unwrap_or_default().conditions);
            vec![
                name,
                svc_of(r),
                if pct > 0 {
                    format!("{pct}%")
                } else {
                    String::new()
                },
                tags.join(","),
                r.configuration_generation()
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
                output::age(&r.metadata),
                conditions,
                ready,
                reason,
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "SERVICE",
            "TRAFFIC",
            "TAGS",
            "GENERATION",
            "AGE",
            "CONDITIONS",
            "READY",
            "REASON",
        ],
        &rows,
    );
    Ok(())
}

/// Lists routes.
pub async fn routes(
    client: &Client,
    namespace: &str,
    format: Option<Format>,
) -> anyhow::Result<()> {
    let routes = client.routes(namespace).await?;
    if let Some(format) = format {
        let values = routes
            .into_iter()
            .map(|r| Object::Route(r).to_json())
            .collect();
        return output::print(format, &output::list(values));
    }
    if routes.is_empty() {
        println!("No routes found.");
        return Ok(());
    }
    let info = client.info().await?;
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let st = r.status.clone().unwrap_or_default();
            let (_, ready, _) = output::condition_columns(&st.conditions);
            vec![
                r.metadata.name.clone().unwrap_or_default(),
                st.fields
                    .url
                    .as_deref()
                    .map(|u| local_url(u, &info))
                    .unwrap_or_default(),
                ready,
            ]
        })
        .collect();
    output::table(&["NAME", "URL", "READY"], &rows);
    Ok(())
}

/// Deletes revisions by name, or with `prune` every revision of that service no route sends
/// traffic to and that is not its configuration's latest.
pub async fn delete_revisions(
    client: &Client,
    namespace: &str,
    names: &[String],
    prune: Option<&str>,
) -> anyhow::Result<()> {
    let mut targets: Vec<String> = names.to_vec();
    if let Some(service) = prune {
        let Some(Object::Service(svc)) =
            client.get(ObjectKind::Service, namespace, service).await?
        else {
            anyhow::bail!("service '{service}' not found in namespace '{namespace}'");
        };
        let st = svc.status.unwrap_or_default();
        let keep: Vec<String> = st
            .route
            .traffic
            .iter()
            .filter_map(|t| t.revision_name.clone())
            .chain(st.configuration.latest_created_revision_name)
            .chain(st.configuration.latest_ready_revision_name)
            .collect();
        for obj in client.list(ObjectKind::Revision, Some(namespace)).await? {
            let owned = obj
                .meta()
                .labels
                .as_ref()
                .and_then(|l| l.get(keys::SERVICE))
                .map(String::as_str)
                == Some(service);
            if owned && !keep.iter().any(|k| k == obj.name()) {
                targets.push(obj.name().to_owned());
            }
        }
        if targets.is_empty() {
            println!("No unreferenced revisions found.");
            return Ok(());
        }
    }
    for name in targets {
        if client
            .delete(ObjectKind::Revision, namespace, &name)
            .await?
        {
            println!("Revision '{name}' deleted in namespace '{namespace}'.");
        } else {
            anyhow::bail!("revision '{name}' not found in namespace '{namespace}'");
        }
    }
    Ok(())
}
