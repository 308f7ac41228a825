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
mod json;
mod kv;
pub mod metrics;
pub mod openapi;
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

pub use admin::backup_view;
pub use auth::{Action, Auth, Principal};
pub use error::ApiError;
pub use guard::Limits;
pub use server::{ServeError, ServeOptions, serve};

use crate::config::Config;
use crate::store::Store;

/// The actor of commits made with auth off.
pub const ANONYMOUS_ACTOR: &str = "anonymous";
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
    /// Backup repositories by name (replaced on SIGHUP).
    repositories: RwLock<Vec<crate::config::RepositoryConfig>>,
    /// `backup.warn_age` (replaced on SIGHUP).
    backup_warn_age: RwLock<String>,
    /// `backup.poll` (replaced on SIGHUP).
    backup_poll: RwLock<String>,
    /// Notified after each SIGHUP reload (loops that sleep re-read their settings).
    reloaded: tokio::sync::Notify,
    /// The newest successful backup of each kind this server knows of (its own, and those found
    /// in the repositories at start): for status, health and metrics.
    last_backups: RwLock<std::collections::BTreeMap<&'static str, LastBackup>>,
    /// Repositories (by name) holding a backup of the current history.
    backed_up_repositories: RwLock<std::collections::BTreeSet<String>>,
    /// Continuous archiving, per repository name.
    archives: RwLock<std::collections::BTreeMap<String, ArchiveStatus>>,
    /// Repositories whose continuous-archiving loop runs (started and stopped as the
    /// configuration says, also on SIGHUP).
    archiving: parking_lot::Mutex<std::collections::BTreeSet<String>>,
    /// The backup running now, if any: repository, kind and its progress.
    backup_running: RwLock<Option<(String, &'static str, Arc<crate::backup::Progress>)>>,
    /// The latest `backup verify` result of each repository (re-read every `backup.poll`).
    verifications: RwLock<std::collections::BTreeMap<String, crate::backup::VerifyRecord>>,
    watch_hub: Arc<watch::WatchHub>,
    /// Bumped after each SIGHUP has swapped the tokens (open watches authenticate again).
    auth_generation: tokio::sync::watch::Sender<u64>,
    /// Permits of the NDJSON commit streams (`audit::STREAMS_MAX`).
    streams: Arc<tokio::sync::Semaphore>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// Continuous archiving into one repository.
#[derive(Debug, Clone, Default)]
pub struct ArchiveStatus {
    /// Newest revision archived (0: none yet).
    pub archived_revision: u64,
    /// When the archive last held every sealed segment (0: not yet).
    pub caught_up_us: u64,
    pub last_error: Option<String>,
}

/// A successful backup, as status, health and metrics show it.
#[derive(Debug, Clone)]
pub struct LastBackup {
    pub repo: String,
    pub id: String,
    pub created_us: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub last_revision: u64,
}

impl AppState {
    pub fn new(store: Arc<Store>, config: Config) -> AppState {
        let auth = Arc::new(Auth::new(&config.auth));
        let repositories = RwLock::new(config.backup.repositories.clone());
        let backup_warn_age = RwLock::new(config.backup.warn_age.clone());
        let backup_poll = RwLock::new(config.backup.poll.clone());
        let watch_hub = Arc::new(watch::WatchHub::new(&config.http));
        AppState {
            inner: Arc::new(Shared {
                store,
                config,
                auth: RwLock::new(auth),
                repositories,
                backup_warn_age,
                backup_poll,
                reloaded: tokio::sync::Notify::new(),
                last_backups: Default::default(),
                backed_up_repositories: Default::default(),
                archives: Default::default(),
                verifications: Default::default(),
                backup_running: Default::default(),
                archiving: Default::default(),
                watch_hub,
                auth_generation: tokio::sync::watch::Sender::new(0),
                streams: Arc::new(tokio::sync::Semaphore::new(audit::STREAMS_MAX)),
                shutdown: tokio::sync::watch::Sender::new(false),
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

    /// Swaps in the tokens, repositories, backup warning age and poll interval of `config`
    /// (SIGHUP), and wakes the loops that sleep on a setting.
    pub fn replace_auth(&self, config: &Config) {
        *self.inner.auth.write() = Arc::new(Auth::new(&config.auth));
        self.inner.auth_generation.send_modify(|g| *g += 1);
        *self.inner.repositories.write() = config.backup.repositories.clone();
        *self.inner.backup_warn_age.write() = config.backup.warn_age.clone();
        *self.inner.backup_poll.write() = config.backup.poll.clone();
        self.inner.reloaded.notify_waiters();
    }

    /// `backup.poll` as of the last SIGHUP.
    pub fn backup_poll(&self) -> String {
        self.inner.backup_poll.read().clone()
    }

    /// Completes at the next SIGHUP reload.
    pub async fn reloaded(&self) {
        self.inner.reloaded.notified().await
    }

    /// Records a successful backup of the store's current history (if newer than the one known
    /// for its kind) and moves the revision compaction may not pass. Backups of other histories
    /// (before a restore) are not this store's: health, status and metrics judge the current
    /// history's backups alone.
    pub fn record_backup(&self, repo: &str, m: &crate::backup::Manifest) {
        let store = self.store();
        if m.history_id != storage_format::hex(&store.history_id()) {
            return;
        }
        self.inner
            .backed_up_repositories
            .write()
            .insert(repo.to_owned());
        let mut last = self.inner.last_backups.write();
        let newer = last
            .get(m.kind.name())
            .is_none_or(|b| b.created_us <= m.created_us);
        if newer {
            last.insert(
                m.kind.name(),
                LastBackup {
                    repo: repo.to_owned(),
                    id: m.id.clone(),
                    created_us: m.created_us,
                    bytes: m.bytes,
                    seconds: m.seconds,
                    last_revision: m.last_revision,
                },
            );
        }
        drop(last);
        let safe = store
            .backup_safe_revision()
            .unwrap_or(0)
            .max(m.last_revision);
        store.set_backup_safe_revision(Some(safe));
    }

    /// The repositories holding a backup of the current history.
    pub fn backed_up_repositories(&self) -> std::collections::BTreeSet<String> {
        self.inner.backed_up_repositories.read().clone()
    }

    pub fn set_archive_status(&self, repo: &str, status: ArchiveStatus) {
        self.inner.archives.write().insert(repo.to_owned(), status);
    }

    pub fn archive_status(&self) -> std::collections::BTreeMap<String, ArchiveStatus> {
        self.inner.archives.read().clone()
    }

    /// Marks repository `name` as archived by a running loop; false if one already runs.
    pub fn claim_archiving(&self, name: &str) -> bool {
        self.inner.archiving.lock().insert(name.to_owned())
    }

    /// A loop for repository `name` ended: forget it and its status.
    pub fn release_archiving(&self, name: &str) {
        self.inner.archiving.lock().remove(name);
        self.inner.archives.write().remove(name);
    }

    /// Records the backup running now (`None` when it ends).
    pub fn set_backup_running(
        &self,
        running: Option<(String, &'static str, Arc<crate::backup::Progress>)>,
    ) {
        *self.inner.backup_running.write() = running;
    }

    pub fn backup_running(&self) -> Option<(String, &'static str, Arc<crate::backup::Progress>)> {
        self.inner.backup_running.read().clone()
    }

    pub fn set_verification(&self, repo: &str, record: crate::backup::VerifyRecord) {
        self.inner
            .verifications
            .write()
            .insert(repo.to_owned(), record);
    }

    /// The latest `backup verify` result per repository name.
    pub fn verifications(&self) -> std::collections::BTreeMap<String, crate::backup::VerifyRecord> {
        self.inner.verifications.read().clone()
    }

    /// `backup.warn_age` as of the last SIGHUP.
    pub fn backup_warn_age(&self) -> String {
        self.inner.backup_warn_age.read().clone()
    }

    /// The configured repositories (as of the last SIGHUP).
    pub fn repositories(&self) -> Vec<crate::config::RepositoryConfig> {
        self.inner.repositories.read().clone()
    }

    /// The newest successful backup of each kind.
    pub fn last_backups(&self) -> std::collections::BTreeMap<&'static str, LastBackup> {
        self.inner.last_backups.read().clone()
    }

    /// The configured backup repository named `name`.
    pub fn repository(&self, name: &str) -> Option<crate::config::RepositoryConfig> {
        self.inner
            .repositories
            .read()
            .iter()
            .find(|r| r.name == name)
            .cloned()
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
        .route("/v1/admin/status", get(audit::status))
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
            post(audit::read_only).layer(DefaultBodyLimit::max(SMALL_BODY_BYTES_MAX)),
        )
        .route("/health/live", get(audit::live))
        .route("/health/ready", get(audit::ready))
        .route("/health", get(audit::health))
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
