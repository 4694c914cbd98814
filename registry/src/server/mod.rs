//! The server process: wires storage, service and API together, listens
//! (plain or TLS, within the [`connection`] limits), runs maintenance, and
//! shuts down gracefully.

pub mod connection;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, AppState};
use crate::auth::{Htpasswd, HtpasswdError};
use crate::config::{Settings, StorageSettings};
use crate::gc::{GcOptions, LastReport};
use crate::logging;
use crate::maintenance;
use crate::metrics::Metrics;
use crate::nodecache::NodeCache;
use crate::notify::Notifier;
use crate::proxy::PullThrough;
use crate::service::{Options, Registry};
use crate::storage::{
    AzureDriver, FilesystemDriver, GcsDriver, Instrumented, S3Driver, StorageDriver,
};
use crate::tls::{self, TlsError};

/// Age of uploads purged by in-server collections when upload purging is off.
const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The htpasswd file could not be loaded.
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
    /// The spool directory of pull-through could not be prepared.
    #[error("{0}")]
    Spool(std::io::Error),
    /// The listen address could not be bound.
    #[error("http.addr: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The node cache's directory could not be opened.
    #[error("berth.nodecache.path: cannot open the cache in {path}: {source}")]
    NodeCache {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The settings with what the files they name hold, loaded and checked:
/// the TLS certificate, key and client CAs, and the htpasswd file. `serve`
/// starts from this, and `config check` builds it the same way, so a
/// configuration one of them refuses, the other refuses too; only binding
/// the addresses and reaching the storage are left to the start.
pub struct Prepared {
    settings: Settings,
    tls: Option<(Arc<rustls::ServerConfig>, Arc<tls::CertReloader>)>,
    auth: Option<Arc<Htpasswd>>,
}

impl Prepared {
    /// Loads and checks what `settings` names.
    pub fn new(settings: Settings) -> Result<Prepared, ServerError> {
        let tls = match &settings.tls {
            Some(t) => Some(tls::server_config(t, settings.http2)?),
            None => None,
        };
        let auth = match &settings.htpasswd {
            Some(h) => Some(Htpasswd::load(&h.path, &h.realm)?),
            None => None,
        };
        Ok(Prepared {
            settings,
            tls,
            auth,
        })
    }
}

/// Builds the registry service described by `settings`, its storage
/// operations recorded in `metrics`.
pub async fn registry(settings: &Settings, metrics: Arc<Metrics>) -> Arc<Registry> {
    Arc::new(service(settings, metrics).await)
}

/// The registry service over the driver `settings` name, without a node cache.
async fn service(settings: &Settings, metrics: Arc<Metrics>) -> Registry {
    let options = Options {
        delete_enabled: settings.delete_enabled,
        read_only: settings.read_only,
        manifest_max_bytes: settings.manifest_max_bytes,
        gc_grace_period: settings.gc_grace_period,
    };
    let driver: Arc<dyn StorageDriver> = match &settings.storage {
        StorageSettings::Filesystem { root } => Arc::new(FilesystemDriver::new(root)),
        StorageSettings::S3(s3) => Arc::new(S3Driver::new(s3).await),
        StorageSettings::Azure(azure) => Arc::new(AzureDriver::new(azure)),
        StorageSettings::Gcs(gcs) => Arc::new(GcsDriver::new(gcs)),
    };
    Registry::new(Arc::new(Instrumented::new(driver, metrics)), options)
        .with_manifest_cache(settings.manifest_cache_bytes)
}

/// Where the data lives, for the start-up log line.
fn storage_location(storage: &StorageSettings) -> String {
    match storage {
        StorageSettings::Filesystem { root } => root.display().to_string(),
        StorageSettings::S3(s3) => format!(
            "s3://{}/{}{}",
            s3.bucket,
            s3.root,
            s3.endpoint
                .as_deref()
                .map(|e| format!(" at {e}"))
                .unwrap_or_default()
        ),
        StorageSettings::Azure(azure) => {
            format!("{}/{}/{}", azure.service_url, azure.container, azure.root)
        }
        StorageSettings::Gcs(gcs) => {
            format!("gs://{}/{} at {}", gcs.bucket, gcs.root, gcs.endpoint)
        }
    }
}

/// This instance's name in notification events: `hostname:port`.
fn source_addr(port: u16) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{port}")
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish and
/// notification queues flush, both within `http.draintimeout`.
pub async fn run(
    prepared: Prepared,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let Prepared {
        settings,
        tls,
        auth,
    } = prepared;
    let metrics = Arc::new(Metrics::new());
    let mut service = service(&settings, metrics.clone()).await;
    if let Some(cache) = &settings.node_cache {
        let opened =
            NodeCache::open(cache, metrics.clone()).map_err(|source| ServerError::NodeCache {
                path: cache.path.clone(),
                source,
            })?;
        service = service.with_node_cache(Arc::new(opened));
    }
    let registry = Arc::new(service);
    let (acceptor, cert_reloader) = match tls {
        Some((server_config, reloader)) => (Some(TlsAcceptor::from(server_config)), Some(reloader)),
        None => (None, None),
    };
    let listener = TcpListener::bind(settings.addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: settings.addr,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(settings.addr);
    let debug_listener = match &settings.debug {
        Some(debug) => Some((
            TcpListener::bind(debug.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: debug.addr,
                    source,
                })?,
            debug.metrics_path.as_str(),
        )),
        None => None,
    };
    let notifier = if settings.endpoints.is_empty() {
        Notifier::disabled()
    } else {
        Notifier::start(
            &settings.endpoints,
            settings.notification_queue_size,
            metrics.clone(),
            source_addr(local.port()),
        )
    };
    let gc_report = Arc::new(LastReport::default());
    let pull_through = if settings.pull_through.enabled() {
        let options = registry.options().clone();
        Some(Arc::new(
            PullThrough::new(
                registry.storage().clone(),
                settings.pull_through.clone(),
                &options,
                metrics.clone(),
            )
            .map_err(ServerError::Spool)?,
        ))
    } else {
        None
    };
    let state = AppState {
        registry: registry.clone(),
        gc_report: gc_report.clone(),
        metrics: metrics.clone(),
        notifier: notifier.clone(),
        auth: auth.clone(),
        anonymous_pull: settings.anonymous_pull,
        write_networks: settings.write_networks.clone().map(Arc::from),
        tls: acceptor.is_some(),
        extra_headers: Arc::new(settings.headers.clone()),
        check_storage: settings.check_storage,
        access_log: settings.log.access_log,
        log_fields: Arc::from(logging::static_fields(&settings.log)),
        pull_through,
    };
    tracing::info!(
        addr = %local,
        tls = acceptor.is_some(),
        auth = auth.is_some(),
        notification_endpoints = settings.endpoints.len(),
        storage = registry.storage().name(),
        location = %storage_location(&settings.storage),
        "berth-registry listening"
    );

    let mut background = Vec::new();
    if let Some(purge) = settings.purge {
        background.push(tokio::spawn(maintenance::purge_uploads_forever(
            registry.clone(),
            purge.age,
            purge.interval,
            purge.dry_run,
        )));
    }
    if let Some(schedule) = settings.gc_schedule.clone() {
        let options = GcOptions {
            dry_run: settings.gc_dry_run,
            delete_untagged: settings.gc_delete_untagged,
            grace_period: settings.gc_grace_period,
            upload_ttl: settings.purge.map_or(DEFAULT_UPLOAD_TTL, |purge| purge.age),
        };
        background.push(tokio::spawn(maintenance::collect_garbage_forever(
            registry.clone(),
            options,
            schedule,
            metrics.clone(),
            gc_report.clone(),
            settings.pull_through.ttl,
        )));
    }
    if let Some(reloader) = cert_reloader {
        background.push(tokio::spawn(reloader.follow_files()));
    }
    if let Some(auth) = auth {
        background.push(tokio::spawn(auth.follow_file()));
    }
    let (stop_debug, debug_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some((listener, metrics_path)) = debug_listener {
        tracing::info!(addr = ?listener.local_addr().ok(), path = %metrics_path, "metrics listener");
        let router = api::metrics_router(metrics.clone(), metrics_path);
        let debug = connection::Listener {
            name: "debug",
            router,
            tls: None,
            http2: false,
            limits: settings.connection_limits,
            metrics: metrics.clone(),
        };
        background.push(tokio::spawn(async move {
            connection::serve(listener, debug, async {
                let _ = debug_stopped.await;
            })
            .await;
        }));
    }

    let main = connection::Listener {
        name: "main",
        router: api::router(state),
        tls: acceptor,
        http2: settings.http2,
        limits: settings.connection_limits,
        metrics: metrics.clone(),
    };
    let open = connection::serve(listener, main, shutdown).await;
    let deadline = tokio::time::Instant::now() + settings.drain_timeout;
    tracing::info!(timeout = ?settings.drain_timeout, "shutting down: draining connections");
    if !open.drain(deadline).await {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
    notifier.flush(deadline.into_std()).await;
    let _ = stop_debug.send(());
    for task in background {
        task.abort();
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
