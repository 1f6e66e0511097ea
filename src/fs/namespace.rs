//! Names in the mount: scratch files in live/ (created, renamed, unlinked) and the errors
//! for everything else (README "What a write means": type files can't be removed or renamed away, tiers are
//! read-only, no directories are made).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use fuser::{Errno, FileAttr, FileType, INodeNo, RenameFlags, Request};

use super::nodes::{Node, Scratch, ScratchRef};
use super::{errno, inode, IocFs};
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
            crate::lograte::warn(|| {
                format!("scratch files in live/ would exceed {held} bytes; refused")
            })
        })
    }

    pub(super) fn create_scratch(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
    ) -> Result<ScratchRef, Errno> {
        if inode::dir_bucket(parent) != Some(Bucket::Live) {
            return Err(self.refusal(parent));
        }
        check_name_len(name)?;
        if self.nodes.scratch(name).is_some() {
            return Err(Errno::EEXIST);
        }
        if self.nodes.scratch_list().len() >= MAX_SCRATCH_FILES {
            return Err(Errno::ENOSPC);
        }
        let scratch = Arc::new(Mutex::new(Scratch::new(
            self.nodes.allocate(),
            (req.uid(), req.gid(), (mode & 0o7777) as u16),
            self.store.clock.now(),
            self.nodes.scratch_pool.clone(),
        )));
        self.nodes.add_scratch(name.to_os_string(), scratch.clone());
        Ok(scratch)
    }

    pub(super) fn remove_name(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        match inode::dir_bucket(parent) {
            Some(Bucket::Live) => {
                if let Some(ty) = name.to_str().and_then(IocType::from_file_name) {
                    crate::lograte::warn(|| {
                        format!(
                            "unlink of live/{f} refused (EPERM): the nine type files always exist \
                             (rm, and mv or install from another file system, unlink first); to \
                             replace the set use `cp NEW live/{f}` or `> live/{f}`, or write a file \
                             inside live/ and rename it onto live/{f}; to empty it, `: > live/{f}`",
                            f = ty.file_name()
                        )
                    });
                    return Err(Errno::EPERM);
                }
                if self.nodes.unlink_scratch(name) {
                    Ok(())
                } else {
                    Err(Errno::ENOENT)
                }
            }
            Some(_) => Err(Errno::EROFS),
            None => Err(self.refusal(parent)),
        }
    }

    /// Renames inside live/: scratch → type file replaces that set (after validation),
    /// scratch → scratch moves it. Type files never move.
    pub(super) fn rename_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let live = Some(Bucket::Live);
        if inode::dir_bucket(parent) != live || inode::dir_bucket(newparent) != live {
            let tier = |p| {
                inode::dir_bucket(p).is_some_and(|b| b != Bucket::Live) || self.is_read_only_dir(p)
            };
            return Err(if tier(parent) || tier(newparent) {
                Errno::EROFS
            } else {
                Errno::EPERM
            });
        }
        if let Some(ty) = name.to_str().and_then(IocType::from_file_name) {
            crate::lograte::warn(|| {
                format!(
                    "rename of live/{} refused (EPERM): type files never move; copy it instead \
                     (`cp live/{0} NEW`)",
                    ty.file_name()
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
        let Some(scratch) = self.nodes.scratch(name) else {
            return Err(Errno::ENOENT);
        };
        if let Some(ty) = newname.to_str().and_then(IocType::from_file_name) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            self.replace_from_scratch(ty, &scratch, name)?;
            // Its lines are the set now: the buffer goes once no descriptor holds it.
            self.nodes.unlink_scratch(name);
            let ino = crate::sync::lock(&scratch).ino;
            // The kernel now maps the type file's name to the scratch inode; make that inode
            // stand for the live file (always its current version, attributes uncached).
            self.nodes.set(ino, Node::LiveAlias(ty));
            return Ok(());
        }
        if self.nodes.scratch(newname).is_some() && flags.contains(RenameFlags::RENAME_NOREPLACE) {
            return Err(Errno::EEXIST);
        }
        // The file keeps its name's bytes as it moves; the one it replaces is let go.
        self.nodes.take_scratch(name);
        self.nodes.unlink_scratch(newname);
        self.nodes.add_scratch(newname.to_os_string(), scratch);
        Ok(())
    }

    /// Validate a whole scratch file and make it the live set of `ty`. The file is read in
    /// pieces under its lock (no copy of it), and a large one is journaled in pieces.
    fn replace_from_scratch(
        &self,
        ty: IocType,
        scratch: &ScratchRef,
        name: &OsStr,
    ) -> Result<(), Errno> {
        const PIECE: usize = 1 << 20;
        let s = crate::sync::lock(scratch);
        let limits = self.store.limits();
        let reject = self.store.config().ingest.on_invalid == OnInvalid::Reject;
        // The name is as hostile as the content: escaped like the excerpt, so a name
        // holding a newline or an escape sequence can't forge or garble log lines.
        let file = format!(
            "live/{} (renamed onto live/{})",
            ioc::escape_excerpt(name.as_bytes(), 4 * NAME_MAX),
            ty.file_name()
        );
        let action = if reject {
            "rejected rename of"
        } else {
            "skipped invalid line in"
        };
        let mut staged = StagedReplace::new(Target::Live, ty);
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
            self.store.count_rejected(ty, got.rejected.len() as u64);
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
