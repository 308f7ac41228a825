//! `llmcm verify`: an offline check of every file of a data directory. It takes no lock and
//! changes nothing, so it can run beside a live server (whose active segment may then end in an
//! append in progress: reported as a note, not a problem).

use std::path::{Path, PathBuf};

use storage_format::clean::{CLEAN_FILE, CleanShutdown};
use storage_format::manifest::{MANIFEST_FILE, Manifest};
use storage_format::scan::{ScanEnd, TailPolicy, scan_segment};
use storage_format::segment::{
    SEGMENT_DIR, TEMP_SUFFIX, parse_segment_file_name, segment_file_name,
};
use storage_format::{Hash, hex};

use storage_format::image::{
    CORRUPT_SUFFIX, SNAPSHOT_DIR, base_image_file_name, parse_base_image_file_name,
    parse_snapshot_file_name,
};

use super::recovery::{Continuation, check_header};
use crate::fs::Fs;
use crate::image::read_image;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    /// Expected after a crash or while a server runs; not damage.
    Note,
    /// Damage or an inconsistency: `verify` exits non-zero.
    Problem,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Path relative to the data directory.
    pub file: String,
    pub message: String,
}

/// What `verify_dir` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub findings: Vec<Finding>,
    pub history_id: Option<String>,
    pub commits: u64,
    pub first_revision: Option<u64>,
    pub last_revision: Option<u64>,
    pub head_hash: Option<Hash>,
}

impl VerifyReport {
    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
            .count()
    }

    fn add(&mut self, severity: Severity, file: &str, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            file: file.to_owned(),
            message: message.into(),
        });
    }
}

/// Checks the base image the MANIFEST names (whole, and that it holds the MANIFEST's horizon) and
/// every snapshot (whole, and that it belongs to this history).
fn verify_images(dir: &Path, manifest: &Manifest, report: &mut VerifyReport) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    for name in names.iter().filter(|n| n.starts_with("base-")) {
        match parse_base_image_file_name(name) {
            Some(seq) if seq == manifest.base_image_seq => {}
            _ => report.add(
                Severity::Note,
                name,
                "base image the MANIFEST does not name (left by an interrupted compaction); the \
                 next open removes it",
            ),
        }
    }
    if manifest.base_image_seq != 0 {
        let name = base_image_file_name(manifest.base_image_seq);
        match read_image(&dir.join(&name)) {
            Ok(image) => {
                let h = image.header;
                if h.revision == manifest.horizon_revision
                    && h.hash == manifest.horizon_hash
                    && h.timestamp_us == manifest.horizon_timestamp_us
                    && h.history_id == manifest.history_id
                {
                    report.add(
                        Severity::Ok,
                        &name,
                        format!(
                            "base image: state at the horizon, revision {}, {} keys",
                            h.revision, image.footer.key_count
                        ),
                    );
                } else {
                    report.add(
                        Severity::Problem,
                        &name,
                        format!(
                            "holds revision {} of history {}, not the MANIFEST's horizon {}",
                            h.revision,
                            hex(&h.history_id),
                            manifest.horizon_revision
                        ),
                    );
                }
            }
            Err(e) => report.add(Severity::Problem, &name, e.to_string()),
        }
    }
    let snap_dir = dir.join(SNAPSHOT_DIR);
    let Ok(entries) = std::fs::read_dir(&snap_dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let rel = format!("{SNAPSHOT_DIR}/{name}");
        let Some(revision) = parse_snapshot_file_name(&name) else {
            report.add(
                Severity::Note,
                &rel,
                if name.ends_with(CORRUPT_SUFFIX) {
                    "a damaged snapshot set aside by the server"
                } else {
                    "not a snapshot (temporary or unknown); ignored"
                },
            );
            continue;
        };
        match read_image(&snap_dir.join(&name)) {
            Ok(image)
                if image.header.revision == revision
                    && image.header.history_id == manifest.history_id =>
            {
                report.add(
                    Severity::Ok,
                    &rel,
                    format!(
                        "snapshot at revision {revision}, {} keys",
                        image.footer.key_count
                    ),
                )
            }
            Ok(_) => report.add(
                Severity::Problem,
                &rel,
                "the header names another revision or history than the file",
            ),
            Err(e) => report.add(Severity::Problem, &rel, e.to_string()),
        }
    }
}

/// Checks the manifest, every segment record by record (CRCs, dense revisions, increasing
/// timestamps, the hash chain across all segments, seals) and the clean-shutdown marker.
pub fn verify_dir(fs: &dyn Fs, dir: &Path) -> VerifyReport {
    let mut report = VerifyReport::default();
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = match fs
        .read(&manifest_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            Manifest::decode(&bytes).map_err(|e| format!("corruption at offset 0: {e}"))
        }) {
        Ok(m) => m,
        Err(message) => {
            report.add(Severity::Problem, MANIFEST_FILE, message);
            return report;
        }
    };
    report.history_id = Some(hex(&manifest.history_id));
    report.add(
        Severity::Ok,
        MANIFEST_FILE,
        format!(
            "history {}, generation {}, horizon {}",
            hex(&manifest.history_id),
            manifest.generation,
            manifest.horizon_revision
        ),
    );
    verify_images(dir, &manifest, &mut report);
    let log_dir = dir.join(SEGMENT_DIR);
    let mut seqs = Vec::new();
    match fs.list_dir(&log_dir) {
        Ok(names) => {
            for name in names {
                let rel = format!("{SEGMENT_DIR}/{name}");
                match parse_segment_file_name(&name) {
                    Some(seq) if seq >= manifest.first_live_segment_seq => seqs.push(seq),
                    Some(_) => report.add(
                        Severity::Note,
                        &rel,
                        "below the first live segment; the next open removes it",
                    ),
                    None if name.ends_with(TEMP_SUFFIX) => report.add(
                        Severity::Note,
                        &rel,
                        "temporary file left by a crash; the next open removes it",
                    ),
                    None => report.add(Severity::Note, &rel, "unknown file, ignored"),
                }
            }
        }
        Err(e) => {
            report.add(Severity::Problem, SEGMENT_DIR, format!("cannot list: {e}"));
            return report;
        }
    }
    seqs.sort_unstable();
    if seqs.is_empty() {
        report.add(Severity::Problem, SEGMENT_DIR, "no live segment");
        return report;
    }
    let mut continuation = Some(Continuation {
        next_revision: manifest.horizon_revision + 1,
        prev_hash: manifest.horizon_hash,
        prev_timestamp_us: manifest.horizon_timestamp_us,
        gap_allowed: true,
    });
    let mut expected_seq = manifest.first_live_segment_seq;
    let last_seq = *seqs.last().expect("non-empty");
    let mut active_summary = None;
    for seq in seqs {
        let name = segment_file_name(seq);
        let rel = format!("{SEGMENT_DIR}/{name}");
        if seq != expected_seq {
            report.add(
                Severity::Problem,
                &format!("{SEGMENT_DIR}/{}", segment_file_name(expected_seq)),
                format!("missing: segments {expected_seq}..{seq} are absent"),
            );
            continuation = None;
        }
        expected_seq = seq + 1;
        let path: PathBuf = log_dir.join(&name);
        let bytes = match fs.read(&path) {
            Ok(b) => b,
            Err(e) => {
                report.add(Severity::Problem, &rel, format!("cannot read: {e}"));
                continuation = None;
                continue;
            }
        };
        let is_last = seq == last_seq;
        let policy = if is_last {
            TailPolicy::AllowTornTail
        } else {
            TailPolicy::Strict
        };
        let outcome = match scan_segment(&bytes, policy, &mut |_, _| {}) {
            Ok(o) => o,
            Err(e) => {
                report.add(
                    Severity::Problem,
                    &rel,
                    format!(
                        "corruption at offset {} (revision {}): {}",
                        e.offset, e.revision, e.kind
                    ),
                );
                continuation = None;
                continue;
            }
        };
        if let Some(c) = &continuation
            && let Err(e) = check_header(&path, &outcome.header, &manifest, seq, c)
        {
            report.add(Severity::Problem, &rel, e.to_string());
        }
        let range = if outcome.commit_count == 0 {
            "no commits".to_owned()
        } else {
            format!(
                "revisions {} to {}, {} commits",
                outcome.header.first_revision, outcome.last_revision, outcome.commit_count
            )
        };
        match outcome.end {
            ScanEnd::Sealed(_) => report.add(Severity::Ok, &rel, format!("sealed, {range}, {} bytes", bytes.len())),
            ScanEnd::Open if is_last => report.add(Severity::Ok, &rel, format!("active, {range}, {} bytes", bytes.len())),
            ScanEnd::Open => report.add(Severity::Problem, &rel, format!("not sealed but not the last segment ({range})")),
            ScanEnd::TornTail { offset, bytes } => report.add(
                Severity::Note,
                &rel,
                format!(
                    "active, {range}; torn tail of {bytes} bytes at offset {offset} (never acknowledged: an append in progress, or a crash; the next open truncates it)"
                ),
            ),
        }
        if outcome.commit_count > 0 {
            report
                .first_revision
                .get_or_insert(outcome.header.first_revision);
            report.last_revision = Some(outcome.last_revision);
            report.head_hash = Some(outcome.last_hash);
            report.commits += outcome.commit_count;
        }
        if is_last {
            active_summary = Some((
                seq,
                bytes.len() as u64,
                outcome.last_revision,
                outcome.last_hash,
            ));
        }
        continuation = Some(Continuation {
            next_revision: outcome.last_revision + 1,
            prev_hash: outcome.last_hash,
            prev_timestamp_us: outcome.last_timestamp_us,
            gap_allowed: false,
        });
    }
    if let Ok(bytes) = fs.read(&dir.join(CLEAN_FILE)) {
        match CleanShutdown::decode(&bytes) {
            Ok(m)
                if active_summary
                    == Some((
                        m.active_segment_seq,
                        m.active_segment_len,
                        m.last_revision,
                        m.last_hash,
                    )) =>
            {
                report.add(Severity::Ok, CLEAN_FILE, "matches the active segment");
            }
            Ok(_) => report.add(
                Severity::Note,
                CLEAN_FILE,
                "does not match the active segment; the next open ignores it",
            ),
            Err(e) => report.add(
                Severity::Note,
                CLEAN_FILE,
                format!("unreadable ({e}); the next open ignores it"),
            ),
        }
    }
    report
}
