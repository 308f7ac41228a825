//! Running the server: open the store, refuse an unsafe listen address, serve with the request
//! bounds (time, concurrency, panics), and on SIGTERM/SIGINT stop accepting, drain in-flight
//! requests for at most `http.shutdown_drain`, then close the store (seal and fsync).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use thiserror::Error;

use super::error::ApiError;
use super::guard::{Limits, panic_response};
use super::{AppState, router};

use crate::config::Config;
use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {addr} without tokens: configure [[auth.tokens]] (see `llmcm token new`) or pass --insecure-no-auth"
    )]
    UnsafeListen { addr: std::net::SocketAddr },
    #[error("cannot open the store in {dir}: {source}")]
    Open {
        dir: std::path::PathBuf,
        source: StoreError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error("closing the store: {0}")]
    Close(crate::log::LogError),
}

/// What `serve` needs besides the configuration: how to re-read it on SIGHUP, and how to change
/// the log filter.
pub struct ServeOptions {
    pub reload_config: ReloadConfig,
    pub set_log_level: SetLogLevel,
}

/// Re-reads the configuration (file, environment, flags).
pub type ReloadConfig = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;
/// Replaces the log filter.
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Serves until SIGTERM or SIGINT. Binds first and prints `listening on http://ADDR` on stdout
/// (then `ready` once the store is open),
/// answering `/health/ready` (and everything but `/health/live`) with 503 `recovering` until the
/// store is open. SIGHUP re-reads the configuration and applies tokens, log level and request
/// timeout; other fields need a restart (logged).
pub async fn serve(config: Config, options: ServeOptions) -> Result<(), ServeError> {
    let addr = config.listen_addr()?;
    let auth_on = !config.auth.tokens.is_empty();
    if !auth_on && !addr.ip().is_loopback() && !config.insecure_no_auth {
        return Err(ServeError::UnsafeListen { addr });
    }
    if !auth_on {
        tracing::warn!(
            %addr,
            "auth is off: no tokens are configured, every request acts as `anonymous` with the admin role"
        );
    }
    super::metrics::install();
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Listen { addr, source })?;
    std_listener
        .set_nonblocking(true)
        .map_err(ServeError::Serve)?;
    let bound = std_listener.local_addr().map_err(ServeError::Serve)?;
    let limits = Arc::new(Limits::new(
        config.http.concurrent_requests_max,
        config.request_timeout(),
    ));
    let drain = config.shutdown_drain();
    tracing::info!(%bound, tokens = auth_on, "listening; opening the store");
    println!("listening on http://{bound}");
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        let _ = stop_tx.send(true);
    });

    // While the store opens, the same socket answers liveness (200) and everything else (503
    // `recovering`); once it is open this server stops accepting and the API takes over the
    // socket (a clone of the same listening file descriptor), so no connection is refused.
    let recovering_listener = std_listener
        .try_clone()
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(ServeError::Serve)?;
    let (opened_tx, mut opened_rx) = tokio::sync::watch::channel(false);
    let mut stop_recovering = stop_rx.clone();
    let recovering_app = Router::new()
        .route("/health/live", axum::routing::get(super::audit::live))
        .fallback(recovering)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ));
    let recovering_server = tokio::spawn(
        axum::serve(recovering_listener, recovering_app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = opened_rx.wait_for(|o| *o) => {}
                    _ = stop_recovering.wait_for(|s| *s) => {}
                }
            })
            .into_future(),
    );

    let dir = config.data_dir.clone();
    let log_config = config.log_config();
    let maintenance = config.maintenance_config();
    let mut opening =
        tokio::task::spawn_blocking(move || Store::open_configured(&dir, log_config, maintenance));
    let mut stop_opening = stop_rx.clone();
    let store = tokio::select! {
        opened = &mut opening => opened
            .map_err(|e| ServeError::Serve(std::io::Error::other(e)))?
            .map_err(|source| ServeError::Open { dir: config.data_dir.clone(), source })?,
        _ = stop_opening.wait_for(|s| *s) => {
            let _ = recovering_server.await;
            // Stopped while recovering: let the open finish, then close cleanly.
            if let Ok(Ok(store)) = opening.await {
                let _ = tokio::task::spawn_blocking(move || store.close()).await;
            }
            return Ok(());
        }
    };
    let _ = opened_tx.send(true);
    let _ = recovering_server.await;

    let store = Arc::new(store);
    let state = AppState::new(store.clone(), config);
    if !state.config().backup.repositories.is_empty() {
        store.set_backup_safe_revision(Some(0));
        tokio::spawn(super::admin::scan_repositories(state.clone()));
    }
    tokio::spawn(super::admin::verify_poll_loop(state.clone()));
    super::admin::start_archiving(&state);
    let app = router(state.clone(), limits.clone());
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(ServeError::Serve)?;
    let mut stop_serving = stop_rx.clone();
    let stopping = state.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_serving.wait_for(|s| *s).await;
        stopping.begin_shutdown();
    });
    let mut server = std::pin::pin!(server.into_future());
    tracing::info!(head = store.log().head().revision, "ready");
    println!("ready");
    let _ = std::io::stdout().flush();
    tokio::spawn(reload_on_sighup(state, limits, options));

    let mut stopped = stop_rx;
    let served = tokio::select! {
        result = &mut server => result,
        _ = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(drain_s = drain.as_secs_f64(), "drain bound reached; closing with requests still in flight");
            Ok(())
        }
    };
    served.map_err(ServeError::Serve)?;
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(|e| ServeError::Serve(std::io::Error::other(e)))?
        .map_err(ServeError::Close)?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Every request but liveness while the store is being opened.
async fn recovering() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "recovering: the store is being opened",
    )
    .into_response()
}

/// On each SIGHUP: re-read the configuration, swap tokens, log level and request timeout.
async fn reload_on_sighup(state: AppState, limits: Arc<Limits>, options: ServeOptions) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; reloading is off");
        return;
    };
    while hangup.recv().await.is_some() {
        let config = match (options.reload_config)() {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "SIGHUP: the configuration is invalid; keeping the current one");
                continue;
            }
        };
        if let Err(error) = (options.set_log_level)(&config.log_level) {
            tracing::error!(%error, "SIGHUP: cannot apply the log level");
        }
        limits.timeout_ms.store(
            config.request_timeout().as_millis() as u64,
            Ordering::SeqCst,
        );
        let tokens = config.auth.tokens.len();
        // storage.scrub_every is a maintenance setting, applied below.
        let mut storage = state.config().storage.clone();
        storage.scrub_every = config.storage.scrub_every.clone();
        let changed_needing_restart = state.config().data_dir != config.data_dir
            || state.config().listen != config.listen
            || storage != config.storage
            || state.config().http.concurrent_requests_max != config.http.concurrent_requests_max;
        state.replace_auth(&config);
        super::admin::start_archiving(&state);
        state
            .store()
            .set_maintenance_config(config.maintenance_config());
        if changed_needing_restart {
            tracing::warn!(
                "SIGHUP: data_dir, listen, storage (but scrub_every) and concurrent_requests_max changes take effect at the next restart"
            );
        }
        tracing::info!(tokens, log_level = %config.log_level, "SIGHUP: configuration reloaded");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
