//! A [`LiveVersion`]: the bytes of one version of a live file, in a memfd or an unnamed
//! file ([`Storage`]), published by length so readers only ever see whole lines.
//!
//! Passthrough readers (the kernel reading the file itself) pin a version: it must not grow
//! under them, so appends go to a copy. That copy ([`LiveVersion::copy`]) is made before
//! the state lock is taken (see `Store::prepare`), never under it: a reader reopening after
//! every append must not make every writer and reader wait for a whole-file copy.

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::disk::{real::RealFile, Disk, Handle};
use crate::error::{IoContext, Result};
use crate::ioc::IocType;
use crate::store::model::Target;
use crate::sync::lock;

/// Where the bytes of live versions are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Anonymous memory (memfd): no disk I/O, so outside the I/O seam (`disk`).
    Memfd,
    /// Unnamed files (O_TMPFILE) in this directory, on the data directory's filesystem:
    /// FUSE passthrough reads them at that filesystem's page-cache speed, and the kernel
    /// can write their pages out under memory pressure.
    Tmpfile(Disk, PathBuf),
}

/// Files made ahead of need ([`Storage::reserve`]), taken by [`Storage::create`].
static SPARES: Mutex<Vec<(Storage, Handle)>> = Mutex::new(Vec::new());

impl Storage {
    /// A new, empty file of this kind (for a version, or a staged replace): a spare one if
    /// there is one.
    /// `name` (e.g. `live/ipv4.txt`) says what the file is for, in errors.
    pub fn create(&self, name: &str) -> Result<Handle> {
        let mut spares = crate::sync::lock(&SPARES);
        if let Some(at) = spares.iter().position(|(s, _)| s == self) {
            return Ok(spares.swap_remove(at).1);
        }
        drop(spares);
        self.make().ctx(|| match self {
            Storage::Memfd => format!("memfd_create for {name}"),
            Storage::Tmpfile(_, dir) => {
                format!("create an unnamed file in {} for {name}", dir.display())
            }
        })
    }

    /// Make sure `n` files can be had without opening one: a batch whose apply needs new
    /// files gets them before its record is written, so running out of descriptors fails
    /// the request (EMFILE) instead of leaving a durable record that can't be applied.
    pub fn reserve(&self, n: usize) -> Result<()> {
        let have = crate::sync::lock(&SPARES)
            .iter()
            .filter(|(s, _)| s == self)
            .count();
        for _ in have..n {
            let file = self.make().ctx(|| "create a file for a new live version")?;
            crate::sync::lock(&SPARES).push((self.clone(), file));
        }
        Ok(())
    }

    fn make(&self) -> std::io::Result<Handle> {
        match self {
            Storage::Memfd => {
                nix::sys::memfd::memfd_create("iocfs-live", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                    .map(|fd| RealFile::boxed(File::from(fd), "(memfd)"))
                    .map_err(std::io::Error::from)
            }
            Storage::Tmpfile(disk, dir) => disk.create_unnamed(dir),
        }
    }
}

#[derive(Debug)]
pub struct LiveVersion {
    /// Unique among all versions of all files (an inode-like identity).
    pub id: u64,
    /// The version whose bytes these are: its own id, or, for a copy (made for readers or
    /// writers), the original's. Versions grow only by appends, so two versions with the
    /// same `content` and length hold the same bytes.
    content: u64,
    /// The file it is a version of: a live file, or an allowlist.
    pub target: Target,
    pub ty: IocType,
    file: Handle,
    storage: Storage,
    len: AtomicU64,
    lines: AtomicU64,
    mtime: AtomicU64,
    /// How this version's inode is open (see [`Opens`]).
    opens: Mutex<Opens>,
}

/// How a live version's inode is open. While passthrough readers hold it, the kernel reads
/// the file directly, up to its size, so the version must not grow (an append in progress
/// would show a partial line): appends make a new version. And the kernel fails with EIO an
/// open served by the daemon of an inode that passthrough readers hold; such an open is safe
/// only once the kernel has finished it, which the daemon can't see: for a while after
/// deciding one, it pins nobody new on that version.
#[derive(Debug, Default)]
struct Opens {
    /// Descriptors reading through FUSE passthrough.
    pinned: usize,
    /// When the last open served by the daemon was decided.
    last_plain: Option<Instant>,
}

/// How long an open served by the daemon may take to reach the kernel's checks after the
/// daemon's answer (a reply write, then the opener's thread running on): far more than it
/// takes, short enough that a file written once a minute is soon pinnable again.
const PLAIN_OPEN_SETTLES: Duration = Duration::from_secs(1);

/// Versions are compared a MiB at a time (see `LiveVersion::matches_by_piece`).
const COMPARED_PIECE: usize = 1 << 20;

impl LiveVersion {
    /// A version holding `content`. If the data directory's filesystem is full (unnamed
    /// files there hold the versions FUSE passthrough serves), in memory instead: a new
    /// version is made while applying a durable record (aging, a replace, recovery's load),
    /// and failing to make it would stop the store.
    pub fn new(
        id: u64,
        of: (Target, IocType),
        content: &[u8],
        lines: u64,
        mtime: u64,
        storage: &Storage,
    ) -> Result<Arc<LiveVersion>> {
        match Self::new_in(id, of, content, lines, mtime, storage) {
            Err(e) if e.is_disk_full() && *storage != Storage::Memfd => {
                log::warn!(
                    "{}/{}: {e}; this set is kept in memory",
                    of.0.dir(),
                    of.1.file_name()
                );
                Self::new_in(id, of, content, lines, mtime, &Storage::Memfd)
            }
            made => made,
        }
    }

    fn new_in(
        id: u64,
        (target, ty): (Target, IocType),
        content: &[u8],
        lines: u64,
        mtime: u64,
        storage: &Storage,
    ) -> Result<Arc<LiveVersion>> {
        let name = format!("{}/{}", target.dir(), ty.file_name());
        let file = storage.create(&name)?;
        file.write_all_at(content, 0)
            .ctx(|| format!("fill the content of {name}"))?;
        Ok(Arc::new(LiveVersion {
            id,
            content: id,
            target,
            ty,
            file,
            storage: storage.clone(),
            len: AtomicU64::new(content.len() as u64),
            lines: AtomicU64::new(lines),
            mtime: AtomicU64::new(mtime),
            opens: Mutex::new(Opens::default()),
        }))
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Count a passthrough reader in (call with the state lock held, so no append is
    /// halfway through it): false, nothing counted, while an open served by the daemon may
    /// still be on its way (see [`Opens`]) and no passthrough reader holds it yet.
    pub fn pin(&self) -> bool {
        let mut o = lock(&self.opens);
        let settling = o
            .last_plain
            .is_some_and(|t| t.elapsed() < PLAIN_OPEN_SETTLES);
        if o.pinned == 0 && settling {
            return false;
        }
        o.pinned += 1;
        true
    }

    /// Count one more passthrough reader in, if passthrough readers hold it already.
    pub fn pin_again(&self) -> bool {
        let mut o = lock(&self.opens);
        let held = o.pinned > 0;
        if held {
            o.pinned += 1;
        }
        held
    }

    pub fn passthrough_closed(&self) {
        let mut o = lock(&self.opens);
        o.pinned = o.pinned.saturating_sub(1);
    }

    /// An open served by the daemon, unless passthrough readers hold the version (the
    /// kernel would fail it).
    pub fn open_plain(&self) -> bool {
        let mut o = lock(&self.opens);
        let free = o.pinned == 0;
        if free {
            o.last_plain = Some(Instant::now());
        }
        free
    }

    pub fn has_passthrough_readers(&self) -> bool {
        lock(&self.opens).pinned > 0
    }

    /// A new version (id `new_id`) holding this one's bytes as they are now. Pinned
    /// versions never grow, so this needs no lock when the version is pinned; otherwise the
    /// caller checks the length is still the same before using the copy.
    pub fn copy(&self, new_id: u64, mtime: u64) -> Result<Arc<LiveVersion>> {
        crate::failpoint::pause("live::copy");
        self.copy_into(new_id, mtime, &self.storage)
    }

    /// [`copy`](Self::copy), into `storage`.
    pub fn copy_into(
        &self,
        new_id: u64,
        mtime: u64,
        storage: &Storage,
    ) -> Result<Arc<LiveVersion>> {
        let file = storage.create(&self.name())?;
        let len = self.len();
        let lines = self.lines();
        let mut copied = 0u64;
        while copied < len {
            let chunk = self.read_at(copied, (len - copied).min(8 << 20) as usize)?;
            file.write_all_at(&chunk, copied)
                .ctx(|| format!("copy {} into a new version", self.name()))?;
            copied += chunk.len() as u64;
        }
        Ok(Arc::new(LiveVersion {
            id: new_id,
            content: self.content,
            target: self.target,
            ty: self.ty,
            file,
            storage: storage.clone(),
            len: AtomicU64::new(len),
            lines: AtomicU64::new(lines),
            mtime: AtomicU64::new(mtime),
            opens: Mutex::new(Opens::default()),
        }))
    }

    /// Its path in the mount, for messages: `live/ipv4.txt`, `allow/domain.txt`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.target.dir(), self.ty.file_name())
    }

    /// What it is a version of.
    pub fn of(&self) -> (Target, IocType) {
        (self.target, self.ty)
    }

    /// The id of the version whose bytes these are (see the field).
    pub fn content(&self) -> u64 {
        self.content
    }

    /// Whether this version's bytes start with all of `older`'s: a copy of it, or its
    /// original, grown by appends since or not.
    pub fn extends(&self, older: &LiveVersion) -> bool {
        self.content == older.content && self.len() >= older.len()
    }

    /// Whether `other` holds exactly these bytes now (a copy of this one, or its original,
    /// and neither grew since).
    pub fn same_bytes_as(&self, other: &LiveVersion) -> bool {
        self.extends(other) && other.extends(self)
    }

    /// Bytes a reader may see: always whole lines.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Acquire)
    }

    pub fn mtime(&self) -> u64 {
        self.mtime.load(Ordering::Acquire)
    }

    /// The file holding the bytes, for FUSE passthrough (None on a simulated disk).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.file.fd()
    }

    /// Read up to `size` bytes at `offset`, never past the published length.
    pub fn read_at(&self, offset: u64, size: usize) -> Result<Vec<u8>> {
        let end = self.len().min(offset.saturating_add(size as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .ctx(|| format!("read the content of {} at {offset}", self.name()))?;
        Ok(buf)
    }

    pub fn read_all(&self) -> Result<Vec<u8>> {
        self.read_at(0, self.len() as usize)
    }

    /// Whether the version holds exactly `bytes` now.
    pub fn holds(&self, bytes: &[u8]) -> bool {
        self.matches_by_piece(bytes.len() as u64, |at, mine| {
            let at = at as usize;
            Ok(bytes.get(at..at + mine.len()) == Some(mine))
        })
        .unwrap_or(false)
    }

    /// Whether `other` holds the same bytes now.
    pub fn same_content_as(&self, other: &LiveVersion) -> Result<bool> {
        self.matches_by_piece(other.len(), |at, mine| {
            Ok(other.read_at(at, COMPARED_PIECE)? == mine)
        })
    }

    /// Whether the version is `len` bytes long and `same` accepts each of its pieces (a MiB
    /// at a time, with its offset).
    fn matches_by_piece(
        &self,
        len: u64,
        mut same: impl FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<bool> {
        if self.len() != len {
            return Ok(false);
        }
        let mut at = 0;
        while at < len {
            if !same(at, &self.read_at(at, COMPARED_PIECE)?)? {
                return Ok(false);
            }
            at += COMPARED_PIECE as u64;
        }
        Ok(true)
    }

    /// Fill a version that no reader can see yet (a replace being built), whole lines.
    pub fn fill(&self, bytes: &[u8], lines: u64, mtime: u64) -> Result<()> {
        self.append(bytes, lines, mtime)
    }

    /// Extend the version with whole lines. Only the engine's apply path calls this, one
    /// caller at a time (it holds the state lock), so the length can't move underneath it.
    pub(super) fn append(&self, bytes: &[u8], lines: u64, mtime: u64) -> Result<()> {
        let at = self.len();
        self.file
            .write_all_at(bytes, at)
            .ctx(|| format!("append to the content of {} at {at}", self.name()))?;
        self.lines.fetch_add(lines, Ordering::AcqRel);
        self.mtime.store(mtime, Ordering::Release);
        self.len.store(at + bytes.len() as u64, Ordering::Release);
        Ok(())
    }
}
