//! Golden bytes: one valid and one corrupt file of each kind live in `tests/fixtures/`. The
//! valid ones must decode to known values and equal what the encoders produce today (so a silent
//! format change fails loudly); the corrupt ones must be refused with the expected error.
//!
//! After a deliberate format change (with a new version and a FORMAT.md entry), regenerate with
//! `LLMCM_REGENERATE_FIXTURES=1 cargo test --test golden_fixtures`.

use std::path::PathBuf;

use llmcm::storage_format as sf;
use sf::clean::CleanShutdown;
use sf::commit::{Commit, CommitKind, Op, chain_hash, encode_commit_payload};
use sf::manifest::Manifest;
use sf::record::{RECORD_HEADER_LEN, RecordType, SealPayload, encode_record};
use sf::scan::{ScanEnd, ScanErrorKind, TailPolicy, scan_segment};
use sf::segment::SegmentHeader;
use sf::{DecodeError, FormatVersion, GENESIS_HASH};

const HISTORY: [u8; 16] = *b"golden-history-1";
const T0: u64 = 1_795_731_300_000_000; // 2026-11-26T22:15:00Z

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Compares with (or, when regenerating, writes) a checked-in fixture.
fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = fixture_path(name);
    if std::env::var_os("LLMCM_REGENERATE_FIXTURES").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        stored, bytes,
        "{name}: the encoder no longer produces the golden bytes"
    );
    stored
}

fn commits() -> Vec<Commit> {
    let c = |revision: u64, ops: Vec<Op>| Commit {
        revision,
        timestamp_us: T0 + revision,
        kind: CommitKind::Change,
        actor: "release-bot".into(),
        reason: format!("golden {revision}"),
        detail: Vec::new(),
        ops,
    };
    vec![
        c(
            1,
            vec![Op::Put {
                key: "prod/chatbot/model".into(),
                value: br#"{"model":"m1"}"#.to_vec(),
            }],
        ),
        c(
            2,
            vec![Op::Put {
                key: "prod/chatbot/temperature".into(),
                value: b"0.7".to_vec(),
            }],
        ),
        c(
            3,
            vec![Op::Delete {
                key: "prod/chatbot/model".into(),
            }],
        ),
    ]
}

/// A segment with the golden commits, each in its own batch; sealed if asked.
fn segment(sealed: bool) -> Vec<u8> {
    let header = SegmentHeader {
        version: FormatVersion::CURRENT,
        history_id: HISTORY,
        segment_seq: 1,
        first_revision: 1,
        prev_hash: GENESIS_HASH,
        prev_timestamp_us: 0,
        created_unix_us: T0,
    };
    let mut bytes = header.encode().to_vec();
    let mut prev = GENESIS_HASH;
    for commit in commits() {
        let (payload, hash) = encode_commit_payload(&commit, &prev).unwrap();
        encode_record(
            &mut bytes,
            RecordType::Commit,
            commit.revision,
            commit.revision,
            &payload,
        );
        prev = hash;
    }
    if sealed {
        let data = &bytes[sf::segment::SEGMENT_HEADER_LEN..];
        let seal = SealPayload {
            first_revision: 1,
            last_revision: 3,
            commit_count: 3,
            last_timestamp_us: T0 + 3,
            last_hash: prev,
            data_bytes: data.len() as u64,
            data_crc: sf::crc32(data),
            sealed_unix_us: T0 + 10,
        };
        bytes.extend_from_slice(&seal.encode_record());
    }
    bytes
}

#[test]
fn commit_canonical_bytes_and_chain_hash() {
    let commit = &commits()[0];
    let canonical = golden("commit-1.canonical", &commit.encode_canonical());
    assert_eq!(Commit::decode_canonical(&canonical).unwrap(), *commit);
    let hash = chain_hash(&GENESIS_HASH, &canonical);
    // Pinned: the chain of every existing store depends on these bytes.
    let expected = golden("commit-1.sha256", sf::hex(&hash).as_bytes());
    assert_eq!(sf::hex(&hash).as_bytes(), expected.as_slice());
    let mut corrupt = canonical.clone();
    corrupt[1] = 9; // unknown kind
    golden("commit-1.corrupt", &corrupt);
    assert!(matches!(
        Commit::decode_canonical(&corrupt),
        Err(DecodeError::InvalidField {
            field: "commit.kind",
            ..
        })
    ));
}

#[test]
fn sealed_segment_valid_and_corrupt() {
    let bytes = golden("segment-sealed.valid", &segment(true));
    let mut revisions = Vec::new();
    let outcome = scan_segment(&bytes, TailPolicy::Strict, &mut |_, p| {
        revisions.push(p.commit.revision)
    })
    .unwrap();
    assert_eq!(revisions, [1, 2, 3]);
    assert!(matches!(outcome.end, ScanEnd::Sealed(seal) if seal.last_revision == 3));
    assert_eq!(outcome.header.history_id, HISTORY);

    let mut corrupt = bytes.clone();
    let at = sf::segment::SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 4;
    corrupt[at] ^= 0x01; // inside revision 1's payload
    let corrupt = golden("segment-sealed.corrupt", &corrupt);
    let err = scan_segment(&corrupt, TailPolicy::Strict, &mut |_, _| {}).unwrap_err();
    assert_eq!(err.offset, sf::segment::SEGMENT_HEADER_LEN as u64);
    assert_eq!(err.revision, 1);
    assert!(matches!(
        err.kind,
        ScanErrorKind::BadRecord(DecodeError::ChecksumMismatch { .. })
    ));
}

#[test]
fn active_segment_valid_and_torn() {
    let bytes = golden("segment-active.valid", &segment(false));
    let outcome = scan_segment(&bytes, TailPolicy::AllowTornTail, &mut |_, _| {}).unwrap();
    assert_eq!(outcome.end, ScanEnd::Open);
    assert_eq!(outcome.last_revision, 3);

    let torn = golden("segment-active.torn", &bytes[..bytes.len() - 7]);
    let outcome = scan_segment(&torn, TailPolicy::AllowTornTail, &mut |_, _| {}).unwrap();
    assert_eq!(outcome.last_revision, 2);
    assert!(matches!(outcome.end, ScanEnd::TornTail { bytes, .. } if bytes > 0));
    assert!(scan_segment(&torn, TailPolicy::Strict, &mut |_, _| {}).is_err());
}

#[test]
fn manifest_valid_and_corrupt() {
    let manifest = Manifest {
        version: FormatVersion::CURRENT,
        history_id: HISTORY,
        generation: 1,
        created_unix_us: T0,
        first_live_segment_seq: 1,
        horizon_revision: 0,
        horizon_hash: GENESIS_HASH,
        horizon_timestamp_us: 0,
        base_image_seq: 0,
    };
    let bytes = golden("manifest.valid", &manifest.encode());
    assert_eq!(Manifest::decode(&bytes).unwrap(), manifest);
    let mut corrupt = bytes.clone();
    corrupt[40] ^= 0xff;
    let corrupt = golden("manifest.corrupt", &corrupt);
    assert!(matches!(
        Manifest::decode(&corrupt),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
}

#[test]
fn clean_marker_valid_and_corrupt() {
    let active = segment(false);
    let marker = CleanShutdown {
        version: FormatVersion::CURRENT,
        history_id: HISTORY,
        active_segment_seq: 1,
        active_segment_len: active.len() as u64,
        last_revision: 3,
        last_timestamp_us: T0 + 3,
        last_hash: scan_segment(&active, TailPolicy::Strict, &mut |_, _| {})
            .unwrap()
            .last_hash,
        data_crc: sf::crc32(&active[sf::segment::SEGMENT_HEADER_LEN..]),
    };
    let bytes = golden("clean.valid", &marker.encode());
    assert_eq!(CleanShutdown::decode(&bytes).unwrap(), marker);
    let mut corrupt = bytes.clone();
    corrupt[0] = b'X';
    let corrupt = golden("clean.corrupt", &corrupt);
    assert!(matches!(
        CleanShutdown::decode(&corrupt),
        Err(DecodeError::BadMagic { .. })
    ));
}

/// The image of the golden commits' state at revision 2 (two keys), as the store writes it
/// (zstd blocks). Compared by content, not bytes: the zstd library may compress the same input
/// differently in a later release without any change to the format.
#[test]
fn image_valid_and_corrupt() {
    use sf::image::{ImageEncoder, ImageEntry, ImageHeader, ImageKind, decode_image};
    let values: [(&str, &[u8]); 2] = [
        ("prod/chatbot/model", br#"{"model":"m1"}"#),
        ("prod/chatbot/temperature", b"0.7"),
    ];
    let header = ImageHeader {
        version: FormatVersion::CURRENT,
        history_id: HISTORY,
        revision: 2,
        timestamp_us: T0 + 2,
        hash: [0x5a; 32],
        created_unix_us: T0 + 10,
        kind: ImageKind::Snapshot,
    };
    let path = fixture_path("image.valid");
    if std::env::var_os("LLMCM_REGENERATE_FIXTURES").is_some() {
        let (mut encoder, mut out) =
            ImageEncoder::new(header, 1 << 20, Box::new(llmcm::image::compress));
        for (i, (key, value)) in values.iter().enumerate() {
            let revision = i as u64 + 1;
            assert!(
                encoder
                    .push(&ImageEntry {
                        key,
                        revision,
                        create_revision: revision,
                        version: 1,
                        timestamp_us: T0 + revision,
                        value,
                    })
                    .is_none()
            );
        }
        out.extend_from_slice(&encoder.finish().0);
        std::fs::write(&path, &out).unwrap();
        let mut corrupt = out;
        corrupt[128 + 24 + 3] ^= 0x01;
        std::fs::write(fixture_path("image.corrupt"), corrupt).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let mut seen = Vec::new();
    let (got, footer) = decode_image(&bytes, &llmcm::image::decompress, &mut |e| {
        seen.push((e.key.to_owned(), e.value.to_vec(), e.revision))
    })
    .unwrap();
    assert_eq!(got, header);
    assert_eq!((footer.block_count, footer.key_count), (1, 2));
    let want: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, (k, v))| (k.to_string(), v.to_vec(), i as u64 + 1))
        .collect();
    assert_eq!(seen, want);
    // A flipped bit inside the compressed block: the body's SHA-256 no longer matches.
    let corrupt = std::fs::read(fixture_path("image.corrupt")).unwrap();
    assert_eq!(corrupt.len(), bytes.len());
    assert!(matches!(
        decode_image(&corrupt, &llmcm::image::decompress, &mut |_| {}),
        Err(DecodeError::InvalidField {
            field: "image_footer.sha256",
            ..
        })
    ));
}
