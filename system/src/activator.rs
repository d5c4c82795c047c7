//! `sluice system activator`: the front door on a cluster. It routes from Routes, Revisions
//! and EndpointSlices (informers), starts listening once they are listed, and reports to the
//! autoscaler's Service.

use std::sync::Arc;

use sluice_activator::report::Sink;
use sluice_activator::{Env, Routes};
use sluice_platform::routing::RoutingSnapshot;
use tokio::sync::watch;

/// Options of `sluice system activator`.
#[derive(Debug, clap::Args)]
pub struct ActivatorArgs {
    /// Namespace of Sluice's config maps.
    #[arg(long, env = "SYSTEM_NAMESPACE", default_value = sluice_platform_kube::SYSTEM_NAMESPACE)]
    pub system_namespace: String,
    /// Where the autoscaler takes the activator's reports.
    #[arg(
        long,
        env = "SLUICE_AUTOSCALER_URL",
        default_value = "http://sluice-autoscaler.sluice-system.svc:8080"
    )]
    pub autoscaler_url: String,
}

/// Runs the activator until SIGTERM or SIGINT. Listening address and queue depth come from
/// the environment as for the local activator (`ACTIVATOR_BIND_ADDRESS`, `ACTIVATOR_PORT`,
/// `ACTIVATOR_QUEUE_DEPTH`).
pub async fn run(client: kube::Client, args: ActivatorArgs) -> anyhow::Result<()> {
    let (tx, mut rx) = watch::channel(Arc::new(RoutingSnapshot::default()));
    let namespace = args.system_namespace.clone();
    tokio::spawn(async move {
        crate::routing::follow(client, &namespace, tx).await;
    });
    rx.changed()
        .await
        .map_err(|_| anyhow::anyhow!("the routing informers stopped before listing"))?;
    let routes = Routes::new();
    routes.install(&rx.borrow_and_update());
    let installer = routes.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let snapshot = rx.borrow_and_update().clone();
            installer.install(&snapshot);
        }
    });
    let env = Env::read()?;
    tracing::info!(address = %env.bind, "Activator listening.");
    sluice_activator::serve(env, routes, Sink::Http(args.autoscaler_url)).await?;
    Ok(())
}
