//! Names in the mount: scratch files in live/ and allow/ (created, renamed, unlinked) and
//! the errors for everything else (README "What a write means": type files can't be removed
//! or renamed away, tiers are read-only, no directories are made).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use fuser::{
    Errno, FileAttr, FileType, FopenFlags, Generation, INodeNo, OpenFlags, RenameFlags,
    ReplyCreate, Request,
};

use super::nodes::{Handle, Node, Scratch, ScratchRef};
use super::{errno, inode, IocFs, NO_TTL};
use crate::config::OnInvalid;
use crate::ingest;
use crate::ioc::{self, IocType};
use crate::store::model::{Bucket, Target};
use crate::store::staged::StagedReplace;

/// Scratch files live in memory (their bytes are bounded by `scratch::ScratchPool`); this
/// bounds how many names they take.
const MAX_SCRATCH_FILES: usize = 4096;

/// Longest file name, as statfs reports it. The kernel passes FUSE names up to its own,
/// larger limit (1024), so without this check live/ took names no tool expects to exist.
pub const NAME_MAX: usize = 255;

/// ENAMETOOLONG for a name longer than [`NAME_MAX`] (what other Linux filesystems answer).
pub(super) fn check_name_len(name: &OsStr) -> Result<(), Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno::from_i32(libc::ENAMETOOLONG));
    }
    Ok(())
}

impl IocFs {
    /// The errno for a namespace change that is not allowed under `parent`.
    pub(super) fn refusal(&self, parent: INodeNo) -> Errno {
        if self.is_read_only_dir(parent) {
            return Errno::EROFS;
        }
        match inode::dir_bucket(parent) {
            Some(Bucket::Live) | None => Errno::EPERM,
            Some(_) => Errno::EROFS,
        }
    }

    /// `mkdir`/`rmdir` in sources/: root or the mount's configured owner only; the store's
    /// refusal as its errno (EEXIST, ENOTEMPTY, ENOENT, ENOSPC at 63 sources, EINVAL for a
    /// bad name), logged within the request log budget.
    pub(super) fn source_admin<T>(
        &self,
        req: &fuser::Request,
        name: &std::ffi::OsStr,
        f: impl FnOnce(&crate::store::Store, &str) -> crate::error::Result<T>,
    ) -> Result<T, Errno> {
        if req.uid() != 0 && req.uid() != self.owner.uid {
            return Err(Errno::EACCES);
        }
        let Some(name) = name.to_str() else {
            return Err(Errno::EINVAL);
        };
        f(&self.store, name).map_err(|e| {
            if !matches!(
                e,
                crate::error::Error::Exists(_) | crate::error::Error::NotFound(_)
            ) {
                crate::lograte::warn(|| {
                    format!(
                        "sources/{}: {e}",
                        crate::ioc::escape_excerpt(name.as_bytes(), 80)
                    )
                });
            }
            Errno::from_i32(e.errno())
        })
    }

    /// Tiers and views are read-only (EROFS); elsewhere a refused change is EPERM.
    fn is_read_only(&self, dir: INodeNo) -> bool {
        inode::dir_bucket(dir).is_some_and(|b| b != Bucket::Live) || self.is_read_only_dir(dir)
    }

    /// `views/` and the views under it take no new names.
    pub(super) fn is_read_only_dir(&self, dir: INodeNo) -> bool {
        dir == inode::VIEWS_DIR || self.view_of_dir(dir).is_some()
    }

    pub(super) fn scratch_attr(&self, s: &ScratchRef) -> FileAttr {
        let s = crate::sync::lock(s);
        let owner = inode::Owner {
            uid: s.uid,
            gid: s.gid,
            file_mode: s.mode,
        };
        let mut attr = inode::attr(
            s.ino,
            FileType::RegularFile,
            s.mode,
            s.data().len() as u64,
            s.mtime,
            &owner,
        );
        // An unlinked file's inode must be let go once closed (the kernel evicts nlink 0).
        attr.nlink = u32::from(s.is_linked());
        attr
    }

    /// Resize a scratch file's data, within the memory bound for all scratch files.
    pub(super) fn resize_scratch(&self, s: &mut Scratch, len: usize) -> Result<(), Errno> {
        s.resize(len).inspect_err(|_| {
            let held = self.nodes.scratch_pool.bytes();
            crate::lograte::warn(|| format!("scratch files would exceed {held} bytes; refused"))
        })
    }

    /// `create`: a new scratch file, or an open of a type file (it always exists: a create
    /// racing a lookup of one is an open). `mode` has the umask applied.
    pub(super) fn create_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: OpenFlags,
        reply: ReplyCreate,
    ) {
        // A type file always exists; a create race on one is an open.
        if let Some(dir) = self.writable(parent) {
            if let Some(ty) = name.to_str().and_then(IocType::from_file_name) {
                let v = self.store.current((dir, ty));
                let ino = inode::version(v.id);
                self.nodes.remember(ino, Node::Live(v));
                return match self.open_inode(req, ino, flags) {
                    Ok((h, fopen)) => match self.attr_of(ino, None) {
                        Ok((attr, _)) => reply.created(
                            &NO_TTL,
                            &attr,
                            Generation(0),
                            self.handles.insert(h),
                            fopen,
                        ),
                        Err(e) => reply.error(e),
                    },
                    Err(e) => reply.error(e),
                };
            }
        }
        match self.create_scratch(req, parent, name, mode) {
            Ok(s) => {
                let attr = self.scratch_attr(&s);
                self.nodes.remember(attr.ino, Node::Scratch(s.clone()));
                crate::sync::lock(&s).opened();
                let fh = self.handles.insert(Handle::Scratch(s));
                reply.created(
                    &NO_TTL,
                    &attr,
                    Generation(0),
                    fh,
                    FopenFlags::FOPEN_DIRECT_IO,
                );
            }
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn create_scratch(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
    ) -> Result<ScratchRef, Errno> {
        let Some(dir) = self.writable(parent) else {
            return Err(self.refusal(parent));
        };
        check_name_len(name)?;
        if self.nodes.scratch(dir, name).is_some() {
            return Err(Errno::EEXIST);
        }
        if self.nodes.scratch_count() >= MAX_SCRATCH_FILES {
            return Err(Errno::ENOSPC);
        }
        let scratch = Arc::new(Mutex::new(Scratch::new(
            self.nodes.allocate(),
            (req.uid(), req.gid(), (mode & 0o7777) as u16),
            self.store.clock.now(),
            self.nodes.scratch_pool.clone(),
        )));
        self.nodes
            .add_scratch(dir, name.to_os_string(), scratch.clone());
        Ok(scratch)
    }

    pub(super) fn remove_name(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let Some(dir) = self.writable(parent) else {
            return Err(if self.is_read_only(parent) {
                Errno::EROFS
            } else {
                self.refusal(parent)
            });
        };
        if let Some(ty) = name.to_str().and_then(IocType::from_file_name) {
            crate::lograte::warn(|| {
                format!(
                    "unlink of {d}/{f} refused (EPERM): the nine type files always exist \
                     (rm, and mv or install from another file system, unlink first); to \
                     replace the set use `cp NEW {d}/{f}` or `> {d}/{f}`, or write a file \
                     inside {d}/ and rename it onto {d}/{f}; to empty it, `: > {d}/{f}`",
                    d = dir.dir(),
                    f = ty.file_name()
                )
            });
            return Err(Errno::EPERM);
        }
        if self.nodes.unlink_scratch(dir, name) {
            Ok(())
        } else {
            Err(Errno::ENOENT)
        }
    }

    /// Renames inside and between live/ and allow/: scratch → type file replaces that set
    /// (after validation), scratch → scratch moves it. Type files never move.
    pub(super) fn rename_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let (Some(from), Some(to)) = (self.writable(parent), self.writable(newparent)) else {
            return Err(
                if self.is_read_only(parent) || self.is_read_only(newparent) {
                    Errno::EROFS
                } else {
                    Errno::EPERM
                },
            );
        };
        if let Some(ty) = name.to_str().and_then(IocType::from_file_name) {
            crate::lograte::warn(|| {
                format!(
                    "rename of {d}/{f} refused (EPERM): type files never move; copy it instead \
                     (`cp {d}/{f} NEW`)",
                    d = from.dir(),
                    f = ty.file_name()
                )
            });
            return Err(Errno::EPERM);
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        check_name_len(newname)?;
        let Some(scratch) = self.nodes.scratch(from, name) else {
            return Err(Errno::ENOENT);
        };
        if let Some(ty) = newname.to_str().and_then(IocType::from_file_name) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            self.replace_from_scratch((to, ty), &scratch, (from, name))?;
            // Its lines are the set now: the buffer goes once no descriptor holds it.
            self.nodes.unlink_scratch(from, name);
            let ino = crate::sync::lock(&scratch).ino;
            // The kernel now maps the type file's name to the scratch inode; make that inode
            // stand for the type file (always its current version, attributes uncached).
            self.nodes.set(ino, Node::LiveAlias((to, ty)));
            return Ok(());
        }
        if self.nodes.scratch(to, newname).is_some()
            && flags.contains(RenameFlags::RENAME_NOREPLACE)
        {
            return Err(Errno::EEXIST);
        }
        // The file keeps its name's bytes as it moves; the one it replaces is let go.
        self.nodes.take_scratch(from, name);
        self.nodes.unlink_scratch(to, newname);
        self.nodes.add_scratch(to, newname.to_os_string(), scratch);
        Ok(())
    }

    /// Validate a whole scratch file and make it the whole set of a type file. The file is
    /// read in pieces under its lock (no copy of it), and a large one is journaled in pieces.
    fn replace_from_scratch(
        &self,
        (target, ty): (Target, IocType),
        scratch: &ScratchRef,
        (dir, name): (Target, &OsStr),
    ) -> Result<(), Errno> {
        const PIECE: usize = 1 << 20;
        let s = crate::sync::lock(scratch);
        let limits = self.store.limits();
        let reject = self.store.config().ingest.on_invalid == OnInvalid::Reject;
        // The name is as hostile as the content: escaped like the excerpt, so a name
        // holding a newline or an escape sequence can't forge or garble log lines.
        let file = format!(
            "{}/{} (renamed onto {}/{})",
            dir.dir(),
            ioc::escape_excerpt(name.as_bytes(), 4 * NAME_MAX),
            target.dir(),
            ty.file_name()
        );
        let action = if reject {
            "rejected rename of"
        } else {
            "skipped invalid line in"
        };
        let mut staged = StagedReplace::new(target, ty);
        let mut partial = Vec::new();
        let mut skipping = false;
        let mut line_no = 1;
        for piece in s.data().chunks(PIECE).map(Some).chain([None]) {
            let got = match piece {
                Some(mut bytes) => {
                    if skipping {
                        let (skipped, ended) = ingest::skip_line_end(bytes);
                        bytes = &bytes[skipped..];
                        skipping = !ended;
                        line_no += u64::from(ended);
                    }
                    ingest::ingest(ty, &partial, bytes, line_no, &limits)
                }
                None => ingest::finish(ty, &partial, line_no, &limits),
            };
            skipping |= got.overflowed;
            for r in &got.rejected {
                ingest::log_rejection(&file, r, action);
            }
            self.store
                .count_rejected((target, ty), got.rejected.iter().map(|r| &r.why));
            if reject && !got.rejected.is_empty() {
                staged.abort(&self.store);
                return Err(Errno::EINVAL);
            }
            if let Err(e) = staged.push(&self.store, &got.values) {
                staged.abort(&self.store);
                return Err(errno(&e));
            }
            partial = got.partial;
            line_no += got.lines;
        }
        staged.finish(&self.store).map(|_| ()).map_err(|e| {
            staged.abort(&self.store);
            errno(&e)
        })
    }
}
