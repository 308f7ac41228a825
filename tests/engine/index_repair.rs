//! The index is derived data: damage to any index file is detected — at open for the checkpoint,
//! file headers, lengths and the key dictionary; at first use for entries (each carries a CRC) —
//! and repaired by rebuilding from the log, after which every read is right again.

use std::path::Path;

use llmcm::storage_format::commit::Op;
use llmcm::storage_format::index::{INDEX_HEADER_LEN, REV_ENTRY_LEN, VERSION_ENTRY_LEN};
use llmcm::store::{CommitFilter, Point, Store};
use llmcm::store::{CommitRequest, LogConfig};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    }
}

/// 300 commits over 20 keys in several sealed segments; returns the expected latest values.
fn build(dir: &Path) -> Vec<(String, String)> {
    let store = Store::open(dir, config()).unwrap();
    for n in 0..300u64 {
        let key = format!("svc/k{}", n % 20);
        let value = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "p".repeat(400));
        store
            .append(CommitRequest::change(
                "t",
                "",
                vec![Op::Put {
                    key,
                    value: value.into_bytes(),
                }],
            ))
            .unwrap();
    }
    assert!(store.log().segments().len() >= 3, "several sealed segments");
    (0..20)
        .map(|k| {
            let n = 280 + k;
            (format!("svc/k{k}"), format!("{{\"n\":{n},"))
        })
        .collect()
}

fn assert_reads_right(store: &Store, expected: &[(String, String)]) {
    for (key, prefix) in expected {
        let got = store.get(key, Point::Latest).unwrap().expect("present");
        assert!(
            String::from_utf8_lossy(got.value.as_bytes()).starts_with(prefix.as_str()),
            "{key}"
        );
        let old = store
            .get(key, Point::Revision(20))
            .unwrap()
            .expect("present at 20");
        assert_eq!(old.revision, key[5..].parse::<u64>().unwrap() + 1);
    }
    let page = store.list("svc/", Point::Latest, None, 100).unwrap();
    assert_eq!(page.items.len(), 20);
    let commits = store
        .commits(&CommitFilter {
            from_revision: Some(1),
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(commits.items.len(), 300);
}

fn damage(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    edit(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damage_to_each_index_file_is_repaired() {
    type Edit = fn(&mut Vec<u8>);
    let cases: Vec<(&str, &str, Edit)> = vec![
        ("CHECKPOINT", "flip", |b| b[40] ^= 1),
        ("CHECKPOINT", "truncate", |b| b.truncate(100)),
        ("versions.idx", "flip every entry", |b| {
            let mut at = INDEX_HEADER_LEN + 3;
            while at < b.len() {
                b[at] ^= 0x10;
                at += VERSION_ENTRY_LEN;
            }
        }),
        ("versions.idx", "truncate", |b| {
            b.truncate(INDEX_HEADER_LEN + 5 * VERSION_ENTRY_LEN)
        }),
        ("versions.idx", "header", |b| b[2] ^= 1),
        ("revs.idx", "flip every entry", |b| {
            let mut at = INDEX_HEADER_LEN + 1;
            while at < b.len() {
                b[at] ^= 0x01;
                at += REV_ENTRY_LEN;
            }
        }),
        ("keys.idx", "flip", |b| {
            let last = b.len() - 1;
            b[last] ^= 0x04
        }),
        ("keys.idx", "delete", |b| b.clear()),
        // The version directory: every block's search arrays, every row, the header, the length.
        ("dirs-*.idx", "flip every 16th byte", |b| {
            let mut at = INDEX_HEADER_LEN + 30;
            while at < b.len() {
                b[at] ^= 0x20;
                at += 16;
            }
        }),
        ("dirs-*.idx", "flip the last byte", |b| {
            let last = b.len() - 1;
            b[last] ^= 0x01
        }),
        ("dirs-*.idx", "truncate", |b| {
            b.truncate(INDEX_HEADER_LEN + 100)
        }),
        ("dirs-*.idx", "header", |b| b[2] ^= 1),
        ("dirs-*.idx", "delete", |b| b.clear()),
    ];
    for (file, how, edit) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let expected = build(&dir);
        let path = match file {
            "dirs-*.idx" => {
                let found: Vec<_> = std::fs::read_dir(dir.join("index"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| {
                        p.file_name()
                            .unwrap()
                            .to_str()
                            .unwrap()
                            .starts_with("dirs-")
                    })
                    .collect();
                assert_eq!(found.len(), 1, "one directory file: {found:?}");
                found[0].clone()
            }
            _ => dir.join("index").join(file),
        };
        damage(&path, edit);
        let store = Store::open(&dir, config()).unwrap_or_else(|e| panic!("{file} {how}: {e}"));
        assert_reads_right(&store, &expected);
        drop(store);
        // The repaired index serves a second open as well.
        let store = Store::open(&dir, config()).unwrap();
        assert_reads_right(&store, &expected);
    }
}

#[test]
fn an_index_from_another_history_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let expected = build(&a);
    build(&b);
    std::fs::remove_dir_all(a.join("index")).unwrap();
    std::fs::create_dir_all(a.join("index")).unwrap();
    for entry in std::fs::read_dir(b.join("index")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), a.join("index").join(entry.file_name())).unwrap();
    }
    let store = Store::open(&a, config()).unwrap();
    assert_reads_right(&store, &expected);
}
