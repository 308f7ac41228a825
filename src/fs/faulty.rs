//! An `Fs` over another (the real file system) that fails on command, as `MemFs` does: after
//! `Fault::after_ops` mutating operations (file writes, syncs, truncations, creates, renames,
//! removes, directory syncs) the next one fails with `EIO` or `ENOSPC` — a failing write first
//! writes a prefix of its buffer, as a torn write would — and, if the fault is sticky, every one
//! after it. A whole store can run on it (the index maps the real files underneath), so tests
//! fail each step of a snapshot, a compaction or an index checkpoint in turn.

use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{DirLock, Fault, Fs, FsFile};

#[derive(Debug, Default)]
struct Counter {
    fault: Option<Fault>,
    failed: bool,
    mutating_ops: u64,
}

impl Counter {
    /// Counts one mutating operation and says whether it must fail.
    fn charge(&mut self) -> io::Result<()> {
        self.mutating_ops += 1;
        let Some(fault) = self.fault else {
            return Ok(());
        };
        let fails = if self.failed {
            fault.sticky
        } else {
            self.mutating_ops > fault.after_ops
        };
        if !fails {
            return Ok(());
        }
        self.failed = true;
        Err(io::Error::from_raw_os_error(if fault.disk_full {
            28 // ENOSPC
        } else {
            5 // EIO
        }))
    }
}

/// `inner` with faults on command; clones share the counter.
#[derive(Clone)]
pub struct FaultyFs {
    inner: Arc<dyn Fs>,
    counter: Arc<Mutex<Counter>>,
}

impl FaultyFs {
    pub fn new(inner: Arc<dyn Fs>) -> FaultyFs {
        FaultyFs {
            inner,
            counter: Default::default(),
        }
    }

    /// Arms (or with `None`, disarms) a fault, counting from now.
    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut counter = self.counter.lock();
        *counter = Counter {
            fault,
            ..Counter::default()
        };
    }

    /// Whether the armed fault has fired.
    pub fn fault_fired(&self) -> bool {
        self.counter.lock().failed
    }

    /// Mutating operations performed since the fault was last set.
    pub fn mutating_ops(&self) -> u64 {
        self.counter.lock().mutating_ops
    }

    fn charge(&self) -> io::Result<()> {
        self.counter.lock().charge()
    }
}

struct FaultyFile {
    inner: Box<dyn FsFile>,
    counter: Arc<Mutex<Counter>>,
}

impl FsFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Err(error) = self.counter.lock().charge() {
            // A torn write: half of the buffer reaches the file.
            let _ = self.inner.write_all(&buf[..buf.len() / 2]);
            return Err(error);
        }
        self.inner.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.counter.lock().charge()?;
        self.inner.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.counter.lock().charge()?;
        self.inner.set_len(len)
    }
}

impl Fs for FaultyFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.inner.file_len(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_at(path, offset, len)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.charge()?;
        Ok(Box::new(FaultyFile {
            inner: self.inner.create_new(path)?,
            counter: self.counter.clone(),
        }))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(FaultyFile {
            inner: self.inner.open_append(path)?,
            counter: self.counter.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.charge()?;
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.charge()?;
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.charge()?;
        self.inner.sync_dir(path)
    }
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        self.inner.lock_dir(path)
    }
}
