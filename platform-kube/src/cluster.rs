//! The cluster as Sluice's components and CLI meet it: the client from a kubeconfig (or a
//! pod's service account), the system namespace, and the operator settings of Knative's
//! config maps there, followed as they change.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use sluice_api::config::Configs;
use tokio::sync::watch;

use crate::inform;

/// The namespace Sluice's components and config maps live in.
pub const SYSTEM_NAMESPACE: &str = "sluice-system";

/// Knative's default domain on a cluster when config-domain names none.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// A client from `kubeconfig` (or, without one, `$KUBECONFIG`, `~/.kube/config` or the pod's
/// service account), using `context` when given.
pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None if context.is_some() => Config::from_kubeconfig(&options)
            .await
            .context("cannot load the kubeconfig")?,
        None => Config::infer()
            .await
            .context("no kubeconfig and not in a pod; pass --kubeconfig")?,
    };
    Client::try_from(config).context("cannot build a Kubernetes client")
}

/// The settings of Knative's config maps in `namespace`, parsed.
fn parse(maps: &Store<ConfigMap>) -> Result<Configs, sluice_api::config::ConfigError> {
    let state = maps.state();
    Configs::parse(
        |name| {
            state
                .iter()
                .find(|cm| cm.metadata.name.as_deref() == Some(name))
                .and_then(|cm| cm.data.clone())
                .unwrap_or_default()
        },
        CLUSTER_DOMAIN,
    )
}

/// Follows the config maps in `namespace`: the first settings once they are listed, then new
/// settings on every good change. A bad value is logged with its config map and key, and the
/// previous settings stay.
pub async fn settings(
    client: Client,
    namespace: &str,
) -> anyhow::Result<watch::Receiver<Arc<Configs>>> {
    let (changed_tx, mut changed) = watch::channel(0u64);
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let reader = inform(api, watcher::Config::default(), changed_tx);
    reader
        .wait_until_ready()
        .await
        .context("config map watch ended")?;
    let first = parse(&reader).unwrap_or_else(|error| {
        tracing::error!(%error, "Config map rejected; using Knative's defaults for it.");
        Configs::parse(|_| Default::default(), CLUSTER_DOMAIN).expect("defaults parse")
    });
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        while changed.changed().await.is_ok() {
            match parse(&reader) {
                Ok(next) => {
                    tx.send_if_modified(|current| {
                        if **current == next {
                            return false;
                        }
                        tracing::info!("Config maps changed; new settings applied.");
                        *current = Arc::new(next);
                        true
                    });
                }
                Err(error) => {
                    tracing::error!(%error, "Config map rejected; keeping the previous settings.")
                }
            }
        }
    });
    Ok(rx)
}
