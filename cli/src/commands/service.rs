//! `sluice service create|update|list|describe|delete|wait`.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::{ContainerPort, EnvVar};
use serde_json::Value;
use sluice_api::autoscaling;
use sluice_api::template::Container;
use sluice_api::{Object, ObjectKind, RevisionTemplateSpec, Service, ServiceSpec};

use super::output::{self, Format};
use super::traffic::{self, TrafficFlags};
use super::wait;
use crate::client::{Client, Conflict};

/// How often `service update` reads and re-applies its change when other writers keep
/// landing first (kn tries 3 times; concurrent pipelines make more worth it).
const UPDATE_ATTEMPTS: u32 = 10;

/// The pause before `attempt`: growing, with jitter so that racing writers spread out.
fn retry_pause(attempt: u32) -> Duration {
    let base = 10 * u64::from(attempt);
    Duration::from_millis(base + fastrand::u64(0..=base))
}

/// `sluice service …`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service.
    Create {
        /// The service name.
        name: String,
        #[command(flatten)]
        edit: EditFlags,
        /// Tag the new revision (REF=TAG or TAG); it serves 100% and gets its own URL.
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        wait: WaitFlags,
    },
    /// Update a service (a template change stamps a new revision; traffic flags move traffic).
    Update {
        /// The service name.
        name: String,
        #[command(flatten)]
        edit: EditFlags,
        #[command(flatten)]
        traffic: TrafficArgs,
        #[command(flatten)]
        wait: WaitFlags,
    },
    /// List services.
    #[command(alias = "ls")]
    List {
        /// Only this service.
        name: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum)]
        output: Option<Format>,
    },
    /// Show a service: URL, revisions with traffic, conditions.
    Describe {
        /// The service name.
        name: String,
        /// Output format (`json`, `yaml`); the full object as stored.
        #[arg(short, long, value_enum)]
        output: Option<Format>,
    },
    /// Print YAML that re-applies to the same revisions and traffic split.
    Export {
        /// The service name.
        name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "yaml")]
        output: Format,
    },
    /// Delete services (their revisions and processes go too).
    Delete {
        /// Service names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Wait until a service is ready.
    Wait {
        /// The service name.
        name: String,
        /// Seconds to wait before giving up.
        #[arg(long, default_value_t = 600)]
        wait_timeout: u64,
    },
}

/// Flags that edit the revision template (kn's names).
#[derive(Debug, Args, Default)]
pub struct EditFlags {
    /// Image to record (the local platform runs --cmd; Kubernetes pulls the image).
    #[arg(long)]
    image: Option<String>,
    /// The program to run, then its leading arguments (repeatable): --cmd python3 --cmd app.py.
    #[arg(long = "cmd", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// An argument for the program (repeatable).
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Environment variable NAME=value (repeatable); on update NAME- removes it.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// The port the program serves on (NAME:PORT or PORT); it gets $PORT either way.
    #[arg(short, long)]
    port: Option<String>,
    /// Hard limit of concurrent requests per replica (0 = no limit).
    #[arg(long)]
    concurrency_limit: Option<i64>,
    /// Request timeout in seconds.
    #[arg(long)]
    timeout: Option<i64>,
    /// Working directory of the program.
    #[arg(long)]
    working_dir: Option<String>,
    /// Name of the revision this change stamps; must start with the service name and a dash.
    #[arg(long)]
    revision_name: Option<String>,
    #[command(flatten)]
    scale: ScaleFlags,
}

/// kn's `--scale*` flags, written as `autoscaling.knative.dev/*` template annotations.
#[derive(Debug, Args, Default)]
pub struct ScaleFlags {
    /// Replicas: N (min = max = N), MIN..MAX, MIN.. or ..MAX.
    #[arg(long, value_name = "N|MIN..MAX", conflicts_with_all = ["scale_min", "scale_max"])]
    scale: Option<String>,
    /// Minimum replicas (0 lets the service scale to zero).
    #[arg(long, value_name = "N")]
    scale_min: Option<u32>,
    /// Maximum replicas (0 = no limit).
    #[arg(long, value_name = "N")]
    scale_max: Option<u32>,
    /// Replicas when a revision is created.
    #[arg(long, value_name = "N")]
    scale_init: Option<u32>,
    /// Concurrency (or requests per second with --scale-metric rps) per replica to aim for,
    /// at most --concurrency-limit.
    #[arg(long, alias = "concurrency-target", value_name = "N")]
    scale_target: Option<f64>,
    /// Percentage of the target to use before scaling up (default 70).
    #[arg(long, alias = "concurrency-utilization", value_name = "PERCENT")]
    scale_utilization: Option<f64>,
    /// How far back scaling decisions look, e.g. 10s (6s to 1h; default 60s).
    #[arg(long, alias = "autoscale-window", value_name = "DURATION")]
    scale_window: Option<String>,
    /// What to scale on: concurrency (default) or rps.
    #[arg(long, value_name = "METRIC", value_parser = ["concurrency", "rps"])]
    scale_metric: Option<String>,
    /// Smallest number of replicas when scaling up from zero (2 or more).
    #[arg(long, value_name = "N")]
    scale_activation: Option<u32>,
}

impl ScaleFlags {
    fn any(&self) -> bool {
        self.scale.is_some()
            || self.scale_min.is_some()
            || self.scale_max.is_some()
            || self.scale_init.is_some()
            || self.scale_target.is_some()
            || self.scale_utilization.is_some()
            || self.scale_window.is_some()
            || self.scale_metric.is_some()
            || self.scale_activation.is_some()
    }

    /// The template annotations the given flags set.
    fn annotations(&self) -> anyhow::Result<Vec<(&'static str, String)>> {
        let mut out = Vec::new();
        if let Some(scale) = &self.scale {
            let (min, max) = parse_scale(scale)?;
            out.extend(min.map(|n| (autoscaling::MIN_SCALE, n.to_string())));
            out.extend(max.map(|n| (autoscaling::MAX_SCALE, n.to_string())));
        }
        let flags = [
            (
                autoscaling::MIN_SCALE,
                self.scale_min.map(|v| v.to_string()),
            ),
            (
                autoscaling::MAX_SCALE,
                self.scale_max.map(|v| v.to_string()),
            ),
            (
                autoscaling::INITIAL_SCALE,
                self.scale_init.map(|v| v.to_string()),
            ),
            (
                autoscaling::TARGET,
                self.scale_target.map(|v| v.to_string()),
            ),
            (
                autoscaling::TARGET_UTILIZATION,
                self.scale_utilization.map(|v| v.to_string()),
            ),
            (autoscaling::WINDOW, self.scale_window.clone()),
            (autoscaling::METRIC, self.scale_metric.clone()),
            (
                autoscaling::ACTIVATION_SCALE,
                self.scale_activation.map(|v| v.to_string()),
            ),
        ];
        out.extend(flags.into_iter().filter_map(|(k, v)| Some((k, v?))));
        Ok(out)
    }
}

/// kn's `--scale`: `N`, `MIN..MAX`, `MIN..` or `..MAX`.
fn parse_scale(text: &str) -> anyhow::Result<(Option<u32>, Option<u32>)> {
    let bad = || anyhow::anyhow!("--scale {text:?}: Scale must be of the format x..y or x");
    let number = |s: &str| s.trim().parse::<u32>().map_err(|_| bad());
    match text.split_once("..") {
        None => {
            let n = number(text)?;
            Ok((Some(n), Some(n)))
        }
        Some(("", "")) => Err(bad()),
        Some((min, max)) => {
            let min = (!min.is_empty()).then(|| number(min)).transpose()?;
            let max = (!max.is_empty()).then(|| number(max)).transpose()?;
            Ok((min, max))
        }
    }
}

/// kn's traffic flags, applied as untag, tag, traffic.
#[derive(Debug, Args, Default)]
pub struct TrafficArgs {
    /// Traffic split REF=PERCENT, REF a tag, a revision or @latest (repeatable, or comma
    /// separated); the percents replace the current split, and the one routed revision left out
    /// takes the rest.
    #[arg(long = "traffic")]
    traffic: Vec<String>,
    /// Tag a revision REF=TAG, REF a revision or @latest (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long = "untag")]
    untags: Vec<String>,
}

impl TrafficArgs {
    fn flags(&self) -> TrafficFlags {
        TrafficFlags {
            traffic: self.traffic.clone(),
            tags: self.tags.clone(),
            untags: self.untags.clone(),
        }
    }
}

/// `--wait` / `--no-wait`.
#[derive(Debug, Args)]
pub struct WaitFlags {
    /// Do not wait for the service to become ready.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait before giving up.
    #[arg(long, default_value_t = 600)]
    wait_timeout: u64,
}

impl EditFlags {
    fn any(&self) -> bool {
        self.image.is_some()
            || !self.cmd.is_empty()
            || !self.args.is_empty()
            || !self.env.is_empty()
            || self.port.is_some()
            || self.concurrency_limit.is_some()
            || self.timeout.is_some()
            || self.working_dir.is_some()
            || self.revision_name.is_some()
            || self.scale.any()
    }

    fn apply(&self, tpl: &mut RevisionTemplateSpec) -> anyhow::Result<()> {
        if tpl.spec.containers.is_empty() {
            tpl.spec.containers.push(Container::default());
        }
        let c = &mut tpl.spec.containers[0];
        if let Some(image) = &self.image {
            c.image = Some(image.clone());
        }
        if !self.cmd.is_empty() {
            c.command.clone_from(&self.cmd);
        }
        if !self.args.is_empty() {
            c.args.clone_from(&self.args);
        }
        for kv in &self.env {
            if let Some(name) = kv.strip_suffix('-').filter(|n| !n.contains('=')) {
                c.env.retain(|e| e.name != name);
                continue;
            }
            let (name, value) = kv
                .split_once('=')
                .with_context(|| format!("--env {kv:?}: want NAME=value (or NAME- to remove)"))?;
            c.env.retain(|e| e.name != name);
            c.env.push(EnvVar {
                name: name.to_owned(),
                value: Some(value.to_owned()),
                value_from: None,
            });
        }
        if let Some(port) = &self.port {
            let (name, number) = match port.split_once(':') {
                Some((n, p)) => (Some(n.to_owned()), p),
                None => (None, port.as_str()),
            };
            let number: i32 = number
                .parse()
                .with_context(|| format!("--port {port:?}: want PORT or NAME:PORT"))?;
            c.ports = vec![ContainerPort {
                container_port: number,
                name,
                ..ContainerPort::default()
            }];
        }
        if let Some(dir) = &self.working_dir {
            c.working_dir = Some(dir.clone());
        }
        if let Some(cc) = self.concurrency_limit {
            tpl.spec.container_concurrency = Some(cc);
        }
        if let Some(t) = self.timeout {
            tpl.spec.timeout_seconds = Some(t);
        }
        for (key, value) in self.scale.annotations()? {
            tpl.metadata.annotations.insert(key.to_owned(), value);
        }
        Ok(())
    }

    /// Sets the BYO revision name (with kn's `<service>-` prefix added when missing), or clears
    /// a previous one so the server names the new revision.
    fn name_revision(&self, service: &str, tpl: &mut RevisionTemplateSpec) {
        tpl.metadata.name = self.revision_name.as_ref().map(|n| {
            let prefix = format!("{service}-");
            if n.starts_with(&prefix) {
                n.clone()
            } else {
                format!("{prefix}{n}")
            }
        });
    }
}

/// A route URL with the local HTTP port when it is not 80.
pub fn local_url(url: &str, info: &Value) -> String {
    match info.get("httpPort").and_then(Value::as_u64) {
        Some(80) | None => url.to_owned(),
        Some(port) => format!("{url}:{port}"),
    }
}

async fn finish(
    client: &Client,
    namespace: &str,
    name: &str,
    wait: &WaitFlags,
    verb: &str,
    before: Option<String>,
) -> anyhow::Result<()> {
    if wait.no_wait {
        println!("Service '{name}' {verb} in namespace '{namespace}'.");
        return Ok(());
    }
    println!();
    let svc = wait::until_ready(
        client,
        namespace,
        name,
        Duration::from_secs(wait.wait_timeout),
    )
    .await?;
    println!();
    let status = svc.status.unwrap_or_default();
    let latest = status
        .configuration
        .latest_ready_revision_name
        .unwrap_or_default();
    let url = local_url(
        status.route.url.as_deref().unwrap_or_default(),
        &client.info().await?,
    );
    if before.as_deref() == Some(latest.as_str()) {
        println!(
            "Service '{name}' with latest revision '{latest}' (unchanged) is available at URL:\n{url}"
        );
    } else {
        println!(
            "Service '{name}' {verb} to latest revision '{latest}' is available at URL:\n{url}"
        );
    }
    Ok(())
}

/// Runs a `sluice service` command.
pub async fn run(client: &Client, namespace: &str, cmd: ServiceCommand) -> anyhow::Result<()> {
    match cmd {
        ServiceCommand::Create {
            name,
            edit,
            tags,
            wait,
        } => {
            if edit.image.is_none() && edit.cmd.is_empty() {
                bail!(
                    "'service create' requires the program to run: give --cmd (the local platform runs commands) and/or --image"
                );
            }
            let mut svc = Service::new(&name, ServiceSpec::default());
            svc.metadata.namespace = Some(namespace.to_owned());
            edit.apply(&mut svc.spec.template)?;
            edit.name_revision(&name, &mut svc.spec.template);
            if !tags.is_empty() {
                let flags = TrafficFlags {
                    traffic: vec!["@latest=100".into()],
                    tags,
                    untags: Vec::new(),
                };
                svc.spec.traffic =
                    traffic::compute(&name, &[], &[], &flags, true).map_err(anyhow::Error::msg)?;
            }
            client.apply(&Object::Service(svc), true, false).await?;
            println!("Creating service '{name}' in namespace '{namespace}':");
            finish(client, namespace, &name, &wait, "created", None).await
        }
        ServiceCommand::Update {
            name,
            edit,
            traffic: traffic_args,
            wait,
        } => {
            let flags = traffic_args.flags();
            if !edit.any() && !flags.any() {
                bail!("flag(s) not set\nUsage: sluice service update NAME [flags]");
            }
            // Read, change, write based on what was read; when another writer landed in
            // between, read again and re-apply the same change (kn's retry on conflict).
            let mut attempt = 1;
            let (applied, before, generation) = loop {
                let Some(Object::Service(mut svc)) =
                    client.get(ObjectKind::Service, namespace, &name).await?
                else {
                    bail!("service '{name}' not found in namespace '{namespace}'");
                };
                let before = svc
                    .status
                    .as_ref()
                    .and_then(|s| s.configuration.latest_ready_revision_name.clone());
                let generation = svc.metadata.generation;
                if edit.any() {
                    edit.apply(&mut svc.spec.template)?;
                    edit.name_revision(&name, &mut svc.spec.template);
                }
                if flags.any() {
                    let status = svc
                        .status
                        .as_ref()
                        .map(|s| s.route.traffic.clone())
                        .unwrap_or_default();
                    svc.spec.traffic =
                        traffic::compute(&name, &svc.spec.traffic, &status, &flags, edit.any())
                            .map_err(anyhow::Error::msg)?;
                }
                svc.status = None;
                match client.apply(&Object::Service(svc), false, false).await {
                    Ok(applied) => break (applied, before, generation),
                    Err(e) if e.is::<Conflict>() && attempt < UPDATE_ATTEMPTS => {
                        attempt += 1;
                        tokio::time::sleep(retry_pause(attempt)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            println!("Updating Service '{name}' in namespace '{namespace}':");
            if applied.object.meta().generation == generation {
                println!(
                    "\nService '{name}' updated in namespace '{namespace}'.\nNo new revision has been created."
                );
                return Ok(());
            }
            finish(client, namespace, &name, &wait, "updated", before).await
        }
        ServiceCommand::List { name, output } => {
            let items: Vec<Service> = client
                .services(namespace)
                .await?
                .into_iter()
                .filter(|s| {
                    name.as_deref()
                        .is_none_or(|n| s.metadata.name.as_deref() == Some(n))
                })
                .collect();
            if let Some(format) = output {
                let values = items
                    .iter()
                    .map(|s| Object::Service(s.clone()).to_json())
                    .collect();
                return output::print(format, &output::list(values));
            }
            if items.is_empty() {
                println!("No services found.");
                return Ok(());
            }
            let info = client.info().await?;
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|s| {
                    let st = s.status.clone().unwrap_or_default();
                    let (conditions, ready, reason) = output::condition_columns(&st.conditions);
                    vec![
                        s.metadata.name.clone().unwrap_or_default(),
                        st.route
                            .url
                            .as_deref()
                            .map(|u| local_url(u, &info))
                            .unwrap_or_default(),
                        st.configuration
                            .latest_ready_revision_name
                            .unwrap_or_default(),
                        output::age(&s.metadata),
                        conditions,
                        ready,
                        reason,
                    ]
                })
                .collect();
            output::table(
                &[
                    "NAME",
                    "URL",
                    "LATEST",
                    "AGE",
                    "CONDITIONS",
                    "READY",
                    "REASON",
                ],
                &rows,
            );
            Ok(())
        }
        ServiceCommand::Describe { name, output } => {
            super::describe::service(client, namespace, &name, output).await
        }
        ServiceCommand::Delete { names } => {
            for name in names {
                if client.delete(ObjectKind::Service, namespace, &name).await? {
                    println!("Service '{name}' successfully deleted in namespace '{namespace}'.");
                } else {
                    bail!("service '{name}' not found in namespace '{namespace}'");
                }
            }
            Ok(())
        }
        ServiceCommand::Export { name, output } => {
            super::export::run(client, namespace, &name, output).await
        }
        ServiceCommand::Wait { name, wait_timeout } => {
            println!("Waiting for Service '{name}' in namespace '{namespace}':\n");
            wait::until_ready(client, namespace, &name, Duration::from_secs(wait_timeout)).await?;
            println!("\nService '{name}' in namespace '{namespace}' is ready.");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_accepts_kn_forms_and_names_the_format() {
        assert_eq!(parse_scale("5").unwrap(), (Some(5), Some(5)));
        assert_eq!(parse_scale("1..5").unwrap(), (Some(1), Some(5)));
        assert_eq!(parse_scale("1..").unwrap(), (Some(1), None));
        assert_eq!(parse_scale("..5").unwrap(), (None, Some(5)));
        for bad in ["..", "x", "1..y", "-1"] {
            let e = parse_scale(bad).unwrap_err().to_string();
            assert!(e.contains("Scale must be of the format x..y or x"), "{e}");
        }
    }
}
