//! The HTTP client of the v1 API, on which the CLI is a thin layer (DESIGN.md §9 grows it into a
//! library of its own): one way to reach a server (http:// or https:// with an optional CA
//! file, a 5 s connect timeout, bearer auth), answers parsed without serde's lower depth limit,
//! failures sorted by kind, paging, and the watch stream's events (`sse`).
//!
//! Limits: a CA file is read up to `CA_FILE_BYTES_MAX`; an answer's nesting is checked against
//! `ANSWER_DEPTH_MAX` before it is parsed; requests that read wait at most `READ_TIMEOUT`.

pub mod sse;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::blocking::{RequestBuilder, Response};
use serde_json::Value;

/// Largest CA file read.
pub const CA_FILE_BYTES_MAX: u64 = 1 << 20;
/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read (`Client::get`) may take in all.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Levels of nesting an answer may have: a value's limit plus the answer's own envelope (never
/// lower than what the server stores).
pub const ANSWER_DEPTH_MAX: usize = storage_format::json::VALUE_DEPTH_MAX + 8;
/// Items one page request asks for, at most (the server's own maximum).
pub const PAGE_ITEMS_MAX: usize = 1000;

/// Where the server is and how to prove who is asking.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `http://…` or `https://…`.
    pub server: String,
    pub token: Option<String>,
    /// PEM file of the authorities to trust for an https:// server (else the system's).
    pub ca_file: Option<PathBuf>,
}

/// What kind of failure a call met: the CLI's exit code, a library user's branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Anything else (a 5xx, a malformed answer, a local problem).
    Failure,
    /// The key (or route) does not exist (404).
    NotFound,
    /// A condition did not hold (409).
    Conflict,
    /// No valid token, or not allowed (401, 403).
    Denied,
    /// The server is unreachable, read-only, not ready or shutting down (503).
    Unavailable,
    /// The server refused the input (400, 413, 422).
    Rejected,
    /// The point is below the compaction horizon (410).
    Compacted,
}

/// A failed call: its kind and a message for a person.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// A connection to one server.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

/// An answer as it came, for callers that judge the status themselves (`llmcm doctor`).
pub struct RawAnswer {
    pub status: u16,
    /// The body as JSON, or as a string when it is not JSON.
    pub body: Value,
    /// The `Date` header, if any.
    pub date: Option<String>,
}

/// What `Client::pages` gathered.
pub struct Pages {
    pub items: Vec<Value>,
    /// The revision a list reflects (lists only).
    pub revision: Option<u64>,
    /// Where the next page would start, if more remain.
    pub next: Option<String>,
}

impl Client {
    /// A client of `config.server`. Fails on a URL that is not http:// or https://, or a CA
    /// file that cannot be read or holds no certificate.
    pub fn new(config: &Config) -> Result<Client> {
        let https = config.server.starts_with("https://");
        if !https && !config.server.starts_with("http://") {
            return Err(Error::new(
                ErrorKind::Failure,
                format!(
                    "--server {:?}: give an http:// or https:// URL",
                    config.server
                ),
            ));
        }
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(None);
        if let Some(path) = &config.ca_file {
            let fail = |e: &dyn std::fmt::Display| {
                Error::new(
                    ErrorKind::Failure,
                    format!("--ca-file {}: {e}", path.display()),
                )
            };
            let len = std::fs::metadata(path).map_err(|e| fail(&e))?.len();
            if len > CA_FILE_BYTES_MAX {
                return Err(fail(&format!("over {CA_FILE_BYTES_MAX} bytes")));
            }
            let pem = std::fs::read(path).map_err(|e| fail(&e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(&e))?;
            if certs.is_empty() {
                return Err(fail(&"no PEM certificate in it"));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| Error::new(ErrorKind::Failure, e.to_string()))?;
        Ok(Client {
            http,
            base: config.server.trim_end_matches('/').to_owned(),
            token: config.token.clone(),
        })
    }

    /// The server's URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request of `method` to `path`, with the token; no time limit of its own (writes and
    /// watches wait as long as the server takes).
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// A read of `path`, within `READ_TIMEOUT`.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(reqwest::Method::GET, path)
            .timeout(READ_TIMEOUT)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    /// Sends and returns the JSON answer, or the error it describes.
    pub fn send(&self, req: RequestBuilder) -> Result<Value> {
        let resp = req.send().map_err(|e| unreachable(&self.base, &e))?;
        answer(resp)
    }

    /// GETs a JSON answer.
    pub fn get_json(&self, path: &str) -> Result<Value> {
        self.send(self.get(path))
    }

    /// POSTs a JSON body and returns the JSON answer.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.post(path).json(body))
    }

    /// GETs `path` and returns the answer whatever its status.
    pub fn get_raw(&self, path: &str) -> Result<RawAnswer> {
        let response = self
            .get(path)
            .send()
            .map_err(|e| unreachable(&self.base, &e))?;
        let status = response.status().as_u16();
        let date = response
            .headers()
            .get("date")
            .and_then(|d| d.to_str().ok())
            .map(str::to_owned);
        let text = response
            .text()
            .map_err(|e| Error::new(ErrorKind::Failure, format!("reading the answer: {e}")))?;
        let body = parse_answer(&text).unwrap_or(Value::String(text));
        Ok(RawAnswer { status, body, date })
    }

    /// Follows `next` through pages of `items` until `limit` items (or the end), starting
    /// after `after` if given. A page that says which revision it reflects (a list) pins the
    /// later pages to that revision. `next` is where a following call would continue.
    pub fn pages(
        &self,
        path: &str,
        mut query: Vec<(&str, String)>,
        limit: usize,
        after: Option<String>,
    ) -> Result<Pages> {
        let mut pages = Pages {
            items: Vec::new(),
            revision: None,
            next: after,
        };
        if limit == 0 {
            return Ok(pages);
        }
        loop {
            let mut q = query.clone();
            q.push((
                "limit",
                (limit - pages.items.len())
                    .clamp(1, PAGE_ITEMS_MAX)
                    .to_string(),
            ));
            if let Some(a) = &pages.next {
                q.push(("after", a.clone()));
            }
            let page = self.send(self.get(path).query(&q))?;
            if pages.revision.is_none()
                && let Some(revision) = page["revision"].as_u64()
            {
                pages.revision = Some(revision);
                query.retain(|(k, _)| *k != "revision" && *k != "at");
                query.push(("revision", revision.to_string()));
            }
            pages
                .items
                .extend(page["items"].as_array().cloned().unwrap_or_default());
            // A list's `next` is a key, history's and commits' a revision.
            pages.next = match &page["next"] {
                Value::String(key) => Some(key.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            if pages.next.is_none() || pages.items.len() >= limit {
                return Ok(pages);
            }
        }
    }

    /// Opens a watch of `prefix` from after `from_revision` (DESIGN.md §3): the response is
    /// read with `sse::Events`. An answer that is not a stream is returned as its error.
    pub fn watch(&self, prefix: &str, from_revision: Option<u64>) -> Result<Response> {
        let mut q = vec![("prefix", prefix.to_owned())];
        if let Some(r) = from_revision {
            q.push(("from_revision", r.to_string()));
        }
        self.request(reqwest::Method::GET, "/v1/watch")
            .query(&q)
            .send()
            .map_err(|e| unreachable(&self.base, &e))
    }
}

/// The JSON of a successful answer, or the error a failed one describes (with a 409's
/// conflicts and a 422's violations in the message).
pub fn answer(resp: Response) -> Result<Value> {
    let status = resp.status();
    let raw_body = resp
        .text()
        .map_err(|e| Error::new(ErrorKind::Failure, format!("reading the answer: {e}")))?;
    let parsed = parse_answer(&raw_body);
    if status.is_success() {
        // Never hand on what could not be read: a value nested deeper than a parser's default
        // limit once came out as `null`.
        return parsed.map_err(|e| {
            Error::new(
                ErrorKind::Failure,
                format!("the server's answer is not JSON that can be read: {e}"),
            )
        });
    }
    let body = parsed.unwrap_or(Value::Null);
    let kind = match status.as_u16() {
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        401 | 403 => ErrorKind::Denied,
        503 => ErrorKind::Unavailable,
        400 | 413 | 422 => ErrorKind::Rejected,
        410 => ErrorKind::Compacted,
        _ => ErrorKind::Failure,
    };
    let error = &body["error"];
    let mut message = format!(
        "{} ({}): {}",
        error["code"].as_str().unwrap_or("error"),
        status.as_u16(),
        error["message"].as_str().unwrap_or(raw_body.trim())
    );
    if let Some(conflicts) = error["conflicts"].as_array() {
        for c in conflicts {
            message.push_str(&format!(
                "; {} is at revision {}, not {}",
                text(&c["key"]),
                c["actual"],
                c["expected"]
            ));
        }
    }
    if let Some(violations) = error["violations"].as_array() {
        for v in violations.iter().take(10) {
            message.push_str(&format!(
                "; {}{}: {}",
                text(&v["key"]),
                text(&v["path"]),
                text(&v["message"])
            ));
        }
    }
    Err(Error::new(kind, message))
}

/// A JSON value as text: a string without its quotes, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Parses an answer of the server: its depth checked first without recursion, then parsed
/// without serde's lower default depth limit.
pub fn parse_answer(text: &str) -> std::result::Result<Value, String> {
    let rules = storage_format::json::Rules {
        depth_max: ANSWER_DEPTH_MAX,
        ..storage_format::json::STORED_RULES
    };
    storage_format::json::check(text.as_bytes(), &rules).map_err(|e| e.to_string())?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    let value = serde::Deserialize::deserialize(&mut deserializer).map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// What went wrong reaching the server at `base`, said plainly.
pub fn unreachable(base: &str, error: &reqwest::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut io_kind = None;
    let mut chain = String::new();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        chain = e.to_string();
        source = e.source();
    }
    let why = match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            "connection refused: is the server running, and listening there?".to_owned()
        }
        Some(std::io::ErrorKind::TimedOut) => "no answer in time".to_owned(),
        _ if error.is_timeout() => "no answer in time".to_owned(),
        _ if chain.contains("dns error") || chain.contains("failed to lookup") => {
            "the host name does not resolve".to_owned()
        }
        _ if chain.contains("certificate") || chain.contains("UnknownIssuer") => format!(
            "the server's TLS certificate is not trusted ({chain}); give its authority with --ca-file"
        ),
        _ => chain,
    };
    Error::new(
        ErrorKind::Unavailable,
        format!("cannot reach {base}: {why}"),
    )
}
