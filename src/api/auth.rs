//! Bearer-token auth (DESIGN.md §3 "Auth"): the config holds each token's SHA-256; a request's
//! token is hashed and compared with every entry in constant time; the matching entry's role and
//! prefixes decide what the request may do and see.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::AppState;
use crate::api::error::ApiError;
use crate::config::{AuthConfig, Role, TokenEntry};
use crate::token::ANONYMOUS_ACTOR;

/// Longest `Authorization` header value considered.
pub const AUTH_HEADER_BYTES_MAX: usize = 4096;

/// What a request wants to do, by the columns of DESIGN.md §3's role table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// get, list, watch
    Read,
    /// history, commits, diff, verify
    Audit,
    /// put, delete, txn, rollback
    Write,
    /// admin/*
    Admin,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Audit => "audit",
            Action::Write => "write",
            Action::Admin => "admin",
        }
    }
}

/// Whether `role` may do `action`.
pub fn role_allows(role: Role, action: Action) -> bool {
    matches!(
        (role, action),
        (_, Action::Read)
            | (Role::Writer | Role::Admin, Action::Write)
            | (Role::Auditor | Role::Operator | Role::Admin, Action::Audit)
            | (Role::Operator | Role::Admin, Action::Admin)
    )
}

struct TokenRecord {
    digest: [u8; 32],
    principal: Principal,
}

/// The configured tokens.
pub struct Auth {
    tokens: Vec<TokenRecord>,
    /// Built once: every request is this principal while auth is off.
    anonymous: Principal,
}

impl Auth {
    /// From validated configuration (`Config::validate` checked the digests).
    pub fn new(config: &AuthConfig) -> Auth {
        let tokens = config
            .tokens
            .iter()
            .map(|t: &TokenEntry| {
                let mut digest = [0u8; 32];
                for (i, byte) in digest.iter_mut().enumerate() {
                    *byte =
                        u8::from_str_radix(&t.sha256[2 * i..2 * i + 2], 16).expect("validated hex");
                }
                TokenRecord {
                    digest,
                    principal: Principal {
                        name: Arc::from(t.name.as_str()),
                        role: t.role,
                        prefixes: Arc::from(t.prefixes.clone()),
                        watches_max: t
                            .watches_max
                            .unwrap_or(crate::config::TOKEN_WATCHES_DEFAULT),
                    },
                }
            })
            .collect();
        Auth {
            tokens,
            anonymous: Principal::anonymous(),
        }
    }

    /// Whether any token is configured (else every caller is the anonymous admin).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// How many tokens are configured.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The principal of a request's `Authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, ApiError> {
        if !self.enabled() {
            return Ok(self.anonymous.clone());
        }
        let unauthorized = |reason: &str, message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned())
                .with("reason", serde_json::json!(reason))
        };
        let header = header.ok_or_else(|| unauthorized("missing", "a bearer token is required"))?;
        if header.len() > AUTH_HEADER_BYTES_MAX {
            return Err(unauthorized(
                "malformed",
                "the Authorization header is too long",
            ));
        }
        let token = header.strip_prefix(b"Bearer ").ok_or_else(|| {
            unauthorized(
                "malformed",
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
        let digest = crate::token::digest(token);
        // Compare with every entry, without stopping early, so timing says nothing about which
        // entry (if any) matched or how much of a digest did.
        let mut found = None;
        for record in &self.tokens {
            if constant_time_eq(&record.digest, &digest) {
                found = Some(&record.principal);
            }
        }
        found
            .cloned()
            .ok_or_else(|| unauthorized("invalid", "the token is not valid"))
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference |= std::hint::black_box(x ^ y);
    }
    difference == 0
}

/// Who is asking, and what they may see.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    pub role: Role,
    /// Empty: every key.
    pub prefixes: Arc<[String]>,
    /// Watches it may hold open at once.
    pub watches_max: usize,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal {
            name: Arc::from(ANONYMOUS_ACTOR),
            role: Role::Admin,
            prefixes: Arc::from(Vec::new()),
            // Auth off: only the server-wide `http.watchers_max` applies.
            watches_max: usize::MAX,
        }
    }

    /// Refuses unless the role allows `action`.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if role_allows(self.role, action) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token {:?} has role {}, which may not {}",
                self.name,
                self.role.name(),
                action.name()
            )))
        }
    }

    /// Refuses unless the role allows `action` and the token sees every key: what acts on the
    /// whole store (snapshots, compaction, backups, the read-only switch) is not for a token
    /// limited to some prefixes.
    pub fn require_unscoped(&self, action: Action) -> Result<(), ApiError> {
        self.require(action)?;
        if self.prefixes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token {:?} is limited to some prefixes; store-wide {} actions need a token that sees every key",
                self.name,
                action.name()
            )))
        }
    }

    /// Whether the token may see `key`.
    pub fn sees(&self, key: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Whether every key under `prefix` is visible to the token.
    pub fn sees_all_of(&self, prefix: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| prefix.starts_with(p.as_str()))
    }

    /// Refuses unless the role allows `action` on `key`.
    pub fn require_key(&self, action: Action, key: &str) -> Result<(), ApiError> {
        self.require(action)?;
        if self.sees(key) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token {:?} may not access key {key:?}",
                self.name
            )))
        }
    }

    /// Refuses unless the role allows `action` on every key under `prefix`.
    pub fn require_prefix(&self, action: Action, prefix: &str) -> Result<(), ApiError> {
        self.require(action)?;
        if self.sees_all_of(prefix) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token {:?} may not access every key under {prefix:?}",
                self.name
            )))
        }
    }

    /// The disjoint prefixes, in key order, whose keys are both under `requested` and visible.
    pub fn visible_prefixes(&self, requested: &str) -> Vec<String> {
        if self.sees_all_of(requested) {
            return vec![requested.to_owned()];
        }
        let mut narrowed: Vec<String> = self
            .prefixes
            .iter()
            .filter(|p| p.starts_with(requested))
            .cloned()
            .collect();
        narrowed.sort();
        // Drop prefixes covered by a shorter one; what remains is disjoint and sorted, so the
        // key ranges follow one another in order.
        let mut out: Vec<String> = Vec::with_capacity(narrowed.len());
        for p in narrowed {
            if !out.last().is_some_and(|last| p.starts_with(last.as_str())) {
                out.push(p);
            }
        }
        out
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        state.authenticate(header).inspect_err(|error| {
            let peer = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0);
            note_failure(error, peer, parts.uri.path());
        })
    }
}

/// The peer's address, when the connection layer recorded it (always, behind `serve`).
pub struct Peer(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// Failed-authentication log lines per second, at most; the rest are counted and summed up in
/// the next line (a flood of bad tokens must not flood the log).
const FAILURE_LOG_LINES_PER_SEC: u64 = 10;

/// Counts a refused token (`llmcm_auth_failures_total` by reason) and logs it with the peer,
/// never the token — for the monitoring guide's "suspicious activity" alert.
pub fn note_failure(error: &ApiError, peer: Option<std::net::SocketAddr>, path: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static WINDOW_S: AtomicU64 = AtomicU64::new(0);
    static IN_WINDOW: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let reason = match error.details.get("reason").and_then(|r| r.as_str()) {
        Some("missing") => "missing",
        Some("malformed") => "malformed",
        _ => "invalid",
    };
    metrics::counter!("llmcm_auth_failures_total", "reason" => reason).increment(1);
    let now_s = crate::clock::now_us() / 1_000_000;
    if WINDOW_S.swap(now_s, Ordering::Relaxed) != now_s {
        IN_WINDOW.store(0, Ordering::Relaxed);
    }
    if IN_WINDOW.fetch_add(1, Ordering::Relaxed) >= FAILURE_LOG_LINES_PER_SEC {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    tracing::warn!(%peer, reason, %path, suppressed, "authentication failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table() {
        use Action::*;
        let table = [
            (Role::Reader, [true, false, false, false]),
            (Role::Writer, [true, false, true, false]),
            (Role::Auditor, [true, true, false, false]),
            (Role::Operator, [true, true, false, true]),
            (Role::Admin, [true, true, true, true]),
        ];
        for (role, allowed) in table {
            for (action, want) in [Read, Audit, Write, Admin].into_iter().zip(allowed) {
                assert_eq!(role_allows(role, action), want, "{role:?} {action:?}");
            }
        }
    }

    #[test]
    fn visible_prefixes_are_disjoint_and_sorted() {
        let p = Principal {
            name: Arc::from("t"),
            role: Role::Reader,
            prefixes: Arc::from(vec![
                "prod/b/".to_string(),
                "prod/a/".to_string(),
                "prod/a/x/".to_string(),
                "dev/".to_string(),
            ]),
            watches_max: 1,
        };
        assert_eq!(p.visible_prefixes("prod/"), vec!["prod/a/", "prod/b/"]);
        assert_eq!(p.visible_prefixes("prod/a/x/y"), vec!["prod/a/x/y"]);
        assert!(p.visible_prefixes("staging/").is_empty());
        assert_eq!(p.visible_prefixes(""), vec!["dev/", "prod/a/", "prod/b/"]);
    }

    #[test]
    fn tokens_authenticate_by_digest() {
        let (token, text) =
            crate::token::new_token("bot", Role::Writer, &["prod/".into()]).unwrap();
        let config: crate::config::Config = toml::from_str(&text).unwrap();
        config.validate().unwrap();
        let auth = Auth::new(&config.auth);
        let header = format!("Bearer {token}");
        let p = auth.authenticate(Some(header.as_bytes())).unwrap();
        assert_eq!(&*p.name, "bot");
        assert!(auth.authenticate(Some(b"Bearer llmcm_wrong")).is_err());
        assert!(auth.authenticate(None).is_err());
        assert!(auth.authenticate(Some(token.as_bytes())).is_err());
    }
}
