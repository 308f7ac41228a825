//! API tokens (DESIGN.md §3 "Auth"): how one is made and what the configuration keeps of it.
//! The configuration holds each token's SHA-256, never the token; `llmcm token new` prints both.

use sha2::{Digest, Sha256};

use crate::config::{Role, TokenEntry};

/// Random bytes in a new token.
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// What every token starts with, so secret scanners can recognise one.
pub const TOKEN_PREFIX: &str = "llmcm_";
/// The actor of commits made with auth off (no token may take this name).
pub const ANONYMOUS_ACTOR: &str = "anonymous";

/// The SHA-256 the configuration keeps of `token`.
pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// A fresh random token and its configuration entry as TOML text.
pub fn new_token(name: &str, role: Role, prefixes: &[String]) -> std::io::Result<(String, String)> {
    let random = crate::clock::try_random_bytes::<TOKEN_RANDOM_BYTES>()?;
    let token = format!("{TOKEN_PREFIX}{}", storage_format::hex(&random));
    let entry = TokenEntry {
        name: name.to_owned(),
        role,
        prefixes: prefixes.to_vec(),
        sha256: storage_format::hex(&digest(token.as_bytes())),
        watches_max: None,
    };
    #[derive(serde::Serialize)]
    struct Wrapper<'a> {
        auth: Tokens<'a>,
    }
    #[derive(serde::Serialize)]
    struct Tokens<'a> {
        tokens: [&'a TokenEntry; 1],
    }
    let text = toml::to_string(&Wrapper {
        auth: Tokens { tokens: [&entry] },
    })
    .map_err(std::io::Error::other)?;
    Ok((token, text))
}
