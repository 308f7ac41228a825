//! Backups as JSON: a manifest's summary (what `POST /v1/admin/backup` answers and `llmcm backup
//! create --json` prints) and the backup service's state (status, health).

use serde_json::{Value, json};

use super::{BackupService, Manifest};
use crate::clock::format_timestamp_us;

/// A backup's summary.
pub fn backup_view(m: &Manifest, files_uploaded: usize) -> Value {
    json!({
        "id": m.id,
        "sequence": m.sequence,
        "kind": m.kind.name(),
        "parent": m.parent,
        "history_id": m.history_id,
        "first_revision": m.first_revision,
        "last_revision": m.last_revision,
        "first_time": (m.first_timestamp_us > 0).then(|| format_timestamp_us(m.first_timestamp_us)),
        "last_time": (m.last_timestamp_us > 0).then(|| format_timestamp_us(m.last_timestamp_us)),
        "files": m.files.len(),
        "files_uploaded": files_uploaded,
        "bytes": m.bytes,
        "seconds": m.seconds,
    })
}

/// The latest `backup verify` result per repository.
pub fn verifications_view(backups: &BackupService) -> Value {
    let items: Vec<Value> = backups
        .verifications()
        .iter()
        .map(|(repo, v)| {
            json!({
                "repo": repo,
                "verified": format_timestamp_us(v.verified_us),
                "ok": v.ok,
                "deep": v.deep,
                "backups": v.backups,
                "failures": v.failures,
                "first_failure": v.first_failure,
            })
        })
        .collect();
    Value::Array(items)
}

/// The newest successful backup of each kind.
pub fn last_backups_view(backups: &BackupService) -> Value {
    let items: Vec<Value> = backups
        .last_backups()
        .iter()
        .map(|(kind, b)| {
            json!({
                "kind": kind,
                "repo": b.repo,
                "id": b.id,
                "created": format_timestamp_us(b.created_us),
                "bytes": b.bytes,
                "seconds": b.seconds,
                "last_revision": b.last_revision,
            })
        })
        .collect();
    Value::Array(items)
}

/// Archiving progress per repository.
pub fn archives_view(backups: &BackupService) -> Value {
    let now = crate::clock::now_us();
    let items: Vec<Value> = backups
        .archive_status()
        .iter()
        .map(|(repo, a)| {
            json!({
                "repo": repo,
                "archived_revision": a.archived_revision,
                "lag_seconds": (a.caught_up_us > 0).then(|| now.saturating_sub(a.caught_up_us) as f64 / 1e6),
                "last_error": a.last_error,
            })
        })
        .collect();
    Value::Array(items)
}

/// The backup running now, if any.
pub fn running_view(backups: &BackupService) -> Value {
    backups.running().map_or(Value::Null, |r| {
        json!({
            "repo": r.repo,
            "kind": r.kind,
            "bytes_total": r.progress.bytes_total.load(std::sync::atomic::Ordering::Relaxed),
            "bytes_done": r.progress.bytes_done.load(std::sync::atomic::Ordering::Relaxed),
        })
    })
}
