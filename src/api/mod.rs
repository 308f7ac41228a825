//! The HTTP API (DESIGN.md §3): axum handlers over the store. Handlers parse and check input,
//! authorize, call one store operation (on a blocking thread when it may wait for the disk), and
//! shape the answer; they hold no storage logic.
//!
//! Limits: request bodies (per route), header size (hyper's defaults: 100 headers, 400 KiB
//! buffer), page sizes (`PAGE_ITEMS_MAX`), txn conditions (`TXN_CONDITIONS_MAX`), request time
//! (`http.request_timeout`) and concurrency (`http.concurrent_requests_max`). A panic in a handler
//! is caught and answered 500.

mod admin;
mod audit;
pub mod auth;
pub mod connection;
pub mod error;
mod guard;
mod health;
mod json;
mod kv;
pub mod metrics;
pub mod openapi;
mod operations;
mod params;
mod server;
pub mod tls;
mod watch;
mod writes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use parking_lot::RwLock;

pub use auth::{Action, Auth, Principal};
pub use error::ApiError;
pub use guard::Limits;
pub use server::{ServeError, ServeOptions, serve};

use crate::backup::BackupService;
use crate::config::Config;
use crate::store::Store;

/// Conditions in one txn, at most.
pub const TXN_CONDITIONS_MAX: usize = 1000;
/// Bytes of JSON around the values of a txn or rollback body, beyond the commit's own limit.
pub const BODY_OVERHEAD_BYTES_MAX: usize = 1 << 20;
/// Small bodies (rollback, admin actions).
pub const SMALL_BODY_BYTES_MAX: usize = 64 << 10;
/// Items of a page when the request gives no `limit`.
pub const PAGE_ITEMS_DEFAULT: usize = 100;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    store: Arc<Store>,
    config: Config,
    auth: RwLock<Arc<Auth>>,
    /// Backups: repositories, the running backup, what each repository holds.
    backups: BackupService,
    watch_hub: Arc<watch::WatchHub>,
    /// Bumped after each SIGHUP has swapped the tokens (open watches authenticate again).
    auth_generation: tokio::sync::watch::Sender<u64>,
    /// Permits of the NDJSON commit streams (`audit::STREAMS_MAX`).
    streams: Arc<tokio::sync::Semaphore>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    pub fn new(store: Arc<Store>, config: Config) -> AppState {
        let auth = Arc::new(Auth::new(&config.auth));
        let watch_hub = Arc::new(watch::WatchHub::new(&config.http));
        let shutdown = tokio::sync::watch::Sender::new(false);
        let backups = BackupService::new(store.clone(), &config.backup, shutdown.subscribe());
        AppState {
            inner: Arc::new(Shared {
                store,
                config,
                auth: RwLock::new(auth),
                backups,
                watch_hub,
                auth_generation: tokio::sync::watch::Sender::new(0),
                streams: Arc::new(tokio::sync::Semaphore::new(audit::STREAMS_MAX)),
                shutdown,
            }),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn auth(&self) -> Arc<Auth> {
        self.inner.auth.read().clone()
    }

    /// The caller named by an `Authorization` header (under the read lock: every request does
    /// this, and cloning the shared `Arc` would be two more contended atomic operations).
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, ApiError> {
        self.inner.auth.read().authenticate(header)
    }

    /// Swaps in the tokens and the backup settings of `config` (SIGHUP).
    pub fn reload(&self, config: &Config) {
        *self.inner.auth.write() = Arc::new(Auth::new(&config.auth));
        self.inner.auth_generation.send_modify(|g| *g += 1);
        self.inner.backups.reload(&config.backup);
    }

    /// The backup service.
    pub fn backups(&self) -> &BackupService {
        &self.inner.backups
    }

    /// The watchers: their count, caps and buffered bytes.
    pub fn watch_hub(&self) -> Arc<watch::WatchHub> {
        self.inner.watch_hub.clone()
    }

    /// Changes after each SIGHUP has swapped the tokens.
    pub fn auth_reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.auth_generation.subscribe()
    }

    /// A permit to run one NDJSON commit stream, if one is free.
    pub fn stream_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.streams.clone().try_acquire_owned().ok()
    }

    /// Becomes true when the server starts shutting down (long-lived streams end).
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Whether the server has started shutting down.
    pub fn shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

/// Every route of the API, with its body limit, each behind the request guard (bounds, timeout,
/// panic catcher, metrics).
pub fn router(state: AppState, limits: Arc<guard::Limits>) -> Router {
    let config = state.config();
    let value_body = config.storage.value_bytes_max;
    let txn_body = config.storage.commit_bytes_max + BODY_OVERHEAD_BYTES_MAX;
    Router::new()
        .route(
            "/v1/kv/{*key}",
            get(kv::get_key)
                .put(kv::put_key)
                .delete(kv::delete_key)
                .layer(DefaultBodyLimit::max(value_body)),
        )
        .route("/v1/kv", get(kv::list_keys))
        .route(
            "/v1/txn",
            post(writes::txn).layer(DefaultBodyLimit::max(txn_body)),
        )
        .route(
            "/v1/rollback",
            post(writes::rollback).layer(DefaultBodyLimit::max(SMALL_BODY_BYTES_MAX)),
        )
        .route("/v1/watch", get(watch::watch))
        .route("/v1/history/{*key}", get(audit::history))
        .route("/v1/commits", get(audit::commits))
        .route("/v1/diff", get(audit::diff))
        .route("/v1/verify", get(audit::verify))
        .route("/v1/admin/status", get(operations::status))
        .route("/v1/admin/snapshot", post(admin::snapshot))
        .route(
            "/v1/admin/backup",
            post(admin::backup).layer(DefaultBodyLimit::max(SMALL_BODY_BYTES_MAX)),
        )
        .route(
            "/v1/admin/compact",
            post(admin::compact).layer(DefaultBodyLimit::max(SMALL_BODY_BYTES_MAX)),
        )
        .route(
            "/v1/admin/read-only",
            post(operations::read_only).layer(DefaultBodyLimit::max(SMALL_BODY_BYTES_MAX)),
        )
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi::serve_openapi))
        .route("/metrics", get(metrics::serve_metrics))
        .fallback(fallback_not_found)
        .method_not_allowed_fallback(fallback_method_not_allowed)
        .layer(guard::GuardLayer { limits })
        .with_state(state)
}

async fn fallback_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

async fn fallback_method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method {method} is not allowed here"),
    )
}
