//! The server process: wires storage, service and API together, listens
//! (plain or TLS), runs maintenance, and shuts down gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, AppState};
use crate::config::{ConfigError, Settings};
use crate::logging;
use crate::maintenance;
use crate::service::{Options, Registry};
use crate::storage::FilesystemDriver;
use crate::tls::{self, TlsError};

/// How long a client may take to send request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address could not be bound.
    #[error("http.addr: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

fn extra_headers(settings: &Settings) -> Result<HeaderMap, ConfigError> {
    let mut headers = HeaderMap::new();
    for (name, values) in &settings.config.http.headers {
        let key = format!("http.headers.{name}");
        let name = HeaderName::try_from(name.as_str())
            .map_err(|e| ConfigError::Invalid { key: key.clone(), message: e.to_string() })?;
        for value in values {
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| ConfigError::Invalid { key: key.clone(), message: e.to_string() })?;
            headers.append(name.clone(), value);
        }
    }
    Ok(headers)
}

/// Builds the registry service described by `settings`.
pub fn registry(settings: &Settings) -> Arc<Registry> {
    let storage = &settings.config.storage;
    let options = Options {
        delete_enabled: storage.delete.enabled,
        read_only: storage.maintenance.readonly.enabled,
        manifest_max_bytes: settings.config.berth.manifestmaxbytes,
    };
    Arc::new(Registry::new(Arc::new(FilesystemDriver::new(&settings.rootdirectory)), options))
}

/// Serves until `shutdown` resolves, then drains in-flight requests for up
/// to `http.draintimeout`.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let config = &settings.config;
    let registry = registry(&settings);
    let state = AppState {
        registry: registry.clone(),
        extra_headers: Arc::new(extra_headers(&settings)?),
        check_storage: config.health.storagedriver.enabled,
        access_log: !config.log.accesslog.disabled,
        log_fields: Arc::from(logging::static_fields(&config.log)),
    };
    let http2 = !config.http.http2.disabled;
    let acceptor = match &config.http.tls {
        Some(t) => Some(TlsAcceptor::from(tls::server_config(t, http2)?)),
        None => None,
    };
    let listener = TcpListener::bind(settings.addr).await.map_err(|source| ServerError::Bind { addr: settings.addr, source })?;
    let local = listener.local_addr().unwrap_or(settings.addr);
    tracing::info!(
        addr = %local,
        tls = acceptor.is_some(),
        storage = registry.storage().name(),
        root = %settings.rootdirectory.display(),
        "berth-registry listening"
    );
    let maintenance = settings.purge.map(|(age, interval)| {
        let dry_run = config.storage.maintenance.uploadpurging.dryrun;
        tokio::spawn(maintenance::purge_uploads_forever(registry.clone(), age, interval, dry_run))
    });

    let app = api::router(state);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    if !http2 {
        builder = builder.http1_only();
    }
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => watcher.watch(builder.serve_connection(TokioIo::new(tls), service)).await,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(timeout = ?settings.drain_timeout, "shutting down: draining connections");
    if tokio::time::timeout(settings.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
    if let Some(task) = maintenance {
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
