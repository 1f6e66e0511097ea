//! A simulated disk (test builds): an in-memory file system behind the I/O seam that knows,
//! at every step, what a power cut could leave behind, and makes crash images of it
//! ([`SimDisk::crash_image`]). `scripts/powerloss` cuts power at every step of a run.
//!
//! # The model: what survives a power cut
//!
//! Conservative, after a journaling file system (ext4 `data=ordered`, xfs) without relying
//! on anything POSIX does not promise:
//!
//! - **File data.** Bytes written to a file and not yet covered by an `fsync`/`fdatasync` of
//!   that file may be lost, whole or per 4 KiB page: each page written since the file's last
//!   sync comes back as it is now or as it was at that sync, where bytes past the synced size
//!   read as zeros (an unsynced region of a file that grew may read back as zeros). Pages
//!   never written since the sync come back as they were then; a synced byte that was not
//!   overwritten never changes (a file system does not lose allocated blocks).
//! - **File size.** A size change (a write past the end, `set_len`) not yet covered by a sync
//!   of the file may be lost: the file comes back at its synced size or at any size it had
//!   since (the bytes past what was written then read as zeros).
//! - **Names.** Creations, renames, unlinks, links, `mkdir` and `rmdir` not yet covered by an
//!   `fsync` of their directory may be lost, but metadata operations persist in the order they
//!   were made (the journal is one ordered log): a crash keeps a prefix of them, at least up to
//!   the last one an `fsync` of its directory made durable. A file's `fsync` does not make its
//!   name durable.
//! - After `fsync(file)` its data and size survive; after `fsync(dir)` its entries survive.
//! - A failed fsync makes nothing durable (the kernel may have dropped the dirty pages).
//! - Unnamed files (`O_TMPFILE`) never survive.
//!
//! What a real ext4 (`data=ordered`, the default) or xfs guarantees beyond this, and iocfs
//! does not rely on: ext4 commits the whole journal at any `fsync`, so one file's `fsync`
//! also makes every earlier creation and rename durable; in `data=ordered` mode data blocks
//! reach the disk before the size that exposes them, so an appended region never reads as
//! zeros there (it can on xfs and in `data=writeback`); ext4 flushes a file's data before
//! a rename over an existing name commits (`auto_da_alloc`); sectors of 512 bytes or 4 KiB
//! are written whole, so a torn page is rarer than the model's torn file.
//!
//! Steps: every operation that changes the disk or what is durable (write, zero fill,
//! `set_len`, fsync, fdatasync, directory fsync, create, rename, unlink, link, mkdir, rmdir)
//! is a numbered step; before each, the [`Observer`] is told and may fail it with an errno.

mod durable;
mod file;
mod image;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Bytes, Entry, FileHandle, FileSystem, Handle, Kind, LockGuard, Metadata};
use crate::error::{Error, Result};
use crate::sync::lock;
use durable::{Meta, Node, Tree};

pub use file::SimFile;
pub use image::{Choices, Rng};

/// The unit in which unsynced data survives or not.
pub const PAGE: u64 = 4096;

/// Kinds of steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Write,
    Zeros,
    SetLen,
    SyncData,
    SyncAll,
    SyncDir,
    Create,
    Rename,
    Unlink,
    Link,
    Mkdir,
    Rmdir,
}

impl Step {
    pub fn is_sync(self) -> bool {
        matches!(self, Step::SyncData | Step::SyncAll | Step::SyncDir)
    }

    pub fn is_write(self) -> bool {
        matches!(self, Step::Write | Step::Zeros)
    }
}

/// Told before every step (`n` counts from 0); an error it returns fails the step, which
/// then changes nothing.
pub type Observer = Box<dyn FnMut(&SimDisk, u64, Step, &Path) -> Option<io::Error> + Send>;

#[derive(Default)]
struct Inner {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// The namespace as it is now.
    current: Tree,
    /// The namespace a crash keeps for sure; `pending` leads from it to `current`.
    base: Tree,
    pending: Vec<Meta>,
    steps: u64,
    /// Open handles per inode: an unlinked file lives while one is open.
    open: HashMap<u64, usize>,
    locks: HashSet<PathBuf>,
}

impl Inner {
    fn new_node(&mut self, node: Node) -> u64 {
        self.next_ino += 1;
        self.nodes.insert(self.next_ino, node);
        self.next_ino
    }

    fn meta(&mut self, op: Meta) {
        self.current.apply(&op);
        self.pending.push(op);
    }

    /// fsync of `dir`: every metadata operation up to its last one there is durable.
    fn sync_dir(&mut self, dir: &Path) {
        if let Some(last) = self.pending.iter().rposition(|op| op.touches(dir)) {
            for op in self.pending.drain(..=last) {
                self.base.apply(&op);
            }
            self.collect();
        }
    }

    /// Forget files no name, pending operation or open handle refers to.
    fn collect(&mut self) {
        let mut keep: HashSet<u64> = self.current.files.values().copied().collect();
        keep.extend(self.base.files.values().copied());
        keep.extend(self.pending.iter().filter_map(|op| match op {
            Meta::Create(_, ino) | Meta::Link(_, ino) => Some(*ino),
            _ => None,
        }));
        keep.extend(self.open.keys().copied());
        self.nodes.retain(|ino, _| keep.contains(ino));
    }

    fn file(&self, path: &Path) -> io::Result<u64> {
        match self.current.files.get(path) {
            Some(&ino) => Ok(ino),
            None if self.current.dirs.contains(path) => Err(errno(libc::EISDIR)),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(dir) if self.current.dirs.contains(dir) => Ok(()),
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        self.current.files.contains_key(path) || self.current.dirs.contains(path)
    }
}

struct Shared {
    inner: Mutex<Inner>,
    observer: Mutex<Option<Observer>>,
}

/// The simulated disk. Clones share it.
#[derive(Clone)]
pub struct SimDisk(Arc<Shared>);

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// `path` made absolute and without `.`/`..` (the simulated disk has no working directory
/// other than `/` and no symlinks).
fn norm(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

impl Default for SimDisk {
    fn default() -> SimDisk {
        SimDisk::new()
    }
}

impl SimDisk {
    /// An empty disk holding only `/`.
    pub fn new() -> SimDisk {
        let mut inner = Inner::default();
        inner.current.dirs.insert(PathBuf::from("/"));
        inner.base = inner.current.clone();
        SimDisk(Arc::new(Shared {
            inner: Mutex::new(inner),
            observer: Mutex::new(None),
        }))
    }

    pub fn disk(&self) -> super::Disk {
        super::Disk::new(Arc::new(self.clone()))
    }

    pub fn set_observer(&self, observer: Option<Observer>) {
        *lock(&self.0.observer) = observer;
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        lock(&self.0.inner).steps
    }

    /// Bytes held (current contents), to keep runs in bounds.
    pub fn bytes(&self) -> u64 {
        let inner = lock(&self.0.inner);
        inner.nodes.values().map(|n| n.data.len() as u64).sum()
    }

    /// Number the next step, tell the observer (without holding the disk, so it can look at
    /// it) and fail the step if it says so.
    fn step(&self, kind: Step, path: &Path) -> io::Result<()> {
        let n = {
            let mut inner = lock(&self.0.inner);
            inner.steps += 1;
            inner.steps - 1
        };
        let taken = lock(&self.0.observer).take();
        if let Some(mut observer) = taken {
            let failed = observer(self, n, kind, path);
            let mut slot = lock(&self.0.observer);
            if slot.is_none() {
                *slot = Some(observer);
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }

    fn handle(&self, ino: u64, path: &Path) -> Handle {
        *lock(&self.0.inner).open.entry(ino).or_default() += 1;
        Box::new(SimFile {
            disk: self.clone(),
            ino,
            path: path.to_path_buf(),
        })
    }

    fn with_node<T>(&self, ino: u64, f: impl FnOnce(&mut Node) -> T) -> io::Result<T> {
        let mut inner = lock(&self.0.inner);
        inner
            .nodes
            .get_mut(&ino)
            .map(f)
            .ok_or_else(|| errno(libc::EBADF))
    }
}

impl FileSystem for SimDisk {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn create_new(&self, path: &Path, _mode: u32) -> io::Result<Handle> {
        let path = norm(path);
        lock(&self.0.inner).parent_exists(&path)?;
        if lock(&self.0.inner).current.files.contains_key(&path) {
            self.remove_file(&path)?;
        }
        self.step(Step::Create, &path)?;
        let ino = {
            let mut inner = lock(&self.0.inner);
            if inner.exists(&path) {
                return Err(errno(libc::EEXIST));
            }
            let ino = inner.new_node(Node::default());
            inner.meta(Meta::Create(path.clone(), ino));
            ino
        };
        Ok(self.handle(ino, &path))
    }

    fn open_rw(&self, path: &Path) -> io::Result<Handle> {
        let path = norm(path);
        let ino = lock(&self.0.inner).file(&path)?;
        Ok(self.handle(ino, &path))
    }

    fn open_read(&self, path: &Path) -> io::Result<Handle> {
        self.open_rw(path)
    }

    fn create_unnamed(&self, dir: &Path) -> io::Result<Handle> {
        let dir = norm(dir);
        let ino = {
            let mut inner = lock(&self.0.inner);
            if !inner.current.dirs.contains(&dir) {
                return Err(io::ErrorKind::NotFound.into());
            }
            inner.new_node(Node::default())
        };
        Ok(self.handle(ino, &dir.join("(unnamed)")))
    }

    fn map(&self, path: &Path) -> io::Result<Bytes> {
        self.read(path).map(Bytes::Owned)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let inner = lock(&self.0.inner);
        let ino = inner.file(&norm(path))?;
        Ok(inner
            .nodes
            .get(&ino)
            .map(|n| n.data.clone())
            .unwrap_or_default())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (norm(from), norm(to));
        {
            let inner = lock(&self.0.inner);
            inner.file(&from)?;
            inner.parent_exists(&to)?;
            if inner.current.dirs.contains(&to) {
                return Err(errno(libc::EISDIR));
            }
        }
        self.step(Step::Rename, &from)?;
        lock(&self.0.inner).meta(Meta::Rename(from, to));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        lock(&self.0.inner).file(&path)?;
        self.step(Step::Unlink, &path)?;
        let mut inner = lock(&self.0.inner);
        inner.meta(Meta::Unlink(path));
        Ok(())
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (norm(from), norm(to));
        let ino = {
            let inner = lock(&self.0.inner);
            let ino = inner.file(&from)?;
            inner.parent_exists(&to)?;
            if inner.exists(&to) {
                return Err(errno(libc::EEXIST));
            }
            ino
        };
        self.step(Step::Link, &to)?;
        lock(&self.0.inner).meta(Meta::Link(to, ino));
        Ok(())
    }

    fn create_dir(&self, path: &Path, _mode: u32) -> io::Result<()> {
        let path = norm(path);
        {
            let inner = lock(&self.0.inner);
            inner.parent_exists(&path)?;
            if inner.exists(&path) {
                return Err(errno(libc::EEXIST));
            }
        }
        self.step(Step::Mkdir, &path)?;
        lock(&self.0.inner).meta(Meta::Mkdir(path));
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        {
            let inner = lock(&self.0.inner);
            if !inner.current.dirs.contains(&path) {
                return Err(io::ErrorKind::NotFound.into());
            }
            if !inner.current.children(&path).is_empty() {
                return Err(errno(libc::ENOTEMPTY));
            }
        }
        self.step(Step::Rmdir, &path)?;
        lock(&self.0.inner).meta(Meta::Rmdir(path));
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let dir = norm(dir);
        let inner = lock(&self.0.inner);
        if !inner.current.dirs.contains(&dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(inner.current.children(&dir))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = norm(dir);
        if !lock(&self.0.inner).current.dirs.contains(&dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        self.step(Step::SyncDir, &dir)?;
        lock(&self.0.inner).sync_dir(&dir);
        Ok(())
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let path = norm(path);
        let inner = lock(&self.0.inner);
        if inner.current.dirs.contains(&path) {
            return Ok(Metadata {
                len: 0,
                mtime: 0,
                kind: Kind::Dir,
            });
        }
        let ino = inner.file(&path)?;
        Ok(Metadata {
            len: inner.nodes.get(&ino).map_or(0, |n| n.data.len() as u64),
            mtime: 1_700_000_000,
            kind: Kind::File,
        })
    }

    fn trusted_dir(&self, path: &Path, what: &str, create: bool) -> Result<PathBuf> {
        let path = norm(path);
        if create && !self.exists_dir(&path) {
            self.create_dir(&path, 0o750)
                .map_err(|e| Error::io(format!("create {what} {}", path.display()), e))?;
        }
        if !self.exists_dir(&path) {
            return Err(Error::io(
                format!("{what} {}", path.display()),
                io::ErrorKind::NotFound.into(),
            ));
        }
        Ok(path)
    }

    fn subdir(&self, parent: &Path, name: &str, create: bool) -> Result<(PathBuf, bool)> {
        let path = norm(&parent.join(name));
        if self.exists_dir(&path) {
            return Ok((path, false));
        }
        if lock(&self.0.inner).current.files.contains_key(&path) {
            return Err(Error::Unsafe(format!(
                "refusing {}: not a directory",
                path.display()
            )));
        }
        if !create {
            return Ok((path, false));
        }
        self.create_dir(&path, 0o750)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        Ok((path, true))
    }

    fn lock(&self, data_dir: &Path) -> Result<LockGuard> {
        let dir = norm(data_dir);
        if !lock(&self.0.inner).locks.insert(dir.clone()) {
            return Err(Error::Locked(format!(
                "data directory {} is in use",
                dir.display()
            )));
        }
        Ok(Box::new(Unlock {
            disk: self.clone(),
            dir,
        }))
    }
}

impl SimDisk {
    fn exists_dir(&self, path: &Path) -> bool {
        lock(&self.0.inner).current.dirs.contains(path)
    }

    /// Names of every file and directory, for reports.
    pub fn listing(&self) -> Vec<(PathBuf, Option<u64>)> {
        let inner = lock(&self.0.inner);
        let mut out: Vec<(PathBuf, Option<u64>)> = inner
            .current
            .dirs
            .iter()
            .map(|d| (d.clone(), None))
            .collect();
        for (p, ino) in &inner.current.files {
            let len = inner.nodes.get(ino).map_or(0, |n| n.data.len() as u64);
            out.push((p.clone(), Some(len)));
        }
        out.sort();
        out
    }
}

struct Unlock {
    disk: SimDisk,
    dir: PathBuf,
}

impl Drop for Unlock {
    fn drop(&mut self) {
        lock(&self.disk.0.inner).locks.remove(&self.dir);
    }
}

/// Names in a directory listing, sorted (tests and reports).
pub fn names(entries: &[Entry]) -> Vec<OsString> {
    let mut out: Vec<OsString> = entries.iter().map(|e| e.name.clone()).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests;
