//! The FUSE layer: a thin translation of kernel requests into store calls. It owns inode
//! numbers, open handles and scratch files; the store owns the data. Domain errors become
//! errnos here and nowhere else.
//!
//! Invalidations are of attributes only (`FUSE_NOTIFY_INVAL_INODE`, offset -1), which take
//! no page or directory lock and so never wait for a client. Handlers queue [`Inval`]s for
//! the daemon's notifier thread; the store's change hook sends the one for a superseded
//! version synchronously, before the change is acknowledged (see `daemon/mod.rs`). Names are
//! never invalidated (see docs/internals.md).

mod attrs;
mod closes;
mod control;
mod flocks;
pub mod inode;
mod namespace;
pub mod nodes;
mod open;
mod passthrough;
mod retry;
mod scratch;
mod setup;
mod stat_pins;
mod views;
mod walk;
mod write;

use std::ffi::OsStr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::error::Error;
use crate::ioc::IocType;
use crate::store::Store;
use crate::views::Views;
use inode::Owner;
use nodes::{Handle, Handles, Node, Nodes};

/// How long the kernel may keep names and attributes of directories.
const STABLE_TTL: Duration = Duration::from_secs(60);
/// The same for the type files, whose names move to a new inode with every version. The
/// daemon never invalidates a name: the kernel's FUSE_NOTIFY_INVAL_ENTRY waits for the
/// directory lock uninterruptibly, and if the daemon is SIGKILLed while a client holding
/// that lock waits for an answer, the notifying thread can never die and the mount hangs
/// for good. Instead the superseded inode's attributes are dropped (no lock taken): a
/// getattr through the stale name then answers for the current version, and an open
/// answers ESTALE, which makes the kernel look the name up again. The one case that can't
/// tell (a `stat` by name while a descriptor still holds the superseded version) is
/// bounded by this TTL. A live version's size only grows
/// through writes on the mount, which make the kernel drop the cached size itself (or the
/// notifier does, when the write went through another inode).
const VERSION_TTL: Duration = Duration::from_secs(1);
const NO_TTL: Duration = Duration::ZERO;
/// Largest write the kernel sends in one request: one write() up to this size is applied
/// all or nothing.
pub const MAX_WRITE: u32 = 1 << 20;

/// Kernel cache entries to drop, sent by the notifier thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inval {
    /// An inode's attributes changed (a live version grew through another inode, or the
    /// version was superseded).
    Inode(INodeNo),
}

pub struct IocFs {
    store: Arc<Store>,
    owner: Owner,
    nodes: Nodes,
    handles: Handles,
    inval: Sender<Inval>,
    /// The time of empty files and directories (see `new`).
    contentless_time: u64,
    pending: closes::Pending,
    /// Sends the kernel generated files' bytes from request handlers (set once the session
    /// exists: see `control::prefill`).
    kernel: Arc<OnceLock<Notifier>>,
    /// Serve read-only live opens through FUSE passthrough (config, and kernel support).
    passthrough: bool,
    /// Serve tier files from inflated copies through passthrough (off once the kernel
    /// refused one for good).
    tier_passthrough: std::sync::atomic::AtomicBool,
    /// Readers walking the tier files, for inflating the next file ahead of its open.
    tier_walk: walk::TierWalk,
    /// One backing id per version: the kernel wants every passthrough open of an inode to
    /// use the same one.
    backing: std::sync::Mutex<std::collections::HashMap<u64, std::sync::Weak<fuser::BackingId>>>,
    /// The backing id of each live file's newest version read by passthrough, kept after
    /// its readers close (see `keep_backing`).
    kept_backing: std::sync::Mutex<
        std::collections::HashMap<(crate::store::model::Target, IocType), Arc<fuser::BackingId>>,
    >,
    /// Live types a background copy is being made of, for readers to pin (see
    /// `copy_for_readers_soon`).
    copying_for_readers: Arc<std::sync::Mutex<std::collections::HashSet<IocType>>>,
    retries: retry::StaleRetries,
    /// Replaces reopened through an inode of their own (see `open_live`).
    replace_retries: retry::ReplaceRetries,
    /// The replace handle open on each such inode, whose size it shows
    /// (`ReplacingInodes::written`).
    replacing: write::ReplacingInodes,
    views: Arc<Views>,
    view_dirs: std::sync::Mutex<views::ViewDirs>,
    pins: nodes::Pins,
    stats: control::StatsSnapshot,
    stat_pins: stat_pins::StatPins,
    flocks: flocks::Flocks,
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

impl Filesystem for IocFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        setup::negotiate(config);
        self.negotiate_passthrough(config);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_name(parent, name, req.pid()) {
            Ok((attr, ttl)) => {
                self.retries.looked_up(req.pid(), attr.ino);
                // A generated file's name gives new content at each lookup, but the inode
                // it gives holds one content for good: its attributes may be kept, which
                // spares the GETATTR an open makes before checking permissions.
                let attr_ttl = if self.nodes.is_snapshot(attr.ino) {
                    VERSION_TTL
                } else {
                    ttl
                };
                reply.entry_with_ttls(&attr_ttl, &ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino, fh) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.stat_pins.changes(req.pid());
        let touched = atime.is_some() || mtime.is_some();
        match self.set_attr(ino, mode, uid, gid, size, touched, fh) {
            Ok(attr) => reply.attr(&NO_TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.stat_pins.changes(req.pid());
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(self.refusal(parent));
        }
        match self.create_scratch(req, parent, name, mode & !umask) {
            Ok(s) => {
                let attr = self.scratch_attr(&s);
                self.nodes.remember(attr.ino, Node::Scratch(s));
                reply.entry(&NO_TTL, &attr, Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    /// `mkdir sources/NAME` declares a source; nothing else makes directories.
    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.stat_pins.changes(req.pid());
        if parent != inode::SOURCES_DIR {
            return reply.error(self.refusal(parent));
        }
        match self.source_admin(req, name, |store, name| store.declare_source(name)) {
            Ok(id) => {
                let attr = self.dir_attr(inode::source_dir(id));
                reply.entry(&NO_TTL, &attr, Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stat_pins.changes(req.pid());
        match self.remove_name(parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// `rmdir sources/NAME` removes a source that lists nothing (ENOTEMPTY otherwise).
    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stat_pins.changes(req.pid());
        if parent != inode::SOURCES_DIR {
            return reply.error(self.refusal(parent));
        }
        match self.source_admin(req, name, |store, name| store.remove_source(name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        _link: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(self.refusal(parent));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(self.refusal(newparent));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.stat_pins.changes(req.pid());
        match self.rename_entry(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = self.open_inode(req, ino, flags);
        match &opened {
            Err(e) if *e == Errno::ESTALE => self.retries.refused(req.pid()),
            _ => {
                self.retries.opened(req.pid());
                self.replace_retries.opened(req.pid());
            }
        }
        match opened {
            // Allowlists and feeds are read by views in the daemon: never passthrough. Nor
            // is a renamed scratch inode standing for a live file (not the version's own).
            Ok((Handle::LiveRead(v), fopen))
                if self.passthrough
                    && v.target == crate::store::model::Target::Live
                    && ino == inode::version(v.id) =>
            {
                self.open_live_reader(req.uid(), v, fopen, reply)
            }
            Ok((Handle::Tier(r), _)) => {
                let next = self.tier_walk.opened((r.version.tier, r.version.ty));
                self.open_tier_reader(r, flags, reply);
                self.inflate_next(next);
            }
            Ok((h, fopen)) => {
                if let (Handle::LiveWrite(w), Some(Node::LiveAlias(_))) = (&h, self.nodes.get(ino))
                {
                    self.replacing.opened(ino, w);
                }
                reply.opened(self.handles.insert(h), fopen)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(h) = self.handles.get(fh) else {
            return reply.error(Errno::EBADF);
        };
        match self.read_handle(&h, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.stat_pins.changes(req.pid());
        let result = match self.handles.get(fh) {
            None => Err(Errno::EBADF),
            Some(Handle::LiveWrite(w)) => {
                self.write_live(&w, offset, data, lock_owner.map(|o| o.0))
            }
            Some(Handle::Scratch(s)) => self.write_scratch(&s, offset, data),
            Some(Handle::Ctl(buf)) => self.write_ctl(req, &buf, data),
            Some(_) => Err(Errno::EBADF),
        };
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.stat_pins.changes(req.pid());
        let closer = closes::Closer {
            owner: lock_owner.0,
            pid: req.pid(),
        };
        match self.handles.get(fh) {
            Some(Handle::LiveWrite(w)) => match self.flush_live(&w, Some(closer)) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
            _ => reply.ok(),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Set when the open file took a flock lock: it goes with the open file.
        if lock_owner.is_some() {
            self.flocks.unlock(self.lock_key(ino), fh.0);
        }
        match self.handles.remove(fh) {
            Some(Handle::LiveWrite(w)) => {
                // The last flush also settles what waited for this release.
                if let Err(e) = self.flush_live(&w, None) {
                    crate::lograte::warn(|| format!("closing a live handle: {e:?}"));
                }
                self.replacing.closed(&w);
            }
            Some(Handle::LivePassthrough(v, backing, uid)) => {
                v.passthrough_closed();
                self.pins.release(uid, v.id);
                self.release_backing(&v, backing);
            }
            Some(Handle::Tier(r)) => r.version.opens().cached_closed(),
            Some(Handle::TierPassthrough(r, _backing)) => r.version.opens().passthrough_closed(),
            Some(Handle::Scratch(s)) => crate::sync::lock(&s).closed(),
            _ => {}
        }
        reply.ok();
    }

    /// flock(2), sent as a whole-file lock (see `flocks`; POSIX locks stay with the
    /// kernel). The waiting thread is the request's.
    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.set_flock(req.pid(), ino, fh, typ, sleep, reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.handles.get(fh) {
            Some(Handle::LiveWrite(_)) => match self.store.sync() {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            },
            _ => reply.ok(),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.root_entries(ino) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.root_entries(ino) {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(ino, (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        match self.seek(fh, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }

    // No extended attributes: tools that copy them (sed -i, cp -a) treat these as "none".
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::NO_XATTR);
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Space is the data directory's: that is where writes land.
        match nix::sys::statvfs::statvfs(&self.store.data_dir) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                namespace::NAME_MAX as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.stat_pins.changes(req.pid());
        self.create_entry(req, parent, name, mode & !umask, OpenFlags(flags), reply)
    }
}
