//! The health probes: liveness, readiness, and `/health` with its warnings (scrub damage, backups
//! older than `backup.warn_age`, failed verifies, archiving behind, the index owed a checkpoint).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Peer;
use super::error::ApiError;
use super::json::ok;
use crate::clock::format_timestamp_us;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "Alive", body = super::openapi::HealthDoc)))]
pub async fn live() -> Result<Response, ApiError> {
    ok(&serde_json::json!({ "status": "ok" }))
}

/// Readiness: recovered and writable (else 503 with the reason).
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = super::openapi::HealthDoc),
        (status = 503, description = "Not ready, with the reason", body = super::openapi::ErrorDoc),
    ))]
pub async fn ready(
    State(state): State<AppState>,
    headers: HeaderMap,
    Peer(peer): Peer,
) -> Result<Response, ApiError> {
    let not_ready = |reason: String| {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            reason,
        ))
    };
    if state.shutting_down() {
        return not_ready("shutting down".into());
    }
    match state.store().read_only_reason() {
        None => ok(&serde_json::json!({ "status": "ready" })),
        // The reason may name files (an I/O failure): only for a caller with a token.
        Some(reason) if shows_detail(&state, &headers, peer) => {
            not_ready(format!("read-only: {reason}"))
        }
        Some(_) => not_ready("read-only (the reason: /health with a token)".into()),
    }
}

/// Whether a probe's caller may see the detail (file paths, repository errors): auth is off,
/// or the request carries a valid token of any role. Probes without one get the status alone;
/// a token that is not valid is counted and logged as anywhere else (a probe must not be a way
/// to try tokens unseen).
fn shows_detail(state: &AppState, headers: &HeaderMap, peer: Option<SocketAddr>) -> bool {
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match state.authenticate(header) {
        Ok(_) => true,
        Err(error) => {
            if header.is_some() {
                super::auth::note_failure(&error, peer, "/health");
            }
            false
        }
    }
}

/// Component detail.
#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Every component healthy", body = super::openapi::HealthDoc),
        (status = 503, description = "Some component is not", body = super::openapi::HealthDoc),
    ))]
pub async fn health(
    State(state): State<AppState>,
    headers: HeaderMap,
    Peer(peer): Peer,
) -> Response {
    let store = state.store();
    let snapshots = state.store().snapshots();
    let read_only = store.read_only_reason();
    let status = if read_only.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut warnings = Vec::new();
    let scrub = state.store().scrub_status();
    for damage in &scrub.damage {
        warnings.push(format!("scrub: {damage}"));
    }
    if !state.backups().repositories().is_empty() {
        let warn_age = state.backups().warn_age();
        let warn_age_us = warn_age.micros();
        let newest = state
            .backups()
            .last_backups()
            .values()
            .map(|b| b.created_us)
            .max();
        let now = crate::clock::now_us();
        match newest {
            None => warnings.push("no backup of this history has been taken yet".to_owned()),
            Some(t) if now.saturating_sub(t) > warn_age_us => warnings.push(format!(
                "the newest backup is from {}, older than backup.warn_age ({})",
                format_timestamp_us(t),
                warn_age
            )),
            Some(_) => {}
        }
        for (repo, v) in state.backups().verifications() {
            if !v.ok {
                warnings.push(format!(
                    "the last verify of repository {repo} ({}) failed: {}",
                    format_timestamp_us(v.verified_us),
                    v.first_failure.as_deref().unwrap_or("see backup verify")
                ));
            }
        }
        // Archiving: an error, or not caught up for two roll ages (plus a minute).
        let roll_us = state.config().storage.segment_age_max.micros();
        for (repo, a) in state.backups().archive_status() {
            if let Some(error) = &a.last_error {
                warnings.push(format!("archiving to {repo} fails: {error}"));
            } else if a.caught_up_us > 0
                && now.saturating_sub(a.caught_up_us) > 2 * roll_us + 60_000_000
            {
                warnings.push(format!("archiving to {repo} is behind"));
            }
        }
    }
    let summary = if read_only.is_some() {
        "degraded"
    } else if warnings.is_empty() {
        "ok"
    } else {
        "warn"
    };
    if !shows_detail(&state, &headers, peer) {
        // Without a token: the status, not the paths, repositories and errors behind it.
        let body = serde_json::json!({
            "status": summary,
            "warning_count": warnings.len(),
            "detail": "send a bearer token (any role) for the warnings and the components' detail",
        });
        return (status, axum::Json(body)).into_response();
    }
    let verified = state.backups().verifications();
    let unverified: Vec<String> = state
        .backups()
        .backed_up_repositories()
        .into_iter()
        .filter(|r| !verified.contains_key(r))
        .collect();
    let body = serde_json::json!({
        "status": summary,
        "warnings": warnings,
        "backups": crate::backup::view::last_backups_view(state.backups()),
        "archives": crate::backup::view::archives_view(state.backups()),
        "verifications": crate::backup::view::verifications_view(state.backups()),
        // Repositories holding backups of this history with no recorded `backup verify` yet
        // (`llmcm doctor` warns of each).
        "unverified_repositories": unverified,
        "scrub": super::admin::scrub_view(&scrub),
        "storage": {
            "writable": read_only.is_none(),
            "read_only_reason": read_only,
            "head_revision": store.head().revision,
            "segments": store.segments_summary().count,
            "disk_free_bytes": super::metrics::disk_free_bytes(&state.config().data_dir),
            "fsync_recent": store.recent_fsync().map(|f| serde_json::json!({
                "count": f.count,
                "mean_ms": f.mean_us / 1e3,
                "max_ms": f.max_us as f64 / 1e3,
            })),
        },
        "watchers": state.watch_hub().open(),
        "snapshots": {
            "count": snapshots.len(),
            "newest_revision": snapshots.last().map(|s| s.revision),
            "newest_created": snapshots.last().map(|s| format_timestamp_us(s.created_unix_us)),
            "failures_since_start": state.store().maintenance_stats().snapshot_failures,
        },
        "compaction": {
            "horizon_revision": store.horizon().revision,
            "last": state.store().last_compaction().as_ref().map(super::admin::compaction_view),
        },
    });
    (status, axum::Json(body)).into_response()
}
