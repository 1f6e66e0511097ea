//! Opening and reading: handles for every kind of file, FUSE passthrough, directories.

use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fuser::{Errno, FileHandle, FileType, FopenFlags, INodeNo, OpenAccMode, OpenFlags, Request};

use super::inode::{
    self, ALLOW_DIR, ALLOW_DIR_NAME, CONTROL_DIR, CONTROL_DIR_NAME, CTL, HEALTH, LOOKUP_DIR,
    METRICS, ROOT, SOURCES_DIR, SOURCES_DIR_NAME, STATS, VIEWS_DIR, VIEWS_DIR_NAME,
};
use super::nodes::{Handle, Node, TierReader};
use super::{errno, IocFs};
use crate::ioc::IocType;
use crate::lograte;
use crate::store::live::LiveVersion;
use crate::store::model::Bucket;

impl IocFs {
    /// What a descriptor the daemon serves on live version `v` reads: `v`, or the current
    /// version when that extends `v`'s bytes (a copy made for passthrough readers or a
    /// writer, grown by appends since: same content lineage, no shorter). Such a descriptor
    /// sees appends made after its open (README), also once a copy superseded its version;
    /// after a replacement or aging it keeps reading the last version it read on into, so
    /// what it reads never shrinks.
    pub(super) fn following(&self, v: &Arc<LiveVersion>) -> Arc<LiveVersion> {
        self.following_given(v, self.store.current(v.of()))
    }

    /// [`Self::following`] with the file's `current` version at hand.
    pub(super) fn following_given(
        &self,
        v: &Arc<LiveVersion>,
        current: Arc<LiveVersion>,
    ) -> Arc<LiveVersion> {
        let held = inode::version(v.id);
        if current.extends(v) {
            if current.id != v.id {
                self.handles.follow(held, &current);
            }
            current
        } else {
            self.handles.followed(held).unwrap_or_else(|| v.clone())
        }
    }

    /// The size of what a handle reads (its version, snapshot or buffer).
    pub(super) fn handle_size(&self, h: &Handle) -> u64 {
        match h {
            Handle::LiveRead(v) => self.following(v).len(),
            Handle::LivePassthrough(v, ..) => v.len(),
            Handle::LiveWrite(w) => self.store.current(crate::sync::lock(w).of()).len(),
            Handle::Tier(r) | Handle::TierPassthrough(r, _) => r.version.size(),
            Handle::View(f) => f.len,
            Handle::Scratch(s) => crate::sync::lock(s).data().len() as u64,
            Handle::Bytes(b) => b.len() as u64,
            Handle::Ctl(_) => 0,
        }
    }

    /// Files have no holes: SEEK_DATA finds data at any offset inside the file, SEEK_HOLE
    /// the end of the file (what `cp`, `tar` and `rsync` ask before copying).
    pub(super) fn seek(&self, fh: FileHandle, offset: i64, whence: i32) -> Result<i64, Errno> {
        let Some(h) = self.handles.get(fh) else {
            return Err(Errno::EBADF);
        };
        let size = i64::try_from(self.handle_size(&h)).unwrap_or(i64::MAX);
        match whence {
            libc::SEEK_SET if offset >= 0 => Ok(offset),
            libc::SEEK_END if size.checked_add(offset).is_some_and(|o| o >= 0) => Ok(size + offset),
            libc::SEEK_DATA | libc::SEEK_HOLE if offset < 0 => Err(Errno::EINVAL),
            libc::SEEK_DATA | libc::SEEK_HOLE if offset >= size => Err(Errno::ENXIO),
            libc::SEEK_DATA => Ok(offset),
            libc::SEEK_HOLE => Ok(size),
            _ => Err(Errno::EINVAL),
        }
    }

    pub(super) fn read_handle(&self, h: &Handle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let size = size as usize;
        let slice = |b: &[u8]| -> Vec<u8> {
            let start = (offset as usize).min(b.len());
            b[start..(start + size).min(b.len())].to_vec()
        };
        match h {
            Handle::LiveRead(v) => self
                .following(v)
                .read_at(offset, size)
                .map_err(|e| errno(&e)),
            Handle::LivePassthrough(v, ..) => v.read_at(offset, size).map_err(|e| errno(&e)),
            Handle::LiveWrite(w) => {
                let of = crate::sync::lock(w).of();
                self.store
                    .current(of)
                    .read_at(offset, size)
                    .map_err(|e| errno(&e))
            }
            Handle::Tier(r) | Handle::TierPassthrough(r, _) => {
                crate::failpoint::pause("tier::read");
                let sequential = r.next.swap(offset + size as u64, Ordering::Relaxed) == offset;
                self.store
                    .read_tier(&r.version, offset, size, sequential)
                    .map_err(|e| {
                        // Once per read of a damaged block: health says it once for good.
                        lograte::error(|| {
                            format!(
                                "read {}/{} at {offset}: {e}",
                                r.version.tier,
                                r.version.ty.file_name()
                            )
                        });
                        errno(&e)
                    })
            }
            Handle::View(f) => f.read_at(offset, size).map_err(|e| errno(&e)),
            Handle::Scratch(s) => Ok(slice(crate::sync::lock(s).data())),
            Handle::Bytes(b) => Ok(slice(b)),
            Handle::Ctl(_) => Err(Errno::EBADF),
        }
    }

    pub(super) fn open_inode(
        &self,
        req: &Request,
        ino: INodeNo,
        flags: OpenFlags,
    ) -> Result<(Handle, FopenFlags), Errno> {
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let direct = FopenFlags::FOPEN_DIRECT_IO;
        // A read-only handle has nothing to do at close(): spare the kernel the FLUSH.
        let read_only = direct | FopenFlags::FOPEN_NOFLUSH;
        match ino {
            // Reading ctl lists its commands (so `tar` and `rsync` of a mount can read every
            // file); writing runs them, root only.
            CTL if flags.acc_mode() == OpenAccMode::O_RDONLY => {
                return Ok((
                    Handle::Bytes(Arc::new(super::control::ctl_help())),
                    read_only,
                ))
            }
            CTL => {
                if req.uid() != 0 {
                    return Err(Errno::EACCES);
                }
                if flags.acc_mode() != OpenAccMode::O_WRONLY {
                    return Err(Errno::EACCES);
                }
                return Ok((Handle::Ctl(Default::default()), direct));
            }
            STATS | METRICS | HEALTH if writable => return Err(Errno::EACCES),
            STATS | METRICS | HEALTH => {
                return Ok((Handle::Bytes(self.control_bytes(ino)), read_only))
            }
            _ => {}
        }
        match self.nodes.get(ino) {
            Some(Node::Live(v)) => Ok((
                self.open_live(&v, flags, Some(req.pid()), req.pid())?,
                if writable { direct } else { read_only },
            )),
            Some(Node::Tier(_)) if writable => Err(Errno::EROFS),
            // An open through a name the kernel still maps to an older version: ESTALE makes
            // it look the name up again, so every open after a change sees the change.
            Some(Node::Tier(v))
                if self.store.tier(v.tier, v.ty).id != v.id
                    && !self.retries.is_retry(req.pid(), ino) =>
            {
                Err(Errno::ESTALE)
            }
            // Counted and answered by `open_tier_reader`.
            Some(Node::Tier(version)) => Ok((
                Handle::Tier(Arc::new(TierReader {
                    version,
                    next: AtomicU64::new(0),
                })),
                FopenFlags::empty(),
            )),
            Some(Node::Scratch(s)) => {
                let mut guard = crate::sync::lock(&s);
                if flags.0 & libc::O_TRUNC != 0 {
                    self.resize_scratch(&mut guard, 0)?;
                }
                guard.opened();
                drop(guard);
                Ok((Handle::Scratch(s), direct))
            }
            Some(Node::LiveAlias(of)) => Ok((
                self.open_live(&self.store.current(of), flags, None, req.pid())?,
                direct,
            )),
            Some(Node::View(_)) if writable => Err(Errno::EROFS),
            Some(Node::View(f))
                if self.view_superseded(&f) && !self.retries.is_retry(req.pid(), ino) =>
            {
                Err(Errno::ESTALE)
            }
            Some(Node::View(f)) => Ok((
                Handle::View(f),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
            )),
            Some(Node::Snapshot(s)) => {
                // Any open attempt takes the thread's pin (`stat_pins`), a refused one too.
                self.stat_pins.opened(req.pid(), &s.of);
                if writable {
                    return Err(Errno::EACCES);
                }
                // Read through the page cache, filled now (see `prefill`).
                self.prefill(ino, &s);
                Ok((
                    Handle::Bytes(s.bytes.clone()),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
                ))
            }
            None => Err(Errno::ENOENT),
        }
    }

    pub(super) fn root_entries(
        &self,
        ino: INodeNo,
    ) -> Result<Vec<(INodeNo, FileType, OsString)>, Errno> {
        let mut out = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (ROOT, FileType::Directory, OsString::from("..")),
        ];
        if ino == ROOT {
            for b in Bucket::ALL {
                out.push((inode::bucket_dir(b), FileType::Directory, b.name().into()));
            }
            out.push((CONTROL_DIR, FileType::Directory, CONTROL_DIR_NAME.into()));
            out.push((VIEWS_DIR, FileType::Directory, VIEWS_DIR_NAME.into()));
            out.push((ALLOW_DIR, FileType::Directory, ALLOW_DIR_NAME.into()));
            out.push((SOURCES_DIR, FileType::Directory, SOURCES_DIR_NAME.into()));
        } else if ino == SOURCES_DIR {
            for (id, name) in self.store.source_names() {
                out.push((inode::source_dir(id), FileType::Directory, name.into()));
            }
        } else if ino == CONTROL_DIR {
            for i in [STATS, METRICS, HEALTH, CTL] {
                out.push((
                    i,
                    FileType::RegularFile,
                    inode::control_name(i).unwrap_or_default().into(),
                ));
            }
            out.push((LOOKUP_DIR, FileType::Directory, "lookup".into()));
        } else if ino == LOOKUP_DIR {
            out[1].0 = CONTROL_DIR;
        } else if let Some(entries) = self.view_entries(ino) {
            if ino != VIEWS_DIR {
                out[1].0 = VIEWS_DIR;
            }
            out.extend(entries);
        } else if let Some(dir) = self.writable(ino) {
            if matches!(dir, crate::store::model::Target::Source(_)) {
                out[1].0 = SOURCES_DIR;
            }
            for ty in IocType::ALL {
                let file_ino = inode::version(self.store.current((dir, ty)).id);
                out.push((file_ino, FileType::RegularFile, ty.file_name().into()));
            }
            let mut scratch = self.nodes.scratch_list(dir);
            scratch.sort();
            out.extend(
                scratch
                    .into_iter()
                    .map(|(n, i)| (i, FileType::RegularFile, n)),
            );
        } else if let Some(tier) = inode::dir_bucket(ino).and_then(Bucket::tier) {
            for ty in IocType::ALL {
                let file_ino = inode::version(self.store.tier(tier, ty).id);
                out.push((file_ino, FileType::RegularFile, ty.file_name().into()));
            }
        } else {
            return Err(Errno::ENOTDIR);
        }
        Ok(out)
    }
}
