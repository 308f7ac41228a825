//! `/v1/watch`: Server-Sent Events of the commits that touch a prefix, resumable without gaps or
//! duplicates.
//!
//! A watcher holds only its position (the last revision it has passed on or skipped). It waits for
//! the indexed head to move, then reads the commits after its position from the store, a page at
//! a time (at most `WATCH_PAGE_COMMITS` commits and `store::PAGE_BYTES_MAX` bytes), and queues
//! the events of those touching its prefix; commits live in the log, so writers never wait for
//! a watcher. When nothing under the prefix changes, a `progress` event carries the head every
//! `WATCH_PROGRESS_INTERVAL`, so a resuming client's `Last-Event-ID` keeps up.
//!
//! Bounds (DESIGN.md §3: a watcher too slow to keep up is ended with `lagged`): events wait for
//! the client in a queue bounded by bytes — `http.watch_buffer_bytes_max` per watcher and
//! `http.watch_buffer_bytes_total_max` over all of them. A watcher whose client leaves the
//! queue full for `WATCH_DRAIN_WAIT` (or that falls `WATCH_LAG_COMMITS_MAX` revisions behind)
//! gets `lagged` naming the revision to resume from, after the events already queued, and ends.
//! One event is always let through, however large, so a commit bigger than the bound is still
//! delivered. So a watcher holds at most its buffer bound plus one page being encoded (one
//! commit over `PAGE_BYTES_MAX` at worst), and the connection's own buffers.
//!
//! Watches are counted per token (`watches_max`) and in all (`http.watchers_max`). After a
//! SIGHUP each watcher authenticates its token again: a token that is gone ends the stream with
//! an `error` event (`unauthorized`); one whose prefixes changed is filtered by the new ones
//! from the next commit on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::audit::commit_view;
use super::auth::{Action, Principal};
use super::error::ApiError;
use super::params;
use crate::store::{CommitFilter, CommitRecord};

/// Commits read per step of a watcher, at most.
pub const WATCH_PAGE_COMMITS: usize = 16;
/// Bytes of commits read per step of a watcher (beyond one commit).
pub const WATCH_PAGE_BYTES_MAX: usize = 256 << 10;
/// Events queued for one client, at most, whatever their size.
pub const WATCH_EVENTS_QUEUED_MAX: usize = 256;
/// How long a watcher waits for its client to take queued events before it is `lagged`.
pub const WATCH_DRAIN_WAIT: Duration = Duration::from_secs(5);
/// A watcher this many revisions behind the head is ended with `lagged`.
pub const WATCH_LAG_COMMITS_MAX: u64 = 100_000;
/// How often a quiet watcher gets a `progress` event.
pub const WATCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// The watchers of one server: how many, whose, and the bytes they hold for their clients.
pub struct WatchHub {
    watchers_max: usize,
    buffer_bytes_max: usize,
    buffer_bytes_total_max: usize,
    open: Arc<AtomicUsize>,
    per_token: Mutex<HashMap<Arc<str>, usize>>,
    buffered_total: AtomicUsize,
}

impl WatchHub {
    pub fn new(config: &crate::config::HttpConfig) -> WatchHub {
        WatchHub {
            watchers_max: config.watchers_max,
            buffer_bytes_max: config.watch_buffer_bytes_max,
            buffer_bytes_total_max: config.watch_buffer_bytes_total_max,
            open: Arc::new(AtomicUsize::new(0)),
            per_token: Mutex::new(HashMap::new()),
            buffered_total: AtomicUsize::new(0),
        }
    }

    /// Open watchers.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Bytes of events waiting for their clients, over every watcher.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_total.load(Ordering::SeqCst)
    }

    /// Counts a new watcher of `principal`, or refuses it (503) over a cap.
    fn admit(self: &Arc<Self>, principal: &Principal) -> Result<Admission, ApiError> {
        let busy = |message: String| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_watchers",
                message,
            )
        };
        let mut per_token = self.per_token.lock();
        let mine = per_token.get(&principal.name).copied().unwrap_or(0);
        if mine >= principal.watches_max {
            return Err(busy(format!(
                "token {:?} has {mine} watches open, its maximum (watches_max); close one first",
                principal.name
            )));
        }
        if self.open.load(Ordering::SeqCst) >= self.watchers_max {
            return Err(busy(format!(
                "{} watchers are open, the server's maximum (http.watchers_max); try again later",
                self.watchers_max
            )));
        }
        self.open.fetch_add(1, Ordering::SeqCst);
        *per_token.entry(principal.name.clone()).or_insert(0) += 1;
        Ok(Admission {
            hub: self.clone(),
            name: principal.name.clone(),
        })
    }
}

/// One admitted watcher; dropping it (however the watcher ends) gives its places back.
struct Admission {
    hub: Arc<WatchHub>,
    name: Arc<str>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::SeqCst);
        let mut per_token = self.hub.per_token.lock();
        if let Some(n) = per_token.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                per_token.remove(&self.name);
            }
        }
    }
}

/// The events one watcher holds for its client, and their bytes: queued by the watcher's task,
/// taken by the connection (`EventStream`). No allocation while empty: an idle watcher costs
/// its task and this.
struct Buffered {
    hub: Arc<WatchHub>,
    events: Mutex<std::collections::VecDeque<Bytes>>,
    bytes: AtomicUsize,
    /// Notified when the connection takes an event (or goes away): the task may queue again.
    taken: tokio::sync::Notify,
    /// The connection's read of the queue, woken when an event is queued or the task ends.
    reader: futures_util::task::AtomicWaker,
    /// The task has queued its last event.
    ended: std::sync::atomic::AtomicBool,
    /// The connection is gone: nothing more will be taken.
    gone: std::sync::atomic::AtomicBool,
}

impl Buffered {
    fn new(hub: Arc<WatchHub>) -> Buffered {
        Buffered {
            hub,
            events: Mutex::new(std::collections::VecDeque::new()),
            bytes: AtomicUsize::new(0),
            taken: tokio::sync::Notify::new(),
            reader: futures_util::task::AtomicWaker::new(),
            ended: std::sync::atomic::AtomicBool::new(false),
            gone: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Queues `event` if the bounds allow (always the first event into an empty queue, and
    /// `force`d ones: the small last word of a watcher).
    fn try_push(&self, event: &Bytes, force: bool) -> bool {
        let len = event.len();
        let mut events = self.events.lock();
        let mine = self.bytes.load(Ordering::SeqCst);
        let total = self.hub.buffered_total.fetch_add(len, Ordering::SeqCst) + len;
        let fits = force
            || events.is_empty()
            || (events.len() < WATCH_EVENTS_QUEUED_MAX
                && mine + len <= self.hub.buffer_bytes_max
                && total <= self.hub.buffer_bytes_total_max);
        if !fits {
            self.hub.buffered_total.fetch_sub(len, Ordering::SeqCst);
            return false;
        }
        self.bytes.fetch_add(len, Ordering::SeqCst);
        events.push_back(event.clone());
        drop(events);
        self.reader.wake();
        true
    }

    /// The next queued event, its bytes given back.
    fn pop(&self) -> Option<Bytes> {
        let event = self.events.lock().pop_front()?;
        self.bytes.fetch_sub(event.len(), Ordering::SeqCst);
        self.hub
            .buffered_total
            .fetch_sub(event.len(), Ordering::SeqCst);
        self.taken.notify_one();
        Some(event)
    }

    /// The task is done: once the queue is empty, the stream ends.
    fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.reader.wake();
    }
}

/// The queue's reading end as a body stream: ends once the task has ended and the queue is
/// empty; gives back what is left when the connection goes away.
struct EventStream {
    buffered: Arc<Buffered>,
}

impl futures_util::Stream for EventStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let buffered = &self.buffered;
        if let Some(event) = buffered.pop() {
            return std::task::Poll::Ready(Some(Ok(event)));
        }
        buffered.reader.register(cx.waker());
        // Queued or ended between the first look and the registration: look again.
        if let Some(event) = buffered.pop() {
            return std::task::Poll::Ready(Some(Ok(event)));
        }
        if buffered.ended.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(None);
        }
        std::task::Poll::Pending
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.buffered.gone.store(true, Ordering::SeqCst);
        while self.buffered.pop().is_some() {}
        self.buffered.taken.notify_one();
    }
}

/// One SSE event: `event:`, `id:` if any, and `data:` lines (JSON values stored verbatim may
/// hold line breaks between tokens; each line of them becomes a `data:` line).
fn sse_event(kind: &str, id: Option<u64>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 48);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        out.push(b'\n');
    }
    let mut rest = data;
    loop {
        out.extend_from_slice(b"data: ");
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(at) => {
                out.extend_from_slice(&rest[..at]);
                out.push(b'\n');
                let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[at + skip..];
            }
            None => {
                out.extend_from_slice(rest);
                out.extend_from_slice(b"\n\n");
                return Bytes::from(out);
            }
        }
    }
}

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
/// slow to keep up, `error` before ending one that can no longer go on (its token revoked, its
/// position compacted away).
#[utoipa::path(get, path = "/v1/watch", tag = "kv",
    params(WatchQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this revision")),
    responses(
        (status = 200, description = "An event stream; each event's data is JSON (a commit, {\"revision\"} for progress and lagged, the error shape for error)", content_type = "text/event-stream", body = serde_json::Value),
        (status = 400, description = "Bad query, or a revision after the head", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 410, description = "Below the compaction horizon", body = super::openapi::ErrorDoc),
        (status = 503, description = "Too many watchers (of the server or of the token), or shutting down", body = super::openapi::ErrorDoc),
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
    let indexed = store.subscribe();
    let head = *indexed.borrow();
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
    let hub = state.watch_hub();
    let admission = hub.admit(&principal)?;
    let buffered = Arc::new(Buffered::new(hub.clone()));
    let mut reloads = state.auth_reloads();
    let tokens_seen = *reloads.borrow_and_update();
    let watcher = Watcher {
        state: state.clone(),
        principal,
        authorization: headers.get(header::AUTHORIZATION).cloned(),
        reloads,
        tokens_seen,
        prefix,
        position: start,
        buffered: buffered.clone(),
        _admission: admission,
    };
    // Tokens swapped between this request's authentication and the subscription above would
    // go unnoticed: authenticate once more against the tokens in force now.
    let mut watcher = watcher;
    watcher.authenticate_again()?;
    tokio::spawn(watcher.run(indexed));
    let body = Body::from_stream(EventStream { buffered });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response())
}

/// Why a watcher stops.
enum End {
    /// The client went away, the store closed, or the server shuts down: nothing more to say.
    Quietly,
    /// Too slow: `lagged` names the revision to resume from.
    Lagged,
    /// It cannot go on: an `error` event with this body.
    Error(ApiError),
}

struct Watcher {
    state: AppState,
    principal: Principal,
    /// The request's `Authorization` header, to authenticate again after a reload.
    authorization: Option<HeaderValue>,
    /// Changes when a SIGHUP has swapped the tokens; `tokens_seen` is the last one followed.
    reloads: tokio::sync::watch::Receiver<u64>,
    tokens_seen: u64,
    prefix: String,
    /// The last revision passed on or skipped.
    position: u64,
    buffered: Arc<Buffered>,
    _admission: Admission,
}

impl Watcher {
    async fn run(mut self, mut indexed: tokio::sync::watch::Receiver<u64>) {
        let mut shutdown = self.state.shutdown_signal();
        let mut reloads = self.reloads.clone();
        let mut last_event = tokio::time::Instant::now();
        let end = loop {
            if *shutdown.borrow() {
                break End::Quietly;
            }
            if let Err(end) = self.follow_reload() {
                break end;
            }
            let head = *indexed.borrow_and_update();
            if head.saturating_sub(self.position) > WATCH_LAG_COMMITS_MAX {
                break End::Lagged;
            }
            if self.position < head {
                // Boxed: a step's state (a page read, events waiting to be queued) exists only
                // while it runs, not in every idle watcher's task.
                match Box::pin(self.step(head)).await {
                    Ok(true) => last_event = tokio::time::Instant::now(),
                    Ok(false) => {}
                    Err(end) => break end,
                }
                continue;
            }
            tokio::select! {
                changed = indexed.changed() => {
                    if changed.is_err() {
                        break End::Quietly; // the store closed
                    }
                }
                _ = tokio::time::sleep_until(last_event + WATCH_PROGRESS_INTERVAL) => {
                    let data = json!({ "revision": self.position }).to_string();
                    let event = sse_event("progress", Some(self.position), data.as_bytes());
                    if let Err(end) = Box::pin(self.queue(event)).await {
                        break end;
                    }
                    last_event = tokio::time::Instant::now();
                }
                _ = reloads.changed() => {}
                _ = shutdown.changed() => {}
            }
        };
        let final_event = match end {
            End::Quietly => None,
            End::Lagged => {
                metrics::counter!("llmcm_watchers_lagged_total").increment(1);
                let data = json!({ "revision": self.position }).to_string();
                Some(sse_event("lagged", None, data.as_bytes()))
            }
            End::Error(error) => Some(sse_event(
                "error",
                None,
                error.body().to_string().as_bytes(),
            )),
        };
        if let Some(event) = final_event {
            // After whatever is queued, past every bound (it is small).
            self.buffered.try_push(&event, true);
        }
    }

    /// Reads the next page after the position and queues its events; whether any was queued.
    async fn step(&mut self, head: u64) -> Result<bool, End> {
        let filter = CommitFilter {
            after: Some(self.position),
            to_revision: Some(head),
            prefix: (!self.prefix.is_empty()).then(|| self.prefix.clone()),
            limit: WATCH_PAGE_COMMITS,
            bytes_max: WATCH_PAGE_BYTES_MAX,
            ..Default::default()
        };
        let reader = self.state.store().clone();
        let page = match tokio::task::spawn_blocking(move || reader.commits(&filter)).await {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => {
                tracing::warn!(%error, "a watcher could not read commits; ending it");
                // Say why before ending (e.g. `compacted` when a compaction passed a slow
                // watcher's position): the same body as the error answer of a request.
                return Err(End::Error(ApiError::from(error)));
            }
            Err(_) => return Err(End::Quietly),
        };
        let mut queued = false;
        // Each commit is dropped once encoded: a page is not held while its events wait.
        for record in page.items {
            // A reload between two commits applies from the next one on.
            self.follow_reload()?;
            let revision = record.commit.revision;
            let event = commit_event(&self.principal, &record);
            drop(record);
            if let Some(event) = event {
                self.queue(event).await?;
                queued = true;
            }
            self.position = revision;
        }
        self.position = page.next.unwrap_or(head).max(self.position);
        Ok(queued)
    }

    /// Queues `event` once the bounds allow, waiting up to `WATCH_DRAIN_WAIT` for the client
    /// to take what is queued; `lagged` if it does not.
    async fn queue(&mut self, event: Bytes) -> Result<(), End> {
        let deadline = tokio::time::Instant::now() + WATCH_DRAIN_WAIT;
        loop {
            let taken = self.buffered.taken.notified();
            if self.buffered.gone.load(Ordering::SeqCst) {
                return Err(End::Quietly); // the client went away
            }
            if self.buffered.try_push(&event, false) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, taken).await.is_err() {
                return Err(End::Lagged);
            }
        }
    }

    /// After a SIGHUP swapped the tokens: goes on as the token is configured now, or ends.
    fn follow_reload(&mut self) -> Result<(), End> {
        let tokens_now = *self.reloads.borrow_and_update();
        if tokens_now != self.tokens_seen {
            self.tokens_seen = tokens_now;
            self.authenticate_again().map_err(End::Error)?;
        }
        Ok(())
    }

    /// After a reload: the token as configured now, or why the watch must end.
    fn authenticate_again(&mut self) -> Result<(), ApiError> {
        let principal = self
            .state
            .authenticate(self.authorization.as_ref().map(|v| v.as_bytes()))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the watch's token is no longer valid (revoked or replaced)",
                )
            })?;
        principal.require(Action::Read)?;
        if *principal.name != *self.principal.name {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the watch's token now names another principal",
            ));
        }
        self.principal = principal;
        Ok(())
    }
}

impl Drop for Watcher {
    /// However the task ends (returned, aborted, panicked), the stream ends after what is queued.
    fn drop(&mut self) {
        self.buffered.end();
    }
}

/// The commit event for `record` (already narrowed to the prefix by the store) as the token may
/// see it; `None` if none of its ops is visible.
fn commit_event(principal: &Principal, record: &CommitRecord) -> Option<Bytes> {
    let view = commit_view(principal, record, false)?;
    let revision = record.commit.revision;
    // Written in place after the event's head; only a value holding line breaks (stored
    // verbatim, they may sit between its tokens) needs the `data:` lines split.
    // Sized for the whole event up front: a buffer grown by doubling would keep up to twice
    // the event's size for as long as the event waits for its client.
    let estimate = crate::store::commit_bytes(&record.commit) + 96 * record.commit.ops.len() + 512;
    let mut out = Vec::with_capacity(estimate);
    out.extend_from_slice(b"event: commit\nid: ");
    out.extend_from_slice(itoa::Buffer::new().format(revision).as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let data_start = out.len();
    serde_json::to_writer(&mut out, &view).ok()?;
    if out[data_start..].iter().any(|&b| b == b'\n' || b == b'\r') {
        return Some(sse_event("commit", Some(revision), &out[data_start..]));
    }
    out.extend_from_slice(b"\n\n");
    if out.capacity() > out.len() + out.len() / 4 {
        out.shrink_to_fit();
    }
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::sse_event;

    #[test]
    fn data_with_line_breaks_becomes_several_data_lines() {
        let event = sse_event("commit", Some(7), b"{\"a\":\r\n1,\n\"b\":\r2}");
        assert_eq!(
            &event[..],
            b"event: commit\nid: 7\ndata: {\"a\":\ndata: 1,\ndata: \"b\":\ndata: 2}\n\n"
        );
        assert_eq!(
            &sse_event("progress", None, b"{}")[..],
            b"event: progress\ndata: {}\n\n"
        );
    }
}
