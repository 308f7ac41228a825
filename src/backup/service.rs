//! The backup runtime of a server: the configured repositories, the backup running now, what is
//! known of each repository (newest backups, latest verify result, continuous archiving), and
//! the loops that keep it known. `serve` builds one and the HTTP handlers only ask it; tests
//! drive it without HTTP.
//!
//! Invariants:
//! - backups of another history (taken before a restore) never count as this store's: health,
//!   status and metrics judge the current history's backups alone;
//! - compaction may not pass a revision no repository holds: with repositories configured, the
//!   limit is 0 until their catalogs are read, then the newest backed-up or archived revision;
//! - at most one archiving loop runs per repository name, and it ends when the configuration
//!   drops the repository, turns archiving off or changes its URL (a new loop takes the new URL);
//! - every loop ends when the server shuts down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::{BackupError, BackupKind, Created, Manifest, Progress, Repo, VerifyRecord};
use crate::config::{BackupConfig, RepositoryConfig};
use crate::store::Store;

/// How often a continuous-archiving loop looks for newly sealed segments.
const ARCHIVE_EVERY: Duration = Duration::from_secs(1);

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

/// The backup running now: repository, kind and progress.
#[derive(Debug, Clone)]
pub struct RunningBackup {
    pub repo: String,
    pub kind: &'static str,
    pub progress: Arc<Progress>,
}

/// The backup runtime (cheap to clone: shared).
#[derive(Clone)]
pub struct BackupService {
    inner: Arc<Shared>,
}

struct Shared {
    store: Arc<Store>,
    /// `[backup]` as of the last reload.
    config: RwLock<BackupConfig>,
    /// Notified after each reload (loops that sleep re-read their settings).
    reloaded: tokio::sync::Notify,
    /// The newest successful backup of each kind of the current history.
    last_backups: RwLock<BTreeMap<&'static str, LastBackup>>,
    /// Repositories (by name) holding a backup of the current history.
    backed_up: RwLock<BTreeSet<String>>,
    /// Continuous archiving, per repository name.
    archives: RwLock<BTreeMap<String, ArchiveStatus>>,
    /// Repositories whose archiving loop runs.
    archiving: Mutex<BTreeSet<String>>,
    running: RwLock<Option<RunningBackup>>,
    /// The latest `backup verify` result of each repository.
    verifications: RwLock<BTreeMap<String, VerifyRecord>>,
    /// Becomes true when the server shuts down: every loop ends.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl BackupService {
    pub fn new(
        store: Arc<Store>,
        config: &BackupConfig,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> BackupService {
        BackupService {
            inner: Arc::new(Shared {
                store,
                config: RwLock::new(config.clone()),
                reloaded: tokio::sync::Notify::new(),
                last_backups: Default::default(),
                backed_up: Default::default(),
                archives: Default::default(),
                archiving: Default::default(),
                running: Default::default(),
                verifications: Default::default(),
                shutdown,
            }),
        }
    }

    /// Starts the loops (on the current Tokio runtime): reads each repository's catalog once,
    /// polls the verify results, and archives into the repositories that ask for it.
    pub fn start(&self) {
        if !self.repositories().is_empty() {
            // Nothing may be compacted away until the repositories' backups are known.
            self.inner.store.set_backup_safe_revision(Some(0));
            tokio::spawn(self.clone().scan_repositories());
        }
        tokio::spawn(self.clone().verify_poll_loop());
        self.start_archiving();
    }

    /// Takes the new `[backup]` settings (SIGHUP): wakes the loops that sleep on a setting and
    /// starts or stops archiving loops as the repositories now say.
    pub fn reload(&self, config: &BackupConfig) {
        *self.inner.config.write() = config.clone();
        self.inner.reloaded.notify_waiters();
        self.start_archiving();
    }

    /// Takes a backup of `kind` into the configured repository `repo_name`. The backup runs as a
    /// task of its own: if the caller goes away, it still finishes (or fails) and releases the
    /// repository lock instead of being dropped half-way.
    pub async fn create(&self, repo_name: &str, kind: BackupKind) -> Result<Created, BackupError> {
        let config = self.repository(repo_name).ok_or_else(|| {
            BackupError::Invalid(format!(
                "no backup repository named {repo_name:?} is configured"
            ))
        })?;
        let repo = Repo::open(&config.url)?;
        let service = self.clone();
        let repo_name = repo_name.to_owned();
        tokio::spawn(async move {
            let progress = Arc::new(Progress::default());
            *service.inner.running.write() = Some(RunningBackup {
                repo: repo_name.clone(),
                kind: kind.name(),
                progress: progress.clone(),
            });
            let created = super::create_tracked(&service.inner.store, &repo, kind, &progress).await;
            *service.inner.running.write() = None;
            if let Ok(created) = &created {
                service.record_backup(&repo_name, &created.manifest);
            }
            created
        })
        .await
        .map_err(|e| BackupError::Store(format!("the backup task failed: {e}")))?
    }

    /// Records a successful backup found in or written to `repo` (if it is of the current
    /// history and newer than the one known for its kind) and moves the revision compaction may
    /// not pass.
    pub fn record_backup(&self, repo: &str, m: &Manifest) {
        let store = &self.inner.store;
        if m.history_id != storage_format::hex(&store.history_id()) {
            return;
        }
        self.inner.backed_up.write().insert(repo.to_owned());
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
        self.allow_compaction_through(m.last_revision);
    }

    /// The configured repositories (as of the last reload).
    pub fn repositories(&self) -> Vec<RepositoryConfig> {
        self.inner.config.read().repositories.clone()
    }

    /// The configured repository named `name`.
    pub fn repository(&self, name: &str) -> Option<RepositoryConfig> {
        self.inner
            .config
            .read()
            .repositories
            .iter()
            .find(|r| r.name == name)
            .cloned()
    }

    /// `backup.warn_age` as of the last reload.
    pub fn warn_age(&self) -> crate::config::ConfigDuration {
        self.inner.config.read().warn_age.clone()
    }

    /// The newest successful backup of each kind of the current history.
    pub fn last_backups(&self) -> BTreeMap<&'static str, LastBackup> {
        self.inner.last_backups.read().clone()
    }

    /// The repositories holding a backup of the current history.
    pub fn backed_up_repositories(&self) -> BTreeSet<String> {
        self.inner.backed_up.read().clone()
    }

    /// Archiving progress per repository with a running loop.
    pub fn archive_status(&self) -> BTreeMap<String, ArchiveStatus> {
        self.inner.archives.read().clone()
    }

    /// The latest `backup verify` result per repository name.
    pub fn verifications(&self) -> BTreeMap<String, VerifyRecord> {
        self.inner.verifications.read().clone()
    }

    /// The backup running now, if any.
    pub fn running(&self) -> Option<RunningBackup> {
        self.inner.running.read().clone()
    }

    /// Lets compaction pass `revision` (a repository holds everything through it).
    fn allow_compaction_through(&self, revision: u64) {
        let store = &self.inner.store;
        let safe = store.backup_safe_revision().unwrap_or(0).max(revision);
        store.set_backup_safe_revision(Some(safe));
    }

    /// Completes when the server shuts down.
    async fn shut_down(&self) {
        let mut shutdown = self.inner.shutdown.clone();
        let _ = shutdown.wait_for(|s| *s).await;
    }

    /// At start: reads each repository's catalog for the newest backups of this history. A
    /// repository that cannot be read is logged and left out (compaction stays limited by the
    /// others, or at 0).
    async fn scan_repositories(self) {
        for r in self.repositories() {
            let repo = match Repo::open(&r.url) {
                Ok(repo) => repo,
                Err(error) => {
                    tracing::warn!(repo = %r.name, %error, "backup repository unusable");
                    continue;
                }
            };
            match super::catalog(&repo).await {
                Ok((manifests, _)) => {
                    for m in &manifests {
                        self.record_backup(&r.name, m);
                    }
                }
                Err(error) => {
                    tracing::warn!(repo = %r.name, %error, "cannot read the backup repository")
                }
            }
        }
    }

    /// Every `backup.poll` (and at once, and after each reload, which may change the interval),
    /// re-reads each repository's latest `backup verify` result. A repository that cannot be
    /// read keeps its last known result (and is logged once per distinct error).
    async fn verify_poll_loop(self) {
        let mut last_error: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let every = self.inner.config.read().poll.get();
            for r in self.repositories() {
                let loaded = async {
                    let repo = Repo::open(&r.url)?;
                    VerifyRecord::load(&repo).await
                };
                match loaded.await {
                    Ok(record) => {
                        last_error.remove(&r.name);
                        if let Some(record) = record {
                            self.inner
                                .verifications
                                .write()
                                .insert(r.name.clone(), record);
                        }
                    }
                    Err(error) => {
                        let error = error.to_string();
                        if last_error.get(&r.name) != Some(&error) {
                            tracing::warn!(repo = %r.name, %error, "cannot read the latest verify result");
                            last_error.insert(r.name.clone(), error);
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.inner.reloaded.notified() => {}
                _ = self.shut_down() => return,
            }
        }
    }

    /// Starts an archiving loop for every configured repository with `archive = true` that has
    /// none yet.
    fn start_archiving(&self) {
        for r in self.repositories().into_iter().filter(|r| r.archive) {
            if self.inner.archiving.lock().insert(r.name.clone()) {
                tracing::info!(repo = %r.name, "continuous archiving started");
                tokio::spawn(self.clone().archive_loop(r));
            }
        }
    }

    /// Continuous archiving into repository `r`: every second, ships the segments sealed since
    /// the last pass, records progress (and errors) for health and metrics, and lets compaction
    /// pass what is archived. The repository is kept open between passes and opened afresh
    /// after a pass fails; a failed pass is retried a second later.
    async fn archive_loop(self, r: RepositoryConfig) {
        let store = self.inner.store.clone();
        let history = storage_format::hex(&store.history_id());
        let mut repo = None;
        let mut known = None;
        // Segments at or below this revision are not shipped: `backup prune` deletes archived
        // segments up to the oldest kept backup's last revision (a restore never extends a
        // backup with what precedes it), and shipping them again would undo the prune at every
        // restart.
        let mut floor = 0;
        let mut status = ArchiveStatus::default();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ARCHIVE_EVERY) => {}
                _ = self.shut_down() => return,
            }
            let configured = self.repository(&r.name);
            if configured
                .as_ref()
                .is_none_or(|c| !c.archive || c.url != r.url)
            {
                tracing::info!(repo = %r.name, "continuous archiving stopped (configuration changed)");
                self.inner.archiving.lock().remove(&r.name);
                self.inner.archives.write().remove(&r.name);
                if configured.is_some_and(|c| c.archive) {
                    // Same name, new URL: a fresh loop for the new repository.
                    self.start_archiving();
                }
                return;
            }
            let pass = async {
                if repo.is_none() {
                    repo = Some(Repo::open(&r.url)?);
                }
                let repo = repo.as_ref().expect("opened above");
                if known.is_none() {
                    known = Some(super::archive::archived(repo, &history).await?);
                    let (manifests, _) = super::catalog(repo).await?;
                    floor = manifests
                        .iter()
                        .filter(|m| m.history_id == history)
                        .map(|m| m.last_revision)
                        .min()
                        .unwrap_or(0);
                }
                let records = known.as_mut().expect("loaded above");
                super::archive::ship_new(&store, repo, records, floor).await?;
                Ok::<_, BackupError>(records.values().map(|r| r.last_revision).max())
            };
            match pass.await {
                Ok(archived) => {
                    status.archived_revision = archived.unwrap_or(0);
                    status.caught_up_us = crate::clock::now_us();
                    status.last_error = None;
                    if let Some(revision) = archived {
                        self.allow_compaction_through(revision);
                    }
                }
                Err(error) => {
                    if status.last_error.as_deref() != Some(&error.to_string()) {
                        tracing::warn!(repo = %r.name, %error, "continuous archiving failed; retrying every second");
                    }
                    status.last_error = Some(error.to_string());
                    // The next pass opens the repository afresh (a directory's path is resolved
                    // again, an S3 client rebuilt), as every pass did before the service kept it.
                    repo = None;
                }
            }
            self.inner
                .archives
                .write()
                .insert(r.name.clone(), status.clone());
        }
    }
}
