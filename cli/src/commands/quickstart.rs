//! `sluice quickstart`: the local platform plus the hello service, in one command.

use std::time::Duration;

use k8s_openapi::api::core::v1::EnvVar;
use sluice_api::template::Container;
use sluice_api::{Object, Service, ServiceSpec};
use tokio::sync::oneshot;

use super::service::local_url;
use super::wait;
use crate::client::Client;
use sluice_daemon::{self as daemon, UpOptions};

/// Starts the platform, deploys `hello` (the bundled helloworld sample), prints how to call it,
/// and serves until Ctrl-C.
pub async fn run(opts: UpOptions) -> anyhow::Result<()> {
    let client = Client::new(&opts.home);
    let (ready_tx, ready_rx) = oneshot::channel();
    let daemon = tokio::spawn(daemon::run(
        opts,
        Some(ready_tx),
        sluice_runtime::terminate_signal(),
    ));
    if ready_rx.await.is_err() {
        return daemon.await?;
    }
    let exe = std::env::current_exe()?.display().to_string();
    let container = Container {
        image: Some("ghcr.io/knative/helloworld-go:latest".into()),
        command: vec![exe, "example-hello".into()],
        env: vec![EnvVar {
            name: "TARGET".into(),
            value: Some("World".into()),
            value_from: None,
        }],
        ..Container::default()
    };
    let mut svc = Service::new("hello", ServiceSpec::default());
    svc.metadata.namespace = Some("default".into());
    svc.spec.template.spec.containers = vec![container];
    client.apply(&Object::Service(svc), false, false).await?;
    println!("Deploying service 'hello' in namespace 'default':\n");
    let svc = wait::until_ready(&client, "default", "hello", Duration::from_secs(120)).await?;
    let info = client.info().await?;
    let url = local_url(
        svc.status
            .and_then(|s| s.route.url)
            .as_deref()
            .unwrap_or_default(),
        &info,
    );
    println!("\nService 'hello' is available at URL:\n{url}\n\nTry it:\n  curl {url}\n");
    println!(
        "Then: sluice service list | sluice service update hello --env TARGET=Sluice | sluice revision list"
    );
    daemon.await?
}
