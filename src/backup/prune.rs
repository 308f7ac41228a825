//! Deleting the backups (and archived segments) no kept backup needs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::*;

/// What prune removes (or would).
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub deleted: Vec<String>,
    pub incomplete_deleted: Vec<String>,
    pub kept: Vec<String>,
    /// Archived segments (object names) no kept backup can use any more.
    pub archive_deleted: Vec<String>,
}

/// How prune chooses what to keep.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    /// The newest N full backups and every backup of their chains.
    Full(usize),
    /// Every backup created in the last D days, and everything they need.
    Days(u64),
}

/// Deletes backups not kept by `keep`, never one a kept backup needs (a parent, or a holder of a
/// file it lists), and incomplete backups. Manifests go first, so an interrupted prune leaves
/// only incomplete backups behind.
pub async fn prune(repo: &Repo, keep: Keep, dry_run: bool) -> Result<Pruned, BackupError> {
    let lock = repo.lock("prune").await?;
    let result = prune_locked(repo, keep, dry_run).await;
    let released = lock.release().await;
    let pruned = result?;
    released?;
    Ok(pruned)
}

async fn prune_locked(repo: &Repo, keep: Keep, dry_run: bool) -> Result<Pruned, BackupError> {
    let (manifests, incomplete) = catalog(repo).await?;
    let mut kept: BTreeSet<String> = match keep {
        Keep::Full(n) => {
            let fulls: Vec<&str> = manifests
                .iter()
                .rev()
                .filter(|m| m.kind == BackupKind::Full)
                .take(n)
                .map(|m| m.id.as_str())
                .collect();
            manifests
                .iter()
                .filter(|m| fulls.contains(&m.full.as_str()))
                .map(|m| m.id.clone())
                .collect()
        }
        Keep::Days(days) => {
            let cutoff = repo::now_us().saturating_sub(days * 86_400_000_000);
            manifests
                .iter()
                .filter(|m| m.created_us >= cutoff)
                .map(|m| m.id.clone())
                .collect()
        }
    };
    // Close over what the kept backups need.
    let by_id: BTreeMap<&str, &Manifest> = manifests.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut stack: Vec<String> = kept.iter().cloned().collect();
    while let Some(id) = stack.pop() {
        let Some(m) = by_id.get(id.as_str()) else {
            continue;
        };
        let needs = m
            .parent
            .iter()
            .cloned()
            .chain(m.files.iter().map(|f| f.backup.clone()))
            .chain(std::iter::once(m.full.clone()));
        for need in needs {
            if kept.insert(need.clone()) {
                stack.push(need);
            }
        }
    }
    let deleted: Vec<String> = manifests
        .iter()
        .filter(|m| !kept.contains(&m.id))
        .map(|m| m.id.clone())
        .collect();
    // The archive: a restore extends a backup with the archived segments after its last
    // revision, so per history, segments ending at or before the oldest kept backup's last
    // revision extend no kept backup (and alone restore nothing). Histories without a kept
    // backup keep their archive.
    let mut floors: BTreeMap<&str, u64> = BTreeMap::new();
    for m in manifests.iter().filter(|m| kept.contains(&m.id)) {
        let floor = floors.entry(m.history_id.as_str()).or_insert(u64::MAX);
        *floor = (*floor).min(m.last_revision);
    }
    let mut archive_deleted = Vec::new();
    let mut orphans = Vec::new();
    for (history, floor) in &floors {
        let records = archive::archived(repo, history).await?;
        let mut below = 0;
        for r in records.values().filter(|r| r.last_revision <= *floor) {
            archive_deleted.push(archive::object(history, &r.name));
            below = below.max(r.seq);
        }
        // Segments without a record (an interrupted upload or prune) below what goes.
        for name in repo
            .list(&format!("{}/{history}/log", archive::ARCHIVE_DIR))
            .await?
        {
            let file = name.rsplit('/').next().unwrap_or("");
            if let Some(seq) = storage_format::segment::parse_segment_file_name(file)
                && seq <= below
                && !records.contains_key(&seq)
            {
                orphans.push(name);
            }
        }
    }
    if !dry_run {
        // Record first: a segment without its record is incomplete and never used.
        for object in &archive_deleted {
            repo.delete(&archive::record_object(object)).await?;
            crate::fault::crash_point("prune:after-archive-record");
            repo.delete(object).await?;
        }
        for object in &orphans {
            repo.delete(object).await?;
        }
        for id in deleted.iter().chain(incomplete.iter()) {
            let manifest = format!("{BACKUPS_DIR}/{id}/{MANIFEST_NAME}");
            repo.delete(&manifest).await?;
            crate::fault::crash_point("prune:after-manifest");
            for object in repo.list(&format!("{BACKUPS_DIR}/{id}")).await? {
                repo.delete(&object).await?;
            }
        }
    }
    Ok(Pruned {
        deleted,
        incomplete_deleted: incomplete,
        kept: manifests
            .iter()
            .filter(|m| kept.contains(&m.id))
            .map(|m| m.id.clone())
            .collect(),
        archive_deleted,
    })
}
