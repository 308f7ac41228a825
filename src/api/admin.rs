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
    let created = state
        .backups()
        .create(&body.repo, kind)
        .await
        .map_err(backup_error)?;
    tracing::info!(actor = %principal.name, repo = %body.repo, id = %created.manifest.id, "backup taken");
    ok(&crate::backup::view::backup_view(
        &created.manifest,
        created.files_uploaded,
    ))
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

/// The background scrub: last full pass, passes, whether one runs, damage found.
pub(super) fn scrub_view(scrub: &crate::store::ScrubStatus) -> Value {
    json!({
        "last_pass": (scrub.last_pass_us > 0).then(|| format_timestamp_us(scrub.last_pass_us)),
        "passes": scrub.passes,
        "running": scrub.running,
        "damage": scrub.damage,
    })
}
