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

use super::connection::{self, Connections, Timeouts};
use super::error::ApiError;
use super::guard::{Limits, panic_response};
use super::tls::Tls;
use super::{AppState, router};

use crate::config::Config;
use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {addr} without tokens: configure [[auth.tokens]] (see `llmcm token new`) or pass --insecure-no-auth"
    )]
    UnsafeListen { addr: std::net::SocketAddr },
    #[error(
        "refusing to serve tokens in clear text on {addr}: configure [tls] cert and key, or pass --insecure-plaintext"
    )]
    PlaintextTokens { addr: std::net::SocketAddr },
    #[error("{0}")]
    Tls(String),
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
    Close(crate::store::StoreError),
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
    if let Some(refusal) = listen_refusal(&config, addr) {
        return Err(refusal);
    }
    let auth_on = !config.auth.tokens.is_empty();
    let tls_on = config.tls.cert.is_some();
    if !auth_on {
        tracing::warn!(
            %addr,
            "auth is off: no tokens are configured, every request acts as `anonymous` with the admin role"
        );
    }
    if config.insecure_plaintext && !tls_on {
        tracing::warn!(
            %addr,
            "--insecure-plaintext: bearer tokens travel in clear text; anyone on the path can read and reuse them"
        );
    }
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(Arc::new(Tls::load(cert, key).map_err(ServeError::Tls)?)),
        _ => None,
    };
    super::metrics::install();
    return_large_allocations_to_the_os();
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Listen { addr, source })?;
    std_listener
        .set_nonblocking(true)
        .map_err(ServeError::Serve)?;
    let bound = std_listener.local_addr().map_err(ServeError::Serve)?;
    let limits = Arc::new(Limits::new(
        config.http.concurrent_requests_max,
        config.http.request_timeout.get(),
        config.http.body_read_timeout.get(),
    ));
    let connections_max = connection::fit_descriptor_limit(config.http.connections_max);
    let timeouts = connection_timeouts(&config);
    let drain = config.http.shutdown_drain.get();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%bound, tokens = auth_on, tls = tls.is_some(), connections_max, "listening; opening the store");
    println!("listening on {scheme}://{bound}");
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
    let recovering_app = Router::new()
        .route("/health/live", axum::routing::get(super::health::live))
        .fallback(recovering)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ));
    let (recovering_stop_tx, recovering_stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_recovering = stop_rx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = opened_rx.wait_for(|o| *o) => {}
            _ = stop_recovering.wait_for(|s| *s) => {}
        }
        let _ = recovering_stop_tx.send(true);
    });
    let recovering_server = tokio::spawn(connection::serve(
        recovering_listener,
        Connections {
            app: recovering_app.clone(),
            reserve_app: recovering_app,
            connections_max,
            timeouts,
            tls: tls.clone(),
        },
        recovering_stop_rx,
        // Returns as soon as it stops accepting: the API takes the socket at once, and the
        // recovering phase's connections finish on their own.
        false,
    ));

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
    state.backups().start();
    let app = router(state.clone(), limits.clone());
    let reserve_app = reserve_router(state.clone(), limits.clone());
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(ServeError::Serve)?;
    let (serving_stop_tx, serving_stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_serving = stop_rx.clone();
    let stopping = state.clone();
    tokio::spawn(async move {
        let _ = stop_serving.wait_for(|s| *s).await;
        stopping.begin_shutdown();
        let _ = serving_stop_tx.send(true);
    });
    let server = connection::serve(
        listener,
        Connections {
            app,
            reserve_app,
            connections_max,
            timeouts,
            tls: tls.clone(),
        },
        serving_stop_rx,
        true,
    );
    let mut server = std::pin::pin!(server);
    tracing::info!(head = store.head().revision, "ready");
    println!("ready");
    let _ = std::io::stdout().flush();
    tokio::spawn(reload_on_sighup(state, limits, tls, options));

    let mut stopped = stop_rx;
    tokio::select! {
        () = &mut server => {}
        _ = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(drain_s = drain.as_secs_f64(), "drain bound reached; closing with requests still in flight");
        }
    };
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(|e| ServeError::Serve(std::io::Error::other(e)))?
        .map_err(ServeError::Close)?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Makes every allocation of 128 KiB or more its own mapping, unmapped when freed. glibc's
/// default raises that threshold after large blocks are freed and then serves them from its
/// arenas, which keep the memory: a burst of large commits to many watchers (or large pages to
/// many readers) left the server gigabytes larger for good. The server's large buffers are few
/// and short-lived (values, pages, events), so a mapping each costs little.
fn return_large_allocations_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is called before the server allocates
    // its large buffers, and any value is valid for M_MMAP_THRESHOLD (it fails, harmlessly,
    // only for values above HEAP_MAX).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Why the server must not listen on `addr`: beyond loopback without tokens (unless
/// `insecure_no_auth`), or with tokens but without TLS (unless `insecure_plaintext`); the two
/// consents are independent.
fn listen_refusal(config: &Config, addr: std::net::SocketAddr) -> Option<ServeError> {
    let auth_on = !config.auth.tokens.is_empty();
    let tls_on = config.tls.cert.is_some();
    if addr.ip().is_loopback() {
        None
    } else if !auth_on && !config.insecure_no_auth {
        Some(ServeError::UnsafeListen { addr })
    } else if auth_on && !tls_on && !config.insecure_plaintext {
        Some(ServeError::PlaintextTokens { addr })
    } else {
        None
    }
}

/// The connection time bounds of `config`.
fn connection_timeouts(config: &Config) -> Timeouts {
    Timeouts {
        idle: config.http.idle_timeout.get(),
        header_read: config.http.header_read_timeout.get(),
        send: config.http.send_timeout.get(),
    }
}

/// What a connection beyond `http.connections_max` is served: probes and metrics, one request.
fn reserve_router(state: AppState, limits: Arc<Limits>) -> Router {
    Router::new()
        .route("/health/live", axum::routing::get(super::health::live))
        .route("/health/ready", axum::routing::get(super::health::ready))
        .route("/health", axum::routing::get(super::health::health))
        .route(
            "/metrics",
            axum::routing::get(super::metrics::serve_metrics),
        )
        .fallback(too_many_connections)
        .layer(super::guard::GuardLayer { limits })
        .with_state(state)
}

/// Every request but probes and metrics on a connection over the limit.
async fn too_many_connections() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        "the server has as many connections as it serves (http.connections_max); try again later",
    )
    .into_response()
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

/// On each SIGHUP: re-read the configuration, swap tokens, log level, request and body
/// timeouts, and the TLS certificate (a certificate that does not load keeps the old one).
async fn reload_on_sighup(
    state: AppState,
    limits: Arc<Limits>,
    tls: Option<Arc<Tls>>,
    options: ServeOptions,
) {
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
            config.http.request_timeout.get().as_millis() as u64,
            Ordering::SeqCst,
        );
        limits.body_timeout_ms.store(
            config.http.body_read_timeout.get().as_millis() as u64,
            Ordering::SeqCst,
        );
        match (&tls, &config.tls.cert, &config.tls.key) {
            (Some(tls), Some(cert), Some(key)) => match tls.reload(cert, key) {
                Ok(()) => {
                    tracing::info!(cert = %cert.display(), "SIGHUP: TLS certificate reloaded")
                }
                Err(error) => {
                    metrics::counter!("llmcm_tls_reload_failures_total").increment(1);
                    tracing::error!(%error, "SIGHUP: the TLS certificate did not load; keeping the one in use");
                }
            },
            (None, None, None) => {}
            _ => tracing::warn!("SIGHUP: turning TLS on or off takes effect at the next restart"),
        }
        let tokens = config.auth.tokens.len();
        // storage.scrub_every is a maintenance setting, applied below.
        let mut storage = state.config().storage.clone();
        storage.scrub_every = config.storage.scrub_every.clone();
        let (old_http, new_http) = (&state.config().http, &config.http);
        let changed_needing_restart = state.config().data_dir != config.data_dir
            || state.config().listen != config.listen
            || storage != config.storage
            || old_http.concurrent_requests_max != new_http.concurrent_requests_max
            || old_http.connections_max != new_http.connections_max
            || old_http.idle_timeout != new_http.idle_timeout
            || old_http.header_read_timeout != new_http.header_read_timeout
            || old_http.send_timeout != new_http.send_timeout
            || old_http.watchers_max != new_http.watchers_max
            || old_http.watch_buffer_bytes_max != new_http.watch_buffer_bytes_max
            || old_http.watch_buffer_bytes_total_max != new_http.watch_buffer_bytes_total_max;
        state.reload(&config);
        state
            .store()
            .set_maintenance_config(config.maintenance_config());
        if changed_needing_restart {
            tracing::warn!(
                "SIGHUP: data_dir, listen, storage (but scrub_every) and http (but request_timeout and body_read_timeout) changes take effect at the next restart"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_tokens_need_tls_and_no_tokens_needs_consent() {
        let (_, entry) = crate::token::new_token("t", crate::config::Role::Admin, &[]).unwrap();
        let with_tokens: Config = toml::from_str(&entry).unwrap();
        let loopback: std::net::SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let v6_loopback: std::net::SocketAddr = "[::1]:7070".parse().unwrap();
        let public: std::net::SocketAddr = "10.1.2.3:7070".parse().unwrap();
        let check = listen_refusal;

        assert!(check(&Config::default(), loopback).is_none());
        assert!(check(&with_tokens, loopback).is_none());
        assert!(check(&with_tokens, v6_loopback).is_none());
        assert!(matches!(
            check(&Config::default(), public),
            Some(ServeError::UnsafeListen { .. })
        ));
        assert!(matches!(
            check(&with_tokens, public),
            Some(ServeError::PlaintextTokens { .. })
        ));
        // Each consent covers its own case only.
        let no_auth = Config {
            insecure_no_auth: true,
            ..Config::default()
        };
        assert!(check(&no_auth, public).is_none());
        let plaintext_only = Config {
            insecure_plaintext: true,
            ..Config::default()
        };
        assert!(check(&plaintext_only, public).is_some());
        let mut tokens_plaintext = with_tokens.clone();
        tokens_plaintext.insecure_plaintext = true;
        assert!(check(&tokens_plaintext, public).is_none());
        let mut tokens_no_auth = with_tokens.clone();
        tokens_no_auth.insecure_no_auth = true;
        assert!(check(&tokens_no_auth, public).is_some());
        let mut tokens_tls = with_tokens;
        tokens_tls.tls.cert = Some("c.pem".into());
        tokens_tls.tls.key = Some("k.pem".into());
        assert!(check(&tokens_tls, public).is_none());
    }
}
