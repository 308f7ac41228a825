//! Running the server: open the store, refuse an unsafe listen address, serve with the request
//! bounds (time, concurrency, panics), and on SIGTERM/SIGINT stop accepting, drain in-flight
//! requests for at most `http.shutdown_drain`, then close the store (seal and fsync).

use std::io::Write;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use thiserror::Error;
use tokio::sync::Semaphore;

use super::error::ApiError;
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

/// Serves until SIGTERM or SIGINT. Prints `listening on http://ADDR` on stdout once bound.
pub async fn serve(config: Config) -> Result<(), ServeError> {
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
    let dir = config.data_dir.clone();
    let log_config = config.log_config();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, log_config))
        .await
        .map_err(|e| ServeError::Serve(std::io::Error::other(e)))?
        .map_err(|source| ServeError::Open {
            dir: config.data_dir.clone(),
            source,
        })?;
    let store = Arc::new(store);
    super::metrics::install();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let bound = listener.local_addr().map_err(ServeError::Serve)?;
    let limits = Arc::new(Limits {
        permits: Semaphore::new(config.http.concurrent_requests_max),
        timeout: config.request_timeout(),
    });
    let drain = config.shutdown_drain();
    let state = AppState::new(store.clone(), config);
    let app = router(state.clone())
        .layer(axum::middleware::from_fn_with_state(limits, bound_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ));
    tracing::info!(%bound, tokens = auth_on, "serving");
    println!("listening on http://{bound}");
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        state.begin_shutdown();
        let _ = stop_tx.send(true);
    });
    let mut server = std::pin::pin!(server.into_future());
    let mut stopping = stop_rx;
    let served = tokio::select! {
        result = &mut server => result,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
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

struct Limits {
    permits: Semaphore,
    timeout: std::time::Duration,
}

/// At most `concurrent_requests_max` requests at once (the rest wait), each answered within the
/// request timeout (a write still finishing in the background may yet commit: the answer says so).
async fn bound_request(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = limits.permits.acquire().await else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "shutting down",
        )
        .into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "no answer within {:?}; a write may still commit: read it back before retrying",
                limits.timeout
            ),
        )
        .into_response(),
    }
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    ApiError::internal(format!("the request failed: {what}")).into_response()
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
