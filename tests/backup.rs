//! Backups by segment, against a directory repository and a real S3 endpoint (moto's S3 server on
//! 127.0.0.1, started here and stopped at the end; `pip install 'moto[server]'`).
//!
//! A chain full → incremental → incremental → differential → incremental over a live store is
//! restored at random revisions and compared with as-of reads of the store; every kind of damage
//! (a flipped byte in each repository file, a missing file, a missing parent, a truncated
//! manifest) fails verify naming backup and file; prune with every keep setting leaves every kept
//! backup restorable; restores go above every revision the repository knows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use llmcm::backup::{self, BackupKind, Keep, Repo};
use llmcm::storage_format::commit::Op;
use llmcm::store::restore::RestorePoint;
use llmcm::store::{CommitRequest, LogConfig};
use llmcm::store::{MaintenanceConfig, Point, Store};

mod common;
mod s3;
use common::runtime;
use s3::S3;

/// Starts moto; object_store reads the credentials from this process's environment (the same for
/// every test's server), each test passes its own endpoint.
fn start_s3() -> S3 {
    let s3 = S3::start();
    for (name, value) in s3
        .env()
        .into_iter()
        .filter(|(n, _)| *n != "AWS_ENDPOINT_URL")
    {
        // SAFETY: the same values from every test thread; read only by object_store's builder.
        unsafe { std::env::set_var(name, value) };
    }
    s3
}

fn open(dir: &Path) -> Arc<Store> {
    let log = LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    };
    Arc::new(Store::open_configured(dir, log, MaintenanceConfig::manual()).unwrap())
}

fn write(store: &Store, seed: &mut u64, commits: u64) {
    for i in 0..commits {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = *seed >> 33;
        let key = format!("app/k{}", r % 40);
        let op = if r.is_multiple_of(9) {
            Op::Delete { key }
        } else {
            Op::Put {
                key,
                value: format!(
                    "{{\"i\":{i},\"pad\":\"{}\"}}",
                    "z".repeat((r % 900) as usize)
                )
                .into_bytes(),
            }
        };
        store
            .append(CommitRequest::change("w", "", vec![op]))
            .unwrap();
    }
}

fn listing(store: &Store, point: Point) -> BTreeMap<String, (Vec<u8>, u64, u64, u64)> {
    let page = store.list("", point, None, 1000).unwrap();
    assert!(page.next.is_none());
    page.items
        .into_iter()
        .map(|v| {
            (
                v.key.to_string(),
                (
                    v.value.as_bytes().to_vec(),
                    v.revision,
                    v.create_revision,
                    v.version,
                ),
            )
        })
        .collect()
}

/// The repositories every test runs against: a directory, and S3 (moto).
fn repos(tmp: &Path, s3: &S3, name: &str) -> Vec<Repo> {
    vec![
        Repo::open(tmp.join(format!("repo-{name}")).to_str().unwrap()).unwrap(),
        Repo::open_with_endpoint(&format!("s3://backups/{name}"), Some(&s3.endpoint)).unwrap(),
    ]
}

#[test]
fn backup_chains_restore_at_any_point_and_survive_damage_and_prune() {
    let s3 = start_s3();
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    for (n, repo) in repos(tmp.path(), &s3, "chain").into_iter().enumerate() {
        let dir = tmp.path().join(format!("store-{n}"));
        let store = open(&dir);
        let mut seed = 7 + n as u64;
        let kinds = [
            BackupKind::Full,
            BackupKind::Incremental,
            BackupKind::Incremental,
            BackupKind::Differential,
            BackupKind::Incremental,
        ];
        let mut taken = Vec::new();
        for kind in kinds {
            write(&store, &mut seed, 120);
            let created = rt.block_on(backup::create(&store, &repo, kind)).unwrap();
            let m = &created.manifest;
            assert_eq!(m.kind, kind);
            assert_eq!(m.last_revision, store.log().head().revision, "{}", repo.url);
            assert!(created.files_uploaded > 0);
            taken.push(m.clone());
        }
        // Parents: incr → previous, diff → the full; sequence order recorded.
        assert_eq!(taken[1].parent.as_deref(), Some(taken[0].id.as_str()));
        assert_eq!(taken[2].parent.as_deref(), Some(taken[1].id.as_str()));
        assert_eq!(taken[3].parent.as_deref(), Some(taken[0].id.as_str()));
        assert_eq!(taken[4].parent.as_deref(), Some(taken[3].id.as_str()));
        let (catalog, incomplete) = rt.block_on(backup::catalog(&repo)).unwrap();
        assert!(incomplete.is_empty());
        assert_eq!(
            catalog.iter().map(|m| m.sequence).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        // The differential uploaded everything since the full, again.
        assert!(taken[3].bytes >= taken[1].bytes + taken[2].bytes);

        let findings = rt
            .block_on(backup::verify(
                &repo,
                None,
                true,
                &tmp.path().join("scratch"),
            ))
            .unwrap();
        assert!(findings.iter().all(|f| f.ok), "{findings:?}");

        // Restores at random revisions, from the chain the tool picks, equal as-of reads.
        let head = store.log().head().revision;
        for (i, point) in [1u64, 77, 130, 241, 300, 421, 480, 555, head]
            .iter()
            .enumerate()
        {
            let target = tmp.path().join(format!("restored-{n}-{i}"));
            let outcome = rt
                .block_on(backup::restore(
                    &repo,
                    None,
                    llmcm::store::restore::RestoreOptions::new(
                        RestorePoint::Revision(*point),
                        None,
                        0,
                        false,
                    ),
                    &target,
                    &mut |_| {},
                ))
                .unwrap();
            assert!(
                outcome.restore_revision > head,
                "above every known revision"
            );
            let restored = Store::open(&target, LogConfig::default()).unwrap();
            assert_eq!(
                listing(&restored, Point::Latest),
                listing(&store, Point::Revision(*point)),
                "{} at {point}",
                repo.url
            );
        }
        // Partial.
        let target = tmp.path().join(format!("partial-{n}"));
        rt.block_on(backup::restore(
            &repo,
            Some(&taken[2].id),
            llmcm::store::restore::RestoreOptions::new(
                RestorePoint::Latest,
                Some("app/k1".into()),
                0,
                false,
            ),
            &target,
            &mut |_| {},
        ))
        .unwrap();
        let restored = Store::open(&target, LogConfig::default()).unwrap();
        let want: BTreeMap<_, _> = listing(&store, Point::Revision(taken[2].last_revision))
            .into_iter()
            .filter(|(k, _)| k.starts_with("app/k1"))
            .collect();
        assert_eq!(listing(&restored, Point::Latest), want);
        // A non-empty target is refused.
        assert!(
            rt.block_on(backup::restore(
                &repo,
                None,
                llmcm::store::restore::RestoreOptions::new(RestorePoint::Latest, None, 0, false,),
                &target,
                &mut |_| {},
            ))
            .is_err()
        );

        // Prune: keep the newest full (the only one) keeps everything.
        let pruned = rt
            .block_on(backup::prune(&repo, Keep::Full(1), false))
            .unwrap();
        assert!(pruned.deleted.is_empty());
        // A second full; keep-full 1 then drops the first chain, and the rest restores.
        write(&store, &mut seed, 50);
        let full2 = rt
            .block_on(backup::create(&store, &repo, BackupKind::Full))
            .unwrap()
            .manifest;
        let dry = rt
            .block_on(backup::prune(&repo, Keep::Full(1), true))
            .unwrap();
        assert_eq!(dry.deleted.len(), 5);
        assert_eq!(
            rt.block_on(backup::catalog(&repo)).unwrap().0.len(),
            6,
            "dry run"
        );
        // Keep-days 1 keeps everything made today.
        let kept = rt
            .block_on(backup::prune(&repo, Keep::Days(1), false))
            .unwrap();
        assert!(kept.deleted.is_empty());
        let pruned = rt
            .block_on(backup::prune(&repo, Keep::Full(1), false))
            .unwrap();
        assert_eq!(pruned.kept, vec![full2.id.clone()]);
        let target = tmp.path().join(format!("after-prune-{n}"));
        rt.block_on(backup::restore(
            &repo,
            None,
            llmcm::store::restore::RestoreOptions::new(RestorePoint::Latest, None, 0, false),
            &target,
            &mut |_| {},
        ))
        .unwrap();
        let findings = rt
            .block_on(backup::verify(
                &repo,
                None,
                false,
                &tmp.path().join("scratch"),
            ))
            .unwrap();
        assert!(findings.iter().all(|f| f.ok), "{findings:?}");
    }
}

/// Flips one byte of `object` in the repository.
fn corrupt(rt: &tokio::runtime::Runtime, repo: &Repo, object: &str) -> Vec<u8> {
    let original = rt.block_on(repo.get(object)).unwrap();
    let mut bytes = original.clone();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    rt.block_on(repo.put(object, bytes)).unwrap();
    original
}

#[test]
fn verify_names_every_damaged_file() {
    let s3 = start_s3();
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    for (n, repo) in repos(tmp.path(), &s3, "damage").into_iter().enumerate() {
        let store = open(&tmp.path().join(format!("store-{n}")));
        let mut seed = 3;
        write(&store, &mut seed, 150);
        store.snapshot().unwrap();
        let full = rt
            .block_on(backup::create(&store, &repo, BackupKind::Full))
            .unwrap()
            .manifest;
        write(&store, &mut seed, 80);
        let incr = rt
            .block_on(backup::create(&store, &repo, BackupKind::Incremental))
            .unwrap()
            .manifest;
        let scratch = tmp.path().join("scratch");
        let first_problem = |rt: &tokio::runtime::Runtime| {
            rt.block_on(backup::verify(&repo, None, false, &scratch))
                .map(|f| f.into_iter().find(|f| !f.ok))
        };
        // Every file of both backups, one at a time: a flipped byte is found and named.
        for m in [&full, &incr] {
            for f in m.files.iter().filter(|f| f.backup == m.id) {
                let object = format!("backups/{}/{}", f.backup, f.name);
                let original = corrupt(&rt, &repo, &object);
                let problem = first_problem(&rt).unwrap().expect("damage found");
                assert_eq!(
                    (problem.backup.as_str(), problem.file.as_str()),
                    (m.id.as_str(), f.name.as_str())
                );
                assert!(problem.message.contains("SHA-256"), "{}", problem.message);
                rt.block_on(repo.put(&object, original)).unwrap();
            }
        }
        // A missing file.
        let f = &incr.files.iter().find(|f| f.backup == incr.id).unwrap();
        let object = format!("backups/{}/{}", incr.id, f.name);
        let original = rt.block_on(repo.get(&object)).unwrap();
        rt.block_on(repo.delete(&object)).unwrap();
        let problem = first_problem(&rt).unwrap().unwrap();
        assert_eq!(problem.file, f.name);
        assert!(
            problem.message.contains("cannot be read"),
            "{}",
            problem.message
        );
        rt.block_on(repo.put(&object, original)).unwrap();
        // A truncated manifest: the catalog refuses it, naming the backup.
        let manifest = format!("backups/{}/manifest.json", incr.id);
        let original = rt.block_on(repo.get(&manifest)).unwrap();
        rt.block_on(repo.put(&manifest, original[..original.len() / 2].to_vec()))
            .unwrap();
        let error = first_problem(&rt).unwrap_err().to_string();
        assert!(
            error.contains(&incr.id) && error.contains("manifest.json"),
            "{error}"
        );
        rt.block_on(repo.put(&manifest, original)).unwrap();
        // A missing parent (its manifest gone: the backup looks incomplete).
        let parent_manifest = format!("backups/{}/manifest.json", full.id);
        rt.block_on(repo.delete(&parent_manifest)).unwrap();
        let problem = first_problem(&rt).unwrap().unwrap();
        assert_eq!(problem.backup, incr.id);
        assert!(problem.message.contains("missing"), "{}", problem.message);
    }
}

#[test]
fn incremental_and_differential_need_a_full_of_the_same_history() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let repo = Repo::open(tmp.path().join("repo").to_str().unwrap()).unwrap();
    let store = open(&tmp.path().join("store"));
    write(&store, &mut 1, 30);
    for kind in [BackupKind::Incremental, BackupKind::Differential] {
        let error = rt
            .block_on(backup::create(&store, &repo, kind))
            .unwrap_err();
        assert!(error.to_string().contains("full"), "{error}");
    }
    // An empty store has nothing to back up.
    let empty = open(&tmp.path().join("empty"));
    assert!(
        rt.block_on(backup::create(&empty, &repo, BackupKind::Full))
            .is_err()
    );
    // The lock: a second holder is refused while the first holds it.
    let lock = rt.block_on(repo.lock("test")).unwrap();
    let error = rt
        .block_on(backup::create(&store, &repo, BackupKind::Full))
        .unwrap_err();
    assert!(error.to_string().contains("locked"), "{error}");
    rt.block_on(lock.release()).unwrap();
    rt.block_on(backup::create(&store, &repo, BackupKind::Full))
        .unwrap();
    let _: PathBuf = tmp.path().to_path_buf();
}

/// Prune also drops archived segments no kept backup can use (those ending at or before the
/// oldest kept backup's last revision, record first), keeps the rest, and every point from the
/// kept full to the newest archived segment still restores; a segment left without its record
/// below them goes too.
#[test]
fn prune_drops_archived_segments_no_kept_backup_needs() {
    let s3 = start_s3();
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    for (n, repo) in repos(tmp.path(), &s3, "archive-prune")
        .into_iter()
        .enumerate()
    {
        let store = open(&tmp.path().join(format!("store-{n}")));
        let history = llmcm::storage_format::hex(&store.log().history_id());
        let mut seed = 11 + n as u64;
        let mut known = BTreeMap::new();
        let ship = |store: &Arc<Store>, known: &mut BTreeMap<_, _>| {
            store.log().roll().unwrap();
            rt.block_on(backup::archive::ship_new(store, &repo, known, 0))
                .unwrap();
        };
        write(&store, &mut seed, 150);
        ship(&store, &mut known);
        let full1 = rt
            .block_on(backup::create(&store, &repo, BackupKind::Full))
            .unwrap()
            .manifest;
        write(&store, &mut seed, 150);
        ship(&store, &mut known);
        let full2 = rt
            .block_on(backup::create(&store, &repo, BackupKind::Full))
            .unwrap()
            .manifest;
        write(&store, &mut seed, 150);
        ship(&store, &mut known);
        let archived_before = rt
            .block_on(backup::archive::archived(&repo, &history))
            .unwrap();
        assert!(archived_before.len() >= 3);
        // An orphan below everything: a segment object without its record.
        let (first_seq, first) = archived_before.iter().next().unwrap();
        let first_object = backup::archive::object(&history, &first.name);
        rt.block_on(repo.delete(&backup::archive::record_object(&first_object)))
            .unwrap();

        let dry = rt
            .block_on(backup::prune(&repo, Keep::Full(1), true))
            .unwrap();
        assert_eq!(dry.deleted, vec![full1.id.clone()]);
        let pruned = rt
            .block_on(backup::prune(&repo, Keep::Full(1), false))
            .unwrap();
        assert_eq!(pruned.archive_deleted, dry.archive_deleted);
        let after = rt
            .block_on(backup::archive::archived(&repo, &history))
            .unwrap();
        assert!(!pruned.archive_deleted.is_empty());
        for r in archived_before.values().filter(|r| r.seq != *first_seq) {
            let gone = pruned
                .archive_deleted
                .contains(&backup::archive::object(&history, &r.name));
            assert_eq!(gone, r.last_revision <= full2.last_revision, "{}", r.name);
            assert_eq!(after.contains_key(&r.seq), !gone);
        }
        // The orphaned first segment (its record was deleted above) is gone too.
        let objects = rt
            .block_on(repo.list(&format!("archive/{history}/log")))
            .unwrap();
        assert!(!objects.contains(&first_object), "{objects:?}");
        // Every point from the kept full to the archive's end restores and equals the store.
        let head = store.log().head().revision;
        for (i, point) in [full2.last_revision, (full2.last_revision + head) / 2, head]
            .into_iter()
            .enumerate()
        {
            let target = tmp.path().join(format!("archive-restored-{n}-{i}"));
            rt.block_on(backup::restore(
                &repo,
                None,
                llmcm::store::restore::RestoreOptions::new(
                    RestorePoint::Revision(point),
                    None,
                    0,
                    false,
                ),
                &target,
                &mut |_| {},
            ))
            .unwrap();
            let restored = Store::open(&target, LogConfig::default()).unwrap();
            assert_eq!(
                listing(&restored, Point::Latest),
                listing(&store, Point::Revision(point)),
                "{} at {point}",
                repo.url
            );
        }
        let findings = rt
            .block_on(backup::verify(
                &repo,
                None,
                false,
                &tmp.path().join("scratch"),
            ))
            .unwrap();
        assert!(findings.iter().all(|f| f.ok), "{findings:?}");
    }
}

/// A backup's roll defers the index checkpoint (the sealed segment's entries stay in memory
/// until the next roll): reads stay right before and after later rolls, after a clean reopen,
/// and equal those of an index rebuilt from the log.
#[test]
fn deferred_checkpoint_at_backup_rolls_keeps_reads_right() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let repo = Repo::open(tmp.path().join("repo").to_str().unwrap()).unwrap();
    let dir = tmp.path().join("store");
    let mut seed = 99;
    let mut snapshots = Vec::new();
    {
        let store = open(&dir);
        for kind in [
            BackupKind::Full,
            BackupKind::Incremental,
            BackupKind::Incremental,
        ] {
            write(&store, &mut seed, 40); // less than a segment: the backup's roll seals it
            rt.block_on(backup::create(&store, &repo, kind)).unwrap();
            write(&store, &mut seed, 5);
        }
        // At most one roll defers: the second backup in a row (no natural roll in between)
        // checkpoints, and a natural roll pays any debt.
        assert!(store.index_checkpoint_owed_since_us().is_some());
        let checkpointed = store.index_checkpointed_through();
        rt.block_on(backup::create(&store, &repo, BackupKind::Incremental))
            .unwrap();
        assert!(store.index_checkpoint_owed_since_us().is_none());
        assert!(store.index_checkpointed_through() > checkpointed);
        write(&store, &mut seed, 5);
        rt.block_on(backup::create(&store, &repo, BackupKind::Incremental))
            .unwrap();
        assert!(store.index_checkpoint_owed_since_us().is_some());
        write(&store, &mut seed, 200); // natural rolls, with checkpoints
        assert!(store.index_checkpoint_owed_since_us().is_none());
        let head = store.log().head().revision;
        for point in (1..=head).step_by(7) {
            snapshots.push((point, listing(&store, Point::Revision(point))));
        }
        store.close().unwrap();
    }
    let reopened = open(&dir);
    for (point, want) in &snapshots {
        assert_eq!(
            &listing(&reopened, Point::Revision(*point)),
            want,
            "reopened at {point}"
        );
    }
    reopened.close().unwrap();
    drop(reopened);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let rebuilt = open(&dir);
    for (point, want) in &snapshots {
        assert_eq!(
            &listing(&rebuilt, Point::Revision(*point)),
            want,
            "rebuilt at {point}"
        );
    }
    // A debt at close, with nothing written since the backup: close pays it (the active segment
    // is empty, so the checkpoint is written directly), and the reopened store reads the same.
    write(&rebuilt, &mut seed, 10);
    rt.block_on(backup::create(&rebuilt, &repo, BackupKind::Incremental))
        .unwrap();
    assert!(rebuilt.index_checkpoint_owed_since_us().is_some());
    let head = rebuilt.log().head().revision;
    let want = listing(&rebuilt, Point::Latest);
    rebuilt.close().unwrap();
    assert_eq!(rebuilt.index_checkpointed_through(), head);
    drop(rebuilt);
    let reopened = open(&dir);
    assert_eq!(listing(&reopened, Point::Latest), want);
}
