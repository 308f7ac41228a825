//! Every limit of DESIGN.md §2 is enforced with a typed error and nothing written: the head,
//! the segment's length and the next revision are unchanged after each refused request.

use crate::common;

use std::path::Path;

use common::*;
use llmcm::fs::{Fs, MemFs};
use llmcm::log::{CommitRequest, LogConfig, LogError, Rejection};
use llmcm::storage_format::commit::{CommitError, CommitKind, Op};
use llmcm::storage_format::{KeyError, VALUE_BYTES_MAX};

/// A named request and the check its rejection must pass.
type Case = (&'static str, CommitRequest, fn(&Rejection) -> bool);

fn req(ops: Vec<Op>) -> CommitRequest {
    CommitRequest::change("tester", "", ops)
}

fn value_of_len(len: usize) -> String {
    // A JSON string of exactly `len` bytes.
    format!("\"{}\"", "v".repeat(len - 2))
}

#[test]
fn every_limit_is_a_typed_refusal_that_writes_nothing() {
    let fs = MemFs::new();
    let log = open_mem(&fs, LogConfig::default());
    log.append(change("ok", 1)).unwrap();
    let segment = Path::new(DIR).join("log/seg-00000000000000000001.log");
    let len_before = fs.file_len(&segment).unwrap();

    let cases: Vec<Case> = vec![
        ("empty key", req(vec![put("", "1")]), |r| {
            matches!(
                r,
                Rejection::Format(CommitError::InvalidKey {
                    source: KeyError::Empty,
                    ..
                })
            )
        }),
        ("bad key", req(vec![put("a//b", "1")]), |r| {
            matches!(
                r,
                Rejection::Format(CommitError::InvalidKey {
                    source: KeyError::EmptySegment,
                    ..
                })
            )
        }),
        ("long key", req(vec![put(&"k".repeat(513), "1")]), |r| {
            matches!(
                r,
                Rejection::Format(CommitError::InvalidKey {
                    source: KeyError::TooLong { .. },
                    ..
                })
            )
        }),
        ("no ops", req(vec![]), |r| {
            matches!(r, Rejection::Format(CommitError::NoOps))
        }),
        (
            "1001 ops",
            req((0..1001).map(|i| put(&format!("k{i}"), "1")).collect()),
            |r| {
                matches!(
                    r,
                    Rejection::TooManyOps {
                        count: 1001,
                        max: 1000
                    }
                )
            },
        ),
        (
            "duplicate key",
            req(vec![put("a", "1"), delete("a")]),
            |r| matches!(r, Rejection::Format(CommitError::DuplicateKey { .. })),
        ),
        (
            "value over 1 MiB",
            req(vec![put("a", &value_of_len(VALUE_BYTES_MAX + 1))]),
            |r| matches!(r, Rejection::ValueTooLarge { .. }),
        ),
        ("not JSON", req(vec![put("a", "{nope")]), |r| {
            matches!(r, Rejection::InvalidJson { .. })
        }),
        ("two JSON documents", req(vec![put("a", "1 2")]), |r| {
            matches!(r, Rejection::InvalidJson { .. })
        }),
        (
            "reason over 4 KiB",
            CommitRequest::change("t", &"r".repeat(4097), vec![put("a", "1")]),
            |r| {
                matches!(
                    r,
                    Rejection::Format(CommitError::FieldTooLong {
                        field: "reason",
                        ..
                    })
                )
            },
        ),
        (
            "actor over 256 bytes",
            CommitRequest::change(&"a".repeat(257), "", vec![put("a", "1")]),
            |r| {
                matches!(
                    r,
                    Rejection::Format(CommitError::FieldTooLong { field: "actor", .. })
                )
            },
        ),
        (
            "commit over 8 MiB",
            req((0..9)
                .map(|i| put(&format!("big{i}"), &value_of_len(VALUE_BYTES_MAX)))
                .collect()),
            |r| matches!(r, Rejection::CommitTooLarge { .. }),
        ),
        (
            "ops on a system commit",
            CommitRequest {
                kind: CommitKind::ReadOnly,
                actor: "op".into(),
                reason: String::new(),
                detail: b"{}".to_vec(),
                ops: vec![put("a", "1")],
            },
            |r| matches!(r, Rejection::Format(CommitError::OpsOnSystemCommit { .. })),
        ),
    ];
    for (name, request, expected) in cases {
        match log.append(request) {
            Err(LogError::Rejected(rejection)) => {
                assert!(expected(&rejection), "{name}: got {rejection}")
            }
            Err(other) => panic!("{name}: expected a rejection, got {other}"),
            Ok(info) => panic!("{name}: accepted as revision {}", info.revision),
        }
        assert_eq!(log.head().revision, 1, "{name}: nothing visible");
        assert_eq!(
            fs.file_len(&segment).unwrap(),
            len_before,
            "{name}: nothing written"
        );
    }
    // A value of exactly 1 MiB and 1000 ops are accepted, and the next revision is 2.
    assert_eq!(
        log.append(req(vec![put("a", &value_of_len(VALUE_BYTES_MAX))]))
            .unwrap()
            .revision,
        2
    );
    assert_eq!(
        log.append(req((0..1000).map(|i| put(&format!("k{i}"), "1")).collect()))
            .unwrap()
            .revision,
        3
    );
    // A system commit carries no ops.
    let ro = CommitRequest {
        kind: CommitKind::ReadOnly,
        actor: "op".into(),
        reason: "maintenance".into(),
        detail: br#"{"on":true}"#.to_vec(),
        ops: vec![],
    };
    assert_eq!(log.append(ro).unwrap().revision, 4);
}

#[test]
fn configured_limits_are_lower_and_bounded() {
    let fs = MemFs::new();
    let config = LogConfig {
        value_bytes_max: 100,
        commit_ops_max: 2,
        ..LogConfig::default()
    };
    let log = open_mem(&fs, config);
    assert!(matches!(
        log.append(req(vec![put("a", &value_of_len(101))])),
        Err(LogError::Rejected(Rejection::ValueTooLarge {
            max: 100,
            ..
        }))
    ));
    assert!(matches!(
        log.append(req(vec![put("a", "1"), put("b", "1"), put("c", "1")])),
        Err(LogError::Rejected(Rejection::TooManyOps { max: 2, .. }))
    ));
    drop(log);
    for bad in [
        LogConfig {
            segment_bytes_max: 1024,
            ..LogConfig::default()
        },
        LogConfig {
            value_bytes_max: VALUE_BYTES_MAX + 1,
            ..LogConfig::default()
        },
        LogConfig {
            commit_ops_max: 1001,
            ..LogConfig::default()
        },
        LogConfig {
            segment_age_max_us: 10,
            ..LogConfig::default()
        },
    ] {
        let err = llmcm::log::Log::open_with(
            std::sync::Arc::new(MemFs::new()),
            std::sync::Arc::new(llmcm::clock::SystemClock),
            Path::new(DIR),
            bad,
        )
        .err()
        .expect("refused");
        assert!(matches!(err, LogError::Config(_)), "{err}");
    }
}
