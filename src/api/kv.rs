//! `/v1/kv`: one key at a point, put, delete, and prefix lists.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use storage_format::commit::Op;

use super::AppState;
use super::auth::{Action, Principal};
use super::error::ApiError;
use super::json::{KeyVersionView, WriteView, json_response, key_version_body, ok};
use super::params;
use crate::store::{Condition, Point, WriteRequest};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PointQuery {
    /// Read as of this revision.
    pub revision: Option<u64>,
    /// Read as of this time (RFC 3339, `Z` or an offset).
    #[param(format = DateTime)]
    pub at: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WriteQuery {
    /// Why (recorded in the commit, at most 4 KiB).
    pub reason: Option<String>,
    /// Commit only if the key's live revision is this (0: the key must not exist).
    pub if_revision: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Key prefix (a plain string prefix); absent: every key.
    pub prefix: Option<String>,
    pub revision: Option<u64>,
    /// RFC 3339 time.
    #[param(format = DateTime)]
    pub at: Option<String>,
    /// Page size, 1 to 1000. Default: 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Start after this key (the previous page's `next`).
    pub after: Option<String>,
}

/// One key at a point.
#[utoipa::path(get, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key, e.g. prod/chatbot/model", pattern = r"^(?!\.\.?(/|$))[A-Za-z0-9._-]+(/(?!\.\.?(/|$))[A-Za-z0-9._-]+)*$", max_length = 512), PointQuery),
    responses(
        (status = 200, description = "The key's version at the point", body = super::openapi::KeyVersionDoc),
        (status = 400, description = "Bad key, point or query", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 404, description = "No live version at the point", body = super::openapi::ErrorDoc),
        (status = 410, description = "Point below the compaction horizon", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn get_key(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PointQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = params::path_key(path)?;
    let q = params::query(query)?;
    principal.require_key(Action::Read, &key)?;
    let point = params::point(q.revision, q.at.as_deref())?;
    let not_found =
        || ApiError::not_found(format!("key {key:?} has no live version at that point"));
    // Small values are answered in place, under the index's read lock; a large one is read
    // again as an owned version and answered outside the lock (checking and copying it there
    // would hold up the writers' index updates).
    let in_place = state.store().get_with(&key, point, |version| {
        (version.value.len() <= IN_PLACE_VALUE_BYTES_MAX).then(|| key_version_body(&key, version))
    })?;
    match in_place {
        Some(Some(body)) => Ok(json_response(body?)),
        Some(None) => {
            let v = state.store().get(&key, point)?.ok_or_else(not_found)?;
            Ok(json_response(key_version_body(&key, v.as_ref())?))
        }
        None => Err(not_found()),
    }
}

/// Values up to this size are answered under the index's read lock (`Store::get_with`).
const IN_PLACE_VALUE_BYTES_MAX: usize = 16 << 10;

/// Put a JSON value.
#[utoipa::path(put, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key", pattern = r"^(?!\.\.?(/|$))[A-Za-z0-9._-]+(/(?!\.\.?(/|$))[A-Za-z0-9._-]+)*$", max_length = 512), WriteQuery),
    request_body(content = serde_json::Value, description = "Any JSON document (at most 1 MiB), stored verbatim", content_type = "application/json"),
    responses(
        (status = 200, description = "Committed", body = super::openapi::WriteDoc),
        (status = 400, description = "Bad key, JSON or query", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 409, description = "`if_revision` did not hold", body = super::openapi::ErrorDoc),
        (status = 413, description = "Value too large", body = super::openapi::ErrorDoc),
        (status = 422, description = "Schema violation or invalid schema", body = super::openapi::ErrorDoc),
        (status = 503, description = "Read-only or shutting down", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn put_key(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WriteQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = params::path_key(path)?;
    let q = params::query(query)?;
    // Refuse before looking at the body: a token that may not write learns nothing more.
    principal.require_key(Action::Write, &key)?;
    let value = params::body(body)?.to_vec();
    let op = Op::Put { key, value };
    commit_one(state, principal, q, op, false).await
}

/// Delete a key (404 if it has no live version).
#[utoipa::path(delete, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key", pattern = r"^(?!\.\.?(/|$))[A-Za-z0-9._-]+(/(?!\.\.?(/|$))[A-Za-z0-9._-]+)*$", max_length = 512), WriteQuery),
    responses(
        (status = 200, description = "Committed", body = super::openapi::WriteDoc),
        (status = 400, description = "Bad key or query", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 404, description = "The key does not exist", body = super::openapi::ErrorDoc),
        (status = 409, description = "`if_revision` did not hold", body = super::openapi::ErrorDoc),
        (status = 503, description = "Read-only or shutting down", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn delete_key(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WriteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = params::path_key(path)?;
    let q = params::query(query)?;
    commit_one(state, principal, q, Op::Delete { key }, true).await
}

/// Commits one put or delete with the `if_revision` condition, if any; a delete with
/// `must_exist` is 404 when the key is absent.
async fn commit_one(
    state: AppState,
    principal: Principal,
    q: WriteQuery,
    op: Op,
    must_exist: bool,
) -> Result<Response, ApiError> {
    let key = op.key().to_owned();
    principal.require_key(Action::Write, &key)?;
    params::revisions(&[q.if_revision])?;
    let request = WriteRequest {
        actor: principal.name.to_string(),
        reason: q.reason.unwrap_or_default(),
        conditions: q
            .if_revision
            .map(|revision| Condition {
                key: key.clone(),
                revision,
            })
            .into_iter()
            .collect(),
        must_exist: if must_exist { vec![key] } else { Vec::new() },
        ops: vec![op],
    };
    let info = super::writes::commit(&state, request).await?;
    ok(&WriteView::from(info))
}

#[derive(Serialize)]
struct ListView<'a> {
    revision: u64,
    items: Vec<KeyVersionView<'a>>,
    next: Option<String>,
}

/// Live keys under a prefix at a point, sorted, paginated.
#[utoipa::path(get, path = "/v1/kv", tag = "kv",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of keys", body = super::openapi::ListDoc),
        (status = 400, description = "Bad point or query", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 410, description = "Point below the compaction horizon", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = params::query(query)?;
    principal.require(Action::Read)?;
    let limit = params::limit(q.limit)?;
    let mut point = params::point(q.revision, q.at.as_deref())?;
    let prefix = q.prefix.unwrap_or_default();
    if prefix.len() > storage_format::KEY_BYTES_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            "prefix is longer than a key may be",
        ));
    }
    let store = state.store();
    let mut revision = None;
    let mut items = Vec::new();
    let mut next = None;
    let visible = principal.visible_prefixes(&prefix);
    for (i, p) in visible.iter().enumerate() {
        let page = store.list(p, point, q.after.as_deref(), limit - items.len())?;
        revision.get_or_insert(page.revision);
        point = Point::Revision(page.revision);
        items.extend(page.items);
        if page.next.is_some() {
            next = page.next;
            break;
        }
        let bytes: usize = items
            .iter()
            .map(|v| v.key.len() + v.value.as_bytes().len())
            .sum();
        if items.len() == limit || bytes >= crate::store::PAGE_BYTES_MAX {
            if i + 1 < visible.len() {
                next = items.last().map(|v| v.key.to_string());
            }
            break;
        }
    }
    let revision = match revision {
        Some(r) => r,
        // No visible prefix: an empty page that still says which revision it reflects.
        None => store.list("", point, None, 1)?.revision,
    };
    let views = items.iter().map(KeyVersionView::new).collect();
    ok(&ListView {
        revision,
        items: views,
        next,
    })
}
