//! Reading committed history back, in revision order, from the segments' durable bytes.
//!
//! Each call scans the segments that overlap the requested range whole; point reads get their
//! own indexes in `src/index/` (the read issue). Readers never look past a segment's durable
//! length, so they see only acknowledged commits.

use storage_format::Hash;
use storage_format::commit::CommitPayload;
use storage_format::scan::{TailPolicy, scan_segment};

use super::{Log, LogError};

/// One commit as read back, with its predecessor's hash.
pub struct ChainLink<'a> {
    pub payload: &'a CommitPayload<'a>,
    pub prev_hash: Hash,
    pub segment_seq: u64,
    pub record_offset: u64,
}

impl Log {
    /// Calls `visit` for every durable commit with revision in `from..=to`, in order.
    pub fn for_each_commit(
        &self,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(&ChainLink<'_>),
    ) -> Result<(), LogError> {
        let segments = self.segments();
        for segment in segments
            .iter()
            .filter(|s| s.last_revision >= from && s.first_revision <= to)
        {
            let mut bytes = self
                .fs
                .read(&segment.path)
                .map_err(LogError::io("read segment", &segment.path))?;
            if bytes.len() < segment.len as usize {
                return Err(LogError::corrupted(
                    &segment.path,
                    bytes.len() as u64,
                    segment.first_revision,
                    super::Corruption::SealMismatch(format!(
                        "file shrank below its durable length {}",
                        segment.len
                    )),
                ));
            }
            bytes.truncate(segment.len as usize);
            let mut prev_hash = None;
            let outcome =
                scan_segment(&bytes, TailPolicy::Strict, &mut |record_offset, payload| {
                    let link_prev = prev_hash.unwrap_or_else(|| {
                        storage_format::segment::SegmentHeader::decode(&bytes)
                            .map(|h| h.prev_hash)
                            .expect("scan decoded this header")
                    });
                    prev_hash = Some(payload.hash);
                    let revision = payload.commit.revision;
                    if (from..=to).contains(&revision) {
                        visit(&ChainLink {
                            payload,
                            prev_hash: link_prev,
                            segment_seq: segment.seq,
                            record_offset,
                        });
                    }
                });
            if let Err(e) = outcome {
                return Err(LogError::corrupted(
                    &segment.path,
                    e.offset,
                    e.revision,
                    e.kind,
                ));
            }
        }
        Ok(())
    }
}
