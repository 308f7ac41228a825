//! `/v1/watch`: Server-Sent Events of the commits that touch a prefix, resumable without gaps or
//! duplicates.
//!
//! A watcher holds only its position (the last revision it has passed on or skipped). It waits for
//! the indexed head to move, then reads the commits after its position from the store, a small
//! page at a time, and sends those touching its prefix; commits live in the log, so nothing is
//! buffered per commit for slow watchers and writers never wait for them. A watcher more than
//! `WATCH_LAG_COMMITS_MAX` behind the head is ended with `lagged`. When nothing under the prefix
//! changes, a `progress` event carries the head every `WATCH_PROGRESS_INTERVAL`, so a resuming
//! client's `Last-Event-ID` keeps up. Memory: at most `WATCHERS_MAX` watchers, each with one page
//! of at most `WATCH_PAGE_COMMITS` commits and `WATCH_EVENTS_QUEUED_MAX` encoded events.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::audit::commit_view;
use super::auth::{Action, Principal};
use super::error::ApiError;
use super::params;
use crate::store::{CommitFilter, CommitRecord};

/// Watchers at once, at most; more get 503.
pub const WATCHERS_MAX: usize = 1024;
/// Commits read per step of a watcher.
pub const WATCH_PAGE_COMMITS: usize = 16;
/// Encoded events waiting for a slow client, per watcher.
pub const WATCH_EVENTS_QUEUED_MAX: usize = 32;
/// A watcher this many revisions behind the head is ended with `lagged`.
pub const WATCH_LAG_COMMITS_MAX: u64 = 100_000;
/// How often a quiet watcher gets a `progress` event.
pub const WATCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Key prefix; absent: every key.
    pub prefix: Option<String>,
    /// Send commits after this revision (else `Last-Event-ID`, else from the head on).
    pub from_revision: Option<u64>,
}

/// Server-Sent Events: `commit` events (id = revision, data = the commit with ops under the
/// prefix), `progress` events on a quiet prefix (id = head), `lagged` before ending a watcher too
/// far behind.
#[utoipa::path(get, path = "/v1/watch", tag = "kv",
    params(WatchQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this revision")),
    responses(
        (status = 200, description = "An event stream; each event's data is JSON (a commit, or {\"revision\"} for progress and lagged)", content_type = "text/event-stream", body = serde_json::Value),
        (status = 400, description = "Bad query, or a revision after the head", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 410, description = "Below the compaction horizon", body = super::openapi::ErrorDoc),
        (status = 503, description = "Too many watchers, or shutting down", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn watch(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = params::query(query)?;
    principal.require(Action::Read)?;
    let prefix = q.prefix.unwrap_or_default();
    if prefix.len() > storage_format::KEY_BYTES_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            "prefix is longer than a key may be",
        ));
    }
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_query", "Last-Event-ID must be a revision")
                })?,
        ),
    };
    params::revisions(&[q.from_revision, last_event_id])?;
    let requested = q.from_revision.or(last_event_id);
    let store = state.store().clone();
    let mut indexed = store.subscribe();
    let head = *indexed.borrow_and_update();
    let horizon = store.log().horizon();
    let start = requested.unwrap_or(head);
    if start > head {
        return Err(ApiError::bad_request(
            "future_point",
            format!("revision {start} is after the head revision {head}"),
        ));
    }
    if start < horizon.revision {
        return Err(crate::store::ReadError::Compacted {
            what: format!("revision {start}"),
            earliest_revision: horizon.revision,
            earliest_timestamp_us: horizon.timestamp_us,
        }
        .into());
    }
    let watchers = state.watchers();
    if watchers.fetch_add(1, Ordering::SeqCst) >= WATCHERS_MAX {
        watchers.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_watchers",
            format!("{WATCHERS_MAX} watchers are open; try again later"),
        ));
    }
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<Event, Infallible>>(WATCH_EVENTS_QUEUED_MAX);
    let mut shutdown = state.shutdown_signal();
    tokio::spawn(async move {
        let _count = WatcherCount(watchers);
        let mut position = start;
        let mut last_progress = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let head = *indexed.borrow_and_update();
            if head.saturating_sub(position) > WATCH_LAG_COMMITS_MAX {
                let event = Event::default()
                    .event("lagged")
                    .data(json!({ "revision": position }).to_string());
                metrics::counter!("llmcm_watchers_lagged_total").increment(1);
                let _ = sender.send(Ok(event)).await;
                return;
            }
            if position < head {
                let filter = CommitFilter {
                    after: Some(position),
                    to_revision: Some(head),
                    prefix: (!prefix.is_empty()).then(|| prefix.clone()),
                    limit: WATCH_PAGE_COMMITS,
                    ..Default::default()
                };
                let reader = store.clone();
                let page = match tokio::task::spawn_blocking(move || reader.commits(&filter)).await
                {
                    Ok(Ok(page)) => page,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "a watcher could not read commits; ending it");
                        // Say why before ending (e.g. `compacted` when a compaction passed a slow
                        // watcher's position): the same body as the error answer of a request.
                        let body = ApiError::from(error).body();
                        let event = Event::default().event("error").data(body.to_string());
                        let _ = sender.send(Ok(event)).await;
                        return;
                    }
                    Err(_) => return,
                };
                for record in &page.items {
                    let event = match commit_event(&principal, record) {
                        Ok(Some(event)) => event,
                        Ok(None) => continue,
                        Err(error) => {
                            tracing::warn!(message = %error.message, "a watcher could not show a commit; ending it");
                            return;
                        }
                    };
                    if sender.send(Ok(event)).await.is_err() {
                        return; // the client went away
                    }
                    last_progress = tokio::time::Instant::now();
                }
                position = page.next.unwrap_or(head);
                continue;
            }
            let quiet_until = last_progress + WATCH_PROGRESS_INTERVAL;
            tokio::select! {
                changed = indexed.changed() => {
                    if changed.is_err() {
                        return; // the store closed
                    }
                }
                _ = tokio::time::sleep_until(quiet_until) => {
                    let event = Event::default()
                        .event("progress")
                        .id(position.to_string())
                        .data(json!({ "revision": position }).to_string());
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                    last_progress = tokio::time::Instant::now();
                }
                _ = shutdown.changed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    Ok(Sse::new(stream).into_response())
}

/// The commit event for `record` (already narrowed to the prefix by the store) as the token may
/// see it; `None` if none of its ops is visible.
fn commit_event(principal: &Principal, record: &CommitRecord) -> Result<Option<Event>, ApiError> {
    let Some(view) = commit_view(principal, record, false) else {
        return Ok(None);
    };
    let data = serde_json::to_string(&view).map_err(ApiError::internal)?;
    Ok(Some(
        Event::default()
            .event("commit")
            .id(record.commit.revision.to_string())
            .data(data),
    ))
}

/// Decrements the watcher count when a watcher ends, however it ends.
struct WatcherCount(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for WatcherCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
