//! The auditors' reads: history, commits (JSON pages, NDJSON streams, the chain export), diff
//! and verify.

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use serde::{Deserialize, Serialize};
use storage_format::hex;

use super::AppState;
use super::auth::{Action, Principal};
use super::error::ApiError;
use super::json::ok;
use super::params::{self, blocking};
use crate::chain::{CommitView, StoredValue};
use crate::clock::format_timestamp_us;
use crate::store::{
    ChangeKind, CommitFilter, CommitRecord, DIFF_BYTES_MAX, DIFF_CHANGES_MAX, PAGE_ITEMS_MAX, Point,
};

/// Encoded NDJSON pages waiting for a slow client, per stream.
pub const STREAM_CHUNKS_QUEUED_MAX: usize = 1;
/// NDJSON commit streams at once, at most; more get 503 `too_many_streams`.
pub const STREAMS_MAX: usize = 64;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Lowest revision included.
    pub from: Option<u64>,
    /// Highest revision included.
    pub to: Option<u64>,
    /// Page size, 1 to 1000. Default: 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Start after this revision (the previous page's `next`); with `order=desc`, below it.
    pub after: Option<u64>,
    /// `asc` (default, oldest first) or `desc` (newest first).
    pub order: Option<Order>,
}

/// The order of a history or commits read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    Desc,
}

#[derive(Serialize)]
struct HistoryItemView<'a> {
    revision: u64,
    timestamp: String,
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<StoredValue<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_error: Option<&'static str>,
    actor: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
struct HistoryView<'a> {
    key: &'a str,
    items: Vec<HistoryItemView<'a>>,
    next: Option<u64>,
}

/// Every version of one key, puts and deletes, oldest first.
#[utoipa::path(get, path = "/v1/history/{key}", tag = "audit",
    params(("key" = String, Path, description = "The key", pattern = r"^(?!\.\.?(/|$))[A-Za-z0-9._-]+(/(?!\.\.?(/|$))[A-Za-z0-9._-]+)*$", max_length = 512), HistoryQuery),
    responses(
        (status = 200, description = "One page of versions", body = super::openapi::HistoryDoc),
        (status = 400, description = "Bad key or query", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 410, description = "Below the compaction horizon", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = params::path_key(path)?;
    let q = params::query(query)?;
    principal.require_key(Action::Audit, &key)?;
    params::revisions(&[q.from, q.to, q.after])?;
    let limit = params::limit(q.limit)?;
    let store = state.store().clone();
    let page = blocking(move || match q.order {
        Some(Order::Desc) => Ok(store.history_newest_first(&key, q.from, q.to, q.after, limit)?),
        _ => Ok(store.history(&key, q.from, q.to, q.after, limit)?),
    })
    .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for item in &page.items {
        let value = item.value.as_ref().map(|v| StoredValue::new(v.as_bytes()));
        items.push(HistoryItemView {
            revision: item.revision,
            timestamp: format_timestamp_us(item.timestamp_us),
            op: if item.value.is_some() {
                "put"
            } else {
                "delete"
            },
            value,
            value_error: value.and_then(|v| v.error()),
            actor: &item.actor,
            reason: &item.reason,
        });
    }
    ok(&HistoryView {
        key: &page.key,
        items,
        next: page.next,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommitsFormat {
    Json,
    Chain,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommitsQuery {
    pub from_revision: Option<u64>,
    pub to_revision: Option<u64>,
    /// Commits at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Commits at or before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Only ops on keys with this prefix; commits with none are left out.
    pub prefix: Option<String>,
    /// Only commits by this actor.
    pub actor: Option<String>,
    /// Page size, 1 to 1000. Default: 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Start after this revision (the previous page's `next`); with `order=desc`, below it.
    pub after: Option<u64>,
    /// `chain`: whole commits with their canonical bytes in hex (`tools/verify_chain.py`).
    pub format: Option<CommitsFormat>,
    /// `asc` (default, oldest first) or `desc` (newest first).
    pub order: Option<Order>,
}

/// Audit replay, in revision order: JSON pages, or NDJSON (`Accept: application/x-ndjson`)
/// streaming every matching commit.
#[utoipa::path(get, path = "/v1/commits", tag = "audit",
    params(CommitsQuery),
    responses(
        (status = 200, description = "One page of commits; with `Accept: application/x-ndjson`, a stream of commits, one per line", content(
            (super::openapi::CommitsDoc = "application/json"),
            (super::openapi::CommitDoc = "application/x-ndjson"),
        )),
        (status = 400, description = "Bad query", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 410, description = "Below the compaction horizon", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn commits(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    query: Result<Query<CommitsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = params::query(query)?;
    principal.require(Action::Audit)?;
    params::revisions(&[q.from_revision, q.to_revision, q.after])?;
    let chain = q.format == Some(CommitsFormat::Chain);
    if chain && (q.prefix.is_some() || !principal.prefixes.is_empty()) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "format=chain exports whole commits: it takes no prefix and needs a token that sees every key",
        ));
    }
    let filter = CommitFilter {
        from_revision: q.from_revision,
        to_revision: q.to_revision,
        since_us: q.since.as_deref().map(params::parse_time).transpose()?,
        until_us: q.until.as_deref().map(params::parse_time).transpose()?,
        prefix: q.prefix.clone(),
        actor: q.actor.clone(),
        after: q.after,
        limit: params::limit(q.limit)?,
        bytes_max: 0,
        descending: q.order == Some(Order::Desc),
    };
    let stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    if stream {
        return stream_commits(state, principal, filter, chain);
    }
    let store = state.store().clone();
    let page = blocking(move || Ok(store.commits(&filter)?)).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for record in &page.items {
        if let Some(view) = commit_view(&principal, record, chain) {
            items.push(view);
        }
    }
    #[derive(Serialize)]
    struct CommitsView<'a> {
        items: Vec<CommitView<'a>>,
        next: Option<u64>,
    }
    ok(&CommitsView {
        items,
        next: page.next,
    })
}

/// A commit as the principal may see it: ops outside its prefixes removed, and `None` when none
/// remain (or, for a prefix-limited token, for a system commit, which has no ops). Commits and
/// watch both answer with it.
pub(super) fn commit_view<'a>(
    principal: &Principal,
    record: &'a CommitRecord,
    chain: bool,
) -> Option<CommitView<'a>> {
    let canonical = chain.then(|| record.commit.encode_canonical());
    let mut view = CommitView::new(
        &record.commit,
        &record.hash,
        &record.prev_hash,
        canonical.as_deref(),
    );
    if !principal.prefixes.is_empty() {
        view.ops.retain(|op| principal.sees(op.key()));
        if view.ops.is_empty() {
            return None;
        }
    }
    Some(view)
}

/// Streams every commit matching `filter` as NDJSON, produced as the client reads it: a page is
/// read (on a blocking thread, which is given back at once) only once the previous one was
/// taken by the connection, so a stream holds at most one page being read and
/// `STREAM_CHUNKS_QUEUED_MAX` encoded pages (each at most `PAGE_BYTES_MAX` plus one commit),
/// and no thread waits for a slow client. At most `STREAMS_MAX` streams run at once.
fn stream_commits(
    state: AppState,
    principal: Principal,
    mut filter: CommitFilter,
    chain: bool,
) -> Result<Response, ApiError> {
    let permit = state.stream_permit().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("{STREAMS_MAX} commit streams are open; try again later"),
        )
    })?;
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_CHUNKS_QUEUED_MAX);
    filter.limit = PAGE_ITEMS_MAX;
    let store = state.store().clone();
    let mut shutdown = state.shutdown_signal();
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            // A client gone while nothing matched (no chunk sent) is noticed here, not at the
            // end of the log.
            if sender.is_closed() {
                return;
            }
            let reader = store.clone();
            let page_filter = filter.clone();
            let read = tokio::task::spawn_blocking(move || reader.commits(&page_filter));
            let page = tokio::select! {
                read = read => read,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(error)) => {
                    let _ = sender
                        .send(Err(std::io::Error::other(error.to_string())))
                        .await;
                    return;
                }
                Err(_) => return,
            };
            let mut chunk = Vec::new();
            for record in &page.items {
                if let Some(view) = commit_view(&principal, record, chain) {
                    let _ = serde_json::to_writer(&mut chunk, &view);
                    chunk.push(b'\n');
                }
            }
            drop(page.items);
            if !chunk.is_empty() {
                tokio::select! {
                    sent = sender.send(Ok(Bytes::from(chunk))) => if sent.is_err() {
                        return; // the client went away
                    },
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
            match page.next {
                Some(next) => filter.after = Some(next),
                None => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// Key prefix; absent: every key.
    pub prefix: Option<String>,
    /// First point: a revision or an RFC 3339 time.
    #[param(pattern = r"^([0-9]{1,19}|[0-9]{4}-[0-9]{2}-[0-9]{2}T.+)$")]
    pub from: String,
    /// Second point: a revision or an RFC 3339 time.
    #[param(pattern = r"^([0-9]{1,19}|[0-9]{4}-[0-9]{2}-[0-9]{2}T.+)$")]
    pub to: String,
}

#[derive(Serialize)]
struct ChangeView<'a> {
    key: &'a str,
    change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    old: Option<StoredValue<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new: Option<StoredValue<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_error: Option<&'static str>,
}

/// Keys added, changed or removed under a prefix between two points.
#[utoipa::path(get, path = "/v1/diff", tag = "audit",
    params(DiffQuery),
    responses(
        (status = 200, description = "The changes", body = super::openapi::DiffDoc),
        (status = 400, description = "Bad query or point", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 410, description = "Below the compaction horizon", body = super::openapi::ErrorDoc),
        (status = 413, description = "Too many changes: narrow the prefix", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn diff(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = params::query(query)?;
    principal.require(Action::Audit)?;
    let mut from = params::parse_point(&q.from)?;
    let mut to = params::parse_point(&q.to)?;
    let prefix = q.prefix.unwrap_or_default();
    let prefixes = principal.visible_prefixes(&prefix);
    let store = state.store().clone();
    let diffs = blocking(move || {
        let mut out: Vec<crate::store::Diff> = Vec::new();
        let (mut total, mut bytes) = (0, 0);
        for p in &prefixes {
            let d = store.diff(p, from, to)?;
            (from, to) = (Point::Revision(d.from), Point::Revision(d.to));
            total += d.changes.len();
            if total > DIFF_CHANGES_MAX {
                return Err(ApiError::too_large(format!(
                    "more than {DIFF_CHANGES_MAX} changes; narrow the prefix"
                )));
            }
            bytes += d
                .changes
                .iter()
                .map(|c| {
                    c.key.len()
                        + c.old.as_ref().map_or(0, |v| v.as_bytes().len())
                        + c.new.as_ref().map_or(0, |v| v.as_bytes().len())
                })
                .sum::<usize>();
            if bytes > DIFF_BYTES_MAX {
                return Err(ApiError::too_large(format!(
                    "more than {DIFF_BYTES_MAX} bytes of values; narrow the prefix"
                )));
            }
            out.push(d);
        }
        if out.is_empty() {
            out.push(store.diff("", from, to).map(|mut d| {
                d.changes.clear();
                d
            })?);
        }
        Ok(out)
    })
    .await?;
    let mut changes = Vec::new();
    for d in &diffs {
        for c in &d.changes {
            let old = c.old.as_ref().map(|v| StoredValue::new(v.as_bytes()));
            let new = c.new.as_ref().map(|v| StoredValue::new(v.as_bytes()));
            changes.push(ChangeView {
                key: &c.key,
                change: match c.kind {
                    ChangeKind::Added => "added",
                    ChangeKind::Changed => "changed",
                    ChangeKind::Removed => "removed",
                },
                old,
                old_error: old.and_then(|v| v.error()),
                new,
                new_error: new.and_then(|v| v.error()),
            });
        }
    }
    #[derive(Serialize)]
    struct DiffView<'a> {
        from: u64,
        to: u64,
        changes: Vec<ChangeView<'a>>,
    }
    ok(&DiffView {
        from: diffs[0].from,
        to: diffs[0].to,
        changes,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// First revision to verify. Default: the first available.
    pub from_revision: Option<u64>,
    /// An auditor's saved digest, `REV:HASH` (64 hex digits): checked against the chain.
    #[param(pattern = r"^[0-9]{1,19}:[0-9a-fA-F]{64}$")]
    pub expected: Option<String>,
}

/// Recomputes the hash chain to the head.
#[utoipa::path(get, path = "/v1/verify", tag = "audit",
    params(VerifyQuery),
    responses(
        (status = 200, description = "The verification report (`ok` false on any failure)", body = super::openapi::VerifyDoc),
        (status = 400, description = "Bad query", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<VerifyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = params::query(query)?;
    principal.require(Action::Audit)?;
    params::revisions(&[q.from_revision])?;
    let expected = q.expected.as_deref().map(parse_expected).transpose()?;
    let store = state.store().clone();
    let report = blocking(move || Ok(store.verify_chain(q.from_revision, expected)?)).await?;
    #[derive(Serialize)]
    struct Failure {
        revision: u64,
        reason: String,
    }
    #[derive(Serialize)]
    struct VerifyView {
        ok: bool,
        from: u64,
        to: u64,
        commits: u64,
        head_hash: String,
        expected_matched: Option<bool>,
        failure: Option<Failure>,
        /// Set when history was compacted: verification starts from the horizon's hash.
        horizon: Option<serde_json::Value>,
    }
    let horizon = state.store().horizon();
    ok(&VerifyView {
        horizon: (horizon.revision > 0).then(|| {
            serde_json::json!({
                "revision": horizon.revision,
                "hash": hex(&horizon.hash),
                "note": format!(
                    "history before revision {} was compacted; the chain is verified from the \
                     horizon's hash",
                    horizon.revision + 1
                ),
            })
        }),
        ok: report.ok(),
        from: report.from,
        to: report.to,
        commits: report.commits,
        head_hash: hex(&report.head_hash),
        expected_matched: report.expected_matched,
        failure: report
            .failure
            .map(|(revision, reason)| Failure { revision, reason }),
    })
}

pub(crate) fn parse_expected(text: &str) -> Result<(u64, storage_format::Hash), ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_query",
            format!("expected {text:?} is not REV:HASH with a 64-hex-digit hash"),
        )
    };
    let (rev, hash_hex) = text.split_once(':').ok_or_else(invalid)?;
    let revision = rev.parse().map_err(|_| invalid())?;
    params::revisions(&[Some(revision)])?;
    // ASCII hex only, so the two-byte slices below always fall on character boundaries.
    if hash_hex.len() != 64 || !hash_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hash_hex[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
    }
    Ok((revision, hash))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Query values from the network never panic the parsers, whatever their bytes.
        #[test]
        fn query_parsers_never_panic(text in "\\PC{0,80}", revision in 0u64..200, hex in "[0-9a-fA-F\u{e9}\u{4e00}]{0,70}") {
            let _ = super::parse_expected(&text);
            let _ = super::parse_expected(&format!("{revision}:{hex}"));
            let _ = super::params::parse_time(&text);
            let _ = super::params::parse_point(&text);
        }
    }

    #[test]
    fn expected_digest_with_multibyte_characters_is_refused() {
        let sneaky = format!("1:{}é{}", "a".repeat(31), "b".repeat(31));
        assert_eq!(sneaky.len(), 66 - 2 + 2);
        assert!(super::parse_expected(&sneaky).is_err());
        let sixty_four_bytes = format!("1:{}é", "a".repeat(62));
        assert_eq!(sixty_four_bytes.len() - 2, 64);
        assert!(super::parse_expected(&sixty_four_bytes).is_err());
        assert!(super::parse_expected(&format!("3:{}", "ab".repeat(32))).is_ok());
    }
}
