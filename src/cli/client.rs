//! The client commands (DESIGN.md §4): each talks to a server over the HTTP API, prints a
//! readable answer (tables) or, with `--json`, the server's JSON; errors are one line on stderr
//! with a distinct exit code per kind (see `ExitKind`).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::sse::{Broken, Events};
use crate::client::{Client, ErrorKind, Pages};

/// Largest value or txn file read from a file or stdin.
pub const INPUT_BYTES_MAX: u64 = 16 << 20;
/// Items fetched by `ls`, `history` and `log` when following pages, at most (`--limit`).
pub const LIST_ITEMS_DEFAULT: usize = 1000;

// How a command that talks to a server reaches it: given to those commands only (offline
// commands do not take them), listed apart from a command's own options. (A doc comment here
// would become the about text of every command it is added to.)
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Connection options")]
pub struct Connection {
    /// Server URL: http:// or https://.
    #[arg(
        long,
        env = "LLMCM_SERVER",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL"
    )]
    pub server: String,
    /// Bearer token.
    #[arg(
        long,
        env = "LLMCM_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// PEM file of the certificate authorities to trust for an https:// server (instead of the
    /// system's).
    #[arg(long, env = "LLMCM_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Print JSON instead of a table (the global `--json`).
    #[arg(skip)]
    pub json: bool,
}

impl Default for Connection {
    fn default() -> Connection {
        Connection {
            server: "http://127.0.0.1:7070".into(),
            token: None,
            ca_file: None,
            json: false,
        }
    }
}

/// The connection options' ids, as `Connection` defines them.
pub const CONNECTION_ARGS: [&str; 3] = ["server", "token", "ca_file"];

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

impl From<crate::client::Error> for ClientError {
    fn from(error: crate::client::Error) -> ClientError {
        let kind = match error.kind {
            ErrorKind::Failure => ExitKind::Failure,
            ErrorKind::NotFound => ExitKind::NotFound,
            ErrorKind::Conflict => ExitKind::Conflict,
            ErrorKind::Denied => ExitKind::Denied,
            ErrorKind::Unavailable => ExitKind::Unavailable,
            ErrorKind::Rejected => ExitKind::Rejected,
            ErrorKind::Compacted => ExitKind::Compacted,
        };
        ClientError::new(kind, error.message)
    }
}

impl Connection {
    /// The client library's view of these options.
    pub fn client_config(&self) -> crate::client::Config {
        crate::client::Config {
            server: self.server.clone(),
            token: self.token.clone(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// A client of the server these options name.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::new(&self.client_config())?)
    }
}

type Result<T> = std::result::Result<T, ClientError>;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a key's value (now, or at a point).
    Get {
        /// The key, e.g. prod/chatbot/model.
        key: String,
        /// Read as of this revision.
        #[arg(long, conflicts_with = "at", value_name = "N")]
        revision: Option<u64>,
        /// Read as of this time: RFC 3339 (2026-12-01T14:03:00Z), or an age (30m, 2h, 1d) ago.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Put a JSON value.
    Put {
        /// The key.
        key: String,
        /// The value: inline JSON, `@FILE`, or `-` for stdin.
        value: String,
        /// Why (recorded in the commit).
        #[arg(long)]
        reason: Option<String>,
        /// Only if the key's revision is this (0: it must not exist).
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
        /// Why (recorded in the commit).
        #[arg(long)]
        reason: Option<String>,
        /// Only if the key's revision is this.
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// List live keys under a prefix (exit 3 if none).
    Ls {
        /// Key prefix (a plain string prefix); none: every key.
        #[arg(default_value = "")]
        prefix: String,
        /// List as of this revision.
        #[arg(long, conflicts_with = "at", value_name = "N")]
        revision: Option<u64>,
        /// List as of this time: RFC 3339, or an age (30m, 2h, 1d) ago.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Keys to fetch at most, following pages; when more remain, stderr says so and
        /// `--json` gives the cursor as `next`.
        #[arg(long, default_value_t = LIST_ITEMS_DEFAULT, value_name = "N")]
        limit: usize,
        /// Continue after this key (a previous `next`).
        #[arg(long, value_name = "KEY")]
        after: Option<String>,
    },
    /// Every version of a key, oldest first (exit 3 if it has none).
    History {
        /// The key.
        key: String,
        /// The newest N versions only, newest first.
        #[arg(
            short = 'n',
            long = "max-count",
            value_name = "N",
            conflicts_with = "limit"
        )]
        newest: Option<usize>,
        /// Versions to fetch at most, following pages.
        #[arg(long, default_value_t = LIST_ITEMS_DEFAULT, value_name = "N")]
        limit: usize,
    },
    /// The commit log (audit replay), oldest first; `-n 20` for the newest twenty.
    Log {
        /// Only commits touching keys under this prefix (with only those ops).
        #[arg(long)]
        prefix: Option<String>,
        /// Only commits by this actor (a token's name).
        #[arg(long)]
        actor: Option<String>,
        /// Commits at or after this time: RFC 3339, or an age (30m, 2h, 1d) ago.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Commits at or before this time: RFC 3339, or an age ago.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Commits from this revision on.
        #[arg(long, value_name = "N")]
        from_revision: Option<u64>,
        /// The newest N commits only, newest first.
        #[arg(
            short = 'n',
            long = "max-count",
            value_name = "N",
            conflicts_with = "limit"
        )]
        newest: Option<usize>,
        /// Commits to fetch at most, following pages; when more remain, stderr says so and
        /// `--json` gives the cursor as `next`.
        #[arg(long, default_value_t = LIST_ITEMS_DEFAULT, value_name = "N")]
        limit: usize,
    },
    /// Keys added, changed or removed under a prefix between two points.
    Diff {
        /// Key prefix; none: every key.
        #[arg(long, default_value = "")]
        prefix: String,
        /// The first point: a revision, or a time (RFC 3339, or an age ago).
        #[arg(long, value_name = "POINT")]
        from: String,
        /// The second point, as --from. Default: the head.
        #[arg(long, value_name = "POINT")]
        to: Option<String>,
    },
    /// Follow commits under a prefix as they happen, resuming by itself when the connection or
    /// the server restarts (Ctrl-C to stop).
    Watch {
        /// Key prefix; none: every key.
        #[arg(default_value = "")]
        prefix: String,
        /// Start after this revision (default: from now on).
        #[arg(long, value_name = "N")]
        from_revision: Option<u64>,
    },
    /// Make a prefix's state equal its state at a point, in one new commit.
    #[command(group = clap::ArgGroup::new("point").required(true).args(["revision", "at"]))]
    Rollback {
        /// The prefix to roll back.
        prefix: String,
        /// Back to the state after this revision.
        #[arg(long, value_name = "N")]
        revision: Option<u64>,
        /// Back to the state at this time: RFC 3339, or an age (30m, 2h, 1d) ago.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Why (recorded in the commit).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Commit a txn: a JSON body `{"ops": [...], "conditions": [...], "reason": ...}`.
    Txn {
        /// The file holding the body (`@FILE` works too), or `-` for stdin.
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// The server's status.
    Status,
    /// Take a snapshot of the state at the head now (on the server).
    Snapshot,
    /// Compact history older than the retention (default: the server's `retention.keep`);
    /// recorded as a `compaction` commit.
    Compact {
        /// History to keep, e.g. `30d`, `12h`, `0s` (everything up to the last sealed segment).
        #[arg(long, value_name = "DURATION")]
        retain: Option<String>,
        /// Why (recorded in the commit).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Switch the store read-only (on) or writable (off); audited.
    ReadOnly {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Why (recorded in the commit).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// POSTs a JSON body to the server and returns its JSON answer (for commands defined elsewhere).
pub fn post_json(conn: &Connection, path: &str, body: &Value) -> Result<Value> {
    Ok(conn.client()?.post_json(path, body)?)
}

/// GETs a JSON answer from the server (for commands defined elsewhere).
pub fn get_json(conn: &Connection, path: &str) -> Result<Value> {
    Ok(conn.client()?.get_json(path)?)
}

/// Runs one client command; prints its answer.
pub fn run(conn: &Connection, command: Command) -> Result<()> {
    let api = Api(conn.client()?);
    let mut out = std::io::stdout().lock();
    match command {
        Command::Get { key, revision, at } => {
            let v = api.send(
                api.get(&format!("/v1/kv/{key}"))
                    .query(&point(revision, at.as_deref().map(time_arg).transpose()?)),
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
                .0
                .request(Method::PUT, &format!("/v1/kv/{key}"))
                .query(&write_query(reason, if_revision))
                .header("Content-Type", "application/json")
                .body(body);
            let v = api.send(req)?;
            print_write(&mut out, conn.json, &v)
        }
        Command::Delete {
            key,
            reason,
            if_revision,
        } => {
            let req = api
                .0
                .request(Method::DELETE, &format!("/v1/kv/{key}"))
                .query(&write_query(reason, if_revision));
            let v = api.send(req)?;
            print_write(&mut out, conn.json, &v)
        }
        Command::Ls {
            prefix,
            revision,
            at,
            limit,
            after,
        } => {
            let mut query = point(revision, at.as_deref().map(time_arg).transpose()?);
            query.push(("prefix", prefix.clone()));
            let Pages {
                items,
                revision: revision_seen,
                next,
            } = api.pages("/v1/kv", query, limit, after)?;
            if conn.json {
                print_json(
                    &mut out,
                    &json!({"revision": revision_seen, "items": items, "next": next}),
                )?;
            } else {
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
                )?;
                more_remain(next.as_deref(), items.len(), "--after");
            }
            if items.is_empty() {
                return Err(ClientError::new(
                    ExitKind::NotFound,
                    format!(
                        "no live key under {prefix:?} at revision {}",
                        revision_seen.unwrap_or(0)
                    ),
                ));
            }
            Ok(())
        }
        Command::History { key, limit, newest } => {
            let (query, limit) = match newest {
                Some(n) => (vec![("order", "desc".to_owned())], n),
                None => (Vec::new(), limit),
            };
            let pages = api.pages(&format!("/v1/history/{key}"), query, limit, None)?;
            if conn.json {
                print_json(
                    &mut out,
                    &json!({"key": key, "items": pages.items, "next": pages.next}),
                )?;
            } else {
                let rows = pages
                    .items
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
                )?;
                if newest.is_none() {
                    more_remain(pages.next.as_deref(), pages.items.len(), "--limit");
                }
            }
            if pages.items.is_empty() {
                return Err(ClientError::new(
                    ExitKind::NotFound,
                    format!("key {key:?} has no history"),
                ));
            }
            Ok(())
        }
        Command::Log {
            prefix,
            actor,
            since,
            until,
            from_revision,
            newest,
            limit,
        } => {
            let mut q = Vec::new();
            for (name, value) in [
                ("prefix", prefix),
                ("actor", actor),
                ("since", since.as_deref().map(time_arg).transpose()?),
                ("until", until.as_deref().map(time_arg).transpose()?),
            ] {
                if let Some(v) = value {
                    q.push((name, v));
                }
            }
            if let Some(r) = from_revision {
                q.push(("from_revision", r.to_string()));
            }
            let limit = match newest {
                Some(n) => {
                    q.push(("order", "desc".to_owned()));
                    n
                }
                None => limit,
            };
            let Pages { items, next, .. } = api.pages("/v1/commits", q, limit, None)?;
            if conn.json {
                return print_json(&mut out, &json!({"items": items, "next": next}));
            }
            if newest.is_none() {
                more_remain(next.as_deref(), items.len(), "--from-revision");
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
            let mut q = vec![("prefix", prefix), ("from", point_arg(&from)?)];
            if let Some(to) = to {
                q.push(("to", point_arg(&to)?));
            } else {
                // The head: as of now, which the server resolves to its newest revision.
                let head = api.send(api.get("/v1/kv").query(&[("limit", "1")]))?;
                q.push(("to", text(&head["revision"])));
            }
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
            let at = at.as_deref().map(time_arg).transpose()?;
            let body = json!({"prefix": prefix, "revision": revision, "at": at, "reason": reason});
            let v = api.send(api.0.post("/v1/rollback").json(&body))?;
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
            let body = read_file(&file)?;
            let req = api
                .0
                .post("/v1/txn")
                .header("Content-Type", "application/json")
                .body(body);
            let v = api.send(req)?;
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
            let v = api.send(api.0.post("/v1/admin/snapshot"))?;
            if conn.json {
                return print_json(&mut out, &v);
            }
            writeln!(
                out,
                "snapshot at revision {} ({}, {}): {}",
                v["revision"],
                super::text::count(v["keys"].as_u64().unwrap_or(0), "key", "keys"),
                super::text::bytes(v["bytes"].as_u64().unwrap_or(0)),
                text(&v["file"])
            )
            .map_err(io)
        }
        Command::Compact { retain, reason } => {
            let body = json!({"retain": retain, "reason": reason});
            let v = api.send(api.0.post("/v1/admin/compact").json(&body))?;
            if conn.json {
                return print_json(&mut out, &v);
            }
            if v["compacted"] != json!(true) {
                return writeln!(out, "nothing compacted: {}", text(&v["reason"])).map_err(io);
            }
            writeln!(
                out,
                "compacted to horizon revision {} ({}): {} dropped, {} reclaimed, \
                 base image of {} with {}, {:.2} s; recorded as revision {}",
                v["horizon"]["revision"],
                text(&v["horizon"]["timestamp"]),
                super::text::count(
                    v["segments_dropped"].as_u64().unwrap_or(0),
                    "segment",
                    "segments"
                ),
                super::text::bytes(v["bytes_reclaimed"].as_u64().unwrap_or(0)),
                super::text::bytes(v["base_image_bytes"].as_u64().unwrap_or(0)),
                super::text::count(v["keys"].as_u64().unwrap_or(0), "key", "keys"),
                v["seconds"].as_f64().unwrap_or(0.0),
                v["revision"]
            )
            .map_err(io)
        }
        Command::ReadOnly { state, reason } => {
            let body = json!({"on": state == "on", "reason": reason});
            let v = api.send(api.0.post("/v1/admin/read-only").json(&body))?;
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

/// The library's client, with its errors as the CLI's.
struct Api(Client);

impl Api {
    fn get(&self, path: &str) -> reqwest::blocking::RequestBuilder {
        self.0.get(path)
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<Value> {
        Ok(self.0.send(req)?)
    }

    fn pages(
        &self,
        path: &str,
        query: Vec<(&str, String)>,
        limit: usize,
        after: Option<String>,
    ) -> Result<Pages> {
        Ok(self.0.pages(path, query, limit, after)?)
    }
}

/// How long `watch` waits before reconnecting: doubling from the first to the last, with jitter.
const WATCH_RETRY_FIRST: Duration = Duration::from_millis(200);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Follows a watch, printing each commit; when the stream breaks (a restart, a network cut)
/// or the server says `lagged`, connects again from the last revision seen (`Last-Event-ID`),
/// so nothing is missed or printed twice. Ends on an error the server states (a revoked token,
/// a position compacted away) or when the first connection fails.
fn watch(api: &Api, json_out: bool, prefix: String, from_revision: Option<u64>) -> Result<()> {
    let mut position = from_revision;
    let mut connected_once = false;
    let mut retry = WATCH_RETRY_FIRST;
    let mut out = std::io::stdout().lock();
    loop {
        let why = match api.0.watch(&prefix, position) {
            Err(e) if !connected_once => return Err(e.into()),
            Err(e) => e.message,
            Ok(resp) if resp.status().as_u16() == 503 && connected_once => {
                format!("the server is not ready ({})", resp.status())
            }
            Ok(resp) if !resp.status().is_success() => {
                return crate::client::answer(resp).map(|_| ()).map_err(Into::into);
            }
            Ok(resp) => {
                if connected_once {
                    eprintln!("llmcm: watch: reconnected");
                }
                connected_once = true;
                retry = WATCH_RETRY_FIRST;
                let resumed_from = position;
                match follow(resp, json_out, &mut out, &mut position)? {
                    // Fell behind after making progress: resume at once. Lagged again where it
                    // started (a client too slow for this stream): back off first.
                    StreamEnd::Lagged(revision) if resumed_from != Some(revision) => {
                        eprintln!("llmcm: watch: fell behind; resuming after revision {revision}");
                        position = Some(revision);
                        continue;
                    }
                    StreamEnd::Lagged(revision) => {
                        position = Some(revision);
                        format!("fell behind again at revision {revision}")
                    }
                    StreamEnd::Broken(why) => why,
                }
            }
        };
        let jitter = Duration::from_millis(crate::clock::now_us() % 100);
        eprintln!(
            "llmcm: watch: {why}; reconnecting in {:.1} s",
            (retry + jitter).as_secs_f64()
        );
        std::thread::sleep(retry + jitter);
        retry = (retry * 2).min(WATCH_RETRY_MAX);
    }
}

/// How a watch stream ended, when not with an error to stop on.
enum StreamEnd {
    /// The server said `lagged`: resume after this revision.
    Lagged(u64),
    /// The stream broke or ended: reconnect.
    Broken(String),
}

/// Prints a watch stream's commits; `position` follows every event id.
fn follow(
    resp: reqwest::blocking::Response,
    json_out: bool,
    out: &mut dyn Write,
    position: &mut Option<u64>,
) -> Result<StreamEnd> {
    let mut events = Events::new(resp);
    loop {
        let event = match events.next_event() {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(StreamEnd::Broken("the server ended the stream".into())),
            Err(Broken::Stream(why)) => return Ok(StreamEnd::Broken(why)),
            Err(Broken::Invalid(error)) => return Err(error.into()),
        };
        let value = &event.data;
        match (event.event.as_str(), json_out) {
            ("commit", true) => print_json_line(out, value)?,
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
                let revision = value["revision"].as_u64().or(*position).unwrap_or(0);
                return Ok(StreamEnd::Lagged(revision));
            }
            ("error", _) => return Err(crate::client::sse::stated_error(value).into()),
            _ => {} // progress
        }
        if let Some(id) = event.id {
            *position = Some(id);
        }
        out.flush().map_err(io)?;
    }
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

/// A txn body: the file `arg` (with or without a leading `@`), or stdin for `-`.
fn read_file(arg: &str) -> Result<Vec<u8>> {
    if arg == "-" || arg.starts_with('@') {
        return read_input(arg);
    }
    read_input(&format!("@{arg}"))
}

/// A time argument as the server takes it: RFC 3339 as given, or an age such as `90s`, `30m`,
/// `2h`, `1d` (optionally followed by ` ago`) as the time that long before now.
pub fn time_arg(text: &str) -> Result<String> {
    let trimmed = text.trim();
    if crate::clock::parse_timestamp_us(trimmed).is_ok() {
        return Ok(trimmed.to_owned());
    }
    let age = trimmed.strip_suffix("ago").map_or(trimmed, str::trim_end);
    match crate::config::parse_duration(age) {
        Ok(age) => {
            let at = crate::clock::now_us().saturating_sub(age.as_micros() as u64);
            Ok(crate::clock::format_timestamp_us(at))
        }
        Err(_) => Err(ClientError::new(
            ExitKind::Rejected,
            format!(
                "{text:?} is not a time: give RFC 3339 (2026-12-01T14:03:00Z) or an age such as 30m, 2h or 1d"
            ),
        )),
    }
}

/// A point argument: a revision (digits) as given, else a time (`time_arg`).
fn point_arg(text: &str) -> Result<String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(text.to_owned());
    }
    time_arg(text)
}

/// Says on stderr that a listing stopped at its limit with more to come, and how to go on.
fn more_remain(next: Option<&str>, shown: usize, continue_with: &str) {
    if let Some(next) = next {
        eprintln!(
            "llmcm: {shown} shown, more remain: raise --limit, or continue with {continue_with} {next}"
        );
    }
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
