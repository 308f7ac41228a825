//! Writes with preconditions: compare-and-set on key revisions, "must exist" for deletes, JSON
//! Schema validation, and rollback of a prefix to a past point.
//!
//! Invariants:
//! - every precondition is checked in the log's critical section that assigns the revision
//!   (`Log::append_checked`), against the index plus the writes still in flight, so two writers can
//!   never both pass a check only one may pass;
//! - a put is validated against the schema that is current when it commits: the schema keys seen
//!   during validation become preconditions, and the write is retried (bounded) if one changed;
//! - a refused write writes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use storage_format::commit::Op;
use thiserror::Error;

use super::schema::{self, SCHEMA_KEY_PREFIX, SchemaViolation};
use super::{ChangeKind, Point, ReadError, Store};
use crate::index::Bound;
use crate::log::{CommitInfo, CommitRequest, LogError, UnseenWrites};

/// Attempts at a write whose schema (or rollback prefix) changed while it was being prepared.
pub const WRITE_ATTEMPTS_MAX: usize = 5;
/// Ops of one rollback commit, at most (a rollback may exceed the per-change maximum).
pub const ROLLBACK_OPS_MAX: usize = 10_000;

/// "Key `key` must be at revision `revision`" (0: must not exist, or be deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub key: String,
    pub revision: u64,
}

/// A condition that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Conflict {
    pub key: String,
    pub expected: u64,
    pub actual: u64,
}

/// A change to commit, with its preconditions.
#[derive(Debug, Clone, Default)]
pub struct WriteRequest {
    pub actor: String,
    pub reason: String,
    pub ops: Vec<Op>,
    pub conditions: Vec<Condition>,
    /// Deletes of these keys fail with `NotFound` unless the key is live.
    pub must_exist: Vec<String>,
}

#[derive(Debug, Error)]
pub enum WriteError {
    #[error("{} failed", plural(.0.len(), "condition", "conditions"))]
    Conflict(Vec<Conflict>),
    #[error("key {key:?} does not exist")]
    NotFound { key: String },
    #[error("{}", plural(.0.len(), "schema violation", "schema violations"))]
    SchemaViolation(Vec<SchemaViolation>),
    #[error("the value of {key:?} is not a usable JSON Schema")]
    InvalidSchema {
        key: String,
        violations: Vec<SchemaViolation>,
    },
    #[error("the data kept changing under the write; retry")]
    Contended,
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// What a rollback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackOutcome {
    /// Nothing differed: no commit.
    Unchanged {
        revision: u64,
    },
    Committed(CommitInfo),
}

/// Why a precondition failed, inside the critical section.
enum Failed {
    Conflicts(Vec<Conflict>),
    NotFound(String),
    /// A schema key or a rolled-back prefix changed since it was read: prepare again.
    Stale,
    Read(ReadError),
}

impl Store {
    /// Commits `request` if its conditions hold and every put satisfies its schema.
    pub fn write(&self, request: WriteRequest) -> Result<CommitInfo, WriteError> {
        for _ in 0..WRITE_ATTEMPTS_MAX {
            let schema_seen = self.check_schemas(&request.ops)?;
            let commit =
                CommitRequest::change(&request.actor, &request.reason, request.ops.clone());
            let ops_max = self.log.config().commit_ops_max;
            let checked = self.log.append_checked(
                commit,
                ops_max,
                self.write_preconditions(&request, &schema_seen),
            )?;
            match checked {
                Ok(info) => return Ok(info),
                Err(Failed::Stale) => continue,
                Err(failed) => return Err(failed.into_error()),
            }
        }
        Err(WriteError::Contended)
    }

    /// `write` for async callers (the server): the same checks and commit, but waiting for the
    /// commit's batch to be durable holds no thread (`Log::append_checked_async`). The checks
    /// before queueing are CPU work on the caller's thread.
    pub async fn write_async(&self, request: WriteRequest) -> Result<CommitInfo, WriteError> {
        for _ in 0..WRITE_ATTEMPTS_MAX {
            let schema_seen = self.check_schemas(&request.ops)?;
            let commit =
                CommitRequest::change(&request.actor, &request.reason, request.ops.clone());
            let ops_max = self.log.config().commit_ops_max;
            let checked = crate::log::Log::append_checked_async(
                &self.log,
                commit,
                ops_max,
                self.write_preconditions(&request, &schema_seen),
            )
            .await?;
            match checked {
                Ok(info) => return Ok(info),
                Err(Failed::Stale) => continue,
                Err(failed) => return Err(failed.into_error()),
            }
        }
        Err(WriteError::Contended)
    }

    /// The checks of `request` run in the log's critical section: its conditions, its
    /// must-exist keys, and the schema keys its validation saw.
    fn write_preconditions<'a>(
        &'a self,
        request: &'a WriteRequest,
        schema_seen: &'a [(String, u64)],
    ) -> impl FnOnce(&UnseenWrites) -> Result<(), Failed> + 'a {
        move |unseen| {
            let mut conflicts = Vec::new();
            for condition in &request.conditions {
                let actual = self.live_revision(unseen, &condition.key)?;
                if actual != condition.revision {
                    conflicts.push(Conflict {
                        key: condition.key.clone(),
                        expected: condition.revision,
                        actual,
                    });
                }
            }
            if !conflicts.is_empty() {
                return Err(Failed::Conflicts(conflicts));
            }
            for key in &request.must_exist {
                if self.live_revision(unseen, key)? == 0 {
                    return Err(Failed::NotFound(key.clone()));
                }
            }
            for (key, seen) in schema_seen {
                if self.live_revision(unseen, key)? != *seen {
                    return Err(Failed::Stale);
                }
            }
            Ok(())
        }
    }

    /// Makes `prefix`'s state equal its state at `point`, in one new commit; nothing when they
    /// already match. Values are restored byte for byte, without schema validation: they were
    /// valid when first written, and a rollback restores a state that existed.
    pub fn rollback(
        &self,
        prefix: &str,
        point: Point,
        actor: &str,
        reason: &str,
    ) -> Result<RollbackOutcome, WriteError> {
        for _ in 0..WRITE_ATTEMPTS_MAX {
            let head = self.log.head().revision;
            // The rollback commit's own limits bound it (ops, bytes), not a diff answer's.
            let diff = self.diff_bounded(prefix, point, Point::Revision(head), usize::MAX)?;
            if diff.changes.is_empty() {
                return Ok(RollbackOutcome::Unchanged { revision: head });
            }
            let ops: Vec<Op> = diff
                .changes
                .iter()
                .map(|change| match (change.kind, &change.old) {
                    (ChangeKind::Added, _) | (_, None) => Op::Delete {
                        key: change.key.to_string(),
                    },
                    (_, Some(old)) => Op::Put {
                        key: change.key.to_string(),
                        value: old.as_bytes().to_vec(),
                    },
                })
                .collect();
            let reason = if reason.is_empty() {
                format!("rollback of {prefix:?} to revision {}", diff.from)
            } else {
                reason.to_owned()
            };
            let commit = CommitRequest::change(actor, &reason, ops);
            let checked = self
                .log
                .append_checked(commit, ROLLBACK_OPS_MAX, |unseen| {
                    // Nothing under the prefix may have changed since the diff was taken.
                    if unseen.any_under(prefix) {
                        return Err(Failed::Stale);
                    }
                    let newest = self
                        .with_index(|state, _| Ok(state.newest_revision_under(prefix)))
                        .map_err(Failed::Read)?;
                    if newest > head {
                        return Err(Failed::Stale);
                    }
                    Ok(())
                })?;
            match checked {
                Ok(info) => return Ok(RollbackOutcome::Committed(info)),
                Err(Failed::Stale) => continue,
                Err(failed) => return Err(failed.into_error()),
            }
        }
        Err(WriteError::Contended)
    }

    /// The revision of `key`'s live version, counting writes still in flight; 0 if absent or
    /// deleted.
    fn live_revision(&self, unseen: &UnseenWrites, key: &str) -> Result<u64, Failed> {
        if let Some(write) = unseen.get(key) {
            return Ok(if write.deleted { 0 } else { write.revision });
        }
        self.with_index(|state, _| {
            let bound = Bound::Revision(state.through_revision());
            Ok(match state.lookup_key(key, bound)? {
                Some((_, Some((_, entry)))) if !entry.is_delete() => entry.revision,
                _ => 0,
            })
        })
        .map_err(Failed::Read)
    }

    /// Validates every put against its schema (and every put of a schema as a schema). Returns the
    /// schema keys consulted with the revision seen (0: absent), to be re-checked at commit.
    fn check_schemas(&self, ops: &[Op]) -> Result<Vec<(String, u64)>, WriteError> {
        // Each schema key is read (and its schema compiled) once per write, however many puts
        // fall under it; the map is also the list of schema revisions seen.
        let mut schemas: HashMap<String, Option<(u64, Arc<jsonschema::Validator>)>> =
            HashMap::new();
        let mut violations = Vec::new();
        for op in ops {
            let Op::Put { key, value } = op else {
                continue;
            };
            if key.starts_with(SCHEMA_KEY_PREFIX) {
                schema::compile(key, value).map_err(|violations| WriteError::InvalidSchema {
                    key: key.clone(),
                    violations,
                })?;
            }
            for schema_key in schema::schema_keys_for(key) {
                if !schemas.contains_key(&schema_key) {
                    let current = self.current_schema(&schema_key)?;
                    schemas.insert(schema_key.clone(), current);
                }
                if let Some((_, validator)) = &schemas[&schema_key] {
                    schema::validate(validator, key, value, &mut violations);
                    break;
                }
            }
        }
        if !violations.is_empty() {
            return Err(WriteError::SchemaViolation(violations));
        }
        Ok(schemas
            .into_iter()
            .map(|(key, found)| (key, found.map_or(0, |(revision, _)| revision)))
            .collect())
    }

    /// The schema stored at `schema_key` now, compiled, with its revision; `None` if absent.
    fn current_schema(
        &self,
        schema_key: &str,
    ) -> Result<Option<(u64, Arc<jsonschema::Validator>)>, WriteError> {
        let current = match self.get(schema_key, Point::Latest) {
            Ok(found) => found,
            // A path segment that cannot form a valid schema key has no schema.
            Err(ReadError::InvalidKey { .. }) => None,
            Err(error) => return Err(error.into()),
        };
        let Some(current) = current else {
            return Ok(None);
        };
        let validator = self
            .schemas
            .get_or_compile(schema_key, current.revision, current.value.as_bytes())
            .map_err(|violations| WriteError::InvalidSchema {
                key: schema_key.to_owned(),
                violations,
            })?;
        Ok(Some((current.revision, validator)))
    }
}

impl Failed {
    fn into_error(self) -> WriteError {
        match self {
            Failed::Conflicts(conflicts) => WriteError::Conflict(conflicts),
            Failed::NotFound(key) => WriteError::NotFound { key },
            Failed::Stale => WriteError::Contended,
            Failed::Read(error) => WriteError::Read(error),
        }
    }
}

impl From<ReadError> for Failed {
    fn from(error: ReadError) -> Self {
        Failed::Read(error)
    }
}

/// `1 condition`, `2 conditions`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
