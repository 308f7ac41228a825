//! `/v1/txn` and `/v1/rollback`: multi-key commits with conditions, and rolling a prefix back.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use storage_format::commit::Op;

use super::auth::{Action, Principal};
use super::error::ApiError;
use super::json::{WriteView, ok};
use super::params::{self, blocking};
use super::{AppState, TXN_CONDITIONS_MAX};
use crate::clock::format_timestamp_us;
use crate::store::{Condition, RollbackOutcome, WriteRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody {
    ops: Vec<TxnOp>,
    #[serde(default)]
    conditions: Option<Vec<TxnCondition>>,
    #[serde(default)]
    reason: Option<String>,
}

// A struct, not an internally tagged enum: serde buffers a tagged enum's fields, and a raw value
// (kept byte for byte) cannot be read back from that buffer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnOp {
    op: TxnOpKind,
    key: String,
    /// Present (even as `null`, a JSON value like any other) or absent.
    #[serde(default, deserialize_with = "present")]
    value: Option<Box<RawValue>>,
}

/// A field that is there, whatever its value (serde reads a `null` into an `Option` as `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum TxnOpKind {
    Put,
    Delete,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnCondition {
    key: String,
    revision: u64,
}

/// Atomic multi-key commit: every condition holds and every op applies, or nothing is written.
#[utoipa::path(post, path = "/v1/txn", tag = "kv",
    request_body(content = super::openapi::TxnDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "Committed", body = super::openapi::WriteDoc),
        (status = 400, description = "Bad body, key or op", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 409, description = "A condition did not hold (`conflicts` lists each)", body = super::openapi::ErrorDoc),
        (status = 413, description = "Too many ops or conditions, or too large", body = super::openapi::ErrorDoc),
        (status = 422, description = "Schema violation or invalid schema", body = super::openapi::ErrorDoc),
        (status = 503, description = "Read-only or shutting down", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn txn(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require(Action::Write)?;
    let body: TxnBody = params::json_body(body)?;
    let body_conditions = body.conditions.unwrap_or_default();
    if body_conditions.len() > TXN_CONDITIONS_MAX {
        return Err(ApiError::too_large(format!(
            "{} conditions, over the maximum {TXN_CONDITIONS_MAX}",
            body_conditions.len()
        )));
    }
    // Too many ops is refused by the log (413 `too_large`), like every other commit limit.
    let mut ops = Vec::with_capacity(body.ops.len());
    // A delete of an absent key is 404, as `DELETE /v1/kv/{key}` is, and nothing is committed.
    let mut must_exist = Vec::new();
    for op in body.ops {
        principal.require_key(Action::Write, &op.key)?;
        ops.push(match (op.op, op.value) {
            (TxnOpKind::Put, Some(value)) => Op::Put {
                key: op.key,
                value: value.get().as_bytes().to_vec(),
            },
            (TxnOpKind::Delete, None) => {
                must_exist.push(op.key.clone());
                Op::Delete { key: op.key }
            }
            (TxnOpKind::Put, None) => {
                return Err(ApiError::bad_request(
                    "invalid_argument",
                    format!("put of {:?} has no value", op.key),
                ));
            }
            (TxnOpKind::Delete, Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_argument",
                    format!("delete of {:?} takes no value", op.key),
                ));
            }
        });
    }
    let mut conditions = Vec::with_capacity(body_conditions.len());
    for c in body_conditions {
        principal.require_key(Action::Read, &c.key)?;
        conditions.push(Condition {
            key: c.key,
            revision: c.revision,
        });
    }
    let request = WriteRequest {
        actor: principal.name.to_string(),
        reason: body.reason.unwrap_or_default(),
        ops,
        conditions,
        must_exist,
    };
    let info = commit(&state, request).await?;
    ok(&WriteView::from(info))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    prefix: String,
    revision: Option<u64>,
    at: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Serialize)]
struct RollbackView {
    changed: bool,
    /// The new commit's revision, or (unchanged) the head it was compared at.
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
}

/// One new commit making the prefix's state equal its state at a point.
#[utoipa::path(post, path = "/v1/rollback", tag = "kv",
    request_body(content = super::openapi::RollbackDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "Rolled back (`changed: true`) or nothing differed (`changed: false`)", body = super::openapi::RollbackResultDoc),
        (status = 400, description = "Bad body or point", body = super::openapi::ErrorDoc),
        (status = 401, description = "No valid token", body = super::openapi::ErrorDoc),
        (status = 403, description = "Not allowed", body = super::openapi::ErrorDoc),
        (status = 409, description = "The prefix kept changing", body = super::openapi::ErrorDoc),
        (status = 410, description = "Point below the compaction horizon", body = super::openapi::ErrorDoc),
        (status = 413, description = "More changes than one rollback may make", body = super::openapi::ErrorDoc),
        (status = 503, description = "Read-only or shutting down", body = super::openapi::ErrorDoc),
    ),
    security(("bearer" = [])))]
pub async fn rollback(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: RollbackBody = params::json_body(body)?;
    principal.require_prefix(Action::Write, &body.prefix)?;
    if body.revision.is_none() && body.at.is_none() {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "give `revision` or `at`",
        ));
    }
    let point = params::point(body.revision, body.at.as_deref())?;
    let store = state.store().clone();
    let actor = principal.name.to_string();
    let outcome = blocking(move || {
        let reason = body.reason.unwrap_or_default();
        Ok(store.rollback(&body.prefix, point, &actor, &reason)?)
    })
    .await?;
    ok(&match outcome {
        RollbackOutcome::Unchanged { revision } => RollbackView {
            changed: false,
            revision,
            timestamp: None,
        },
        RollbackOutcome::Committed(info) => RollbackView {
            changed: true,
            revision: info.revision,
            timestamp: Some(format_timestamp_us(info.timestamp_us)),
        },
    })
}

/// Value bytes above which a write is checked on a blocking thread rather than on the request's
/// task: JSON and schema checks cost time in proportion to the values, and a runtime worker
/// must not be held for long.
const ASYNC_WRITE_VALUE_BYTES_MAX: usize = 64 << 10;

/// Commits `request`: small writes on the request's task, waiting for their batch without a
/// thread (`Store::write_async`); large ones wholly on a blocking thread.
pub(super) async fn commit(
    state: &AppState,
    request: WriteRequest,
) -> Result<crate::store::CommitInfo, ApiError> {
    let value_bytes: usize = request
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { value, .. } => value.len(),
            Op::Delete { .. } => 0,
        })
        .sum();
    if value_bytes <= ASYNC_WRITE_VALUE_BYTES_MAX {
        return Ok(state.store().write_async(request).await?);
    }
    let store = state.store().clone();
    blocking(move || Ok(store.write(request)?)).await
}
