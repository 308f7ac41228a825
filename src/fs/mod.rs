//! The file-system seam. Everything the log, the index checkpoints, snapshots and compaction
//! write goes through `Fs`, so tests can run the log on `MemFs`, which fails on command and
//! forgets what was never synced, and a whole store on `FaultyFs` over the real file system,
//! which fails on command.
//!
//! The trait carries only the operations the log needs, each with the durability meaning of
//! POSIX: file data is durable after `FsFile::sync_data`; a created, renamed or removed name is
//! durable after `Fs::sync_dir` of its directory.

mod faulty;
mod mem;
mod real;

use std::io;
use std::path::Path;

pub use faulty::FaultyFs;
pub use mem::{Fault, MemFs};
pub use real::RealFs;

/// A file opened for appending.
pub trait FsFile: Send {
    /// Writes the whole buffer at the end of the file.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the file's data and size durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Truncates (or extends) the file.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// Held while a process owns a data directory; dropping it releases the lock.
pub trait DirLock: Send + Sync {}

/// The operations on files and directories the store performs.
pub trait Fs: Send + Sync + 'static {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> io::Result<bool>;
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// `len` bytes at `offset`; fails if the file is shorter.
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Creates a file that must not exist yet, for appending.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of a data directory, failing with `WouldBlock` if it is held.
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// Writes `bytes` to `path` crash-safely: a temporary file, synced, renamed into place, and the
/// directory synced. The temporary name is `path` + `.tmp`; a stale one is replaced.
pub fn write_file_atomic(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("a file inside a directory");
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    if fs.exists(&tmp)? {
        fs.remove_file(&tmp)?;
    }
    let mut file = fs.create_new(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, path)?;
    fs.sync_dir(dir)
}
