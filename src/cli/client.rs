//! The client commands (DESIGN.md §4): each talks to a server over the HTTP API, prints a
//! readable answer (tables) or, with `--json`, the server's JSON; errors are one line on stderr
//! with a distinct exit code per kind (see `ExitKind`).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};

/// Largest value or txn file read from a file or stdin.
pub const INPUT_BYTES_MAX: u64 = 16 << 20;
/// Items fetched by `ls`, `history` and `log` when following pages, at most (`--limit`).
pub const LIST_ITEMS_DEFAULT: usize = 1000;

/// Connection options shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Server URL.
    #[arg(
        long,
        env = "LLMCM_SERVER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "LLMCM_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM file of the certificate authorities to trust for an https:// server (instead of the
    /// system's).
    #[arg(long, env = "LLMCM_CA_FILE", global = true, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// How a client command failed, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// 1: anything else (a 5xx, a malformed answer).
    Failure = 1,
    /// 3: the key (or route) does not exist.
    NotFound = 3,
    /// 4: a condition did not hold (409).
    Conflict = 4,
    /// 5: no valid token, or not allowed (401, 403).
    Denied = 5,
    /// 6: the server is unreachable, read-only, not ready or shutting down (503).
    Unavailable = 6,
    /// 7: the server refused the input (400, 413, 422).
    Rejected = 7,
    /// 8: the point is below the compaction horizon (410).
    Compacted = 8,
}

/// A failed command: what to print, and the exit code.
#[derive(Debug)]
pub struct ClientError {
    pub kind: ExitKind,
    pub message: String,
}

impl ClientError {
    fn new(kind: ExitKind, message: impl Into<String>) -> ClientError {
        ClientError {
            kind,
            message: message.into(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind as u8)
    }
}

type Result<T> = std::result::Result<T, ClientError>;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a key's value (at a point).
    Get {
        key: String,
        #[arg(long, conflicts_with = "at")]
        revision: Option<u64>,
        /// RFC 3339 time.
        #[arg(long)]
        at: Option<String>,
    },
    /// Put a JSON value: inline, `@FILE`, or `-` for stdin.
    Put {
        key: String,
        value: String,
        #[arg(long)]
        reason: Option<String>,
        /// Only if the key's revision is this (0: must not exist).
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// List live keys under a prefix (following pages up to --limit).
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long, conflicts_with = "at")]
        revision: Option<u64>,
        #[arg(long)]
        at: Option<String>,
        #[arg(long, default_value_t = LIST_ITEMS_DEFAULT)]
        limit: usize,
    },
    /// Every version of a key.
    History {
        key: String,
        #[arg(long, default_value_t = LIST_ITEMS_DEFAULT)]
        limit: usize,
    },
    /// The commit log (audit replay), oldest first.
    Log {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        from_revision: Option<u64>,
        #[arg(long, default_value_t = LIST_ITEMS_DEFAULT)]
        limit: usize,
    },
    /// Keys added, changed or removed under a prefix between two points (revision or time).
    Diff {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Follow commits under a prefix as they happen (Ctrl-C to stop).
    Watch {
        #[arg(default_value = "")]
        prefix: String,
        /// Start after this revision (default: from now on).
        #[arg(long)]
        from_revision: Option<u64>,
    },
    /// Make a prefix's state equal its state at a point, in one new commit.
    Rollback {
        prefix: String,
        #[arg(long, conflicts_with = "at", required_unless_present = "at")]
        revision: Option<u64>,
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Commit a txn: a JSON body `{"ops": [...], "conditions": [...], "reason": ...}` from a file
    /// or `-` for stdin.
    Txn { file: String },
    /// The server's status.
    Status,
    /// Take a snapshot of the state at the head now (on the server).
    Snapshot,
    /// Compact history older than the retention (default: the server's `retention.keep`);
    /// recorded as a `compaction` commit.
    Compact {
        /// History to keep, e.g. `30d`, `12h`, `0s` (everything up to the last sealed segment).
        #[arg(long)]
        retain: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Switch the store read-only (on) or writable (off); audited.
    ReadOnly {
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Largest CA file read.
pub const CA_FILE_BYTES_MAX: u64 = 1 << 20;

/// The HTTP client of every command that talks to `conn.server`: http:// or https:// (trusting
/// `--ca-file` if given, else the system's authorities), a 5 s connect timeout, and `timeout`
/// per request (none: each request sets its own).
pub fn http_client(
    conn: &Connection,
    timeout: Option<Duration>,
) -> std::result::Result<Client, String> {
    let https = conn.server.starts_with("https://");
    if !https && !conn.server.starts_with("http://") {
        return Err(format!(
            "--server {:?}: give an http:// or https:// URL",
            conn.server
        ));
    }
    let mut builder = Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout);
    if let Some(path) = &conn.ca_file {
        let fail = |e: &dyn std::fmt::Display| format!("--ca-file {}: {e}", path.display());
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
    builder.build().map_err(|e| e.to_string())
}

/// POSTs a JSON body to the server and returns its JSON answer (for commands defined elsewhere).
pub fn post_json(conn: &Connection, path: &str, body: &Value) -> Result<Value> {
    let api = Api::new(conn)?;
    api.send(api.auth(api.http.post(api.url(path)).json(body)))
}

/// GETs a JSON answer from the server (for commands defined elsewhere).
pub fn get_json(conn: &Connection, path: &str) -> Result<Value> {
    let api = Api::new(conn)?;
    api.send(api.get(path))
}

/// Runs one client command; prints its answer.
pub fn run(conn: &Connection, command: Command) -> Result<()> {
    let api = Api::new(conn)?;
    let mut out = std::io::stdout().lock();
    match command {
        Command::Get { key, revision, at } => {
            let v = api.send(
                api.get(&format!("/v1/kv/{key}"))
                    .query(&point(revision, at)),
            )?;
            if conn.json {
                print_json(&mut out, &v)
            } else {
                print_json(&mut out, &v["value"])
            }
        }
        Command::Put {
            key,
            value,
            reason,
            if_revision,
        } => {
            let body = read_input(&value)?;
            serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(|e| {
                ClientError::new(ExitKind::Rejected, format!("the value is not JSON: {e}"))
            })?;
            let req = api
                .http
                .put(api.url(&format!("/v1/kv/{key}")))
                .query(&write_query(reason, if_revision))
                .header("Content-Type", "application/json")
                .body(body);
            let v = api.send(api.auth(req))?;
            print_write(&mut out, conn.json, &v)
        }
        Command::Delete {
            key,
            reason,
            if_revision,
        } => {
            let req = api
                .http
                .delete(api.url(&format!("/v1/kv/{key}")))
                .query(&write_query(reason, if_revision));
            let v = api.send(api.auth(req))?;
            print_write(&mut out, conn.json, &v)
        }
        Command::Ls {
            prefix,
            revision,
            at,
            limit,
        } => {
            let mut query = point(revision, at);
            query.push(("prefix", prefix));
            let Pages {
                items,
                revision: revision_seen,
                next: after,
            } = api.pages("/v1/kv", query, limit)?;
            if conn.json {
                return print_json(
                    &mut out,
                    &json!({"revision": revision_seen, "items": items, "next": after}),
                );
            }
            let rows = items
                .iter()
                .map(|i| {
                    vec![
                        text(&i["key"]),
                        text(&i["revision"]),
                        text(&i["version"]),
                        text(&i["timestamp"]),
                        short(&i["value"]),
                    ]
                })
                .collect();
            print_table(
                &mut out,
                &["KEY", "REVISION", "VERSION", "UPDATED", "VALUE"],
                rows,
            )
        }
        Command::History { key, limit } => {
            let items = api
                .pages(&format!("/v1/history/{key}"), Vec::new(), limit)?
                .items;
            if conn.json {
                return print_json(&mut out, &json!({"key": key, "items": items}));
            }
            let rows = items
                .iter()
                .map(|i| {
                    vec![
                        text(&i["revision"]),
                        text(&i["timestamp"]),
                        text(&i["op"]),
                        text(&i["actor"]),
                        text(&i["reason"]),
                        short(&i["value"]),
                    ]
                })
                .collect();
            print_table(
                &mut out,
                &["REVISION", "TIME", "OP", "ACTOR", "REASON", "VALUE"],
                rows,
            )
        }
        Command::Log {
            prefix,
            actor,
            since,
            until,
            from_revision,
            limit,
        } => {
            let mut q = Vec::new();
            for (name, value) in [
                ("prefix", prefix),
                ("actor", actor),
                ("since", since),
                ("until", until),
            ] {
                if let Some(v) = value {
                    q.push((name, v));
                }
            }
            if let Some(r) = from_revision {
                q.push(("from_revision", r.to_string()));
            }
            let items = api.pages("/v1/commits", q, limit)?.items;
            if conn.json {
                return print_json(&mut out, &json!({"items": items}));
            }
            let rows = items
                .iter()
                .map(|c| {
                    let ops = c["ops"].as_array().cloned().unwrap_or_default();
                    let summary = ops
                        .iter()
                        .map(|o| format!("{} {}", text(&o["op"]), text(&o["key"])))
                        .collect::<Vec<_>>()
                        .join(", ");
                    vec![
                        text(&c["revision"]),
                        text(&c["timestamp"]),
                        text(&c["kind"]),
                        text(&c["actor"]),
                        truncate(&summary, 60),
                        text(&c["reason"]),
                    ]
                })
                .collect();
            print_table(
                &mut out,
                &["REVISION", "TIME", "KIND", "ACTOR", "OPS", "REASON"],
                rows,
            )
        }
        Command::Diff { prefix, from, to } => {
            let q = [("prefix", prefix), ("from", from), ("to", to)];
            let d = api.send(api.get("/v1/diff").query(&q))?;
            if conn.json {
                return print_json(&mut out, &d);
            }
            writeln!(out, "from revision {} to {}", d["from"], d["to"]).map_err(io)?;
            for c in d["changes"].as_array().cloned().unwrap_or_default() {
                let line = match c["change"].as_str() {
                    Some("added") => format!("+ {} = {}", text(&c["key"]), short(&c["new"])),
                    Some("removed") => format!("- {} (was {})", text(&c["key"]), short(&c["old"])),
                    _ => format!(
                        "~ {}: {} -> {}",
                        text(&c["key"]),
                        short(&c["old"]),
                        short(&c["new"])
                    ),
                };
                writeln!(out, "{line}").map_err(io)?;
            }
            Ok(())
        }
        Command::Watch {
            prefix,
            from_revision,
        } => watch(&api, conn.json, prefix, from_revision),
        Command::Rollback {
            prefix,
            revision,
            at,
            reason,
        } => {
            let body = json!({"prefix": prefix, "revision": revision, "at": at, "reason": reason});
            let v = api.send(api.auth(api.http.post(api.url("/v1/rollback")).json(&body)))?;
            if conn.json {
                return print_json(&mut out, &v);
            }
            if v["changed"] == true {
                writeln!(
                    out,
                    "rolled back: revision {} at {}",
                    v["revision"],
                    text(&v["timestamp"])
                )
            } else {
                writeln!(
                    out,
                    "nothing to change (head is revision {})",
                    v["revision"]
                )
            }
            .map_err(io)
        }
        Command::Txn { file } => {
            let body = read_input(&file)?;
            let req = api
                .http
                .post(api.url("/v1/txn"))
                .header("Content-Type", "application/json")
                .body(body);
            let v = api.send(api.auth(req))?;
            print_write(&mut out, conn.json, &v)
        }
        Command::Status => {
            let v = api.send(api.get("/v1/admin/status"))?;
            if conn.json {
                return print_json(&mut out, &v);
            }
            let rows = vec![
                vec!["history".into(), text(&v["history_id"])],
                vec![
                    "head".into(),
                    format!(
                        "revision {} at {}",
                        v["head"]["revision"],
                        text(&v["head"]["timestamp"])
                    ),
                ],
                vec!["head hash".into(), text(&v["head"]["hash"])],
                vec![
                    "horizon".into(),
                    match v["horizon"]["timestamp"].as_str() {
                        Some(t) => format!("revision {} at {t}", v["horizon"]["revision"]),
                        None => "none (never compacted)".into(),
                    },
                ],
                vec![
                    "snapshots".into(),
                    match v["snapshots"].as_array().and_then(|s| s.last()) {
                        Some(newest) => format!(
                            "{} (newest: revision {}, {})",
                            v["snapshots"].as_array().map_or(0, Vec::len),
                            newest["revision"],
                            text(&newest["created"])
                        ),
                        None => "none".into(),
                    },
                ],
                vec![
                    "segments".into(),
                    format!(
                        "{} ({} sealed, {} bytes)",
                        v["segments"]["count"], v["segments"]["sealed"], v["segments"]["bytes"]
                    ),
                ],
                vec![
                    "read-only".into(),
                    match v["read_only"]["reason"].as_str() {
                        Some(reason) => format!("on: {reason}"),
                        None => "off".into(),
                    },
                ],
                vec!["version".into(), text(&v["version"])],
            ];
            print_table(&mut out, &["", ""], rows)
        }
        Command::Snapshot => {
            let v = api.send(api.auth(api.http.post(api.url("/v1/admin/snapshot"))))?;
            if conn.json {
                return print_json(&mut out, &v);
            }
            writeln!(
                out,
                "snapshot at revision {} ({} keys, {} bytes): {}",
                v["revision"],
                v["keys"],
                v["bytes"],
                text(&v["file"])
            )
            .map_err(io)
        }
        Command::Compact { retain, reason } => {
            let body = json!({"retain": retain, "reason": reason});
            let v = api.send(api.auth(api.http.post(api.url("/v1/admin/compact")).json(&body)))?;
            if conn.json {
                return print_json(&mut out, &v);
            }
            if v["compacted"] != json!(true) {
                return writeln!(out, "nothing compacted: {}", text(&v["reason"])).map_err(io);
            }
            writeln!(
                out,
                "compacted to horizon revision {} ({}): {} segment(s) dropped, {} bytes reclaimed, \
                 base image {} bytes with {} keys, {:.2} s; recorded as revision {}",
                v["horizon"]["revision"],
                text(&v["horizon"]["timestamp"]),
                v["segments_dropped"],
                v["bytes_reclaimed"],
                v["base_image_bytes"],
                v["keys"],
                v["seconds"].as_f64().unwrap_or(0.0),
                v["revision"]
            )
            .map_err(io)
        }
        Command::ReadOnly { state, reason } => {
            let body = json!({"on": state == "on", "reason": reason});
            let v =
                api.send(api.auth(api.http.post(api.url("/v1/admin/read-only")).json(&body)))?;
            if conn.json {
                return print_json(&mut out, &v);
            }
            if v["changed"] == json!(false) {
                return writeln!(out, "read-only was already {state}; nothing recorded")
                    .map_err(io);
            }
            writeln!(out, "read-only {state} (revision {})", v["revision"]).map_err(io)
        }
    }
}

struct Api {
    http: Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(conn: &Connection) -> Result<Api> {
        let http = http_client(conn, None).map_err(|e| ClientError::new(ExitKind::Failure, e))?;
        Ok(Api {
            http,
            base: conn.server.trim_end_matches('/').to_owned(),
            token: conn.token.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.auth(
            self.http
                .get(self.url(path))
                .timeout(Duration::from_secs(60)),
        )
    }

    /// Sends and returns the JSON answer, or the error it describes.
    fn send(&self, req: RequestBuilder) -> Result<Value> {
        let resp = req.send().map_err(|e| {
            ClientError::new(
                ExitKind::Unavailable,
                format!("cannot reach {}: {e}", self.base),
            )
        })?;
        answer(resp)
    }

    /// Follows `next` through pages of `items` until `limit` items. A page that says which
    /// revision it reflects (a list) pins the later pages to that revision.
    fn pages(&self, path: &str, mut query: Vec<(&str, String)>, limit: usize) -> Result<Pages> {
        let mut pages = Pages {
            items: Vec::new(),
            revision: None,
            next: None,
        };
        loop {
            let mut q = query.clone();
            q.push((
                "limit",
                (limit - pages.items.len()).clamp(1, 1000).to_string(),
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
}

/// What `Api::pages` gathered.
struct Pages {
    items: Vec<Value>,
    /// The revision a list reflects (lists only).
    revision: Option<u64>,
    /// Where the next page would start, if more remain.
    next: Option<String>,
}

fn answer(resp: Response) -> Result<Value> {
    let status = resp.status();
    let raw_body = resp
        .text()
        .map_err(|e| ClientError::new(ExitKind::Failure, format!("reading the answer: {e}")))?;
    let body: Value = serde_json::from_str(&raw_body).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let kind = match status.as_u16() {
        404 => ExitKind::NotFound,
        409 => ExitKind::Conflict,
        401 | 403 => ExitKind::Denied,
        503 => ExitKind::Unavailable,
        400 | 413 | 422 => ExitKind::Rejected,
        410 => ExitKind::Compacted,
        _ => ExitKind::Failure,
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
    Err(ClientError::new(kind, message))
}

fn watch(api: &Api, json_out: bool, prefix: String, from_revision: Option<u64>) -> Result<()> {
    let mut q = vec![("prefix", prefix)];
    if let Some(r) = from_revision {
        q.push(("from_revision", r.to_string()));
    }
    let req = api.auth(api.http.get(api.url("/v1/watch")).query(&q));
    let resp = req.send().map_err(|e| {
        ClientError::new(
            ExitKind::Unavailable,
            format!("cannot reach {}: {e}", api.base),
        )
    })?;
    if !resp.status().is_success() {
        return answer(resp).map(|_| ());
    }
    let mut out = std::io::stdout().lock();
    let (mut event, mut data) = (String::new(), String::new());
    for line in BufReader::new(resp).lines() {
        let line = line.map_err(|e| {
            ClientError::new(ExitKind::Unavailable, format!("the stream broke: {e}"))
        })?;
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        } else if line.is_empty() && !event.is_empty() {
            let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            match (event.as_str(), json_out) {
                ("commit", true) => print_json_line(&mut out, &value)?,
                ("commit", false) => {
                    for op in value["ops"].as_array().cloned().unwrap_or_default() {
                        let change = match op["op"].as_str() {
                            Some("put") => {
                                format!("put {} = {}", text(&op["key"]), short(&op["value"]))
                            }
                            _ => format!("delete {}", text(&op["key"])),
                        };
                        writeln!(
                            out,
                            "{} {} {} {change}",
                            value["revision"],
                            text(&value["timestamp"]),
                            text(&value["actor"])
                        )
                        .map_err(io)?;
                    }
                }
                ("lagged", _) => {
                    return Err(ClientError::new(
                        ExitKind::Unavailable,
                        format!(
                            "fell behind; resume with --from-revision {}",
                            value["revision"]
                        ),
                    ));
                }
                _ => {} // progress
            }
            out.flush().map_err(io)?;
            event.clear();
            data.clear();
        }
    }
    Err(ClientError::new(
        ExitKind::Unavailable,
        "the server ended the stream",
    ))
}

fn point(revision: Option<u64>, at: Option<String>) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(r) = revision {
        q.push(("revision", r.to_string()));
    }
    if let Some(t) = at {
        q.push(("at", t));
    }
    q
}

fn write_query(reason: Option<String>, if_revision: Option<u64>) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(r) = reason {
        q.push(("reason", r));
    }
    if let Some(r) = if_revision {
        q.push(("if_revision", r.to_string()));
    }
    q
}

/// A value argument: inline text, `@FILE`, or `-` for stdin (at most `INPUT_BYTES_MAX`).
fn read_input(arg: &str) -> Result<Vec<u8>> {
    let too_large = || {
        ClientError::new(
            ExitKind::Rejected,
            format!("the input is over {INPUT_BYTES_MAX} bytes"),
        )
    };
    let mut bytes = Vec::new();
    let read = |reader: &mut dyn Read, bytes: &mut Vec<u8>| {
        reader
            .take(INPUT_BYTES_MAX + 1)
            .read_to_end(bytes)
            .map_err(|e| ClientError::new(ExitKind::Failure, format!("reading the input: {e}")))
    };
    if arg == "-" {
        read(&mut std::io::stdin().lock(), &mut bytes)?;
    } else if let Some(path) = arg.strip_prefix('@') {
        let mut file = std::fs::File::open(path)
            .map_err(|e| ClientError::new(ExitKind::Failure, format!("{path}: {e}")))?;
        read(&mut file, &mut bytes)?;
    } else {
        bytes = arg.as_bytes().to_vec();
    }
    if bytes.len() as u64 > INPUT_BYTES_MAX {
        return Err(too_large());
    }
    Ok(bytes)
}

fn io(e: std::io::Error) -> ClientError {
    ClientError::new(ExitKind::Failure, format!("writing the output: {e}"))
}

fn print_json(out: &mut dyn Write, v: &Value) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)
        .map_err(|e| ClientError::new(ExitKind::Failure, e.to_string()))?;
    writeln!(out).map_err(io)
}

fn print_json_line(out: &mut dyn Write, v: &Value) -> Result<()> {
    serde_json::to_writer(&mut *out, v)
        .map_err(|e| ClientError::new(ExitKind::Failure, e.to_string()))?;
    writeln!(out).map_err(io)
}

fn print_write(out: &mut dyn Write, json_out: bool, v: &Value) -> Result<()> {
    if json_out {
        return print_json(out, v);
    }
    writeln!(
        out,
        "revision {} at {}",
        v["revision"],
        text(&v["timestamp"])
    )
    .map_err(io)
}

/// A JSON scalar as plain text (strings without quotes); other values as compact JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A value as compact JSON, cut to fit a table cell.
fn short(v: &Value) -> String {
    if v.is_null() {
        return String::new();
    }
    truncate(&v.to_string(), 48)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max - 1).collect();
    format!("{cut}…")
}

fn print_table(out: &mut dyn Write, header: &[&str], rows: Vec<Vec<String>>) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    if header.iter().any(|h| !h.is_empty()) {
        let h: Vec<String> = header.iter().map(|s| s.to_string()).collect();
        writeln!(out, "{}", line(&h)).map_err(io)?;
    }
    for row in &rows {
        writeln!(out, "{}", line(row)).map_err(io)?;
    }
    Ok(())
}
