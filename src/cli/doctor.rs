//! `llmcm doctor`: one check for the on-call engineer, through the server (`--server`,
//! `--token`): reachable and ready, writable, disk free, recent fsync latency, snapshot age,
//! backups and archiving (the server's own health warnings), the hash chain of the recent tail,
//! clock agreement. Prints a pass/warn/fail table (or `--json`); exits 1 if any check fails, 0
//! otherwise (warnings included).

use std::process::ExitCode;

use serde_json::{Value, json};

use super::client::Connection;

/// Revisions of the recent tail whose chain is recomputed.
const TAIL_REVISIONS: u64 = 10_000;
/// Free disk below this fails; below `DISK_WARN_BYTES` warns.
const DISK_FAIL_BYTES: u64 = 256 << 20;
const DISK_WARN_BYTES: u64 = 2 << 30;
/// A verify result older than this warns (a weekly schedule plus a day).
const VERIFY_WARN_AGE_US: u64 = 8 * 86_400_000_000;
/// Mean fsync above this warns; above `FSYNC_FAIL_S` fails.
const FSYNC_WARN_S: f64 = 0.010;
const FSYNC_FAIL_S: f64 = 0.100;
/// A newest snapshot older than this warns.
const SNAPSHOT_WARN_S: f64 = 2.0 * 86_400.0;
/// Clock disagreement (server `Date` vs here) above this warns.
const CLOCK_WARN_S: f64 = 2.0;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Pass,
    Warn,
    Fail,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

struct Check {
    name: &'static str,
    level: Level,
    detail: String,
}

fn get(client: &crate::client::Client, path: &str) -> Result<(u16, Value, Option<String>), String> {
    let answer = client.get_raw(path).map_err(|e| e.message)?;
    Ok((answer.status, answer.body, answer.date))
}

pub fn run(conn: &Connection) -> anyhow::Result<ExitCode> {
    let mut checks = Vec::new();
    let mut add = |name, level, detail: String| {
        checks.push(Check {
            name,
            level,
            detail,
        })
    };
    let client = crate::client::Client::new(&conn.client_config());
    let ready = match &client {
        Ok(client) => get(client, "/health/ready"),
        Err(e) => Err(e.message.clone()),
    };
    match ready {
        Err(e) => {
            // The message names the server ("cannot reach URL: why").
            add("server reachable", Level::Fail, e);
            return report(conn, checks);
        }
        Ok((200, _, date)) => {
            add("server reachable", Level::Pass, conn.server.clone());
            add("ready", Level::Pass, "ready".into());
            clock(&mut add, date);
        }
        Ok((status, body, date)) => {
            add("server reachable", Level::Pass, conn.server.clone());
            let why = body["error"]["message"]
                .as_str()
                .unwrap_or("not ready")
                .to_owned();
            add("ready", Level::Fail, format!("{status}: {why}"));
            clock(&mut add, date);
        }
    }
    let client = client.as_ref().expect("reachable, so built");
    match get(client, "/health") {
        Ok((_, h, _)) => {
            let storage = &h["storage"];
            match storage["read_only_reason"].as_str() {
                None => add("writable", Level::Pass, "writes accepted".into()),
                Some(reason) => add("writable", Level::Fail, format!("read-only: {reason}")),
            }
            match storage["disk_free_bytes"].as_u64() {
                Some(free) => add(
                    "disk free",
                    if free < DISK_FAIL_BYTES {
                        Level::Fail
                    } else if free < DISK_WARN_BYTES {
                        Level::Warn
                    } else {
                        Level::Pass
                    },
                    format!("{:.1} GiB free", free as f64 / (1u64 << 30) as f64),
                ),
                None => add("disk free", Level::Warn, "not reported".into()),
            }
            let warnings: Vec<String> = h["warnings"]
                .as_array()
                .map(|w| {
                    w.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        // Verify results and scrub damage are checks of their own below.
                        .filter(|w| !is_verify_warning(w) && !w.starts_with("scrub: "))
                        .collect()
                })
                .unwrap_or_default();
            let backups = h["backups"].as_array().map_or(0, Vec::len);
            if warnings.is_empty() {
                add(
                    "backups and archiving",
                    Level::Pass,
                    if backups == 0 {
                        "no repository configured".into()
                    } else {
                        format!(
                            "{} of backup recorded, no warning",
                            super::text::count(backups as u64, "kind", "kinds")
                        )
                    },
                );
            } else {
                add("backups and archiving", Level::Warn, warnings.join("; "));
            }
            scrub(&mut add, &h["scrub"]);
            verifications(&mut add, &h, backups);
            fsync(&mut add, &h["storage"]["fsync_recent"]);
        }
        Err(e) => add("health", Level::Fail, e),
    }
    match get(client, "/v1/admin/status") {
        Ok((200, s, _)) => {
            let newest = s["snapshots"].as_array().and_then(|a| a.last()).cloned();
            match newest.and_then(|n| n["created"].as_str().map(str::to_owned)) {
                Some(created) => {
                    let age = crate::clock::parse_timestamp_us(&created)
                        .map(|t| now_us().saturating_sub(t) as f64 / 1e6)
                        .unwrap_or(f64::MAX);
                    add(
                        "snapshot age",
                        if age > SNAPSHOT_WARN_S {
                            Level::Warn
                        } else {
                            Level::Pass
                        },
                        format!("newest taken {created} ({:.0} min ago)", age / 60.0),
                    );
                }
                None => add("snapshot age", Level::Warn, "no snapshot yet".into()),
            }
            let head = s["head"]["revision"].as_u64().unwrap_or(0);
            let horizon = s["horizon"]["revision"].as_u64().unwrap_or(0);
            let from = head.saturating_sub(TAIL_REVISIONS).max(horizon + 1).max(1);
            match get(client, &format!("/v1/verify?from_revision={from}")) {
                Ok((200, v, _)) if v["ok"] == json!(true) => add(
                    "hash chain (recent tail)",
                    Level::Pass,
                    if head < from {
                        "no commits yet".to_owned()
                    } else {
                        format!("revisions {from} to {head} recomputed")
                    },
                ),
                Ok((200, v, _)) => add(
                    "hash chain (recent tail)",
                    Level::Fail,
                    format!("broken: {}", v["failure"]),
                ),
                Ok((status, v, _)) => add(
                    "hash chain (recent tail)",
                    Level::Warn,
                    format!("not checked ({status}: {})", v["error"]["message"]),
                ),
                Err(e) => add("hash chain (recent tail)", Level::Fail, e),
            }
            config(&mut add, &s);
        }
        Ok((status, v, _)) => add(
            "status",
            Level::Warn,
            format!(
                "not readable with this token ({status}: {})",
                v["error"]["message"]
            ),
        ),
        Err(e) => add("status", Level::Fail, e),
    }
    report(conn, checks)
}

/// Config sanity: settings that leave the store unprotected warn; the rest is summarized.
fn config(add: &mut impl FnMut(&'static str, Level, String), s: &Value) {
    let c = &s["config"];
    let mut risks = Vec::new();
    if c["tokens"].as_u64() == Some(0) {
        risks.push("auth is off (no tokens): every caller is an admin".to_owned());
    }
    let repositories = c["repositories"].as_array().cloned().unwrap_or_default();
    if repositories.is_empty() {
        risks.push("no backup repository is configured: nothing is backed up".to_owned());
    }
    if c["scrub_every_seconds"].as_u64() == Some(0) {
        risks.push("the background scrub is off (storage.scrub_every = 0s)".to_owned());
    }
    if c["snapshot_every_commits"].as_u64() == Some(0)
        && c["snapshot_every_seconds"].as_u64() == Some(0)
    {
        risks.push("scheduled snapshots are off".to_owned());
    }
    let archive = repositories
        .iter()
        .any(|r| r["archive"].as_bool() == Some(true));
    let summary = format!(
        "history {}, version {}, {}, repositories: {}; RPO: {}",
        s["history_id"].as_str().unwrap_or("?"),
        s["version"].as_str().unwrap_or("?"),
        super::text::count(c["tokens"].as_u64().unwrap_or(0), "token", "tokens"),
        if repositories.is_empty() {
            "none".to_owned()
        } else {
            repositories
                .iter()
                .map(|r| {
                    format!(
                        "{}{}",
                        r["name"].as_str().unwrap_or("?"),
                        if r["archive"].as_bool() == Some(true) {
                            " (archive)"
                        } else {
                            ""
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
        if archive {
            format!(
                "the roll age ({})",
                c["segment_age_max"].as_str().unwrap_or("?")
            )
        } else if repositories.is_empty() {
            "unbounded (no backups)".to_owned()
        } else {
            "the backup schedule (archiving off)".to_owned()
        }
    );
    if risks.is_empty() {
        add("config", Level::Pass, summary);
    } else {
        add(
            "config",
            Level::Warn,
            format!("{}; {summary}", risks.join("; ")),
        );
    }
}

/// The background scrub of sealed segments: damage fails.
fn scrub(add: &mut impl FnMut(&'static str, Level, String), scrub: &Value) {
    let damage: Vec<&str> = scrub["damage"]
        .as_array()
        .map(|d| d.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !damage.is_empty() {
        add("log scrub", Level::Fail, damage.join("; "));
    } else if let Some(last) = scrub["last_pass"].as_str() {
        add(
            "log scrub",
            Level::Pass,
            format!("every sealed segment checked, last pass finished {last}"),
        );
    } else {
        add(
            "log scrub",
            Level::Pass,
            "no damage found; no full pass yet (the first starts 10 minutes after start)".into(),
        );
    }
}

/// The latest batch fsyncs (the server keeps the last 256): their mean decides.
fn fsync(add: &mut impl FnMut(&'static str, Level, String), recent: &Value) {
    let (Some(count), Some(mean_ms), Some(max_ms)) = (
        recent["count"].as_u64(),
        recent["mean_ms"].as_f64(),
        recent["max_ms"].as_f64(),
    ) else {
        add("fsync latency", Level::Pass, "no commit since start".into());
        return;
    };
    let mean = mean_ms / 1e3;
    add(
        "fsync latency",
        if mean > FSYNC_FAIL_S {
            Level::Fail
        } else if mean > FSYNC_WARN_S {
            Level::Warn
        } else {
            Level::Pass
        },
        format!("mean {mean_ms:.2} ms, max {max_ms:.2} ms over the last {count} syncs"),
    );
}

/// A `/health` warning about verify results (reported by `verifications`, not as a backup
/// warning).
fn is_verify_warning(warning: &str) -> bool {
    warning.starts_with("the last verify of")
}

/// The latest `backup verify` result of each repository: a failure fails, one older than
/// `VERIFY_WARN_AGE_US` (or none while backups exist) warns.
fn verifications(add: &mut impl FnMut(&'static str, Level, String), h: &Value, backups: usize) {
    let items = h["verifications"].as_array().cloned().unwrap_or_default();
    // Every repository holding backups of this history without a recorded verify.
    let unverified: Vec<String> = h["unverified_repositories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .map(|repo| {
            format!(
                "repository {repo} holds backups but no recorded verify: run `llmcm backup verify --repo URL`"
            )
        })
        .collect();
    for warning in &unverified {
        add("backup verify", Level::Warn, warning.clone());
    }
    if items.is_empty() && !unverified.is_empty() {
        return;
    }
    if items.is_empty() {
        if backups == 0 {
            add("backup verify", Level::Pass, "no backup to verify".into());
        } else {
            add(
                "backup verify",
                Level::Warn,
                "no verify result recorded: run `llmcm backup verify --repo REPO`".into(),
            );
        }
        return;
    }
    let now = crate::clock::now_us();
    for v in items {
        let repo = v["repo"].as_str().unwrap_or("?");
        let when = v["verified"].as_str().unwrap_or("?");
        let age_us = v["verified"]
            .as_str()
            .and_then(|t| crate::clock::parse_timestamp_us(t).ok())
            .map_or(u64::MAX, |t| now.saturating_sub(t));
        if v["ok"].as_bool() != Some(true) {
            add(
                "backup verify",
                Level::Fail,
                format!(
                    "{repo}: failed at {when}: {}",
                    v["first_failure"].as_str().unwrap_or("?")
                ),
            );
        } else if age_us > VERIFY_WARN_AGE_US {
            add(
                "backup verify",
                Level::Warn,
                format!("{repo}: last verified at {when}, more than 8 days ago"),
            );
        } else {
            add(
                "backup verify",
                Level::Pass,
                format!(
                    "{repo}: {} verified{} at {when}",
                    super::text::count(v["backups"].as_u64().unwrap_or(0), "backup", "backups"),
                    if v["deep"].as_bool() == Some(true) {
                        " deeply"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
}

fn clock(add: &mut impl FnMut(&'static str, Level, String), date: Option<String>) {
    let Some(date) = date else {
        add(
            "clock",
            Level::Warn,
            "the server sent no Date header".into(),
        );
        return;
    };
    let server = jiff::fmt::rfc2822::parse(&date)
        .ok()
        .map(|z| z.timestamp().as_microsecond() as f64 / 1e6);
    match server {
        Some(server) => {
            let skew = now_us() as f64 / 1e6 - server;
            add(
                "clock",
                if skew.abs() > CLOCK_WARN_S {
                    Level::Warn
                } else {
                    Level::Pass
                },
                format!("server and this host agree within {:.1} s", skew.abs()),
            );
        }
        None => add(
            "clock",
            Level::Warn,
            format!("unreadable Date header {date:?}"),
        ),
    }
}

use crate::clock::now_us;

fn report(conn: &Connection, checks: Vec<Check>) -> anyhow::Result<ExitCode> {
    let worst = checks.iter().map(|c| c.level).max().unwrap_or(Level::Pass);
    if conn.json {
        let items: Vec<Value> = checks
            .iter()
            .map(|c| json!({"check": c.name, "status": c.level.name().to_lowercase(), "detail": c.detail}))
            .collect();
        let doc = json!({"status": worst.name().to_lowercase(), "checks": items});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for c in &checks {
            println!("{:<5} {:<26} {}", c.level.name(), c.name, c.detail);
        }
        println!("overall: {}", worst.name());
    }
    Ok(if worst == Level::Fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
