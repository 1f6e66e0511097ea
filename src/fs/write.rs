//! Writes to the type files of live/ and allow/ (README "What a write means"): append and
//! replace handles, truncation, and the validation errors users see.

use std::sync::{Arc, Mutex, Weak};

use fuser::{Errno, FileAttr, FileHandle, INodeNo, OpenAccMode, OpenFlags};

use super::nodes::{Handle, LiveWriter, Node, ScratchRef, WriteMode};
use super::{errno, inode, Inval, IocFs};
use crate::config::OnInvalid;
use crate::ingest::{self, Ingested};
use crate::ioc::IocType;
use crate::lograte;
use crate::store::live::LiveVersion;
use crate::store::model::Target;
use crate::store::staged::StagedReplace;
use std::collections::HashMap;

use super::closes::{Closer, Closers};

impl IocFs {
    /// Open a version of a live or allowlist file. Only the current version opens: a stale one answers ESTALE so
    /// the kernel looks the name up again (an open after a change sees the change), unless
    /// this is the kernel's retry by thread `tid` (see `retry`). It first waits a moment for
    /// a release that just-closed handles still wait for (see `Pending`).
    pub(super) fn open_live(
        &self,
        v: &Arc<LiveVersion>,
        flags: OpenFlags,
        tid: Option<u32>,
        opener: u32,
    ) -> Result<Handle, Errno> {
        let (target, ty) = v.of();
        let replace = flags.0 & libc::O_TRUNC != 0;
        // A replace through the inode readers share would have the kernel set that inode's
        // size to 0 as the open returns (and to the writer's offset after each write)
        // before it drops its cached attributes: a reader's fstat in that moment gets that
        // size while it reads the old version, and a web server sends a wrong
        // Content-Length. So the writer reopens through an inode of its own: ESTALE makes
        // the kernel look the name up again, and this thread's lookup gets a fresh alias
        // of the file (`ReplaceRetries`), which no reader has.
        if replace && flags.acc_mode() != OpenAccMode::O_RDONLY {
            if let Some(tid) = tid {
                if self.replace_retries.refuse(tid, v.of()) {
                    return Err(Errno::ESTALE);
                }
            }
        }
        self.pending
            .wait(v.of(), flags.acc_mode() != OpenAccMode::O_RDONLY);
        if flags.acc_mode() == OpenAccMode::O_RDONLY {
            let current = self.store.current(v.of());
            // With passthrough, `IocFs::open` decides how it is served (`open_live_reader`).
            if current.id == v.id {
                return Ok(Handle::LiveRead(current));
            }
            // Superseded by a copy of the same bytes (made for passthrough readers or a
            // writer): nothing changed. Serving it keeps the open on the inode its caller
            // just stat'ed, which `cp -a` checks ("replaced while being copied").
            if current.same_bytes_as(v) {
                return Ok(Handle::LiveRead(v.clone()));
            }
            if tid.is_some_and(|tid| self.retries.is_retry(tid, inode::version(v.id))) {
                return Ok(Handle::LiveRead(v.clone()));
            }
            return Err(Errno::ESTALE);
        }
        // The kernel fails (EIO) a plain open of an inode that passthrough readers hold: move
        // the writer to a fresh version of the same bytes; ESTALE makes it look up again.
        // (Allowlists and feeds are never served by passthrough; `tid` is set for opens of
        // the version's own inode, which is what passthrough readers hold.)
        if self.passthrough && target == Target::Live && tid.is_some() && !v.open_plain() {
            self.store.make_room_for_writer(ty).map_err(|e| errno(&e))?;
            return Err(Errno::ESTALE);
        }
        let mode = if replace {
            WriteMode::Replace {
                staged: StagedReplace::new(target, ty),
                poisoned: false,
                written: false,
            }
        } else {
            WriteMode::Append
        };
        Ok(Handle::LiveWrite(Arc::new(Mutex::new(LiveWriter {
            target,
            ty,
            ino: inode::version(v.id),
            mode,
            partial: Vec::new(),
            skipping: false,
            cut_short: false,
            line_no: 0,
            // An append handle's first write must land at the end of the file.
            next_offset: if replace { 0 } else { u64::MAX },
            o_append: flags.0 & libc::O_APPEND != 0,
            pending: None,
            closers: Closers::default(),
            opener,
        }))))
    }

    /// Validate `data` and apply it: appended at once, or staged in a replace handle.
    pub(super) fn write_live(
        &self,
        w: &Mutex<LiveWriter>,
        offset: u64,
        data: &[u8],
        owner: Option<u64>,
    ) -> Result<(), Errno> {
        let mut w = crate::sync::lock(w);
        w.closers.wrote(owner);
        let file = w.name();
        match &w.mode {
            WriteMode::Replace { poisoned: true, .. } => return Err(Errno::EINVAL),
            WriteMode::Replace { .. } if offset != w.next_offset => {
                let at = w.next_offset;
                lograte::warn(|| {
                    format!("{file}: write at offset {offset} in a replace handle that is at {at}; rejected")
                });
                return Err(Errno::EINVAL);
            }
            WriteMode::Append if !w.o_append && offset != w.next_offset => {
                let end = self.store.current(w.of()).len();
                if offset != end {
                    lograte::warn(|| {
                        format!("{file}: write at offset {offset} is neither the end of the file ({end}) nor a replace; rejected")
                    });
                    return Err(Errno::EINVAL);
                }
            }
            _ => {}
        }
        // The rest of a line already rejected as too long (skip mode) is dropped unread.
        let mut fresh = data;
        if w.skipping {
            let (skipped, ended) = ingest::skip_line_end(data);
            fresh = &data[skipped..];
            if ended {
                w.skipping = false;
                w.line_no += 1;
            }
        }
        let got = ingest::ingest(w.ty, &w.partial, fresh, w.line_no + 1, &self.store.limits());
        let applied = self
            .check_rejections(&mut w, &got, &file)
            .and_then(|()| self.apply_lines(&mut w, got.values));
        // A write applies all or nothing: if it failed, so did the end of the line it was to
        // complete (`cat` of a feed with a bad line past the first MiB would otherwise leave
        // the first half of a line at the end of the MiB before, to be stored at the close).
        w.cut_short = applied.is_err() && !w.partial.is_empty();
        applied?;
        w.partial = got.partial;
        w.skipping |= got.overflowed;
        w.line_no += got.lines;
        w.next_offset = offset + data.len() as u64;
        Ok(())
    }

    /// Log and count rejected lines; in `reject` mode fail the write (and poison a replace).
    fn check_rejections(
        &self,
        w: &mut LiveWriter,
        got: &Ingested,
        file: &str,
    ) -> Result<(), Errno> {
        if got.rejected.is_empty() {
            return Ok(());
        }
        let reject = self.store.config().ingest.on_invalid == OnInvalid::Reject;
        let action = if reject {
            "rejected write to"
        } else {
            "skipped invalid line in"
        };
        for r in &got.rejected {
            ingest::log_rejection(file, r, action);
        }
        self.store
            .count_rejected(w.of(), got.rejected.iter().map(|r| &r.why));
        if !reject {
            return Ok(());
        }
        if let WriteMode::Replace { poisoned, .. } = &mut w.mode {
            *poisoned = true;
        }
        Err(Errno::EINVAL)
    }

    fn apply_lines(&self, w: &mut LiveWriter, values: Vec<u8>) -> Result<(), Errno> {
        let file = w.name();
        match &mut w.mode {
            WriteMode::Append => {
                if !values.is_empty() {
                    self.store
                        .append_to(w.target, w.ty, values)
                        .map_err(|e| errno(&e))?;
                    // The kernel refreshes the size of the inode written through; if the
                    // lines went to a newer version, that one's cached size is stale. A
                    // source's file is its sorted list, built when read: the size the kernel
                    // computed for the written inode is a guess, so drop it (building the list
                    // here would cost a pass over the source on every write).
                    if let Target::Source(_) = w.target {
                        let _ = self.inval.send(Inval::Inode(w.ino));
                    } else {
                        let current = inode::version(self.store.current(w.of()).id);
                        if current != w.ino {
                            let _ = self.inval.send(Inval::Inode(current));
                        }
                    }
                }
            }
            WriteMode::Replace {
                staged,
                written,
                poisoned,
            } => {
                *written = true;
                // A large replace journals its pieces as they come; if one can't be, the
                // handle applies nothing (like one that saw an invalid line).
                if let Err(e) = staged.push(&self.store, &values) {
                    lograte::warn(|| {
                        format!("{file}: staging a replace: {e}; it will not be applied")
                    });
                    *poisoned = true;
                    return Err(errno(&e));
                }
            }
        }
        Ok(())
    }

    /// close() of one descriptor by `closer` (the kernel's FLUSH, sent for every copy of
    /// the descriptor), or the final release (None).
    ///
    /// An unterminated last line is taken as a line only at the final release: a FLUSH
    /// also comes when a dup of the descriptor closes (a child exits, `{ a; b; } >> f`),
    /// and more of that line may still arrive. A replace handle applies its set at the
    /// first close, after its writes, by a process that wrote through it (unless a line is
    /// still open): a copy of the descriptor closed by another process (a child forked
    /// by a multithreaded writer, which exec closes) does not cut the replace short. A
    /// process that closes it twice without writing (`: > f`: the shell closes once after
    /// dup2, once after the builtin) empties the set then; a single close without writes
    /// (a shell before `echo` writes) waits for the release. Writers' opens of the file
    /// wait a moment for whatever waits for the release, since the kernel sends it after
    /// close() has returned; readers never wait (README "What a write means").
    pub(super) fn flush_live(
        &self,
        w: &Mutex<LiveWriter>,
        closer: Option<Closer>,
    ) -> Result<(), Errno> {
        let mut w = crate::sync::lock(w);
        let file = w.name();
        let of = w.of();
        let open_line = !w.partial.is_empty();
        let (replace, poisoned, written) = match &w.mode {
            WriteMode::Replace {
                poisoned, written, ..
            } => (true, *poisoned, *written),
            WriteMode::Append => (false, false, false),
        };
        let now = match closer {
            None => AtClose::Apply,
            Some(_) if replace && poisoned => AtClose::Apply,
            Some(_) if open_line => AtClose::Wait,
            Some(c) if replace && written && !w.closers.is_writer(c.owner) => AtClose::Ignore,
            Some(c) if replace && !written && !w.closers.closed_idle(c) => AtClose::Wait,
            Some(_) => AtClose::Apply,
        };
        match now {
            AtClose::Ignore => return Ok(()),
            AtClose::Wait => {
                // Each close may be the last: opens right after it wait for the release.
                self.settle_pending(&mut w);
                w.pending = Some(self.pending.add(of, open_line));
                // The release can't fail anyone's close(): a last line refused as it stands
                // fails the close of the thread that opened the handle and wrote all of it
                // (most likely the last close: `cp`, `tee`, a script), and the release
                // refuses it for good unless another copy of the descriptor completes the
                // line first. Closes where other processes wrote (children writing a line
                // in pieces, a child downloading into a descriptor its parent closes) never
                // fail for it; nor do writers the kernel gives no pid (another pid
                // namespace: all 0).
                if open_line
                    && closer.is_some_and(|c| {
                        c.pid == w.opener && c.pid != 0 && w.closers.only_writer(c.owner)
                    })
                    && self.last_line_refused(&w)
                {
                    return Err(Errno::EINVAL);
                }
                return Ok(());
            }
            AtClose::Apply => {}
        }
        let result = self.apply_at_close(&mut w, &file);
        self.settle_pending(&mut w);
        result
    }

    /// Whether the unterminated last line, as it stands, would be refused at the release.
    fn last_line_refused(&self, w: &LiveWriter) -> bool {
        self.store.config().ingest.on_invalid == OnInvalid::Reject
            && !w.cut_short
            && !ingest::finish(w.ty, &w.partial, w.line_no + 1, &self.store.limits())
                .rejected
                .is_empty()
    }

    fn apply_at_close(&self, w: &mut LiveWriter, file: &str) -> Result<(), Errno> {
        if w.cut_short && !w.partial.is_empty() {
            let (bytes, line) = (w.partial.len(), w.line_no + 1);
            lograte::warn(|| {
                format!(
                    "{file}: dropped the first {bytes} bytes of line {line} at the close: \
                     the write with the rest of that line failed"
                )
            });
            w.partial.clear();
        }
        if !w.partial.is_empty() {
            let got = ingest::finish(w.ty, &w.partial, w.line_no + 1, &self.store.limits());
            w.partial.clear();
            w.line_no += got.lines;
            self.check_rejections(w, &got, file)?;
            self.apply_lines(w, got.values)?;
        }
        if let WriteMode::Replace {
            staged, poisoned, ..
        } = &mut w.mode
        {
            if *poisoned {
                staged.abort(&self.store);
                return Err(Errno::EINVAL);
            }
            if let Err(e) = staged.finish(&self.store) {
                // Not applied: the final release must not apply an empty set instead.
                *poisoned = true;
                staged.abort(&self.store);
                return Err(errno(&e));
            }
            // Lines written after this close (through a dup'd descriptor) extend the new set.
            w.mode = WriteMode::Append;
            w.o_append = true;
        }
        Ok(())
    }

    /// This handle no longer keeps opens of its file waiting.
    pub(super) fn settle_pending(&self, w: &mut LiveWriter) {
        if let Some(id) = w.pending.take() {
            self.pending.done(w.of(), id);
        }
    }

    /// truncate/ftruncate, chmod, chown, utimes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn set_attr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        touched: bool,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        // Times are accepted and not kept: a list's mtime is when its content changed, a
        // directory's is when the data directory was made. A chmod or chown to what the file already has
        // changes nothing and succeeds: `cp -a` and `rsync -a` restoring a copy of the
        // mount make exactly those calls, and fail (exit 1, 23) on EPERM.
        let _ = touched;
        let changes_owner_or_mode = |attr: &FileAttr| {
            mode.is_some_and(|m| (m & 0o7777) as u16 != attr.perm)
                || uid.is_some_and(|u| u != attr.uid)
                || gid.is_some_and(|g| g != attr.gid)
        };
        let type_file = match self.nodes.get(ino) {
            Some(Node::Live(v)) => Some(v.of()),
            Some(Node::LiveAlias(of)) => Some(of),
            _ => None,
        };
        if let Some(of) = type_file {
            if changes_owner_or_mode(&self.attr_of(ino, fh)?.0) {
                return Err(Errno::EPERM);
            }
            if let Some(size) = size {
                self.truncate_live(of, size, fh)?;
            }
            return self.attr_of(ino, fh).map(|(a, _)| a);
        }
        match self.nodes.get(ino) {
            Some(Node::Scratch(s)) => {
                let mut s = crate::sync::lock(&s);
                if let Some(size) = size {
                    self.resize_scratch(&mut s, size as usize)?;
                }
                if let Some(m) = mode {
                    s.mode = (m & 0o7777) as u16;
                }
                s.uid = uid.unwrap_or(s.uid);
                s.gid = gid.unwrap_or(s.gid);
                s.mtime = self.store.clock.now();
                drop(s);
                self.attr_of(ino, None).map(|(a, _)| a)
            }
            Some(Node::Tier(_) | Node::View(_)) => Err(Errno::EROFS),
            Some(Node::Snapshot(..)) => Err(Errno::EACCES),
            Some(Node::Live(_) | Node::LiveAlias(_)) => Err(Errno::EPERM),
            None if inode::dir_bucket(ino)
                .is_some_and(|b| b != crate::store::model::Bucket::Live) =>
            {
                Err(Errno::EROFS)
            }
            // The root, sources/ (which takes sources) and the directories that take files
            // (live/, allow/, a source's).
            None if (ino == inode::ROOT
                || ino == inode::SOURCES_DIR
                || self.writable(ino).is_some())
                && size.is_none() =>
            {
                let attr = self.dir_attr(ino);
                if changes_owner_or_mode(&attr) {
                    return Err(Errno::EPERM);
                }
                Ok(attr)
            }
            None => Err(Errno::EPERM),
        }
    }

    /// Only emptying is meaningful for a set of lines: through a handle it makes the handle
    /// a replace (applied at close); by path it empties the set now. Truncating to the
    /// current size, or through an appending handle to where its writes ended, is a no-op;
    /// anything else is EINVAL.
    fn truncate_live(
        &self,
        (target, ty): (Target, IocType),
        size: u64,
        fh: Option<FileHandle>,
    ) -> Result<(), Errno> {
        if let Some(Handle::LiveWrite(w)) = fh.and_then(|fh| self.handles.get(fh)) {
            let mut w = crate::sync::lock(&w);
            if size == 0 {
                if let WriteMode::Replace { staged, .. } = &mut w.mode {
                    staged.abort(&self.store);
                }
                w.mode = WriteMode::Replace {
                    staged: StagedReplace::new(target, ty),
                    poisoned: false,
                    written: true,
                };
                w.partial.clear();
                w.skipping = false;
                w.cut_short = false;
                w.next_offset = 0;
                // SETATTR does not say which process truncated: any close applies it.
                w.closers.wrote(None);
                return Ok(());
            }
            // `rsync --append` ends with ftruncate to the size it wrote up to; the lines it
            // appended may have been normalized to other lengths, so the set's size differs.
            if matches!(w.mode, WriteMode::Append) && size == w.next_offset {
                return Ok(());
            }
        }
        let len = self.store.current((target, ty)).len();
        if size == len {
            return Ok(());
        }
        if size == 0 {
            return self
                .store
                .replace_to(target, ty, Vec::new())
                .map(|_| ())
                .map_err(|e| errno(&e));
        }
        lograte::warn(|| {
            format!(
                "{}/{}: truncate to {size} bytes refused (only 0 empties the set)",
                target.dir(),
                ty.file_name()
            )
        });
        Err(Errno::EINVAL)
    }

    pub(super) fn write_scratch(
        &self,
        s: &ScratchRef,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        let mut s = crate::sync::lock(s);
        s.write_at(offset, data).inspect_err(|e| {
            if *e == Errno::ENOSPC {
                let held = self.nodes.scratch_pool.bytes();
                lograte::warn(|| {
                    format!("scratch files hold {held} bytes, the most they may; write refused")
                });
            }
        })?;
        s.mtime = self.store.clock.now();
        Ok(())
    }
}

/// What a close of a live write handle does now.
enum AtClose {
    Apply,
    /// Left to the final release (opens by writers wait for it).
    Wait,
    /// Not a close by this handle's writer: nothing to do.
    Ignore,
}

/// The replace handle open on each inode of its own (see `IocFs::open_live`): the kernel
/// asks for that inode's attributes without saying through which descriptor, and they
/// must be the replace's (its size is what it has written so far), not the old set's.
#[derive(Default)]
pub struct ReplacingInodes(Mutex<HashMap<INodeNo, Weak<Mutex<LiveWriter>>>>);

impl ReplacingInodes {
    /// `w` was opened on `ino`, an inode standing for its file.
    pub fn opened(&self, ino: INodeNo, w: &Arc<Mutex<LiveWriter>>) {
        let mut m = crate::sync::lock(&self.0);
        m.retain(|_, h| h.strong_count() > 0);
        m.insert(ino, Arc::downgrade(w));
    }

    /// `w` was released.
    pub fn closed(&self, w: &Arc<Mutex<LiveWriter>>) {
        let ptr = Arc::downgrade(w);
        crate::sync::lock(&self.0).retain(|_, h| !h.ptr_eq(&ptr) && h.strong_count() > 0);
    }

    /// Bytes written so far by the replace open on `ino`, if one is (and not yet applied).
    pub fn written(&self, ino: INodeNo) -> Option<u64> {
        // The map's lock is not held while the handle's is taken.
        let handle = crate::sync::lock(&self.0).get(&ino)?.upgrade()?;
        let w = crate::sync::lock(&handle);
        matches!(w.mode, WriteMode::Replace { .. }).then_some(w.next_offset)
    }
}
