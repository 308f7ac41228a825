//! FORMAT.md and the code agree: every field table marked `<!-- table: NAME -->` is parsed and
//! compared, row by row (field, offset, size), with the `storage-format` crate's constants, and the
//! magic bytes and limits quoted in the text are the code's.

use std::collections::BTreeMap;

use llmcm::storage_format as sf;
use sf::{clean::*, commit::*, manifest::*, record::*, segment::*};

/// Table name → rows of (offset, size, field) as written in FORMAT.md.
fn tables() -> BTreeMap<String, Vec<(String, String, String)>> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/storage-format/FORMAT.md"
    ))
    .expect("FORMAT.md");
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("<!-- table: ")
            .and_then(|l| l.strip_suffix(" -->"))
        {
            current = Some(name.to_owned());
            out.insert(name.to_owned(), Vec::new());
            continue;
        }
        let Some(name) = &current else { continue };
        if !line.starts_with('|') {
            if !out[name].is_empty() {
                current = None;
            }
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        if cells[0] == "offset" || cells[0].starts_with("---") {
            continue;
        }
        out.get_mut(name)
            .unwrap()
            .push((cells[0].clone(), cells[1].clone(), cells[2].clone()));
    }
    out
}

fn expect(table: &str, expected: &[(&str, usize, usize)]) {
    let tables = tables();
    let rows = tables
        .get(table)
        .unwrap_or_else(|| panic!("FORMAT.md has no table {table}"));
    assert!(rows.len() >= expected.len(), "{table}: {} rows", rows.len());
    for ((offset, size, field), (name, want_offset, want_size)) in rows.iter().zip(expected) {
        assert_eq!(field, name, "{table}: field order");
        assert_eq!(offset, &want_offset.to_string(), "{table}.{name}: offset");
        assert_eq!(size, &want_size.to_string(), "{table}.{name}: size");
    }
}

#[test]
fn manifest_table_matches_the_code() {
    expect(
        "manifest",
        &[
            ("magic", 0, sf::MAGIC_LEN),
            ("version", MANIFEST_VERSION_OFFSET, sf::VERSION_LEN),
            ("len", MANIFEST_LEN_OFFSET, 4),
            ("history_id", MANIFEST_HISTORY_ID_OFFSET, sf::HISTORY_ID_LEN),
            ("generation", MANIFEST_GENERATION_OFFSET, 8),
            ("created_unix_us", MANIFEST_CREATED_OFFSET, 8),
            ("first_live_segment_seq", MANIFEST_FIRST_SEGMENT_OFFSET, 8),
            ("horizon_revision", MANIFEST_HORIZON_REVISION_OFFSET, 8),
            ("horizon_hash", MANIFEST_HORIZON_HASH_OFFSET, sf::HASH_LEN),
            ("horizon_timestamp_us", MANIFEST_HORIZON_TIMESTAMP_OFFSET, 8),
            ("base_image_seq", MANIFEST_BASE_IMAGE_OFFSET, 8),
            (
                "reserved",
                MANIFEST_RESERVED_OFFSET,
                MANIFEST_CRC_OFFSET - MANIFEST_RESERVED_OFFSET,
            ),
            ("crc", MANIFEST_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(MANIFEST_LEN, 128);
}

#[test]
fn segment_header_table_matches_the_code() {
    expect(
        "segment_header",
        &[
            ("magic", 0, sf::MAGIC_LEN),
            ("version", SEGMENT_VERSION_OFFSET, sf::VERSION_LEN),
            ("header_len", SEGMENT_HEADER_LEN_OFFSET, 4),
            ("history_id", SEGMENT_HISTORY_ID_OFFSET, sf::HISTORY_ID_LEN),
            ("segment_seq", SEGMENT_SEQ_OFFSET, 8),
            ("first_revision", SEGMENT_FIRST_REVISION_OFFSET, 8),
            ("prev_hash", SEGMENT_PREV_HASH_OFFSET, sf::HASH_LEN),
            ("prev_timestamp_us", SEGMENT_PREV_TIMESTAMP_OFFSET, 8),
            ("created_unix_us", SEGMENT_CREATED_OFFSET, 8),
            (
                "reserved",
                SEGMENT_RESERVED_OFFSET,
                SEGMENT_HEADER_CRC_OFFSET - SEGMENT_RESERVED_OFFSET,
            ),
            ("header_crc", SEGMENT_HEADER_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(SEGMENT_HEADER_LEN, 128);
}

#[test]
fn record_header_table_matches_the_code() {
    expect(
        "record_header",
        &[
            ("payload_len", RECORD_PAYLOAD_LEN_OFFSET, 4),
            ("record_type", RECORD_TYPE_OFFSET, 1),
            ("flags", RECORD_FLAGS_OFFSET, 1),
            ("reserved", RECORD_RESERVED_OFFSET, 2),
            ("revision", RECORD_REVISION_OFFSET, 8),
            ("batch_first_revision", RECORD_BATCH_FIRST_OFFSET, 8),
            ("payload_crc", RECORD_PAYLOAD_CRC_OFFSET, 4),
            ("header_crc", RECORD_HEADER_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(RECORD_HEADER_LEN, 32);
    assert_eq!(RecordType::Commit.to_u8(), 1);
    assert_eq!(RecordType::Seal.to_u8(), 2);
    assert_eq!(sf::RECORD_PAYLOAD_BYTES_MAX, 67_108_864);
}

#[test]
fn seal_table_matches_the_code() {
    expect(
        "seal",
        &[
            ("first_revision", SEAL_FIRST_REVISION_OFFSET, 8),
            ("last_revision", SEAL_LAST_REVISION_OFFSET, 8),
            ("commit_count", SEAL_COMMIT_COUNT_OFFSET, 8),
            ("last_timestamp_us", SEAL_LAST_TIMESTAMP_OFFSET, 8),
            ("last_hash", SEAL_LAST_HASH_OFFSET, sf::HASH_LEN),
            ("data_bytes", SEAL_DATA_BYTES_OFFSET, 8),
            ("data_crc", SEAL_DATA_CRC_OFFSET, 4),
            ("reserved", SEAL_RESERVED_OFFSET, 4),
            ("sealed_unix_us", SEAL_SEALED_AT_OFFSET, 8),
            ("reserved", SEAL_RESERVED2_OFFSET, 8),
        ],
    );
    assert_eq!(SEAL_PAYLOAD_LEN, 96);
    assert_eq!(SEAL_RECORD_LEN, 128);
}

#[test]
fn clean_table_matches_the_code() {
    expect(
        "clean",
        &[
            ("magic", 0, sf::MAGIC_LEN),
            ("version", CLEAN_VERSION_OFFSET, sf::VERSION_LEN),
            ("len", CLEAN_LEN_OFFSET, 4),
            ("history_id", CLEAN_HISTORY_ID_OFFSET, sf::HISTORY_ID_LEN),
            ("active_segment_seq", CLEAN_SEGMENT_SEQ_OFFSET, 8),
            ("active_segment_len", CLEAN_SEGMENT_LEN_OFFSET, 8),
            ("last_revision", CLEAN_LAST_REVISION_OFFSET, 8),
            ("last_timestamp_us", CLEAN_LAST_TIMESTAMP_OFFSET, 8),
            ("last_hash", CLEAN_LAST_HASH_OFFSET, sf::HASH_LEN),
            ("data_crc", CLEAN_DATA_CRC_OFFSET, 4),
            (
                "reserved",
                CLEAN_RESERVED_OFFSET,
                CLEAN_CRC_OFFSET - CLEAN_RESERVED_OFFSET,
            ),
            ("crc", CLEAN_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(CLEAN_LEN, 128);
}

#[test]
fn commit_table_matches_the_code() {
    expect(
        "commit",
        &[
            ("encoding", 0, 1),
            ("kind", 1, 1),
            ("revision", 2, 8),
            ("timestamp_us", 10, 8),
            ("actor_len", COMMIT_FIXED_PREFIX_LEN, 2),
        ],
    );
    assert_eq!(COMMIT_ENCODING_V1, 1);
    assert_eq!((OP_PUT, OP_DELETE), (1, 2));
    for (kind, byte) in [
        (CommitKind::Change, 1),
        (CommitKind::Restore, 2),
        (CommitKind::Compaction, 3),
        (CommitKind::ReadOnly, 4),
    ] {
        assert_eq!(kind.to_u8(), byte);
    }
    assert_eq!(
        (
            sf::ACTOR_BYTES_MAX,
            sf::REASON_BYTES_MAX,
            sf::DETAIL_BYTES_MAX,
            sf::COMMIT_OPS_MAX,
            sf::KEY_BYTES_MAX,
            sf::VALUE_BYTES_MAX
        ),
        (256, 4096, 65536, 100_000, 512, 1_048_576)
    );
}

#[test]
fn magic_bytes_in_the_text_are_the_code_s() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/storage-format/FORMAT.md"
    ))
    .unwrap();
    for magic in [
        sf::SEGMENT_MAGIC,
        sf::MANIFEST_MAGIC,
        sf::CLEAN_MAGIC,
        sf::image::IMAGE_MAGIC,
    ] {
        let spaced: Vec<String> = magic.iter().map(|b| format!("{b:02X}")).collect();
        assert!(
            text.contains(&format!("`{}`", spaced.join(" "))),
            "FORMAT.md quotes {spaced:?}"
        );
    }
}

#[test]
fn index_tables_match_the_code() {
    use sf::index::*;
    expect(
        "index_header",
        &[
            ("magic", 0, sf::MAGIC_LEN),
            ("version", INDEX_HEADER_VERSION_OFFSET, sf::VERSION_LEN),
            ("header_len", INDEX_HEADER_LEN_OFFSET, 4),
            (
                "history_id",
                INDEX_HEADER_HISTORY_OFFSET,
                sf::HISTORY_ID_LEN,
            ),
            ("entry_len", INDEX_HEADER_ENTRY_LEN_OFFSET, 4),
            (
                "reserved",
                INDEX_HEADER_RESERVED_OFFSET,
                INDEX_HEADER_CRC_OFFSET - INDEX_HEADER_RESERVED_OFFSET,
            ),
            ("crc", INDEX_HEADER_CRC_OFFSET, 4),
        ],
    );
    expect(
        "version_entry",
        &[
            ("revision", VE_REVISION_OFFSET, 8),
            ("timestamp_us", VE_TIMESTAMP_OFFSET, 8),
            ("create_revision", VE_CREATE_REVISION_OFFSET, 8),
            ("parent", VE_PARENT_OFFSET, 8),
            ("jump", VE_JUMP_OFFSET, 8),
            ("jump_revision", VE_JUMP_REVISION_OFFSET, 8),
            ("jump_timestamp_us", VE_JUMP_TIMESTAMP_OFFSET, 8),
            ("depth", VE_DEPTH_OFFSET, 4),
            ("key_id", VE_KEY_ID_OFFSET, 4),
            ("version", VE_VERSION_OFFSET, 4),
            ("segment_seq", VE_SEGMENT_OFFSET, 4),
            ("value_offset", VE_VALUE_OFFSET_OFFSET, 4),
            ("value_len", VE_VALUE_LEN_OFFSET, 4),
            ("reserved", VE_RESERVED_OFFSET, 4),
            ("crc", VE_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(VERSION_ENTRY_LEN, 88);
    expect(
        "rev_entry",
        &[
            ("timestamp_us", RE_TIMESTAMP_OFFSET, 8),
            ("segment_seq", RE_SEGMENT_OFFSET, 4),
            ("record_offset", RE_RECORD_OFFSET_OFFSET, 4),
            ("reserved", RE_RESERVED_OFFSET, 4),
            ("crc", RE_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(REV_ENTRY_LEN, 24);
    expect(
        "checkpoint",
        &[
            ("magic", 0, sf::MAGIC_LEN),
            ("version", CP_VERSION_OFFSET, sf::VERSION_LEN),
            ("len", CP_LEN_OFFSET, 4),
            ("history_id", CP_HISTORY_OFFSET, sf::HISTORY_ID_LEN),
            ("first_revision", CP_FIRST_REVISION_OFFSET, 8),
            ("through_revision", CP_THROUGH_REVISION_OFFSET, 8),
            ("version_entries", CP_VERSION_ENTRIES_OFFSET, 8),
            ("key_count", CP_KEY_COUNT_OFFSET, 8),
            ("keys_bytes", CP_KEYS_BYTES_OFFSET, 8),
            ("keys_crc", CP_KEYS_CRC_OFFSET, 4),
            ("heads_crc", CP_HEADS_CRC_OFFSET, 4),
            ("dirs_generation", CP_DIRS_GENERATION_OFFSET, 8),
            ("dirs_bytes", CP_DIRS_BYTES_OFFSET, 8),
            ("dirs_live", CP_DIRS_LIVE_OFFSET, 8),
            (
                "reserved",
                CP_RESERVED_OFFSET,
                CP_CRC_OFFSET - CP_RESERVED_OFFSET,
            ),
            ("crc", CP_CRC_OFFSET, 4),
        ],
    );
    expect(
        "dir_block",
        &[
            ("covered", DB_COVERED_OFFSET, 4),
            ("fences", DB_FENCES_OFFSET, 4),
            ("step", DB_STEP_OFFSET, 4),
            ("key_id", DB_KEY_ID_OFFSET, 4),
            ("reserved", DB_RESERVED_OFFSET, 4),
            ("crc", DB_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(DIR_HEADER_LEN, 24);
    expect(
        "dir_row",
        &[
            ("index", DR_INDEX_OFFSET, 8),
            ("create_revision", DR_CREATE_REVISION_OFFSET, 8),
            ("version", DR_VERSION_OFFSET, 4),
            ("segment_seq", DR_SEGMENT_OFFSET, 4),
            ("value_offset", DR_VALUE_OFFSET_OFFSET, 4),
            ("value_len", DR_VALUE_LEN_OFFSET, 4),
            ("reserved", DR_RESERVED_OFFSET, 4),
            ("crc", DR_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(DIR_ROW_LEN, 40);
    assert_eq!(DIR_BLOCK_LEN_MAX, 920, "FORMAT.md: at most 920 bytes");
    assert_eq!(CHECKPOINT_HEAD_LEN, 104);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/storage-format/FORMAT.md"
    ))
    .unwrap();
    for magic in [
        VERSIONS_MAGIC,
        REVS_MAGIC,
        KEYS_MAGIC,
        CHECKPOINT_MAGIC,
        DIRS_MAGIC,
    ] {
        let spaced: Vec<String> = magic.iter().map(|b| format!("{b:02X}")).collect();
        assert!(
            text.contains(&format!("`{}`", spaced.join(" "))),
            "FORMAT.md quotes {spaced:?}"
        );
    }
}

#[test]
fn image_tables_match_the_code() {
    use sf::image::*;
    expect(
        "image_header",
        &[
            ("magic", 0, sf::MAGIC_LEN),
            ("version", IMAGE_VERSION_OFFSET, sf::VERSION_LEN),
            ("header_len", IMAGE_HEADER_LEN_OFFSET, 4),
            ("history_id", IMAGE_HISTORY_OFFSET, sf::HISTORY_ID_LEN),
            ("revision", IMAGE_REVISION_OFFSET, 8),
            ("timestamp_us", IMAGE_TIMESTAMP_OFFSET, 8),
            ("hash", IMAGE_HASH_OFFSET, sf::HASH_LEN),
            ("created_unix_us", IMAGE_CREATED_OFFSET, 8),
            ("kind", IMAGE_KIND_OFFSET, 1),
            (
                "reserved",
                IMAGE_RESERVED_OFFSET,
                IMAGE_CRC_OFFSET - IMAGE_RESERVED_OFFSET,
            ),
            ("crc", IMAGE_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(IMAGE_HEADER_LEN, 128);
    assert_eq!((ImageKind::Snapshot.code(), ImageKind::Base.code()), (1, 2));
    expect(
        "image_block_header",
        &[
            ("compressed_len", BLOCK_COMPRESSED_LEN_OFFSET, 4),
            ("raw_len", BLOCK_RAW_LEN_OFFSET, 4),
            ("entry_count", BLOCK_ENTRY_COUNT_OFFSET, 4),
            ("compressed_crc", BLOCK_COMPRESSED_CRC_OFFSET, 4),
            ("raw_crc", BLOCK_RAW_CRC_OFFSET, 4),
            ("header_crc", BLOCK_HEADER_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(BLOCK_HEADER_LEN, 24);
    assert_eq!((BLOCK_COMPRESSED_MAX, BLOCK_RAW_MAX), (9437184, 8388608));
    expect(
        "image_footer",
        &[
            ("block_count", FOOTER_BLOCK_COUNT_OFFSET, 8),
            ("key_count", FOOTER_KEY_COUNT_OFFSET, 8),
            ("body_len", FOOTER_BODY_LEN_OFFSET, 8),
            ("sha256", FOOTER_SHA256_OFFSET, 32),
            (
                "reserved",
                FOOTER_RESERVED_OFFSET,
                FOOTER_CRC_OFFSET - FOOTER_RESERVED_OFFSET,
            ),
            ("crc", FOOTER_CRC_OFFSET, 4),
        ],
    );
    assert_eq!(FOOTER_LEN, 64);
    // The entry table: its fields in order, and its fixed sizes add up to the code's.
    let tables = tables();
    let rows = &tables["image_entry"];
    let fields: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        fields,
        [
            "key_len",
            "key",
            "revision",
            "create_revision",
            "version",
            "timestamp_us",
            "value_len",
            "value"
        ]
    );
    let fixed: usize = rows.iter().filter_map(|r| r.1.parse::<usize>().ok()).sum();
    assert_eq!(fixed, ENTRY_FIXED_LEN);
}
