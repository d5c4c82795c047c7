//! `sluice apply -f` and `sluice delete -f`: Knative YAML in, one or many documents. Every
//! document is admitted (dry run) before any is stored, so a bad file changes nothing.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_api::manifest::parse_documents;
use sluice_api::{Object, ObjectKind};

use super::wait;
use crate::client::Client;

fn read(file: &str) -> anyhow::Result<Vec<Object>> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let objs = parse_documents(&text).with_context(|| file.to_string())?;
    if objs.is_empty() {
        bail!("{file}: no objects found");
    }
    Ok(objs)
}

fn with_namespace(mut obj: Object, namespace: &str) -> Object {
    if obj.meta().namespace.is_none() {
        obj.meta_mut().namespace = Some(namespace.to_owned());
    }
    obj
}

fn resource(obj: &Object) -> String {
    format!(
        "{}.serving.knative.dev/{}",
        obj.kind().as_str().to_lowercase(),
        obj.name()
    )
}

/// Applies every object in `file`; with `wait`, waits for each Service to become ready.
pub async fn apply(client: &Client, namespace: &str, file: &str, wait: bool) -> anyhow::Result<()> {
    let objs: Vec<Object> = read(file)?
        .into_iter()
        .map(|o| with_namespace(o, namespace))
        .collect();
    for obj in &objs {
        client
            .apply(obj, false, true)
            .await
            .with_context(|| format!("{file}: {}", obj.describe()))?;
    }
    for (i, obj) in objs.iter().enumerate() {
        let applied = client.apply(obj, false, false).await?;
        println!("{} {}", resource(obj), applied.action);
        // A later document changes the same template again: let this one stamp its revision
        // first, so replayed histories (service export) keep every revision.
        let again = objs[i + 1..].iter().any(|o| {
            o.kind() == obj.kind() && o.name() == obj.name() && o.namespace() == obj.namespace()
        });
        if again && obj.kind() != ObjectKind::Route {
            stamped(client, &applied.object).await?;
        }
    }
    if wait {
        for obj in objs.iter().filter(|o| o.kind() == ObjectKind::Service) {
            println!(
                "Waiting for Service '{}' in namespace '{}':",
                obj.name(),
                obj.namespace()
            );
            wait::until_ready(
                client,
                obj.namespace(),
                obj.name(),
                Duration::from_secs(600),
            )
            .await?;
        }
    }
    Ok(())
}

/// Waits until the configuration behind `obj` has created the revision of its generation.
async fn stamped(client: &Client, obj: &Object) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let generation = obj.meta().generation;
    loop {
        if let Some(Object::Configuration(cfg)) = client
            .get(ObjectKind::Configuration, obj.namespace(), obj.name())
            .await?
        {
            let caught_up = cfg.status.as_ref().is_some_and(|s| {
                s.fields.latest_created_revision_name.is_some()
                    && s.observed_generation == cfg.metadata.generation
            });
            let current = obj.kind() == ObjectKind::Configuration
                && cfg.metadata.generation == generation
                || obj.kind() == ObjectKind::Service && cfg.spec.template == service_template(obj);
            if caught_up && current {
                return Ok(());
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("{}: no revision was stamped within 30 s", obj.describe());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn service_template(obj: &Object) -> sluice_api::RevisionTemplateSpec {
    match obj {
        Object::Service(s) => s.spec.template.clone(),
        _ => sluice_api::RevisionTemplateSpec::default(),
    }
}

/// Deletes every object named in `file`.
pub async fn delete(client: &Client, namespace: &str, file: &str) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for obj in read(file)?
        .into_iter()
        .map(|o| with_namespace(o, namespace))
    {
        if client
            .delete(obj.kind(), obj.namespace(), obj.name())
            .await?
        {
            println!("{} deleted", resource(&obj));
        } else {
            missing.push(format!(
                "{} not found in namespace '{}'",
                resource(&obj),
                obj.namespace()
            ));
        }
    }
    if !missing.is_empty() {
        bail!("{}", missing.join("\n"));
    }
    Ok(())
}
