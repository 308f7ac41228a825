//! `/v1/watch`: Server-Sent Events of the commits that touch a prefix, resumable without gaps or
//! duplicates.
//!
//! A watcher holds only its position (the last revision it has passed on or skipped). It waits for
//! the indexed head to move, then takes the commits after its position from the hub's cache of
//! the newest commits (`Recent`, filled from the store by one watcher for all; a whole commit's
//! event is encoded once and shared) or, when it is behind the cache, reads them from the store
//! itself, a page at a time (at most `WATCH_PAGE_COMMITS` commits and `WATCH_PAGE_BYTES_MAX`
//! bytes), and queues the events of those touching its prefix; commits live in the log, so
//! writers never wait for a watcher. When nothing under the prefix changes, a `progress` event carries the head every
//! `WATCH_PROGRESS_INTERVAL`, so a resuming client's `Last-Event-ID` keeps up.
//!
//! Bounds (DESIGN.md §3: a watcher too slow to keep up is ended with `lagged`): events wait for
//! the client in a queue bounded by bytes — `http.watch_buffer_bytes_max` per watcher and
//! `http.watch_buffer_bytes_total_max` over all of them. A watcher whose client leaves the
//! queue full for `WATCH_DRAIN_WAIT` gets `lagged` naming the revision to resume from, after the
//! events already queued, and ends. (How far behind the head a watcher is does not matter: one
//! resuming from long ago reads the store a page at a time, as fast as its client takes them.)
//! An event into an empty queue passes the per-watcher bound, however large, so a commit bigger
//! than it is still delivered, but not the total bound unless every queue is empty. So a
//! watcher holds at most its buffer bound plus one event being queued, and the connection's own
//! buffers; all of them at most the total bound plus one event.
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
/// How often a quiet watcher gets a `progress` event.
pub const WATCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// The newest commits kept for every watcher to read (`Recent`), at most this many ...
pub const RECENT_COMMITS_MAX: usize = 4096;
/// ... and this many bytes of them (`store::commit_bytes` twice: the commit and its event).
pub const RECENT_BYTES_MAX: usize = 8 << 20;
/// Commits read from the store into `Recent` at once, at most.
const RECENT_FILL_COMMITS: usize = 256;

/// The watchers of one server: how many, whose, and the bytes they hold for their clients.
pub struct WatchHub {
    watchers_max: usize,
    buffer_bytes_max: usize,
    buffer_bytes_total_max: usize,
    open: Arc<AtomicUsize>,
    per_token: Mutex<HashMap<Arc<str>, usize>>,
    buffered_total: AtomicUsize,
    /// The newest commits, read from the store once for all watchers.
    recent: parking_lot::RwLock<Recent>,
    /// Held by the one watcher reading the next commits into `recent` (the others wait for it
    /// rather than read the same commits themselves).
    filling: tokio::sync::Mutex<()>,
}

/// The newest commits, contiguous by revision, each with the event of its whole commit once a
/// watcher has encoded it: with thousands of watchers of the same prefix, a commit is read from
/// the store once and, for tokens that see every key, encoded once.
#[derive(Default)]
struct Recent {
    commits: std::collections::VecDeque<Arc<RecentCommit>>,
    bytes: usize,
}

struct RecentCommit {
    record: CommitRecord,
    /// The `commit` event of the whole commit (for a token and prefix that see all of it).
    whole_event: std::sync::OnceLock<Option<Bytes>>,
}

impl Recent {
    /// The first and last revisions held.
    fn range(&self) -> Option<(u64, u64)> {
        Some((
            self.commits.front()?.record.commit.revision,
            self.commits.back()?.record.commit.revision,
        ))
    }

    /// Up to `limit` commits after `position` (through `head`), if `position + 1` is held.
    fn after(&self, position: u64, head: u64, limit: usize) -> Option<Vec<Arc<RecentCommit>>> {
        let (first, last) = self.range()?;
        if position < first.saturating_sub(1) || position >= last {
            return None;
        }
        let skip = (position + 1 - first) as usize;
        Some(
            self.commits
                .iter()
                .skip(skip)
                .take_while(|c| c.record.commit.revision <= head)
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// Appends commits that continue the held ones (or start afresh), dropping the oldest
    /// beyond the bounds.
    fn extend(&mut self, records: Vec<CommitRecord>) {
        for record in records {
            let revision = record.commit.revision;
            match self.range() {
                Some((_, last)) if revision == last + 1 => {}
                Some((_, last)) if revision <= last => continue,
                _ => {
                    self.commits.clear();
                    self.bytes = 0;
                }
            }
            // The commit and, once encoded, its event of about the same size.
            self.bytes += 2 * crate::store::commit_bytes(&record.commit);
            self.commits.push_back(Arc::new(RecentCommit {
                record,
                whole_event: std::sync::OnceLock::new(),
            }));
            while self.commits.len() > RECENT_COMMITS_MAX || self.bytes > RECENT_BYTES_MAX {
                let Some(old) = self.commits.pop_front() else {
                    break;
                };
                self.bytes -= 2 * crate::store::commit_bytes(&old.record.commit);
            }
        }
    }
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
            recent: parking_lot::RwLock::new(Recent::default()),
            filling: tokio::sync::Mutex::new(()),
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
    /// Events with the position (revision) the client is at once it has taken each.
    events: Mutex<std::collections::VecDeque<(u64, Bytes)>>,
    bytes: AtomicUsize,
    /// The position of the last event the connection took (the watch's start before any).
    taken_position: std::sync::atomic::AtomicU64,
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
    fn new(hub: Arc<WatchHub>, start: u64) -> Buffered {
        Buffered {
            hub,
            events: Mutex::new(std::collections::VecDeque::new()),
            bytes: AtomicUsize::new(0),
            taken_position: std::sync::atomic::AtomicU64::new(start),
            taken: tokio::sync::Notify::new(),
            reader: futures_util::task::AtomicWaker::new(),
            ended: std::sync::atomic::AtomicBool::new(false),
            gone: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Queues `event` (which takes the client to `position`) if the bounds allow: the per-watcher
    /// bound always lets the first event into an empty queue, the total bound only when no
    /// watcher holds anything; `force`d events (the small last word of a watcher) always pass.
    /// Nothing is queued for a connection that is gone.
    fn try_push(&self, position: u64, event: &Bytes, force: bool) -> Result<bool, Gone> {
        let len = event.len();
        let mut events = self.events.lock();
        if self.gone.load(Ordering::SeqCst) {
            return Err(Gone);
        }
        let mine = self.bytes.load(Ordering::SeqCst);
        let total_before = self.hub.buffered_total.fetch_add(len, Ordering::SeqCst);
        let within_total =
            total_before == 0 || total_before + len <= self.hub.buffer_bytes_total_max;
        let within_mine = events.is_empty()
            || (events.len() < WATCH_EVENTS_QUEUED_MAX && mine + len <= self.hub.buffer_bytes_max);
        if !(force || (within_mine && within_total)) {
            self.hub.buffered_total.fetch_sub(len, Ordering::SeqCst);
            return Ok(false);
        }
        self.bytes.fetch_add(len, Ordering::SeqCst);
        events.push_back((position, event.clone()));
        drop(events);
        self.reader.wake();
        Ok(true)
    }

    /// The next queued event, its bytes given back.
    fn pop(&self) -> Option<Bytes> {
        let (position, event) = self.events.lock().pop_front()?;
        self.give_back(event.len());
        self.taken_position.store(position, Ordering::SeqCst);
        self.taken.notify_one();
        Some(event)
    }

    /// Drops every queued event (they were made for a token as it was before a reload): the
    /// position the client has really reached, to read again from.
    fn clear(&self) -> u64 {
        let mut events = self.events.lock();
        for (_, event) in events.drain(..) {
            self.give_back(event.len());
        }
        self.taken_position.load(Ordering::SeqCst)
    }

    fn give_back(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::SeqCst);
        self.hub.buffered_total.fetch_sub(len, Ordering::SeqCst);
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
        // Under the queue's lock: no event is queued after this (`try_push` checks `gone`).
        let events = self.buffered.events.lock();
        self.buffered.gone.store(true, Ordering::SeqCst);
        drop(events);
        self.buffered.clear();
        self.buffered.taken.notify_one();
    }
}

/// The connection of a watch is gone.
struct Gone;

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
    let horizon = store.horizon();
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
    let buffered = Arc::new(Buffered::new(hub.clone(), start));
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
        let buffered = self.buffered.clone();
        // Started at the head: a `progress` event at once, so a client that loses the
        // connection before any commit resumes from here, not from a later head.
        let now = tokio::time::Instant::now();
        let mut last_event = now.checked_sub(WATCH_PROGRESS_INTERVAL).unwrap_or(now);
        let end = loop {
            if *shutdown.borrow() {
                break End::Quietly;
            }
            if let Err(end) = self.follow_reload() {
                break end;
            }
            let head = *indexed.borrow_and_update();
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
                    if let Err(end) = Box::pin(self.queue(self.position, event)).await {
                        break end;
                    }
                    last_event = tokio::time::Instant::now();
                }
                _ = reloads.changed() => {}
                _ = shutdown.changed() => {}
                // The connection went away (or took an event): a gone client frees its
                // places at once, not at the next progress event.
                _ = buffered.taken.notified() => {
                    if buffered.gone.load(Ordering::SeqCst) {
                        break End::Quietly;
                    }
                }
            }
        };
        let final_event = match end {
            End::Quietly => None,
            End::Lagged => {
                metrics::counter!("llmcm_watchers_lagged_total").increment(1);
                let data = json!({ "revision": self.position }).to_string();
                Some(sse_event("lagged", None, data.as_bytes()))
            }
            End::Error(error) => {
                // Nothing more of what was queued for the token as it was (revoked, say).
                self.buffered.clear();
                Some(sse_event(
                    "error",
                    None,
                    error.body().to_string().as_bytes(),
                ))
            }
        };
        if let Some(event) = final_event {
            // After whatever is queued, past every bound (it is small); not for a connection
            // that is gone.
            let _ = self.buffered.try_push(self.position, &event, true);
        }
    }

    /// Reads the next page after the position and queues its events; whether any was queued.
    async fn step(&mut self, head: u64) -> Result<bool, End> {
        let hub = self.state.watch_hub();
        if let Some(commits) = self.recent_commits(&hub, head).await? {
            let mut queued = false;
            for commit in commits {
                if self.follow_reload()? {
                    return Ok(false); // read again from where the client really is
                }
                let revision = commit.record.commit.revision;
                if let Some(event) = self.event_of(&commit) {
                    self.queue(revision, event).await?;
                    queued = true;
                }
                self.position = revision;
            }
            return Ok(queued);
        }
        // Behind what `Recent` holds: this watcher's own page from the store.
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
            Ok(Err(error)) => return Err(read_failed(error)),
            Err(_) => return Err(End::Quietly),
        };
        let mut queued = false;
        // Each commit is dropped once encoded: a page is not held while its events wait.
        for record in page.items {
            // A reload between two commits applies from the next one on.
            if self.follow_reload()? {
                return Ok(false); // read again from where the client really is
            }
            let revision = record.commit.revision;
            let event = commit_event(&self.principal, &record);
            drop(record);
            if let Some(event) = event {
                self.queue(revision, event).await?;
                queued = true;
            }
            self.position = revision;
        }
        self.position = page.next.unwrap_or(head).max(self.position);
        Ok(queued)
    }

    /// The next commits after the position from `Recent`, reading them into it first when this
    /// watcher is at its end; `None` when the position is older than what it holds.
    async fn recent_commits(
        &self,
        hub: &WatchHub,
        head: u64,
    ) -> Result<Option<Vec<Arc<RecentCommit>>>, End> {
        if let Some(commits) = hub
            .recent
            .read()
            .after(self.position, head, WATCH_PAGE_COMMITS)
        {
            return Ok(Some(commits));
        }
        let behind = |recent: &Recent| {
            recent
                .range()
                .is_some_and(|(first, _)| self.position + 1 < first)
        };
        if behind(&hub.recent.read()) {
            return Ok(None);
        }
        // At (or past) the end of what is held: one watcher reads the next commits for all.
        let _filling = hub.filling.lock().await;
        if let Some(commits) = hub
            .recent
            .read()
            .after(self.position, head, WATCH_PAGE_COMMITS)
        {
            return Ok(Some(commits));
        }
        if behind(&hub.recent.read()) {
            return Ok(None);
        }
        let from = match hub.recent.read().range() {
            // Continue what is held (a watcher a little ahead of it too: the others will read
            // the same commits next); one far ahead starts it afresh.
            Some((_, last)) if self.position.saturating_sub(last) <= RECENT_FILL_COMMITS as u64 => {
                last
            }
            _ => self.position,
        };
        let filter = CommitFilter {
            after: Some(from),
            to_revision: Some(head),
            limit: RECENT_FILL_COMMITS,
            ..Default::default()
        };
        let reader = self.state.store().clone();
        let page = match tokio::task::spawn_blocking(move || reader.commits(&filter)).await {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => return Err(read_failed(error)),
            Err(_) => return Err(End::Quietly),
        };
        hub.recent.write().extend(page.items);
        Ok(hub
            .recent
            .read()
            .after(self.position, head, WATCH_PAGE_COMMITS))
    }

    /// The event of a commit from `Recent` as this watcher may see it: narrowed to its prefix
    /// and its token's prefixes; the whole commit's event is encoded once and shared.
    fn event_of(&self, commit: &RecentCommit) -> Option<Bytes> {
        let ops = &commit.record.commit.ops;
        let under_prefix = |key: &str| key.starts_with(self.prefix.as_str());
        let whole = self.principal.prefixes.is_empty()
            && (self.prefix.is_empty() || ops.iter().all(|op| under_prefix(op.key())));
        if whole {
            return commit
                .whole_event
                .get_or_init(|| commit_event(&self.principal, &commit.record))
                .clone();
        }
        if !self.prefix.is_empty() && !ops.iter().any(|op| under_prefix(op.key())) {
            return None;
        }
        let mut record = commit.record.clone();
        if !self.prefix.is_empty() {
            record.commit.ops.retain(|op| under_prefix(op.key()));
        }
        commit_event(&self.principal, &record)
    }

    /// Queues `event` once the bounds allow, waiting up to `WATCH_DRAIN_WAIT` for the client
    /// to take what is queued; `lagged` if it does not.
    async fn queue(&mut self, position: u64, event: Bytes) -> Result<(), End> {
        let deadline = tokio::time::Instant::now() + WATCH_DRAIN_WAIT;
        loop {
            let taken = self.buffered.taken.notified();
            match self.buffered.try_push(position, &event, false) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(Gone) => return Err(End::Quietly), // the client went away
            }
            if tokio::time::timeout_at(deadline, taken).await.is_err() {
                return Err(End::Lagged);
            }
        }
    }

    /// After a SIGHUP swapped the tokens: goes on as the token is configured now, or ends.
    /// When what the token may see changed, the events queued for it as it was are dropped and
    /// the position goes back to the last event the client took: `true`, read again from there.
    fn follow_reload(&mut self) -> Result<bool, End> {
        let tokens_now = *self.reloads.borrow_and_update();
        if tokens_now == self.tokens_seen {
            return Ok(false);
        }
        self.tokens_seen = tokens_now;
        let (role, prefixes) = (self.principal.role, self.principal.prefixes.clone());
        self.authenticate_again().map_err(End::Error)?;
        if self.principal.role == role && self.principal.prefixes == prefixes {
            return Ok(false);
        }
        self.position = self.buffered.clear();
        Ok(true)
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

/// Why a watcher ends when the store refuses a read (e.g. `compacted` when a compaction passed
/// a slow watcher's position): said in an `error` event, the body of a request's error.
fn read_failed(error: crate::store::ReadError) -> End {
    tracing::warn!(%error, "a watcher could not read commits; ending it");
    End::Error(ApiError::from(error))
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
