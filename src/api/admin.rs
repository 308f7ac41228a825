//! The operators' maintenance actions: `POST /v1/admin/snapshot` and `POST /v1/admin/compact`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use storage_format::hex;

use super::AppState;
use super::auth::{Action, Principal};
use super::error::ApiError;
use super::json::ok;
use super::params::{self, blocking};
use crate::clock::format_timestamp_us;
use crate::store::{CompactionOutcome, MaintenanceError, SnapshotInfo};

impl From<MaintenanceError> for ApiError {
    fn from(error: MaintenanceError) -> ApiError {
        let message = error.to_string();
        match error {
            MaintenanceError::ReadOnly(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "read_only", message)
            }
            MaintenanceError::Invalid(_) => ApiError::bad_request("invalid_argument", message),
            MaintenanceError::Log(error) => crate::store::StoreError::from(error).into(),
            _ => ApiError::internal(message),
        }
    }
}

/// A snapshot as the API shows it.
pub(super) fn snapshot_view(s: &SnapshotInfo) -> Value {
    json!({
        "revision": s.revision,
        "timestamp": (s.timestamp_us > 0).then(|| format_timestamp_us(s.timestamp_us)),
        "hash": hex(&s.hash),
        "keys": s.keys,
        "bytes": s.bytes,
        "created": format_timestamp_us(s.created_unix_us),
        "file": s.path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "checked": s.checked,
    })
}

/// A compaction as the API shows it.
pub(super) fn compaction_view(c: &CompactionOutcome) -> Value {
    json!({
        "compacted": true,
        "horizon": {
            "revision": c.horizon.revision,
            "timestamp": format_timestamp_us(c.horizon.timestamp_us),
            "hash": hex(&c.horizon.hash),
        },
        "previous_horizon": c.previous_horizon,
        "segments_dropped": c.segments_dropped,
        "bytes_reclaimed": c.bytes_reclaimed,
        "base_image_bytes": c.base_image_bytes,
        "keys": c.keys,
        "seconds": c.duration_us as f64 / 1e6,
        "revision": c.commit_revision,
    })
}

/// Takes a snapshot of the state at the head now (or returns the one already at the head).
#[utoipa::path(post, path = "/v1/admin/snapshot", tag = "admin",
    responses(
        (status = 200, description = "The snapshot", body = super::openapi::SnapshotDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 503, description = "Timed out (the snapshot goes on) or shutting down", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn snapshot(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require_unscoped(Action::Admin)?;
    let store = state.store().clone();
    let info = blocking(move || Ok(store.snapshot()?)).await?;
    tracing::info!(actor = %principal.name, revision = info.revision, "snapshot on request");
    ok(&snapshot_view(&info))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompactBody {
    /// History to keep, as a duration (`30d`, `12h`); default: the server's `retention.keep`.
    pub retain: Option<String>,
    /// Why (recorded in the `compaction` commit; at most 4 KiB).
    pub reason: Option<String>,
}

/// Compacts history older than the retention to one horizon (DESIGN.md §2 "Retention"), recorded
/// as a `compaction` commit. `{"compacted": false}` when no sealed segment is old enough.
#[utoipa::path(post, path = "/v1/admin/compact", tag = "admin",
    request_body(content = CompactBody, content_type = "application/json"),
    responses(
        (status = 200, description = "What was compacted", body = super::openapi::CompactionDoc),
        (status = 400, description = "Bad body, or no retention given or configured", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 413, description = "Body too large", body = super::openapi::ErrorDoc),
        (status = 503, description = "Read-only, timed out (the compaction goes on) or shutting down", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn compact(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require_unscoped(Action::Admin)?;
    let empty = matches!(&body, Ok(b) if b.iter().all(u8::is_ascii_whitespace));
    let body: CompactBody = if empty {
        CompactBody::default()
    } else {
        params::json_body(body)?
    };
    let reason = body.reason.unwrap_or_default();
    if reason.len() > storage_format::REASON_BYTES_MAX {
        return Err(ApiError::too_large("the reason is over 4 KiB"));
    }
    let store = state.store().clone();
    let retain_us = match body.retain {
        Some(text) => crate::config::parse_duration(&text)
            .map_err(|e| ApiError::bad_request("invalid_argument", format!("retain: {e}")))?
            .as_micros() as u64,
        None => store.maintenance_config().retain_us.ok_or_else(|| {
            ApiError::bad_request(
                "invalid_argument",
                "no retention configured (retention.keep is `forever`): give `retain`",
            )
        })?,
    };
    let actor = principal.name.to_string();
    let outcome = blocking(move || Ok(store.compact(retain_us, &actor, &reason)?)).await?;
    match outcome {
        Some(c) => {
            tracing::info!(actor = %principal.name, horizon = c.horizon.revision, "compaction on request");
            ok(&compaction_view(&c))
        }
        None => ok(&json!({
            "compacted": false,
            "reason": format!(
                "no sealed segment holds only commits older than {}",
                crate::config::format_duration(std::time::Duration::from_micros(retain_us))
            ),
        })),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// A repository named in the server's `[[backup.repositories]]`.
    pub repo: String,
    /// `full` (default), `incremental` or `differential`.
    pub kind: Option<String>,
}

/// Takes a backup into a configured repository: rolls the active segment, uploads what the kind
/// needs, reads every upload back, writes the manifest last (DESIGN.md §6).
#[utoipa::path(post, path = "/v1/admin/backup", tag = "admin",
    request_body(content = BackupBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The backup's manifest summary", body = super::openapi::BackupDoc),
        (status = 400, description = "Bad body, unknown repository or kind, or no parent for the kind", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 409, description = "The repository is locked by another backup or prune", body = super::openapi::ErrorDoc),
        (status = 413, description = "Body too large", body = super::openapi::ErrorDoc),
        (status = 503, description = "The repository cannot be reached, or timed out", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn backup(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require_unscoped(Action::Admin)?;
    let body: BackupBody = params::json_body(body)?;
    let kind: crate::backup::BackupKind = body
        .kind
        .as_deref()
        .unwrap_or("full")
        .parse()
        .map_err(|e: String| ApiError::bad_request("invalid_argument", e))?;
    let config = state.repository(&body.repo).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_argument",
            format!("no backup repository named {:?} is configured", body.repo),
        )
    })?;
    let repo = crate::backup::Repo::open(&config.url).map_err(backup_error)?;
    // A task of its own: if the request times out, the backup still finishes (or fails) and
    // releases the repository lock, instead of being dropped half-way.
    let store = state.store().clone();
    let tracked = std::sync::Arc::new(crate::backup::Progress::default());
    let running = state.clone();
    let repo_name = body.repo.clone();
    let created = tokio::spawn(async move {
        running.set_backup_running(Some((repo_name, kind.name(), tracked.clone())));
        let created = crate::backup::create_tracked(&store, &repo, kind, &tracked).await;
        running.set_backup_running(None);
        created
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(backup_error)?;
    tracing::info!(actor = %principal.name, repo = %body.repo, id = %created.manifest.id, "backup taken");
    state.record_backup(&body.repo, &created.manifest);
    ok(&backup_view(&created.manifest, created.files_uploaded))
}

pub(super) fn backup_error(e: crate::backup::BackupError) -> ApiError {
    use crate::backup::BackupError;
    let message = e.to_string();
    match e {
        BackupError::Invalid(_) => ApiError::bad_request("invalid_argument", message),
        BackupError::Locked(_) => ApiError::new(StatusCode::CONFLICT, "locked", message),
        BackupError::Repo { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "repository_unavailable",
            message,
        ),
        _ => ApiError::internal(message),
    }
}

/// A backup's summary (what `llmcm backup create --json` prints).
pub fn backup_view(m: &crate::backup::Manifest, files_uploaded: usize) -> Value {
    json!({
        "id": m.id,
        "sequence": m.sequence,
        "kind": m.kind.name(),
        "parent": m.parent,
        "history_id": m.history_id,
        "first_revision": m.first_revision,
        "last_revision": m.last_revision,
        "first_time": (m.first_timestamp_us > 0).then(|| format_timestamp_us(m.first_timestamp_us)),
        "last_time": (m.last_timestamp_us > 0).then(|| format_timestamp_us(m.last_timestamp_us)),
        "files": m.files.len(),
        "files_uploaded": files_uploaded,
        "bytes": m.bytes,
        "seconds": m.seconds,
    })
}

/// At start, with repositories configured: compaction may not pass anything until the backups
/// are known (the limit starts at 0), then each repository's catalog is read for the newest
/// backup of this history and the newest of each kind. A repository that cannot be read is
/// logged and left out (compaction stays limited by the others, or at 0).
pub async fn scan_repositories(state: AppState) {
    let repositories = state.config().backup.repositories.clone();
    if repositories.is_empty() {
        return;
    }
    state.store().set_backup_safe_revision(Some(0));
    for r in repositories {
        let repo = match crate::backup::Repo::open(&r.url) {
            Ok(repo) => repo,
            Err(error) => {
                tracing::warn!(repo = %r.name, %error, "backup repository unusable");
                continue;
            }
        };
        match crate::backup::catalog(&repo).await {
            Ok((manifests, _)) => {
                for m in &manifests {
                    state.record_backup(&r.name, m);
                }
            }
            Err(error) => {
                tracing::warn!(repo = %r.name, %error, "cannot read the backup repository")
            }
        }
    }
}

/// Every `backup.poll` (and at once, and after each SIGHUP, which may change the interval),
/// re-reads each configured repository's latest `backup verify` result. A repository that cannot
/// be read keeps its last known result (and is logged once per distinct error). Ends when the
/// server shuts down.
pub async fn verify_poll_loop(state: AppState) {
    let mut shutdown = state.shutdown_signal();
    let mut last_error: std::collections::BTreeMap<String, String> = Default::default();
    loop {
        let every = crate::config::parse_duration(&state.backup_poll())
            .unwrap_or(std::time::Duration::from_secs(60));
        for r in state.repositories() {
            let loaded = async {
                let repo = crate::backup::Repo::open(&r.url)?;
                crate::backup::VerifyRecord::load(&repo).await
            };
            match loaded.await {
                Ok(record) => {
                    last_error.remove(&r.name);
                    if let Some(record) = record {
                        state.set_verification(&r.name, record);
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
            _ = state.reloaded() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The background scrub: last full pass, passes, whether one runs, damage found.
pub(super) fn scrub_view(scrub: &crate::store::ScrubStatus) -> Value {
    json!({
        "last_pass": (scrub.last_pass_us > 0).then(|| format_timestamp_us(scrub.last_pass_us)),
        "passes": scrub.passes,
        "running": scrub.running,
        "damage": scrub.damage,
    })
}

/// The latest `backup verify` result per repository.
pub(super) fn verifications_view(state: &AppState) -> Value {
    let items: Vec<Value> = state
        .verifications()
        .iter()
        .map(|(repo, v)| {
            json!({
                "repo": repo,
                "verified": format_timestamp_us(v.verified_us),
                "ok": v.ok,
                "deep": v.deep,
                "backups": v.backups,
                "failures": v.failures,
                "first_failure": v.first_failure,
            })
        })
        .collect();
    Value::Array(items)
}

/// The newest successful backup of each kind.
pub(super) fn last_backups_view(state: &AppState) -> Value {
    let items: Vec<Value> = state
        .last_backups()
        .iter()
        .map(|(kind, b)| {
            json!({
                "kind": kind,
                "repo": b.repo,
                "id": b.id,
                "created": format_timestamp_us(b.created_us),
                "bytes": b.bytes,
                "seconds": b.seconds,
                "last_revision": b.last_revision,
            })
        })
        .collect();
    Value::Array(items)
}

/// Continuous archiving into repository `r`: every second, ship the segments sealed since the
/// last pass, record progress (and errors) for health and metrics, and let compaction pass what
/// is archived. Ends when the server shuts down.
/// Starts a continuous-archiving loop for every configured repository with `archive = true`
/// that has none yet (at start, and after each SIGHUP; a loop ends by itself once its repository
/// is removed, changes URL or stops archiving).
pub fn start_archiving(state: &AppState) {
    for r in state.repositories().into_iter().filter(|r| r.archive) {
        if state.claim_archiving(&r.name) {
            tracing::info!(repo = %r.name, "continuous archiving started");
            tokio::spawn(archive_loop(state.clone(), r));
        }
    }
}

pub async fn archive_loop(state: AppState, r: crate::config::RepositoryConfig) {
    use crate::api::ArchiveStatus;
    let store = state.store().clone();
    let history = storage_format::hex(&store.history_id());
    let mut shutdown = state.shutdown_signal();
    let mut known = None;
    // Segments at or below this revision are not shipped: `backup prune` deletes archived
    // segments up to the oldest kept backup's last revision (a restore never extends a backup
    // with what precedes it), and shipping them again would undo the prune at every restart.
    let mut floor = 0;
    let mut status = ArchiveStatus::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let configured = state.repository(&r.name);
        if configured
            .as_ref()
            .is_none_or(|c| !c.archive || c.url != r.url)
        {
            tracing::info!(repo = %r.name, "continuous archiving stopped (configuration changed)");
            state.release_archiving(&r.name);
            if configured.is_some_and(|c| c.archive) {
                // Same name, new URL: a fresh loop for the new repository.
                start_archiving(&state);
            }
            return;
        }
        let pass = async {
            let repo = crate::backup::Repo::open(&r.url)?;
            if known.is_none() {
                known = Some(crate::backup::archive::archived(&repo, &history).await?);
                let (manifests, _) = crate::backup::catalog(&repo).await?;
                floor = manifests
                    .iter()
                    .filter(|m| m.history_id == history)
                    .map(|m| m.last_revision)
                    .min()
                    .unwrap_or(0);
            }
            let records = known.as_mut().expect("loaded above");
            crate::backup::archive::ship_new(&store, &repo, records, floor).await?;
            Ok::<_, crate::backup::BackupError>(records.values().map(|r| r.last_revision).max())
        };
        match pass.await {
            Ok(archived) => {
                status.archived_revision = archived.unwrap_or(0);
                status.caught_up_us = crate::backup::repo::now_us();
                status.last_error = None;
                if let Some(rev) = archived {
                    let safe = store.backup_safe_revision().unwrap_or(0).max(rev);
                    store.set_backup_safe_revision(Some(safe));
                }
            }
            Err(error) => {
                if status.last_error.as_deref() != Some(&error.to_string()) {
                    tracing::warn!(repo = %r.name, %error, "continuous archiving failed; retrying every second");
                }
                status.last_error = Some(error.to_string());
            }
        }
        state.set_archive_status(&r.name, status.clone());
    }
}

/// Archiving progress per repository.
pub(super) fn archives_view(state: &AppState) -> Value {
    let now = crate::backup::repo::now_us();
    let items: Vec<Value> = state
        .archive_status()
        .iter()
        .map(|(repo, a)| {
            json!({
                "repo": repo,
                "archived_revision": a.archived_revision,
                "lag_seconds": (a.caught_up_us > 0).then(|| now.saturating_sub(a.caught_up_us) as f64 / 1e6),
                "last_error": a.last_error,
            })
        })
        .collect();
    Value::Array(items)
}
