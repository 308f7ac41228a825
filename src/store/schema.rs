//! JSON Schemas stored as config: the value of `_schemas/<path>` validates every later put of a key
//! under `<path>/` (the longest matching path wins). Schemas are compiled once per (key, revision)
//! and kept in a small bounded cache.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

/// Keys under this prefix hold schemas.
pub const SCHEMA_KEY_PREFIX: &str = "_schemas/";
/// Compiled schemas kept, at most; the cache is emptied when it would grow past this.
pub const SCHEMA_CACHE_ENTRIES_MAX: usize = 256;
/// Violations reported for one write, at most (the rest are counted, not listed).
pub const SCHEMA_VIOLATIONS_MAX: usize = 100;

/// One way a value breaks its schema (or a schema breaks the meta-schema).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaViolation {
    pub key: String,
    /// JSON pointer into the value (`""` for the whole value).
    pub path: String,
    pub message: String,
}

/// The schema keys that could govern `key`, longest path first: for `a/b/c`, `_schemas/a/b` then
/// `_schemas/a`. A key without `/` has none.
pub fn schema_keys_for(key: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut end = key.len();
    while let Some(slash) = key[..end].rfind('/') {
        keys.push(format!("{SCHEMA_KEY_PREFIX}{}", &key[..slash]));
        end = slash;
    }
    keys
}

/// Compiled schemas by (schema key, revision): a revision's value never changes, so entries never
/// go stale; they are only dropped to bound memory.
#[derive(Default)]
pub struct SchemaCache {
    compiled: Mutex<HashMap<(String, u64), Arc<jsonschema::Validator>>>,
}

impl SchemaCache {
    /// The compiled schema stored at `key` in `revision`, whose text is `schema`.
    pub fn get_or_compile(
        &self,
        key: &str,
        revision: u64,
        schema: &[u8],
    ) -> Result<Arc<jsonschema::Validator>, Vec<SchemaViolation>> {
        let id = (key.to_owned(), revision);
        if let Some(found) = self.compiled.lock().get(&id) {
            return Ok(found.clone());
        }
        let compiled = Arc::new(compile(key, schema)?);
        let mut cache = self.compiled.lock();
        if cache.len() >= SCHEMA_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(id, compiled.clone());
        Ok(compiled)
    }
}

/// Checks that `schema` (the value put at schema key `key`) is a usable JSON Schema: valid
/// against its draft's meta-schema, and compilable (regular expressions, local references; remote
/// references are not fetched and so are refused).
pub fn compile(key: &str, schema: &[u8]) -> Result<jsonschema::Validator, Vec<SchemaViolation>> {
    let violation = |path: String, message: String| SchemaViolation {
        key: key.to_owned(),
        path,
        message,
    };
    let value: Value = serde_json::from_slice(schema)
        .map_err(|e| vec![violation(String::new(), format!("not JSON: {e}"))])?;
    if !(value.is_object() || value.is_boolean()) {
        return Err(vec![violation(
            String::new(),
            "a JSON Schema is an object or a boolean".into(),
        )]);
    }
    jsonschema::meta::validate(&value).map_err(|e| {
        vec![violation(
            e.instance_path().as_str().to_owned(),
            e.to_string(),
        )]
    })?;
    jsonschema::validator_for(&value).map_err(|e| {
        vec![violation(
            e.instance_path().as_str().to_owned(),
            e.to_string(),
        )]
    })
}

/// Validates `value` (the value put at `key`) against `validator`; appends what fails.
pub fn validate(
    validator: &jsonschema::Validator,
    key: &str,
    value: &[u8],
    out: &mut Vec<SchemaViolation>,
) {
    let Ok(instance) = serde_json::from_slice::<Value>(value) else {
        // The log refuses values that are not JSON, with its own error.
        return;
    };
    for error in validator.iter_errors(&instance) {
        if out.len() >= SCHEMA_VIOLATIONS_MAX {
            return;
        }
        out.push(SchemaViolation {
            key: key.to_owned(),
            path: error.instance_path().as_str().to_owned(),
            message: error.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_keys_longest_first() {
        assert_eq!(
            schema_keys_for("prod/chatbot/model"),
            vec!["_schemas/prod/chatbot", "_schemas/prod"]
        );
        assert!(schema_keys_for("flat").is_empty());
    }

    #[test]
    fn invalid_schemas_are_refused() {
        assert!(compile("_schemas/a", br#"{"type": "string"}"#).is_ok());
        assert!(compile("_schemas/a", br#"{"type": "no-such-type"}"#).is_err());
        assert!(compile("_schemas/a", br#"{"pattern": "("}"#).is_err());
        assert!(compile("_schemas/a", br#"42"#).is_err());
        assert!(compile("_schemas/a", br#"{"$ref": "https://example.com/s.json"}"#).is_err());
    }

    #[test]
    fn violations_name_their_paths() {
        let v = compile(
            "_schemas/a",
            br#"{"type":"object","properties":{"temperature":{"type":"number","maximum":2}}}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        validate(&v, "a/x", br#"{"temperature": 5}"#, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, "/temperature");
        assert_eq!(out[0].key, "a/x");
    }
}
