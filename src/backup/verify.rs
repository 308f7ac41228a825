//! Checking a repository's backups (`backup verify`), and the record of the latest check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::*;

/// Where `backup verify` records its latest result, for the server's metrics and health and for
/// `llmcm doctor` (FORMAT.md, "Backup repositories").
pub const VERIFY_RECORD: &str = "verify/last.json";

/// The result of the latest `backup verify` of a repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyRecord {
    /// When the verification finished (Unix microseconds).
    pub verified_us: u64,
    pub ok: bool,
    pub deep: bool,
    /// The one backup checked, or none for the whole repository.
    pub id: Option<String>,
    /// Backups checked.
    pub backups: usize,
    /// Findings that are failures.
    pub failures: usize,
    /// The first failure: backup, file and reason.
    pub first_failure: Option<String>,
}

impl VerifyRecord {
    /// The record of a verification that produced `findings`.
    pub fn of(findings: &[VerifyFinding], id: Option<&str>, deep: bool) -> VerifyRecord {
        let backups: BTreeSet<&str> = findings
            .iter()
            .filter(|f| f.backup != archive::ARCHIVE_HOLDER && !f.message.starts_with(INCOMPLETE))
            .map(|f| f.backup.as_str())
            .collect();
        let failures: Vec<&VerifyFinding> = findings.iter().filter(|f| !f.ok).collect();
        VerifyRecord {
            verified_us: crate::clock::now_us(),
            ok: failures.is_empty(),
            deep,
            id: id.map(str::to_owned),
            backups: backups.len(),
            failures: failures.len(),
            first_failure: failures.first().map(|f| {
                let file = if f.file.is_empty() { "-" } else { &f.file };
                format!("backup {}, file {file}: {}", f.backup, f.message)
            }),
        }
    }

    /// Stores the record in `repo` (one atomic PUT replacing the previous one).
    pub async fn save(&self, repo: &Repo) -> Result<(), BackupError> {
        let bytes = serde_json::to_vec_pretty(self).expect("JSON");
        repo.put(VERIFY_RECORD, bytes).await?;
        repo.sync_dirs("verify").await
    }

    /// The latest record in `repo`; `None` when it was never verified.
    pub async fn load(repo: &Repo) -> Result<Option<VerifyRecord>, BackupError> {
        let Some(bytes) = repo.get_if_exists(VERIFY_RECORD).await? else {
            return Ok(None);
        };
        let record: VerifyRecord = serde_json::from_slice(&bytes)
            .map_err(|e| BackupError::Invalid(format!("{VERIFY_RECORD} in {}: {e}", repo.url)))?;
        if let Some(id) = &record.id {
            layout::check_backup_id(id).map_err(|e| {
                BackupError::Invalid(format!("{VERIFY_RECORD} in {}: {e}", repo.url))
            })?;
        }
        Ok(Some(record))
    }
}

/// How `verify` names a backup without a manifest.
pub(super) const INCOMPLETE: &str = "incomplete (no manifest: interrupted)";

/// One finding of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyFinding {
    pub backup: String,
    pub file: String,
    pub ok: bool,
    pub message: String,
}

/// Checks backups (all, or `only`): every file re-read and re-hashed against the manifest that
/// lists it, holders and parents present, segments contiguous from the horizon, one history per
/// chain. With `deep`, also restores each into `scratch` (replaying and checking the hash chain
/// and the content). Returns every finding; the first failure is the first with `ok == false`.
pub async fn verify(
    repo: &Repo,
    only: Option<&str>,
    deep: bool,
    scratch: &Path,
) -> Result<Vec<VerifyFinding>, BackupError> {
    let (manifests, incomplete) = catalog(repo).await?;
    let by_id: BTreeMap<&str, &Manifest> = manifests.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut findings = Vec::new();
    let mut add = |backup: &str, file: &str, ok: bool, message: String| {
        findings.push(VerifyFinding {
            backup: backup.to_owned(),
            file: file.to_owned(),
            ok,
            message,
        })
    };
    for id in &incomplete {
        add(
            id,
            "",
            true,
            format!("{INCOMPLETE}; never used, removed by prune"),
        );
    }
    let selected: Vec<&Manifest> = match only {
        Some(id) => vec![by_id.get(id).copied().ok_or_else(|| {
            BackupError::Invalid(format!("no complete backup {id} in {}", repo.url))
        })?],
        None => manifests.iter().collect(),
    };
    // Each held object is checked once, against the manifest of the backup holding it.
    let mut checked: BTreeMap<(String, String), Result<(), String>> = BTreeMap::new();
    for m in selected {
        let mut problems = 0;
        if let Some(parent) = &m.parent {
            match by_id.get(parent.as_str()) {
                None => {
                    add(
                        &m.id,
                        "",
                        false,
                        format!("parent backup {parent} is missing"),
                    );
                    problems += 1;
                }
                Some(p) if p.history_id != m.history_id => {
                    add(
                        &m.id,
                        "",
                        false,
                        format!("parent {parent} belongs to another history"),
                    );
                    problems += 1;
                }
                Some(_) => {}
            }
        }
        let mut next: Option<u64> = None;
        for f in &m.files {
            if f.backup != m.id && !by_id.contains_key(f.backup.as_str()) {
                add(
                    &m.id,
                    &f.name,
                    false,
                    format!("held by backup {}, which is missing", f.backup),
                );
                problems += 1;
                continue;
            }
            let key = (f.backup.clone(), f.name.clone());
            if !checked.contains_key(&key) {
                let object = format!("{BACKUPS_DIR}/{}/{}", f.backup, f.name);
                let outcome = match check_object(repo, &object, f.size, &f.sha256, |_| Ok(())).await
                {
                    Err(e) => Err(format!("cannot be read: {e}")),
                    Ok(checked) => checked,
                };
                checked.insert(key.clone(), outcome);
            }
            if let Err(reason) = &checked[&key] {
                add(&f.backup, &f.name, false, reason.clone());
                problems += 1;
            }
            if f.kind == FileKind::Segment {
                let expected = next.unwrap_or(f.first_revision);
                if f.first_revision != expected {
                    add(
                        &m.id,
                        &f.name,
                        false,
                        format!(
                            "segments are not contiguous: starts at revision {}, expected {expected}",
                            f.first_revision
                        ),
                    );
                    problems += 1;
                }
                next = Some(f.last_revision + 1);
            }
        }
        if next.map_or(m.horizon.revision, |n| n - 1) != m.last_revision {
            add(
                &m.id,
                "",
                false,
                format!(
                    "the files end at revision {}, the manifest says {}",
                    next.map_or(m.horizon.revision, |n| n - 1),
                    m.last_revision
                ),
            );
            problems += 1;
        }
        if problems == 0 && deep {
            let target = scratch.join(format!("deep-{}", m.id));
            match restore(
                repo,
                Some(&m.id),
                crate::store::restore::RestoreOptions::new(
                    crate::store::restore::RestorePoint::Latest,
                    None,
                    0,
                    true,
                ),
                &target,
                &mut |_| {},
            )
            .await
            {
                Ok(outcome) => add(
                    &m.id,
                    "",
                    true,
                    format!(
                        "deep: restored and verified the chain to revision {} ({} key{})",
                        outcome.resolved.revision,
                        outcome.keys,
                        if outcome.keys == 1 { "" } else { "s" }
                    ),
                ),
                Err(e) => {
                    add(&m.id, "", false, format!("deep: {e}"));
                    problems += 1;
                }
            }
            let _ = std::fs::remove_dir_all(&target);
        }
        if problems == 0 {
            add(
                &m.id,
                "",
                true,
                format!(
                    "{} backup: {} file{}, revisions {} to {}",
                    m.kind.name(),
                    m.files.len(),
                    if m.files.len() == 1 { "" } else { "s" },
                    m.first_revision,
                    m.last_revision
                ),
            );
        }
    }
    // The archive: every archived segment against its record.
    if only.is_none() {
        let mut histories: BTreeSet<String> = BTreeSet::new();
        for name in repo.list(archive::ARCHIVE_DIR).await? {
            match name.split('/').nth(1) {
                Some(h) if layout::check_history_id(h).is_ok() => {
                    histories.insert(h.to_owned());
                }
                _ => add(
                    archive::ARCHIVE_HOLDER,
                    &format!("{name:?}"),
                    true,
                    "not part of the layout: ignored".into(),
                ),
            }
        }
        for history in histories {
            let records = match archive::archived(repo, &history).await {
                Ok(r) => r,
                Err(e) => {
                    add(archive::ARCHIVE_HOLDER, &history, false, e.to_string());
                    continue;
                }
            };
            let mut next: Option<u64> = None;
            for r in records.values() {
                let object = archive::object(&history, &r.name);
                let problem = match check_object(repo, &object, r.size, &r.sha256, |_| Ok(())).await
                {
                    Err(e) => Some(format!("cannot be read: {e}")),
                    Ok(checked) => checked.err(),
                };
                let gap = next.is_some_and(|n| n != r.first_revision);
                next = Some(r.last_revision + 1);
                match problem {
                    Some(p) => add(archive::ARCHIVE_HOLDER, &object, false, p),
                    None if gap => add(
                        archive::ARCHIVE_HOLDER,
                        &object,
                        true,
                        "archived after a gap (a compaction or restore in between)".into(),
                    ),
                    None => {}
                }
            }
            add(
                archive::ARCHIVE_HOLDER,
                &history,
                true,
                format!(
                    "{} archived segment{} checked",
                    records.len(),
                    if records.len() == 1 { "" } else { "s" }
                ),
            );
        }
    }
    Ok(findings)
}
