//! Turning request parts into checked values: query strings, bodies, keys, points in time, page
//! sizes. Every rejection becomes the API's error shape (400, or 413 for a body over its limit).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::store::{PAGE_ITEMS_MAX, Point};

pub fn query<T: DeserializeOwned>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

pub fn path_key(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(key)| key)
        .map_err(|e| ApiError::bad_request("invalid_key", e.body_text()))
}

pub fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(error) = source {
            if let Some(timeout) = error.downcast_ref::<super::guard::BodyTimeout>() {
                return ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    timeout.to_string(),
                );
            }
            source = error.source();
        }
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("the request body is too large: {}", e.body_text()))
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })
}

/// Levels a request body may add around the values it carries (a txn: body, `ops`, op).
pub const BODY_ENVELOPE_DEPTH_MAX: usize = 4;

/// A JSON body of a known shape. The body passes the same check as a value first (UTF-8, no
/// duplicate member names anywhere, nesting at most a value's depth plus the envelope's), so a
/// value in a txn meets exactly the rules of a `PUT`; serde's own depth limit is then lifted,
/// the depth being bounded already.
pub fn json_body<T: DeserializeOwned>(
    body_bytes: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body(body_bytes)?;
    let invalid = |e: &dyn std::fmt::Display| {
        ApiError::bad_request("invalid_json", format!("the request body: {e}"))
    };
    let rules = storage_format::json::Rules {
        depth_max: storage_format::json::VALUE_DEPTH_MAX + BODY_ENVELOPE_DEPTH_MAX,
        ..storage_format::json::WRITE_RULES
    };
    storage_format::json::check(&bytes, &rules).map_err(|e| invalid(&e))?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    deserializer.disable_recursion_limit();
    let value = T::deserialize(&mut deserializer).map_err(|e| invalid(&e))?;
    deserializer.end().map_err(|e| invalid(&e))?;
    Ok(value)
}

/// The point named by `revision` or `at` (at most one of them); latest if neither.
pub fn point(revision: Option<u64>, at: Option<&str>) -> Result<Point, ApiError> {
    revisions(&[revision])?;
    match (revision, at) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_query",
            "give `revision` or `at`, not both",
        )),
        (Some(r), None) => Ok(Point::Revision(r)),
        (None, Some(t)) => Ok(Point::Time(parse_time(t)?)),
        (None, None) => Ok(Point::Latest),
    }
}

/// An RFC 3339 time (`Z` or an offset) as microseconds since the epoch.
pub fn parse_time(text: &str) -> Result<u64, ApiError> {
    crate::clock::parse_timestamp_us(text)
        .map_err(|message| ApiError::bad_request("invalid_time", message))
}

/// A point written as an integer revision or an RFC 3339 time.
pub fn parse_point(text: &str) -> Result<Point, ApiError> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let revision = text.parse().map_err(|_| {
            ApiError::bad_request("invalid_query", format!("revision {text:?} is too large"))
        })?;
        revisions(&[Some(revision)])?;
        return Ok(Point::Revision(revision));
    }
    Ok(Point::Time(parse_time(text)?))
}

/// A page size: default `PAGE_ITEMS_DEFAULT`, 1 to `PAGE_ITEMS_MAX`.
pub fn limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(super::PAGE_ITEMS_DEFAULT),
        Some(n) if (1..=PAGE_ITEMS_MAX).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit {n} is outside 1 to {PAGE_ITEMS_MAX}"),
        )),
    }
}

/// Runs store work that may wait for the disk on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
}

/// Largest revision a request may name: revisions are documented as int64, so a larger number is
/// malformed input rather than a point in the future.
pub const REVISION_MAX: u64 = i64::MAX as u64;

/// Refuses any revision parameter above `REVISION_MAX`.
pub fn revisions(values: &[Option<u64>]) -> Result<(), ApiError> {
    match values.iter().flatten().find(|&&r| r > REVISION_MAX) {
        Some(r) => Err(ApiError::bad_request(
            "invalid_query",
            format!("revision {r} is above the largest revision {REVISION_MAX}"),
        )),
        None => Ok(()),
    }
}
