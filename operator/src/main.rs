//! `berth-operator`: runs the Registry controller while holding the leader Lease.
//!
//! In a cluster it uses the pod's service account; outside, the kubeconfig
//! that `KUBECONFIG` (or `~/.kube/config`) names. Every flag has a default.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use berth_operator::controller::{self, DEFAULT_REGISTRY_IMAGE, Settings};
use berth_operator::leader::{Elector, LeaseSettings};
use berth_operator::metrics::{self, Metrics};
use clap::{Parser, ValueEnum};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Kubernetes operator that runs berth-registry on every node.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address of the /metrics and /healthz endpoints.
    #[arg(long, env = "BERTH_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Watch Registries in this namespace only (default: all namespaces).
    #[arg(long, env = "BERTH_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// The berth-registry image run by Registries whose spec.image is unset
    /// or empty. A Registry that names an image keeps it. Changing this rolls
    /// the pods of every Registry that names none. The built-in default is
    /// the berth-registry release of this operator's version.
    #[arg(
        long,
        env = "BERTH_REGISTRY_IMAGE",
        default_value = DEFAULT_REGISTRY_IMAGE,
        value_parser = image_reference,
    )]
    registry_image: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "berth-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: host name and process id).
    #[arg(long)]
    identity: Option<String>,
    /// How long candidates wait, after they last saw the Lease change,
    /// before taking it over.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal; it
    /// must be shorter than --lease-duration.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    renew_deadline: Duration,
    /// How often the leader renews the Lease and candidates try to take it;
    /// also the timeout of each call. Shorter than --renew-deadline.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    renew_interval: Duration,
    /// Events on one Registry within this window cause one reconcile.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    debounce: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let metrics = Metrics::default();

    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    let server = tokio::spawn(metrics::serve(
        args.metrics_addr,
        metrics.clone(),
        fired(shutdown.clone()),
    ));

    let lease = LeaseSettings {
        name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        identity: identity.clone(),
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.renew_interval,
    };
    lease.check().map_err(anyhow::Error::msg)?;
    let elector = Elector::new(client.clone(), lease);
    let outcome = lead(
        &elector,
        client,
        &args,
        identity,
        metrics.clone(),
        shutdown.clone(),
    )
    .await;
    metrics.set_leader(false);
    if let Err(error) = elector.release().await {
        warn!(%error, "cannot release the lease");
    }
    server.abort();
    outcome
}

/// Waits for the Lease, runs the controller while renewing it, and stops
/// the controller on shutdown (letting running reconciles finish), or at
/// once when the Lease could not be renewed within the renew deadline or
/// another replica holds it: then the process exits with an error, and its
/// restart makes it a candidate again.
async fn lead(
    elector: &Elector,
    client: Client,
    args: &Args,
    identity: String,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let lease = elector.settings().clone();
    info!(lease = %lease.name, namespace = %lease.namespace, %identity, "waiting for the leader lease");
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => warn!(%error, "cannot take the lease"),
        }
        tokio::select! {
            _ = tokio::time::sleep(lease.retry_period) => {}
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        }
    }
    info!(%identity, "leading");
    metrics.set_leader(true);

    let (stop_tx, stop) = watch::channel(false);
    let settings = Settings {
        namespace: args.namespace.clone(),
        debounce: args.debounce,
        identity,
        registry_image: args.registry_image.clone(),
    };
    let running = tokio::spawn(controller::run(
        client,
        settings,
        metrics.clone(),
        fired(stop),
    ));

    let mut renewed = Instant::now();
    let lost = loop {
        let left = lease.renew_deadline.saturating_sub(renewed.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(lease.retry_period.min(left)) => {}
            _ = shutdown.wait_for(|stop| *stop) => break None,
        }
        let left = lease.renew_deadline.saturating_sub(renewed.elapsed());
        match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
            Ok(Ok(true)) => renewed = Instant::now(),
            Ok(Ok(false)) => break Some("another replica holds the lease"),
            Ok(Err(error)) => warn!(%error, "cannot renew the lease"),
            Err(_) => {}
        }
        if renewed.elapsed() >= lease.renew_deadline {
            break Some("the lease was not renewed within the renew deadline");
        }
    };
    match lost {
        None => {
            let _ = stop_tx.send(true);
            running.await.context("controller task")?;
            Ok(())
        }
        Some(why) => {
            // Another replica may take over once the lease duration has
            // passed: stop now, without waiting for running reconciles.
            running.abort();
            metrics.set_leader(false);
            error!(why, "stopped leading");
            anyhow::bail!("stopped leading: {why}")
        }
    }
}

/// An image reference, as `--registry-image` takes it: not empty, no blanks.
fn image_reference(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an image reference cannot be empty".to_owned());
    }
    if text.chars().any(char::is_whitespace) {
        return Err(format!(
            "{text:?} is not an image reference (it has blanks)"
        ));
    }
    Ok(text.to_owned())
}

/// Completes when the watched flag turns true (or its sender is gone).
async fn fired(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "berth-operator".to_owned());
    format!("{host}-{}", std::process::id())
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
