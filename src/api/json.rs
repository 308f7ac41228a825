//! Answer bodies that embed stored values verbatim. A value is stored byte for byte as received,
//! so it is written into the answer as raw JSON (checked to still parse), never re-encoded; a
//! stored value that fails the check is answered as `null` with a `value_error` beside it
//! (`crate::chain::StoredValue`).

use super::error::ApiError;
use crate::chain::StoredValue;
use crate::clock::format_timestamp_us;
use crate::store::KeyVersion;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A key version (DESIGN.md §3 "key version").
#[derive(Serialize)]
pub struct KeyVersionView<'a> {
    pub key: &'a str,
    pub value: StoredValue<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_error: Option<&'static str>,
    pub revision: u64,
    pub create_revision: u64,
    pub version: u64,
    pub timestamp: String,
}

impl<'a> KeyVersionView<'a> {
    pub fn new(v: &'a KeyVersion) -> KeyVersionView<'a> {
        let value = StoredValue::new(v.value.as_bytes());
        KeyVersionView {
            key: &v.key,
            value,
            value_error: value.error(),
            revision: v.revision,
            create_revision: v.create_revision,
            version: v.version,
            timestamp: format_timestamp_us(v.timestamp_us),
        }
    }
}

/// `200` with `body` as JSON.
pub fn ok<T: Serialize>(body: &T) -> Result<Response, ApiError> {
    ok_sized(body, 256)
}

/// `ok`, with the body's expected size (so it is written without reallocating).
pub fn ok_sized<T: Serialize>(body: &T, size_hint: usize) -> Result<Response, ApiError> {
    let mut bytes = Vec::with_capacity(size_hint);
    serde_json::to_writer(&mut bytes, body).map_err(ApiError::internal)?;
    Ok(json_response(bytes))
}

/// The answer to every write: `{"revision", "timestamp"}`.
#[derive(Serialize)]
pub struct WriteView {
    pub revision: u64,
    pub timestamp: String,
}

impl From<crate::store::CommitInfo> for WriteView {
    fn from(info: crate::store::CommitInfo) -> Self {
        WriteView {
            revision: info.revision,
            timestamp: format_timestamp_us(info.timestamp_us),
        }
    }
}

/// `200` with a JSON body already written.
pub fn json_response(body: impl Into<axum::body::Body>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// The answer to `GET /v1/kv/{key}` for `key`, written straight into one buffer (inside
/// `Store::get_with`): the same bytes as serializing `KeyVersionView`, without building it (this
/// is the hottest answer).
pub fn key_version_body(key: &str, v: crate::store::VersionRef<'_>) -> Result<String, ApiError> {
    // One scan of the value (not two, as `StoredValue::new` does): this is the hottest answer.
    let (value, value_error) = match storage_format::json::check_stored(v.value) {
        // The check passed, so the bytes are UTF-8.
        Ok(()) => (
            std::str::from_utf8(v.value).map_err(ApiError::internal)?,
            None,
        ),
        Err(error) => ("null", Some(error.code())),
    };
    let mut out = String::with_capacity(value.len() + key.len() + 160);
    out.push_str("{\"key\":");
    // The key grammar (`[A-Za-z0-9._-]` segments) needs no JSON escaping; anything else goes
    // through serde's escaping.
    if key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
    {
        out.push('"');
        out.push_str(key);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(key).map_err(ApiError::internal)?);
    }
    out.push_str(",\"value\":");
    out.push_str(value);
    if let Some(code) = value_error {
        out.push_str(",\"value_error\":\"");
        out.push_str(code);
        out.push('"');
    }
    let mut number = itoa::Buffer::new();
    out.push_str(",\"revision\":");
    out.push_str(number.format(v.revision));
    out.push_str(",\"create_revision\":");
    out.push_str(number.format(v.create_revision));
    out.push_str(",\"version\":");
    out.push_str(number.format(v.version));
    out.push_str(",\"timestamp\":\"");
    let _ = crate::clock::write_timestamp_us(&mut out, v.timestamp_us);
    out.push_str("\"}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ValueBytes;

    #[test]
    fn direct_key_version_matches_serde() {
        let v = KeyVersion {
            key: std::sync::Arc::from("prod/chatbot/model"),
            value: ValueBytes::Shared(std::sync::Arc::from(
                &br#"{"model": "m1",  "t": [1, 2]}"#[..],
            )),
            revision: 42,
            create_revision: 7,
            version: 3,
            timestamp_us: 1_795_000_000_123_456,
        };
        let serde = serde_json::to_vec(&KeyVersionView::new(&v)).unwrap();
        let response = json_response(key_version_body(&v.key, v.as_ref()).unwrap());
        let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
            response.into_body(),
            1 << 20,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(&body[..], &serde[..]);
    }

    #[test]
    fn an_unreadable_stored_value_is_null_with_its_reason_in_both_writers() {
        for (bytes, code) in [
            (&b"\"\xff\xfe\""[..], "invalid_utf8"),
            (b"{\"a\":", "invalid_json"),
        ] {
            let v = KeyVersion {
                key: std::sync::Arc::from("k"),
                value: ValueBytes::Shared(std::sync::Arc::from(bytes)),
                revision: 2,
                create_revision: 2,
                version: 1,
                timestamp_us: 1_795_000_000_000_000,
            };
            let serde = serde_json::to_vec(&KeyVersionView::new(&v)).unwrap();
            let direct = key_version_body(&v.key, v.as_ref()).unwrap();
            assert_eq!(direct.as_bytes(), &serde[..]);
            let parsed: serde_json::Value = serde_json::from_str(&direct).unwrap();
            assert_eq!(parsed["value"], serde_json::Value::Null);
            assert_eq!(parsed["value_error"], code);
        }
    }
}
