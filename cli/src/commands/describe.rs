//! `sluice service describe`: kn's layout of a service, its revisions and conditions.

use anyhow::bail;
use sluice_api::condition::{ConditionStatus, find};
use sluice_api::{Object, ObjectKind, Revision, keys};

use super::output::{self, Format};
use super::service::local_url;
use crate::client::Client;

/// Prints a container's image (if any) and command line, labels padded to `width`.
fn print_container(c: &sluice_api::Container, indent: &str, width: usize) {
    if let Some(image) = &c.image {
        println!("{indent}{:<width$}{image}", "Image:");
    }
    let command: Vec<&str> = c
        .command
        .iter()
        .chain(&c.args)
        .map(String::as_str)
        .collect();
    println!("{indent}{:<width$}{}", "Command:", command.join(" "));
}

/// Gets an object for describing: `None` once it was printed as JSON/YAML.
async fn fetch(
    client: &Client,
    kind: ObjectKind,
    namespace: &str,
    name: &str,
    format: Option<Format>,
) -> anyhow::Result<Option<Object>> {
    let Some(obj) = client.get(kind, namespace, name).await? else {
        bail!(
            "{} '{name}' not found in namespace '{namespace}'",
            kind.as_str().to_lowercase()
        );
    };
    if let Some(format) = format {
        output::print(format, &obj.to_json())?;
        return Ok(None);
    }
    Ok(Some(obj))
}

/// Prints a service as kn does, or as JSON/YAML.
pub async fn service(
    client: &Client,
    namespace: &str,
    name: &str,
    format: Option<Format>,
) -> anyhow::Result<()> {
    let Some(obj) = fetch(client, ObjectKind::Service, namespace, name, format).await? else {
        return Ok(());
    };
    let Object::Service(svc) = obj else {
        unreachable!("asked for a service")
    };
    let st = svc.status.clone().unwrap_or_default();
    let info = client.info().await?;
    println!("Name:       {name}");
    println!("Namespace:  {namespace}");
    println!("Age:        {}", output::age(&svc.metadata));
    println!(
        "URL:        {}",
        st.route
            .url
            .as_deref()
            .map(|u| local_url(u, &info))
            .unwrap_or_default()
    );
    println!();
    let revisions = client.revisions(namespace, Some(name)).await?;
    let latest_ready = st.configuration.latest_ready_revision_name.clone();
    let latest_created = st.configuration.latest_created_revision_name.clone();
    let mut shown: Vec<(String, i64, Vec<String>, bool)> = Vec::new();
    for t in &st.route.traffic {
        let Some(rev) = &t.revision_name else {
            continue;
        };
        match shown.iter_mut().find(|s| &s.0 == rev) {
            Some(entry) => {
                entry.1 += t.percent.unwrap_or(0);
                entry.2.extend(t.tag.clone());
                entry.3 |= t.latest_revision == Some(true);
            }
            None => shown.push((
                rev.clone(),
                t.percent.unwrap_or(0),
                t.tag.clone().into_iter().collect(),
                t.latest_revision == Some(true),
            )),
        }
    }
    for extra in [&latest_created, &latest_ready].into_iter().flatten() {
        if !shown.iter().any(|s| &s.0 == extra) {
            shown.push((extra.clone(), 0, Vec::new(), false));
        }
    }
    let generation = |n: &str| {
        revisions
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(n))
            .and_then(Revision::configuration_generation)
            .unwrap_or(0)
    };
    shown.sort_by_key(|s| std::cmp::Reverse(generation(&s.0)));
    println!("Revisions:");
    for (rev_name, percent, tags, latest) in shown {
        let rev = revisions
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(rev_name.as_str()));
        let ready = rev.and_then(Revision::ready_condition).map(|c| c.status);
        let symbol = match ready {
            Some(ConditionStatus::True) if percent > 0 => '%',
            Some(ConditionStatus::True) => '+',
            Some(ConditionStatus::False) => '!',
            _ => '?',
        };
        let bullet = if percent > 0 {
            format!("{percent:3}{symbol}")
        } else {
            format!("   {symbol}")
        };
        let mut head = if latest {
            format!("@latest ({rev_name})")
        } else if latest_ready.as_deref() == Some(rev_name.as_str()) {
            format!("{rev_name} (current @latest)")
        } else if latest_created.as_deref() == Some(rev_name.as_str()) {
            format!("{rev_name} (latest created)")
        } else {
            rev_name.clone()
        };
        for tag in &tags {
            head.push_str(&format!(" #{tag}"));
        }
        let age = rev.map(|r| output::age(&r.metadata)).unwrap_or_default();
        println!("  {bullet}  {head} [{}] ({age})", generation(&rev_name));
        if let Some(r) = rev {
            if ready == Some(ConditionStatus::False) {
                let reason = r
                    .ready_condition()
                    .and_then(|c| c.reason.clone())
                    .unwrap_or_default();
                println!("        Error:     {reason}");
            }
            if let Some(c) = r.spec.serving_container() {
                print_container(c, "        ", 11);
            }
            let rst = r.status.clone().unwrap_or_default();
            println!(
                "        Replicas:  {}/{}",
                rst.actual_replicas.unwrap_or(0),
                rst.desired_replicas.unwrap_or(0)
            );
        }
        // Unlike kn, show where each tag answers.
        for t in st
            .route
            .traffic
            .iter()
            .filter(|t| t.revision_name.as_deref() == Some(rev_name.as_str()))
        {
            if let (Some(tag), Some(url)) = (&t.tag, &t.url) {
                println!("        URL #{tag}:  {}", local_url(url, &info));
            }
        }
    }
    println!();
    output::conditions_table(&st.conditions);
    if let Some(ready) = find(&st.conditions, "Ready").filter(|c| !c.is_true())
        && let Some(m) = ready.message.as_deref().filter(|m| !m.is_empty())
    {
        println!("\n  {m}");
    }
    Ok(())
}

/// Prints a revision as kn does, or as JSON/YAML.
pub async fn revision(
    client: &Client,
    namespace: &str,
    name: &str,
    format: Option<Format>,
) -> anyhow::Result<()> {
    let Some(obj) = fetch(client, ObjectKind::Revision, namespace, name, format).await? else {
        return Ok(());
    };
    let Object::Revision(rev) = obj else {
        unreachable!("asked for a revision")
    };
    let label = |k: &str| {
        rev.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(k))
            .cloned()
            .unwrap_or_default()
    };
    println!("Name:         {name}");
    println!("Namespace:    {namespace}");
    println!("Age:          {}", output::age(&rev.metadata));
    if let Some(c) = rev.spec.serving_container() {
        print_container(c, "", 14);
        if !c.env.is_empty() {
            let env: Vec<String> = c
                .env
                .iter()
                .map(|e| format!("{}={}", e.name, e.value.as_deref().unwrap_or("[ref]")))
                .collect();
            println!("Env:          {}", env.join(", "));
        }
    }
    let st = rev.status.clone().unwrap_or_default();
    println!(
        "Replicas:     {}/{}",
        st.actual_replicas.unwrap_or(0),
        st.desired_replicas.unwrap_or(0)
    );
    let limit = rev.spec.concurrency();
    println!(
        "Concurrency:  {}",
        if limit == 0 {
            "unlimited".to_owned()
        } else {
            format!("{limit}")
        }
    );
    println!("Timeout:      {}s", rev.spec.timeout_seconds.unwrap_or(300));
    println!("Service:      {}", label(keys::SERVICE));
    println!("Generation:   {}", label(keys::CONFIGURATION_GENERATION));
    println!();
    output::conditions_table(&st.conditions);
    Ok(())
}

/// Prints a route as kn does, or as JSON/YAML.
pub async fn route(
    client: &Client,
    namespace: &str,
    name: &str,
    format: Option<Format>,
) -> anyhow::Result<()> {
    let Some(obj) = fetch(client, ObjectKind::Route, namespace, name, format).await? else {
        return Ok(());
    };
    let Object::Route(route) = obj else {
        unreachable!("asked for a route")
    };
    let info = client.info().await?;
    let st = route.status.clone().unwrap_or_default();
    println!("Name:       {name}");
    println!("Namespace:  {namespace}");
    println!("Age:        {}", output::age(&route.metadata));
    println!(
        "URL:        {}",
        st.fields
            .url
            .as_deref()
            .map(|u| local_url(u, &info))
            .unwrap_or_default()
    );
    if let Some(svc) = route
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(keys::SERVICE))
    {
        println!("Service:    {svc}");
    }
    println!();
    println!("Traffic Targets:");
    for t in &st.fields.traffic {
        let rev = t.revision_name.clone().unwrap_or_default();
        let head = if t.latest_revision == Some(true) {
            format!("@latest ({rev})")
        } else {
            rev
        };
        let tag = t.tag.as_ref().map(|t| format!(" #{t}")).unwrap_or_default();
        println!("  {:3}%  {head}{tag}", t.percent.unwrap_or(0));
        if let Some(url) = &t.url {
            println!("        URL:  {}", local_url(url, &info));
        }
    }
    println!();
    output::conditions_table(&st.conditions);
    Ok(())
}
