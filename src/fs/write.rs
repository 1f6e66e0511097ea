//! Writes to live files (README "What a write means"): append and replace handles, truncation, and the
//! validation errors users see.

use std::sync::{Arc, Mutex};

use fuser::{Errno, FileAttr, FileHandle, INodeNo, OpenAccMode, OpenFlags};

use super::nodes::{Handle, LiveWriter, Node, ScratchRef, WriteMode};
use super::{errno, inode, Inval, IocFs};
use crate::config::OnInvalid;
use crate::ingest::{self, Ingested};
use crate::ioc::IocType;
use crate::store::live::LiveVersion;
use crate::store::partition::ByType;

impl IocFs {
    /// Open a live version. Only the current version opens: a stale one answers ESTALE so
    /// the kernel looks the name up again (an open after a change sees the change), unless
    /// this is the kernel's retry by thread `tid` (see `retry`). An empty replace still
    /// waiting for its release is waited for first (see `Pending`).
    pub(super) fn open_live(
        &self,
        v: &Arc<LiveVersion>,
        flags: OpenFlags,
        tid: Option<u32>,
    ) -> Result<Handle, Errno> {
        let ty = v.ty;
        self.pending.wait(ty);
        let current = self.store.live(ty);
        if flags.acc_mode() == OpenAccMode::O_RDONLY {
            if current.id == v.id {
                return Ok(Handle::LiveRead(current));
            }
            if tid.is_some_and(|tid| self.retries.is_retry(tid, inode::version(v.id))) {
                return Ok(Handle::LiveRead(v.clone()));
            }
            return Err(Errno::ESTALE);
        }
        // The kernel fails (EIO) a plain open of an inode that passthrough readers hold: move
        // the writer to a fresh version of the same bytes; ESTALE makes it look up again.
        if self.passthrough && self.store.rotate_live_if_held(ty).map_err(|e| errno(&e))? {
            return Err(Errno::ESTALE);
        }
        let replace = flags.0 & libc::O_TRUNC != 0;
        let mode = if replace {
            WriteMode::Replace {
                staged: Vec::new(),
                poisoned: false,
                written: false,
            }
        } else {
            WriteMode::Append
        };
        Ok(Handle::LiveWrite(Arc::new(Mutex::new(LiveWriter {
            ty,
            ino: inode::version(v.id),
            mode,
            partial: Vec::new(),
            line_no: 0,
            // An append handle's first write must land at the end of the file.
            next_offset: if replace { 0 } else { u64::MAX },
            o_append: flags.0 & libc::O_APPEND != 0,
            pending: false,
        }))))
    }

    /// Validate `data` and apply it: appended at once, or staged in a replace handle.
    pub(super) fn write_live(
        &self,
        w: &Mutex<LiveWriter>,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        let mut w = crate::sync::lock(w);
        let file = format!("live/{}", w.ty.file_name());
        match &w.mode {
            WriteMode::Replace { poisoned: true, .. } => return Err(Errno::EINVAL),
            WriteMode::Replace { .. } if offset != w.next_offset => {
                log::warn!(
                    "{file}: write at offset {offset} in a replace handle that is at {}; rejected",
                    w.next_offset
                );
                return Err(Errno::EINVAL);
            }
            WriteMode::Append if !w.o_append && offset != w.next_offset => {
                let end = self.store.live(w.ty).len();
                if offset != end {
                    log::warn!("{file}: write at offset {offset} is neither the end of the file ({end}) nor a replace; rejected");
                    return Err(Errno::EINVAL);
                }
            }
            _ => {}
        }
        let got = ingest::ingest(w.ty, &w.partial, data, w.line_no + 1, &self.store.limits());
        self.check_rejections(&mut w, &got, &file)?;
        self.apply_lines(&mut w, got.values)?;
        w.partial = got.partial;
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
        self.store.count_rejected(w.ty, got.rejected.len() as u64);
        if !reject {
            return Ok(());
        }
        if let WriteMode::Replace { poisoned, .. } = &mut w.mode {
            *poisoned = true;
        }
        Err(Errno::EINVAL)
    }

    fn apply_lines(&self, w: &mut LiveWriter, values: Vec<u8>) -> Result<(), Errno> {
        match &mut w.mode {
            WriteMode::Append => {
                if !values.is_empty() {
                    self.store.append(w.ty, values).map_err(|e| errno(&e))?;
                    // The kernel refreshes the size of the inode written through; if the
                    // lines went to a newer version, that one's cached size is stale.
                    let current = inode::version(self.store.live(w.ty).id);
                    if current != w.ino {
                        let _ = self.inval.send(Inval::Inode(current));
                    }
                }
            }
            WriteMode::Replace {
                staged, written, ..
            } => {
                staged.extend_from_slice(&values);
                *written = true;
            }
        }
        Ok(())
    }

    /// close() of one descriptor (`last` = false: the kernel's FLUSH, sent for every copy
    /// of the descriptor) or the final release (`last` = true).
    ///
    /// An unterminated last line is taken as a line only at the final release: a FLUSH
    /// also comes when a dup of the descriptor closes (a child exits, `{ a; b; } >> f`),
    /// and more of that line may still arrive. A replace handle applies its set at the
    /// first close after its writes, unless a line is still open. Whatever waits for the
    /// release (that line, or an empty replace: `: > f`, or a shell's close before `echo`
    /// writes) makes opens of the file wait for it a moment, since the kernel sends the
    /// release after close() has returned.
    pub(super) fn flush_live(&self, w: &Mutex<LiveWriter>, last: bool) -> Result<(), Errno> {
        let mut w = crate::sync::lock(w);
        let file = format!("live/{}", w.ty.file_name());
        let ty = w.ty;
        let open_line = !w.partial.is_empty();
        let waits_for_release = match &w.mode {
            WriteMode::Replace { poisoned: true, .. } => false,
            WriteMode::Replace { written, .. } => open_line || !*written,
            WriteMode::Append => open_line,
        };
        if !last && waits_for_release {
            if !w.pending {
                self.pending.add(ty);
                w.pending = true;
            }
            return Ok(());
        }
        let result = self.apply_at_close(&mut w, &file);
        self.settle_pending(&mut w);
        result
    }

    fn apply_at_close(&self, w: &mut LiveWriter, file: &str) -> Result<(), Errno> {
        if !w.partial.is_empty() {
            let got = ingest::finish(w.ty, &w.partial, w.line_no + 1, &self.store.limits());
            w.partial.clear();
            w.line_no += got.lines;
            self.check_rejections(w, &got, file)?;
            self.apply_lines(w, got.values)?;
        }
        let ty = w.ty;
        if let WriteMode::Replace {
            staged, poisoned, ..
        } = &mut w.mode
        {
            if *poisoned {
                return Err(Errno::EINVAL);
            }
            self.store
                .replace(ty, std::mem::take(staged))
                .map_err(|e| errno(&e))?;
            // Lines written after this close (through a dup'd descriptor) extend the new set.
            w.mode = WriteMode::Append;
            w.o_append = true;
        }
        Ok(())
    }

    /// This handle no longer keeps opens of its file waiting.
    pub(super) fn settle_pending(&self, w: &mut LiveWriter) {
        if w.pending {
            self.pending.done(w.ty);
            w.pending = false;
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
        let _ = touched;
        let live_type = match self.nodes.get(ino) {
            Some(Node::Live(v)) => Some(v.ty),
            Some(Node::LiveAlias(ty)) => Some(ty),
            _ => None,
        };
        if let Some(ty) = live_type {
            if mode.is_some() || uid.is_some() || gid.is_some() {
                return Err(Errno::EPERM);
            }
            if let Some(size) = size {
                self.truncate_live(ty, size, fh)?;
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
            Some(Node::Lookup(_)) => Err(Errno::EACCES),
            Some(Node::Live(_) | Node::LiveAlias(_)) => Err(Errno::EPERM),
            None if inode::dir_bucket(ino)
                .is_some_and(|b| b != crate::store::model::Bucket::Live) =>
            {
                Err(Errno::EROFS)
            }
            None => Err(Errno::EPERM),
        }
    }

    /// Only emptying is meaningful for a set of lines: through a handle it makes the handle
    /// a replace (applied at close); by path it empties the set now. Truncating to the
    /// current size is a no-op; anything else is EINVAL.
    fn truncate_live(&self, ty: IocType, size: u64, fh: Option<FileHandle>) -> Result<(), Errno> {
        if let Some(Handle::LiveWrite(w)) = fh.and_then(|fh| self.handles.get(fh)) {
            let mut w = crate::sync::lock(&w);
            if size == 0 {
                w.mode = WriteMode::Replace {
                    staged: Vec::new(),
                    poisoned: false,
                    written: true,
                };
                w.partial.clear();
                w.next_offset = 0;
                return Ok(());
            }
        }
        let len = self.store.live(ty).len();
        if size == len {
            return Ok(());
        }
        if size == 0 {
            return self
                .store
                .replace(ty, Vec::new())
                .map(|_| ())
                .map_err(|e| errno(&e));
        }
        log::warn!(
            "live/{}: truncate to {size} bytes refused (only 0 empties the set)",
            ty.file_name()
        );
        Err(Errno::EINVAL)
    }

    pub(super) fn write_scratch(
        &self,
        s: &ScratchRef,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        let mut s = crate::sync::lock(s);
        let end = offset as usize + data.len();
        if end > s.data.len() {
            self.resize_scratch(&mut s, end)?;
        }
        s.data[offset as usize..end].copy_from_slice(data);
        s.mtime = self.store.clock.now();
        Ok(())
    }
}

/// Replace handles closed before writing anything, per type: their empty set applies at
/// release, which the kernel sends after close() has returned. Opens of that file wait for
/// it (briefly), so `: > f; cat f` prints nothing.
#[derive(Default)]
pub struct Pending {
    counts: Mutex<ByType<usize>>,
    settled: std::sync::Condvar,
}

/// How long an open waits for such a release; a handle that really stays open past it
/// (a program keeping an O_TRUNC descriptor without writing) only delays opens this much.
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

impl Pending {
    fn add(&self, ty: IocType) {
        let mut c = crate::sync::lock(&self.counts);
        c[ty] += 1;
    }

    fn done(&self, ty: IocType) {
        let mut c = crate::sync::lock(&self.counts);
        let n = &mut c[ty];
        *n = n.saturating_sub(1);
        self.settled.notify_all();
    }

    pub fn wait(&self, ty: IocType) {
        let c = crate::sync::lock(&self.counts);
        drop(crate::sync::wait_timeout_while(
            &self.settled,
            c,
            PENDING_WAIT,
            |c| c[ty] > 0,
        ));
    }
}
