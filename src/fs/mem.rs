//! An in-memory `Fs` that models what survives a crash and fails on command.
//!
//! Each file (an inode) keeps its current bytes and its durable bytes (as of its last
//! `sync_data`); each directory keeps its current entries and its durable entries (as of its last
//! `sync_dir`). `crash()` returns the file system a machine would find after power loss: durable
//! entries pointing at durable bytes. `set_fault` makes the N-th following mutating operation fail
//! (a failing write first writes a prefix of its buffer, as a torn write would) and, if the fault
//! is sticky, every one after it.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{DirLock, Fs, FsFile};

/// When and how the next mutating operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Mutating operations that still succeed before the failing one.
    pub after_ops: u64,
    /// The failure is `ENOSPC` rather than `EIO`.
    pub disk_full: bool,
    /// Every mutating operation after the first failure fails as well.
    pub sticky: bool,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Current entries: path → inode.
    names: BTreeMap<PathBuf, u64>,
    /// Durable entries.
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeMap<PathBuf, ()>,
    locked: BTreeMap<PathBuf, ()>,
    fault: Option<Fault>,
    failed: bool,
    mutating_ops: u64,
}

impl State {
    /// Counts one mutating operation and says whether it must fail.
    fn charge(&mut self) -> io::Result<()> {
        self.mutating_ops += 1;
        if let Some(fault) = self.fault {
            if self.failed && fault.sticky {
                return Err(fault_error(fault));
            }
            if !self.failed && self.mutating_ops > fault.after_ops {
                self.failed = true;
                return Err(fault_error(fault));
            }
        }
        Ok(())
    }
}

fn fault_error(fault: Fault) -> io::Error {
    if fault.disk_full {
        io::Error::from_raw_os_error(28) // ENOSPC
    } else {
        io::Error::from_raw_os_error(5) // EIO
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

/// The in-memory file system; clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    state: Arc<Mutex<State>>,
}

impl MemFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms (or with `None`, disarms) a fault, counting from now.
    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut state = self.state.lock();
        state.fault = fault;
        state.failed = false;
        state.mutating_ops = 0;
    }

    /// Whether the armed fault has fired.
    pub fn fault_fired(&self) -> bool {
        self.state.lock().failed
    }

    /// Mutating operations performed since the fault was last set.
    pub fn mutating_ops(&self) -> u64 {
        self.state.lock().mutating_ops
    }

    /// What a machine finds after power loss now: only synced entries and synced bytes. Locks are
    /// released (the process is gone).
    pub fn crash(&self) -> MemFs {
        let state = self.state.lock();
        let mut inodes = HashMap::new();
        for inode in state.durable_names.values() {
            let durable = state.inodes[inode].durable.clone();
            inodes.insert(
                *inode,
                Inode {
                    data: durable.clone(),
                    durable,
                },
            );
        }
        MemFs {
            state: Arc::new(Mutex::new(State {
                inodes,
                next_inode: state.next_inode,
                names: state.durable_names.clone(),
                durable_names: state.durable_names.clone(),
                dirs: state.dirs.clone(),
                ..State::default()
            })),
        }
    }

    /// Replaces a file's content in place, current and durable (tests that damage files).
    pub fn overwrite(&self, path: &Path, bytes: Vec<u8>) {
        let mut state = self.state.lock();
        let inode = state.names[path];
        let node = state.inodes.get_mut(&inode).expect("inode");
        node.data = bytes.clone();
        node.durable = bytes;
    }
}

struct MemFile {
    state: Arc<Mutex<State>>,
    inode: u64,
}

impl FsFile for MemFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Err(e) = state.charge() {
            // A failed write may still have written part of the buffer.
            let node = state.inodes.get_mut(&self.inode).expect("open inode");
            node.data.extend_from_slice(&buf[..buf.len() / 2]);
            return Err(e);
        }
        let node = state.inodes.get_mut(&self.inode).expect("open inode");
        node.data.extend_from_slice(buf);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.charge()?;
        let node = state.inodes.get_mut(&self.inode).expect("open inode");
        node.durable = node.data.clone();
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.charge()?;
        let node = state.inodes.get_mut(&self.inode).expect("open inode");
        node.data.resize(len as usize, 0);
        Ok(())
    }
}

struct MemLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}
impl DirLock for MemLock {}
impl Drop for MemLock {
    fn drop(&mut self) {
        self.state.lock().locked.remove(&self.path);
    }
}

impl Fs for MemFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        for ancestor in path.ancestors() {
            state.dirs.insert(ancestor.to_path_buf(), ());
        }
        Ok(())
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        if !state.dirs.contains_key(path) {
            return Err(not_found(path));
        }
        let mut out: Vec<String> = state
            .names
            .keys()
            .chain(state.dirs.keys())
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        out.dedup();
        Ok(out)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.state.lock();
        Ok(state.names.contains_key(path) || state.dirs.contains_key(path))
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = self.state.lock();
        let inode = state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(state.inodes[inode].data.len() as u64)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.state.lock();
        let inode = state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(state.inodes[inode].data.clone())
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let state = self.state.lock();
        let inode = state.names.get(path).ok_or_else(|| not_found(path))?;
        let data = &state.inodes[inode].data;
        let start = offset as usize;
        if start.checked_add(len).is_none_or(|end| end > data.len()) {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        Ok(data[start..start + len].to_vec())
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut state = self.state.lock();
        state.charge()?;
        if state.names.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        let parent = path.parent().expect("a file inside a directory");
        if !state.dirs.contains_key(parent) {
            return Err(not_found(parent));
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, Inode::default());
        state.names.insert(path.to_path_buf(), inode);
        Ok(Box::new(MemFile {
            state: self.state.clone(),
            inode,
        }))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let state = self.state.lock();
        let inode = *state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(MemFile {
            state: self.state.clone(),
            inode,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.charge()?;
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), inode);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.charge()?;
        state.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.charge()?;
        let in_dir = |p: &PathBuf| p.parent() == Some(path);
        let current: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        state.durable_names.retain(|p, _| !in_dir(p));
        state.durable_names.extend(current);
        Ok(())
    }
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut state = self.state.lock();
        if state.locked.insert(path.to_path_buf(), ()).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the data directory is locked by another process",
            ));
        }
        Ok(Box::new(MemLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_names_and_bytes() {
        let fs = MemFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut f = fs.create_new(&dir.join("a")).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_data().unwrap();
        f.write_all(b" world").unwrap();
        // The name is not durable yet: after a crash the file is gone.
        assert!(!fs.crash().exists(&dir.join("a")).unwrap());
        fs.sync_dir(dir).unwrap();
        let after = fs.crash();
        assert_eq!(after.read(&dir.join("a")).unwrap(), b"hello");
    }

    #[test]
    fn faults_fire_after_the_countdown_and_stick() {
        let fs = MemFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut f = fs.create_new(&dir.join("a")).unwrap();
        fs.set_fault(Some(Fault {
            after_ops: 1,
            disk_full: true,
            sticky: true,
        }));
        f.write_all(b"ok").unwrap();
        let err = f.write_all(b"torn").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(fs.read(&dir.join("a")).unwrap(), b"okto");
        assert!(f.sync_data().is_err());
        assert!(fs.fault_fired());
    }
}
