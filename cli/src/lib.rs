//! `sluice`'s command line: clap, the commands and their client; [`main`] is the whole
//! program. The servers it can start live in their own crates: `sluice local up` in
//! `sluice-daemon`, `sluice system controller|activator` in `sluice-system`, the data plane in
//! `sluice-activator` and `sluice-queue-proxy`. The `sluice` package builds the binary from
//! [`main`] and holds the end-to-end tests.
//!
//! Owns what users type and read. Must not hold server code, only start it.

mod client;
mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::commands::output::Format;
use crate::commands::service::ServiceCommand;
use sluice_daemon::UpOptions;
use sluice_platform_local::{Home, process};
use sluice_system as system;

/// Sluice: revisioned HTTP services with Knative's API, scale-to-zero and traffic splitting.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
struct Cli {
    /// The local platform's home directory.
    #[arg(long, global = true, env = "SLUICE_HOME")]
    home: Option<PathBuf>,
    /// The namespace.
    #[arg(short, long, global = true, default_value = "default")]
    namespace: String,
    /// Talk to the Kubernetes cluster of this kubeconfig instead of the local platform.
    #[arg(long, global = true, env = "SLUICE_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (implies Kubernetes).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Start the local platform and deploy the hello service (prints the curl line to try).
    Quickstart {
        #[command(flatten)]
        up: UpArgs,
    },
    /// The local platform.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Create or update objects from Knative YAML (one or many documents).
    Apply {
        /// The file, or - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Wait for every Service in the file to become ready.
        #[arg(long)]
        wait: bool,
    },
    /// Delete the objects named in Knative YAML.
    Delete {
        /// The file, or - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Manage services.
    #[command(visible_aliases = ["ksvc", "services"])]
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// List revisions.
    #[command(visible_alias = "revisions")]
    Revision {
        #[command(subcommand)]
        command: RevisionCommand,
    },
    /// List routes.
    #[command(visible_alias = "routes")]
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Run Sluice's components on a Kubernetes cluster (what the Deployments in config/ run).
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Run a queue-proxy (started by the local platform for every replica).
    #[command(hide = true)]
    QueueProxy,
    /// Run the activator (started by the local platform).
    #[command(hide = true)]
    Activator,
    /// Run the bundled helloworld sample (used by quickstart).
    #[command(hide = true)]
    ExampleHello,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Port of the front door on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Domain of route hosts: NAME.NAMESPACE.DOMAIN.
    #[arg(long, default_value = "localhost")]
    domain: String,
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Run the local platform in the foreground until Ctrl-C.
    Up {
        #[command(flatten)]
        up: UpArgs,
    },
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// The control plane: reconcilers and the KPA autoscaler, with leader election.
    Controller(system::controller::ControllerArgs),
    /// The front door: routes by host from the cluster's Routes and EndpointSlices.
    Activator(system::activator::ActivatorArgs),
}

#[derive(Debug, Subcommand)]
enum RevisionCommand {
    /// Show a revision: command, replicas, limits, conditions.
    Describe {
        /// The revision name.
        name: String,
        /// Output format.
        #[arg(short, long, value_enum)]
        output: Option<Format>,
    },
    /// Delete revisions, or with --prune SVC every revision of SVC that gets no traffic.
    Delete {
        /// Revision names.
        #[arg(required_unless_present = "prune")]
        names: Vec<String>,
        /// Delete the revisions of this service that no route sends traffic to.
        #[arg(long)]
        prune: Option<String>,
    },
    /// List revisions, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// Only revisions of this service.
        #[arg(short, long)]
        service: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum)]
        output: Option<Format>,
    },
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Show a route: URL, traffic targets with tag URLs, conditions.
    Describe {
        /// The route name.
        name: String,
        /// Output format.
        #[arg(short, long, value_enum)]
        output: Option<Format>,
    },
    /// List routes.
    #[command(visible_alias = "ls")]
    List {
        /// Output format.
        #[arg(short, long, value_enum)]
        output: Option<Format>,
    },
}

/// Whether the CLI talks to a cluster: with `--kubeconfig` or `--context`, or when no local
/// platform runs on the home and a kubeconfig exists (`$KUBECONFIG` or `~/.kube/config`).
fn uses_cluster(cli: &Cli, home: &Home) -> bool {
    if cli.kubeconfig.is_some() || cli.context.is_some() {
        return true;
    }
    let local = matches!(
        cli.command,
        Command::Quickstart { .. } | Command::Local { .. } | Command::System { .. }
    );
    if local || home.socket().exists() {
        return false;
    }
    let default_config = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".kube/config"))
        .filter(|p| p.exists());
    let from_env = std::env::var_os("KUBECONFIG")
        .filter(|v| !v.is_empty())
        .is_some_and(|v| std::env::split_paths(&v).any(|p| p.exists()));
    from_env || default_config.is_some()
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = Home::new(cli.home.clone().unwrap_or_else(Home::default_root));
    let client = if uses_cluster(&cli, &home) {
        Client::kube(
            sluice_platform_kube::connect(cli.kubeconfig.as_deref(), cli.context.as_deref())
                .await?,
        )
    } else {
        Client::new(&home)
    };
    let ns = cli.namespace.as_str();
    let up = |up: UpArgs| UpOptions {
        home: home.clone(),
        http_port: up.http_port,
        domain: up.domain,
    };
    match cli.command {
        Command::Quickstart { up: args } => {
            sluice_runtime::init_logging();
            commands::quickstart::run(up(args)).await
        }
        Command::Local {
            command: LocalCommand::Up { up: args },
        } => {
            sluice_runtime::init_logging();
            sluice_daemon::run(up(args), None, sluice_runtime::terminate_signal()).await
        }
        Command::Apply { file, wait } => commands::apply::apply(&client, ns, &file, wait).await,
        Command::Delete { file } => commands::apply::delete(&client, ns, &file).await,
        Command::Service { command } => commands::service::run(&client, ns, command).await,
        Command::Revision {
            command: RevisionCommand::List { service, output },
        } => commands::listing::revisions(&client, ns, service.as_deref(), output).await,
        Command::Route {
            command: RouteCommand::List { output },
        } => commands::listing::routes(&client, ns, output).await,
        Command::Revision {
            command: RevisionCommand::Describe { name, output },
        } => commands::describe::revision(&client, ns, &name, output).await,
        Command::Revision {
            command: RevisionCommand::Delete { names, prune },
        } => commands::listing::delete_revisions(&client, ns, &names, prune.as_deref()).await,
        Command::Route {
            command: RouteCommand::Describe { name, output },
        } => commands::describe::route(&client, ns, &name, output).await,
        Command::System { command } => {
            sluice_runtime::init_logging();
            let client =
                sluice_platform_kube::connect(cli.kubeconfig.as_deref(), cli.context.as_deref())
                    .await?;
            match command {
                SystemCommand::Controller(args) => {
                    system::controller::run(client, args, sluice_runtime::terminate_signal()).await
                }
                SystemCommand::Activator(args) => system::activator::run(client, args).await,
            }
        }
        Command::QueueProxy | Command::Activator | Command::ExampleHello => {
            unreachable!("dispatched before the runtime starts")
        }
    }
}

/// Parses the command line and runs it; what the `sluice` binary does.
pub fn main() -> ExitCode {
    process::die_with_parent();
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == process::EXEC_SHIM) {
        process::exec_shim(args);
    }
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Apply { .. }
            | Command::Delete { .. }
            | Command::Service { .. }
            | Command::Revision { .. }
            | Command::Route { .. }
    ) {
        sluice_runtime::default_sigpipe();
    }
    // These run their own runtimes, exactly as their standalone binaries do.
    match cli.command {
        Command::QueueProxy => return sluice_queue_proxy::main_from_env(),
        Command::Activator => return sluice_activator::main_from_env(),
        Command::ExampleHello => return hello::main_from_env(),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
