//! The operator's view and switch: `GET /v1/admin/status` (everything at a glance, with the
//! settings in effect) and `POST /v1/admin/read-only`.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use storage_format::hex;

use super::AppState;
use super::auth::{Action, Principal};
use super::error::ApiError;
use super::json::ok;
use super::params::{self, blocking};
use crate::clock::format_timestamp_us;

/// History id, head, horizon, segments, read-only state.
#[utoipa::path(get, path = "/v1/admin/status", tag = "admin",
    responses(
        (status = 200, description = "The store's status", body = super::openapi::StatusDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Action::Admin)?;
    let store = state.store();
    let head = store.head();
    let horizon = store.horizon();
    let segments = store.segments_summary();
    let stats = store.stats();
    let read_only = store.read_only_reason();
    let scrub = state.store().scrub_status();
    ok(&serde_json::json!({
        "history_id": hex(&store.history_id()),
        "head": {
            "revision": head.revision,
            "timestamp": (head.revision > horizon.revision).then(|| format_timestamp_us(head.timestamp_us)),
            "hash": hex(&head.hash),
        },
        "horizon": {
            "revision": horizon.revision,
            "timestamp": (horizon.revision > 0).then(|| format_timestamp_us(horizon.timestamp_us)),
            "hash": hex(&horizon.hash),
            "last_compaction": state.store().last_compaction().as_ref().map(super::admin::compaction_view),
        },
        "segments": {
            "count": segments.count,
            "sealed": segments.sealed,
            "bytes": segments.bytes,
        },
        "commits_since_start": stats.commits,
        "snapshots": state.store().snapshots().iter().map(super::admin::snapshot_view).collect::<Vec<_>>(),
        "last_backups": crate::backup::view::last_backups_view(state.backups()),
        "archives": crate::backup::view::archives_view(state.backups()),
        "verifications": crate::backup::view::verifications_view(state.backups()),
        "scrub": super::admin::scrub_view(&scrub),
        "backup_safe_revision": state.store().backup_safe_revision(),
        "config": config_view(&state),
        "backup_running": crate::backup::view::running_view(state.backups()),
        "read_only": { "on": read_only.is_some(), "reason": read_only },
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// The settings an operator (and `llmcm doctor`) checks for sanity, as in effect now (tokens,
/// repositories and maintenance settings follow SIGHUP reloads).
fn config_view(state: &AppState) -> serde_json::Value {
    let maintenance = state.store().maintenance_config();
    let secs = |us: u64| us / 1_000_000;
    let config = state.config();
    serde_json::json!({
        "listen": config.listen,
        "tokens": state.auth().token_count(),
        "repositories": state.backups().repositories().iter().map(|r| serde_json::json!({
            "name": r.name,
            "archive": r.archive,
        })).collect::<Vec<_>>(),
        "segment_age_max": config.storage.segment_age_max,
        "retention_seconds": maintenance.retain_us.map(secs),
        "snapshot_every_commits": maintenance.snapshot_every_commits,
        "snapshot_every_seconds": secs(maintenance.snapshot_every_us),
        "scrub_every_seconds": secs(maintenance.scrub_every_us),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadOnlyBody {
    /// Switch read-only on (true) or off (false).
    pub on: bool,
    /// Why (recorded in the `read_only` commit; at most 4 KiB).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The operator's read-only switch, audited as a `read_only` commit. While on, writes get 503
/// `read_only` and reads go on.
#[utoipa::path(post, path = "/v1/admin/read-only", tag = "admin",
    request_body(content = ReadOnlyBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Switched; the audit commit's revision", body = super::openapi::ReadOnlyResultDoc),
        (status = 400, description = "Bad body", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 413, description = "Body too large", body = super::openapi::ErrorDoc),
        (status = 503, description = "The store failed (fsync or disk full) or is shutting down", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn read_only(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require_unscoped(Action::Admin)?;
    let body: ReadOnlyBody = params::json_body(body)?;
    let reason = body.reason.unwrap_or_default();
    if reason.len() > storage_format::REASON_BYTES_MAX {
        return Err(ApiError::too_large("the reason is over 4 KiB"));
    }
    let store = state.store().clone();
    let actor = principal.name.to_string();
    let on = body.on;
    let switched = blocking(move || Ok(store.set_operator_read_only(on, &reason, &actor)?)).await?;
    let Some(info) = switched else {
        return ok(&serde_json::json!({
            "read_only": on,
            "changed": false,
            "revision": state.store().head().revision,
        }));
    };
    tracing::warn!(on, actor = %principal.name, revision = info.revision, "operator read-only switch");
    ok(&serde_json::json!({
        "read_only": on,
        "changed": true,
        "revision": info.revision,
        "timestamp": format_timestamp_us(info.timestamp_us),
    }))
}
