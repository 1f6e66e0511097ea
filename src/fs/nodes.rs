//! Dynamic inodes (tier versions, scratch files, lookup entries) and open handles.
//!
//! The kernel refers to an inode until it sends `forget`, so each dynamic inode is kept with
//! its lookup count; an open handle holds its own reference to what it reads (a version, a
//! scratch file, a snapshot of bytes), so the file stays readable after the name moved on.
//!
//! Generated files (`.iocfs/stats.json`, `metrics`, `health`, lookup entries) are snapshots:
//! each distinct content the kernel is given gets its own inode, like each version of a
//! list. `fstat` on a descriptor asks about its inode without naming the descriptor, so a
//! shared inode would report the size of a newer snapshot than the one the descriptor
//! reads, and a web server sends a body of the wrong length.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{FileHandle, INodeNo};

use super::inode::version;
use crate::sync::lock;

use crate::ioc::IocType;
use crate::store::live::LiveVersion;
use crate::store::model::Target;
use crate::store::staged::StagedReplace;
use crate::store::tier::TierVersion;
use crate::views::disk::ViewFile;

pub use super::scratch::{Scratch, ScratchPool, ScratchRef};

#[derive(Clone, Debug)]
pub enum Node {
    /// One version of a live file: its id is the inode number.
    Live(Arc<LiveVersion>),
    Tier(Arc<TierVersion>),
    Scratch(ScratchRef),
    /// A scratch inode renamed onto a type file (of live/ or allow/): the kernel's dentry
    /// points at it until the invalidation lands, so it stands for that file meanwhile.
    LiveAlias((Target, IocType)),
    /// A generated file's bytes as one lookup built them.
    Snapshot(Arc<Snapshot>),
    /// One version of a view file: its persisted id is the inode number.
    View(Arc<ViewFile>),
}

struct Entry {
    node: Node,
    lookups: u64,
}

/// What a lookup entry is about: (type, normalized value).
pub type LookupKey = (IocType, Vec<u8>);

/// One content of a generated file: its inode's bytes for good.
#[derive(Debug)]
pub struct Snapshot {
    pub bytes: Arc<Vec<u8>>,
    /// What the bytes are of.
    pub of: Arc<SnapshotOf>,
    /// When the bytes were built (the inode's mtime).
    pub built: u64,
    /// The kernel's page cache of the inode was given the bytes (see `IocFs::prefill`).
    pub prefilled: AtomicBool,
}

/// The name a snapshot inode stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SnapshotOf {
    /// stats.json, metrics or health, by their fixed inode (the one readdir lists).
    Control(INodeNo),
    /// `.iocfs/lookup/VALUE`.
    Lookup(LookupKey),
}

#[derive(Default)]
pub struct Nodes {
    map: Mutex<HashMap<INodeNo, Entry>>,
    /// The newest snapshot inode of each generated file, so a name keeps its inode while
    /// its bytes stay the same. Locked after `map`.
    snapshots: Mutex<HashMap<Arc<SnapshotOf>, INodeNo>>,
    /// Scratch files by directory (live/, allow/) and name.
    scratch_names: Mutex<HashMap<(Target, OsString), ScratchRef>>,
    /// The memory of all scratch files, named or not.
    pub scratch_pool: Arc<ScratchPool>,
    /// The store's id counter (shared with versions: see `inode`).
    next: Arc<AtomicU64>,
}

impl Nodes {
    pub fn new(ids: Arc<AtomicU64>) -> Nodes {
        Nodes {
            next: ids,
            ..Default::default()
        }
    }

    pub fn allocate(&self) -> INodeNo {
        INodeNo(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Count one kernel lookup of the generated file `of` whose bytes are now `bytes`:
    /// its newest inode if that one holds the same bytes, else a new inode. Returns the
    /// inode and when its bytes were built (`now` for a new one).
    pub fn remember_snapshot(
        &self,
        of: SnapshotOf,
        bytes: Arc<Vec<u8>>,
        now: u64,
    ) -> (INodeNo, u64) {
        let mut map = lock(&self.map);
        let mut names = lock(&self.snapshots);
        let of = Arc::new(of);
        if let Some(&ino) = names.get(&of) {
            if let Some(entry) = map.get_mut(&ino) {
                if let Node::Snapshot(held) = &entry.node {
                    if *held.bytes == *bytes {
                        entry.lookups += 1;
                        return (ino, held.built);
                    }
                }
            }
        }
        let ino = self.allocate();
        names.insert(of.clone(), ino);
        map.insert(
            ino,
            Entry {
                node: Node::Snapshot(Arc::new(Snapshot {
                    bytes,
                    of,
                    built: now,
                    prefilled: AtomicBool::new(false),
                })),
                lookups: 1,
            },
        );
        (ino, now)
    }

    /// Count one more kernel lookup of the snapshot inode `ino`, if the kernel still holds
    /// it: its length and when its bytes were built.
    pub fn look_up_snapshot_again(&self, ino: INodeNo) -> Option<(u64, u64)> {
        let mut map = lock(&self.map);
        let entry = map.get_mut(&ino)?;
        let Node::Snapshot(held) = &entry.node else {
            return None;
        };
        let found = (held.bytes.len() as u64, held.built);
        entry.lookups += 1;
        Some(found)
    }

    /// Count one kernel lookup of `ino`.
    pub fn remember(&self, ino: INodeNo, node: Node) {
        let mut map = lock(&self.map);
        let entry = map.entry(ino).or_insert(Entry {
            node: node.clone(),
            lookups: 0,
        });
        entry.node = node;
        entry.lookups += 1;
    }

    pub fn forget(&self, ino: INodeNo, n: u64) {
        let mut map = lock(&self.map);
        if let Some(e) = map.get_mut(&ino) {
            e.lookups = e.lookups.saturating_sub(n);
            if e.lookups == 0 {
                if let Some(Entry {
                    node: Node::Snapshot(held),
                    ..
                }) = map.remove(&ino)
                {
                    let mut names = lock(&self.snapshots);
                    if names.get(&held.of) == Some(&ino) {
                        names.remove(&held.of);
                    }
                }
            }
        }
    }

    /// Whether `ino` is a generated file's content (immutable).
    pub fn is_snapshot(&self, ino: INodeNo) -> bool {
        matches!(
            lock(&self.map).get(&ino),
            Some(Entry {
                node: Node::Snapshot(_),
                ..
            })
        )
    }

    pub fn get(&self, ino: INodeNo) -> Option<Node> {
        lock(&self.map).get(&ino).map(|e| e.node.clone())
    }

    pub fn set(&self, ino: INodeNo, node: Node) {
        if let Some(e) = lock(&self.map).get_mut(&ino) {
            e.node = node;
        }
    }

    pub fn scratch(&self, dir: Target, name: &OsStr) -> Option<ScratchRef> {
        lock(&self.scratch_names)
            .get(&(dir, name.to_os_string()))
            .cloned()
    }

    /// The scratch files of one directory.
    pub fn scratch_list(&self, dir: Target) -> Vec<(OsString, INodeNo)> {
        lock(&self.scratch_names)
            .iter()
            .filter(|((d, _), _)| *d == dir)
            .map(|((_, n), s)| (n.clone(), lock(s).ino))
            .collect()
    }

    /// Scratch files in all directories.
    pub fn scratch_count(&self) -> usize {
        lock(&self.scratch_names).len()
    }

    pub fn add_scratch(&self, dir: Target, name: OsString, scratch: ScratchRef) {
        lock(&self.scratch_names).insert((dir, name), scratch);
    }

    /// Take a name out of its directory (the file keeps its bytes: see `Scratch`).
    pub fn take_scratch(&self, dir: Target, name: &OsStr) -> Option<ScratchRef> {
        lock(&self.scratch_names).remove(&(dir, name.to_os_string()))
    }

    /// The name is gone for good: unlinked, or renamed over by another scratch file.
    pub fn unlink_scratch(&self, dir: Target, name: &OsStr) -> bool {
        match self.take_scratch(dir, name) {
            Some(s) => {
                lock(&s).unlinked();
                true
            }
            None => false,
        }
    }
}

/// What an open file handle reads and writes.
#[derive(Clone)]
pub enum Handle {
    /// A read-only open of a live file: pinned to the version it opened.
    LiveRead(Arc<LiveVersion>),
    /// The same, read by the kernel itself (FUSE passthrough); holds the backing id alive.
    /// The uid is the reader's (see [`Pins`]).
    LivePassthrough(Arc<LiveVersion>, Arc<fuser::BackingId>, u32),
    LiveWrite(Arc<Mutex<LiveWriter>>),
    /// A read-only open of a tier file: served from its blocks, through the kernel's page
    /// cache of the inode...
    Tier(Arc<TierReader>),
    /// ...or read by the kernel itself from the version inflated whole (the copy is held
    /// by the version's `opens` while this is open; the backing id by this).
    TierPassthrough(Arc<TierReader>, Arc<fuser::BackingId>),
    View(Arc<ViewFile>),
    Scratch(ScratchRef),
    /// A snapshot taken at open (stats.json, health, lookup entries).
    Bytes(Arc<Vec<u8>>),
    /// `.iocfs/ctl`: bytes written so far that did not end a command yet.
    Ctl(Arc<Mutex<Vec<u8>>>),
}

/// An open tier file: the version it reads and where its last read ended, to spot
/// sequential readers for read-ahead.
pub struct TierReader {
    pub version: Arc<TierVersion>,
    pub next: AtomicU64,
}

/// A writable handle on a type file of live/ or allow/ (README "What a write means").
#[derive(Debug)]
pub struct LiveWriter {
    pub target: Target,
    pub ty: IocType,
    /// The inode this handle was opened on.
    pub ino: INodeNo,
    pub mode: WriteMode,
    /// Unterminated bytes carried to the next write or the close.
    pub partial: Vec<u8>,
    /// Skipping the rest of a line rejected as too long (`ingest.on_invalid = "skip"`).
    pub skipping: bool,
    /// The write after `partial` failed, so the rest of that line was never taken: unless a
    /// later write goes on with it, it is a fragment and the close drops it.
    pub cut_short: bool,
    /// Lines seen so far, for rejection messages.
    pub line_no: u64,
    /// Where this handle's next sequential write lands (u64::MAX: nothing written yet).
    pub next_offset: u64,
    /// Opened with O_APPEND: offsets are the kernel's guess and carry no meaning.
    pub o_append: bool,
    /// Its entry in `Pending` while its close waits for the release.
    pub pending: Option<u64>,
    /// Who wrote through it and who closed it without writing (see `flush_live`).
    pub closers: super::closes::Closers,
    /// The thread that opened it: its close is most likely the last (see `flush_live`).
    pub opener: u32,
}

impl LiveWriter {
    /// What it writes to.
    pub fn of(&self) -> (Target, IocType) {
        (self.target, self.ty)
    }

    /// Its file's path in the mount, for messages.
    pub fn name(&self) -> String {
        format!("{}/{}", self.target.dir(), self.ty.file_name())
    }
}

#[derive(Debug)]
pub enum WriteMode {
    /// New lines are added at close of each write; known ones are sighted.
    Append,
    /// O_TRUNC, `>`, `cp`: the handle's lines become the whole set when it is closed.
    Replace {
        staged: StagedReplace,
        poisoned: bool,
        written: bool,
    },
}

impl Handle {
    /// The file version (inode) this handle reads, if it is one. Not a write handle's:
    /// what it writes goes to the current version whatever inode it was opened on.
    fn version(&self) -> Option<INodeNo> {
        match self {
            Handle::LiveRead(v) | Handle::LivePassthrough(v, ..) => Some(version(v.id)),
            Handle::Tier(r) | Handle::TierPassthrough(r, _) => Some(version(r.version.id)),
            Handle::View(f) => Some(INodeNo(f.ino)),
            Handle::LiveWrite(_) | Handle::Scratch(_) | Handle::Bytes(_) | Handle::Ctl(_) => None,
        }
    }
}

#[derive(Default)]
pub struct Handles {
    map: Mutex<OpenHandles>,
    next: AtomicU64,
}

#[derive(Default)]
struct OpenHandles {
    by_fh: HashMap<FileHandle, Handle>,
    /// Open handles per version, to tell a descriptor's `fstat` from a stale name.
    per_version: HashMap<INodeNo, Held>,
}

/// A version some handles hold open.
#[derive(Default)]
struct Held {
    handles: usize,
    /// The last version of the same bytes, grown, that its daemon-served readers read
    /// (see `IocFs::following`): they keep reading it once the file is replaced.
    followed: Option<Arc<LiveVersion>>,
}

impl Handles {
    pub fn insert(&self, h: Handle) -> FileHandle {
        let fh = FileHandle(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let mut m = lock(&self.map);
        if let Some(v) = h.version() {
            m.per_version.entry(v).or_default().handles += 1;
        }
        m.by_fh.insert(fh, h);
        fh
    }

    pub fn get(&self, fh: FileHandle) -> Option<Handle> {
        lock(&self.map).by_fh.get(&fh).cloned()
    }

    pub fn remove(&self, fh: FileHandle) -> Option<Handle> {
        let mut m = lock(&self.map);
        let h = m.by_fh.remove(&fh)?;
        if let Some(v) = h.version() {
            if let Some(held) = m.per_version.get_mut(&v) {
                held.handles -= 1;
                if held.handles == 0 {
                    m.per_version.remove(&v);
                }
            }
        }
        Some(h)
    }

    pub fn count(&self) -> usize {
        lock(&self.map).by_fh.len()
    }

    /// Whether any open handle reads version `ino`.
    pub fn holds(&self, ino: INodeNo) -> bool {
        lock(&self.map).per_version.contains_key(&ino)
    }

    /// Note that the readers of held version `ino` have read on into `to` (a later version
    /// with the same bytes and more).
    pub fn follow(&self, ino: INodeNo, to: &Arc<LiveVersion>) {
        if let Some(held) = lock(&self.map).per_version.get_mut(&ino) {
            // Readers on several threads: never back to a shorter one seen earlier.
            if held.followed.as_ref().is_none_or(|f| to.extends(f)) {
                held.followed = Some(to.clone());
            }
        }
    }

    /// The version the readers of held version `ino` last read on into, if any.
    pub fn followed(&self, ino: INodeNo) -> Option<Arc<LiveVersion>> {
        lock(&self.map)
            .per_version
            .get(&ino)
            .and_then(|held| held.followed.clone())
    }
}

/// Live versions each uid holds open through FUSE passthrough. A pinned version can't grow,
/// so every append after a pin makes a copy of the file: a reader that reopens after each
/// append could otherwise hold a copy per append (disk, memory, descriptors). Past
/// [`Pins::MAX_VERSIONS_PER_UID`] distinct versions, a uid's further opens are served by the
/// daemon instead (same bytes, no pin); opens of a version it already holds cost nothing.
#[derive(Default)]
pub struct Pins {
    by_uid: Mutex<HashMap<u32, HashMap<u64, usize>>>,
}

impl Pins {
    pub const MAX_VERSIONS_PER_UID: usize = 16;

    /// Count an open of `version` by `uid`, unless `limited` and that would pin one version
    /// too many. (Joining readers that pin it already is never limited: it costs no copy.)
    pub fn admit(&self, uid: u32, version: u64, limited: bool) -> bool {
        let mut all = lock(&self.by_uid);
        let held = all.entry(uid).or_default();
        if limited && !held.contains_key(&version) && held.len() >= Self::MAX_VERSIONS_PER_UID {
            return false;
        }
        *held.entry(version).or_default() += 1;
        true
    }

    pub fn release(&self, uid: u32, version: u64) {
        let mut all = lock(&self.by_uid);
        if let Some(held) = all.get_mut(&uid) {
            if let Some(n) = held.get_mut(&version) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&version);
                }
            }
            if held.is_empty() {
                all.remove(&uid);
            }
        }
    }
}
