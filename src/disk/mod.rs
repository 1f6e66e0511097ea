//! The engine's one I/O seam, after raft-engine's `FileSystem` (src/env/): every file
//! system operation of the store, of [`crate::atomic`] and of the view files goes through a
//! [`FileSystem`], and every read or write of an open file through a [`FileHandle`].
//!
//! Production uses [`real::RealFs`] (std and `openat`, nothing more); test builds arm
//! failpoints on it (`wal::write`, `commit::write`, … see [`crate::failpoint::io`]) and add
//! [`sim::SimDisk`], an in-memory disk that models what a power cut leaves behind, which
//! `scripts/powerloss` cuts at every operation.
//!
//! Memory is not disk: live versions kept in a memfd stay outside the seam (a power cut
//! loses them as it loses every process's memory, and nothing reads them after a restart).
//! Unnamed files (O_TMPFILE: passthrough live versions, staged replaces) go through it; they
//! never have a name, so no crash image holds them either.
//!
//! Dispatch is dynamic (`Arc<dyn FileSystem>`, `Box<dyn FileHandle>`): a virtual call per
//! operation is nothing next to the system call behind it (README "Performance" has the
//! before/after rows).

mod mapped;
pub mod mapped_mut;
pub mod real;
#[cfg(feature = "testing")]
pub mod sim;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
pub use mapped::Mapped;

/// An open file.
pub trait FileHandle: Send + Sync + fmt::Debug {
    /// The path it was opened by (for error messages; unnamed files say what they are for).
    fn path(&self) -> &Path;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// Write `len` zeros at `offset` (the WAL's fill ahead of its records).
    fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    /// fsync: data, size and the rest of the inode.
    fn sync_all(&self) -> io::Result<()>;
    /// fdatasync: data and what is needed to read it back (the size).
    fn sync_data(&self) -> io::Result<()>;
    /// Set the modification time (Unix seconds): a committed file carries the time its
    /// content last changed, which the next mount reads back (`Metadata::mtime`).
    fn set_mtime(&self, secs: u64) -> io::Result<()>;
    /// The descriptor, for FUSE passthrough (None on a simulated disk).
    fn fd(&self) -> Option<BorrowedFd<'_>>;

    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

pub type Handle = Box<dyn FileHandle>;

/// What `metadata` tells (of the name itself: a symlink is not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub len: u64,
    /// Unix seconds.
    pub mtime: i64,
    pub kind: Kind,
}

impl Metadata {
    /// The mtime in Unix seconds; 0 when unknown (a simulated disk says 0) or before 1970.
    pub fn mtime_secs(&self) -> u64 {
        u64::try_from(self.mtime).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
}

/// A whole file's bytes for a scan: mapped from the page cache, or copied.
pub enum Bytes {
    Mapped(Mapped),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({})", self.len())
    }
}

/// Held while a process works on a data directory (see `store::DataDirLock`).
pub type LockGuard = Box<dyn Send + Sync>;

/// Every file system operation of the engine. Paths are absolute or relative to the
/// process's working directory, as std takes them.
pub trait FileSystem: Send + Sync {
    /// What this is, for logs ("real", "simulated").
    fn name(&self) -> &'static str;
    /// Create a new file for reading and writing: never through a symlink, never over an
    /// existing file (a leftover of that name is unlinked first, the name only).
    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Handle>;
    /// Open an existing regular file for reading and writing, never through a symlink.
    fn open_rw(&self, path: &Path) -> io::Result<Handle>;
    fn open_read(&self, path: &Path) -> io::Result<Handle>;
    /// A file without a name in `dir` (O_TMPFILE): gone at the next mount whatever happens.
    fn create_unnamed(&self, dir: &Path) -> io::Result<Handle>;
    /// The whole file, for the WAL's recovery scan (mapped where it can be).
    fn map(&self, path: &Path) -> io::Result<Bytes>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<Entry>>;
    /// fsync a directory: the creations, renames and removals in it become durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// A directory iocfs may trust (`secure`), created (one level) when `create` and missing.
    fn trusted_dir(&self, path: &Path, what: &str, create: bool) -> Result<PathBuf>;
    /// A subdirectory of a trusted one, created when `create` and missing (`secure::subdir`).
    /// The caller makes a creation durable (`sync_dir` of `parent`).
    fn subdir(&self, parent: &Path, name: &str, create: bool) -> Result<(PathBuf, bool)>;
    /// Lock a data directory for this process (`DATA/LOCK`), or say who holds it.
    fn lock(&self, data_dir: &Path) -> Result<LockGuard>;
}

/// The file system a store works on: shared, compared by identity.
#[derive(Clone)]
pub struct Disk(Arc<dyn FileSystem>);

impl Disk {
    pub fn new(fs: Arc<dyn FileSystem>) -> Disk {
        Disk(fs)
    }

    /// The real file system (one shared instance).
    pub fn real() -> Disk {
        static REAL: std::sync::OnceLock<Disk> = std::sync::OnceLock::new();
        REAL.get_or_init(|| Disk(Arc::new(real::RealFs))).clone()
    }

    /// The real file system (where `secure`'s ownership checks and permissions apply).
    pub fn is_real(&self) -> bool {
        self.0.name() == "real"
    }

    pub fn exists(&self, path: &Path) -> bool {
        self.0.metadata(path).is_ok()
    }

    pub fn is_dir(&self, path: &Path) -> bool {
        self.0.metadata(path).is_ok_and(|m| m.kind == Kind::Dir)
    }
}

impl Deref for Disk {
    type Target = dyn FileSystem;
    fn deref(&self) -> &(dyn FileSystem + 'static) {
        &*self.0
    }
}

impl PartialEq for Disk {
    fn eq(&self, other: &Disk) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(&other.0))
    }
}

impl Eq for Disk {}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Disk({})", self.0.name())
    }
}

/// Sequential writes to a handle from offset 0 (`write!`, `BufWriter`, `io::copy`).
pub struct Writer<'a> {
    handle: &'a dyn FileHandle,
    at: u64,
}

impl<'a> Writer<'a> {
    pub fn new(handle: &'a dyn FileHandle) -> Writer<'a> {
        Writer { handle, at: 0 }
    }
}

impl io::Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.handle.write_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sequential reads of a handle from offset 0 (a gzip decoder over a foreign file).
pub struct Reader {
    handle: Handle,
    at: u64,
}

impl Reader {
    pub fn new(handle: Handle) -> Reader {
        Reader { handle, at: 0 }
    }
}

impl io::Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.handle.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}
