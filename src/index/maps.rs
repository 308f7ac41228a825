//! Read-only mappings of sealed segments, made on first use, and the read-back of a sealed
//! segment into the page cache in 2 MiB folios.

use std::path::PathBuf;
use std::sync::Arc;

use memmap2::Mmap;

use super::*;

/// Lazily created read-only mappings of sealed segments.
pub struct SegmentMaps {
    pub(super) log_dir: PathBuf,
    /// Indexed by segment sequence number.
    pub(super) maps: RwLock<Vec<Option<Arc<Mmap>>>>,
}

impl SegmentMaps {
    pub(super) fn new(data_dir: &Path) -> Self {
        SegmentMaps {
            log_dir: data_dir.join(SEGMENT_DIR),
            maps: RwLock::new(Vec::new()),
        }
    }

    /// `f` on the mapping of sealed segment `seq`, under the mappings' read lock when it exists.
    pub fn with_map<R>(
        &self,
        seq: u64,
        f: impl FnOnce(&Mmap) -> Result<R, IndexError>,
    ) -> Result<R, IndexError> {
        if let Some(Some(map)) = self.maps.read().get(seq as usize) {
            return f(map);
        }
        f(&*self.map(seq)?)
    }

    /// The mapping of sealed segment `seq`. Only sealed segments are ever mapped: they are synced
    /// and never written or truncated again (FORMAT.md "Assumptions about the disk").
    pub fn map(&self, seq: u64) -> Result<Arc<Mmap>, IndexError> {
        if let Some(Some(map)) = self.maps.read().get(seq as usize) {
            return Ok(map.clone());
        }
        let path = self.log_dir.join(segment_file_name(seq));
        let file = std::fs::File::open(&path).map_err(|source| IndexError::Io {
            path: path.clone(),
            source,
        })?;
        // SAFETY: the file is a sealed segment: it was synced before its successor existed and
        // is never written, truncated or renamed over while the store runs; the mapping is
        // read-only. A media error on a mapped page would be a SIGBUS, which is why the active
        // segment is never mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| IndexError::Io { path, source })?;
        // As for the index files: huge pages where the page cache has 2 MiB folios (segments
        // read in through this mapping); point reads then miss the TLB far less. Advice only.
        let _ = map.advise(memmap2::Advice::HugePage);
        let map = Arc::new(map);
        let mut maps = self.maps.write();
        if maps.len() <= seq as usize {
            maps.resize(seq as usize + 1, None);
        }
        Ok(maps[seq as usize].get_or_insert(map).clone())
    }

    /// Re-reads sealed segment `seq` into the page cache in 2 MiB folios, piece by piece.
    ///
    /// The pages a segment's appends put in the page cache are 4 KiB folios; a point read of a
    /// value in them takes a page walk through 4 KiB page tables (far costlier under
    /// virtualization), where a segment read back in through the huge-page-advised mapping gets
    /// 2 MiB folios. So after a roll, each 2 MiB piece of the sealed, synced segment is dropped
    /// from this mapping and from the page cache, then read back at once. A reader touching the
    /// piece meanwhile reads it from the file (a page fault, the same bytes). Best effort: pages
    /// that stay mapped elsewhere stay as they are. Returns the bytes read back.
    pub fn reread(&self, seq: u64) -> Result<u64, IndexError> {
        const PIECE: usize = 2 << 20;
        let map = self.map(seq)?;
        let path = self.log_dir.join(segment_file_name(seq));
        let io = |source: std::io::Error| IndexError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        let mut reread = 0u64;
        for offset in (0..map.len() / PIECE).map(|piece| piece * PIECE) {
            // SAFETY: a shared, read-only mapping of a file nobody writes: dropping its page
            // table entries only makes the next access fault the unchanged bytes back in.
            unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, PIECE)
            }
            .map_err(io)?;
            rustix::fs::fadvise(
                &file,
                offset as u64,
                std::num::NonZeroU64::new(PIECE as u64),
                rustix::fs::Advice::DontNeed,
            )
            .map_err(|e| io(e.into()))?;
            map.advise_range(memmap2::Advice::PopulateRead, offset, PIECE)
                .map_err(io)?;
            reread += PIECE as u64;
        }
        Ok(reread)
    }
}
