//! Reads the kernel serves itself (FUSE passthrough): which opens get it, and the files
//! behind them — live versions as they are, tier versions inflated whole.

use std::sync::Arc;

use fuser::{Errno, FopenFlags, InitFlags, KernelConfig, OpenFlags, ReplyOpen};

use super::nodes::{Handle, TierReader};
use super::{walk, IocFs};
use crate::lograte;
use crate::store::live::LiveVersion;
use crate::store::read::Pin;

impl IocFs {
    /// Ask the kernel for passthrough at mount (`init`), if configured; off, with the log
    /// saying why, where the kernel can't (Linux < 6.9) or won't.
    pub(super) fn negotiate_passthrough(&mut self, config: &mut KernelConfig) {
        if !self.passthrough {
            return;
        }
        let enabled = config
            .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
            .map_err(|_| "the kernel has no FUSE passthrough (Linux >= 6.9)".to_string())
            .and_then(|()| {
                config
                    .set_max_stack_depth(1)
                    .map(|_| ())
                    .map_err(|d| format!("stack depth {d}"))
            });
        match enabled {
            Ok(()) => log::info!(
                "live files: read-only opens served by FUSE passthrough (tier files too, from inflated copies)"
            ),
            Err(why) => {
                log::warn!("live files: reads served by the daemon, not FUSE passthrough: {why}");
                self.passthrough = false;
            }
        }
    }

    /// A read-only open of a live version's own inode, with passthrough on. By passthrough
    /// when readers hold the version that way already (the kernel then refuses any other
    /// kind of open of the inode, so this one joins them whatever the limits: it costs no
    /// copy) or when it can be pinned now; otherwise served by the daemon.
    pub(super) fn open_live_reader(
        &self,
        uid: u32,
        v: Arc<LiveVersion>,
        fopen: FopenFlags,
        reply: ReplyOpen,
    ) {
        // A round fails only when the version changed kind under it (its last passthrough
        // reader closed, or a first one pinned it): the next one settles it.
        for _ in 0..4 {
            let pinned = if v.pin_again() {
                self.pins.admit(uid, v.id, false)
            } else if self.pins.admit(uid, v.id, true) {
                match self.store.pin_for_passthrough(&v) {
                    Pin::Pinned => true,
                    // Served by the daemon on this very inode, the version copied in the
                    // background for the next readers to pin. Copying it here and answering
                    // ESTALE would put this descriptor on another inode than the one its
                    // caller just stat'ed: `cp -a` then skips the file ("replaced while
                    // being copied").
                    Pin::PlainOpenSettling => {
                        self.pins.release(uid, v.id);
                        self.copy_for_readers_soon(&v);
                        false
                    }
                    Pin::Refused => {
                        self.pins.release(uid, v.id);
                        false
                    }
                }
            } else {
                false
            };
            if pinned {
                match self.backing(v.id, v.fd(), &reply) {
                    Ok(backing) => {
                        self.keep_backing(&v, &backing);
                        let fh =
                            self.handles
                                .insert(Handle::LivePassthrough(v, backing.clone(), uid));
                        return reply.opened_passthrough(fh, FopenFlags::FOPEN_NOFLUSH, &backing);
                    }
                    Err(e) => {
                        v.passthrough_closed();
                        self.pins.release(uid, v.id);
                        lograte::warn(|| {
                            format!(
                                "passthrough open of live/{}: {e}; served by the daemon",
                                v.ty.file_name()
                            )
                        });
                    }
                }
            }
            if v.open_plain() {
                return reply.opened(self.handles.insert(Handle::LiveRead(v)), fopen);
            }
        }
        reply.error(Errno::EIO)
    }

    /// Opens served by the daemon keep `v` from being pinned for a moment (see
    /// `Pin::PlainOpenSettling`), and readers that keep coming would keep it so: copy it in
    /// the background (one copy per type at a time) for the next readers to pin. Not in
    /// this open: a large copy would hold up this reader, and readers are never held up.
    fn copy_for_readers_soon(&self, v: &Arc<LiveVersion>) {
        if !crate::sync::lock(&self.copying_for_readers).insert(v.ty) {
            return;
        }
        let (store, copying, v) = (
            self.store.clone(),
            self.copying_for_readers.clone(),
            v.clone(),
        );
        let ty = v.ty;
        let spawned = std::thread::Builder::new()
            .name("iocfs-copy".into())
            .spawn(move || {
                if let Err(e) = store.rotate_live_for_readers(&v) {
                    lograte::warn(|| format!("copy of live/{} for readers: {e}", ty.file_name()));
                }
                crate::sync::lock(&copying).remove(&ty);
            });
        if spawned.is_err() {
            crate::sync::lock(&self.copying_for_readers).remove(&ty);
        }
    }

    /// The backing id of a file version's bytes (one per version, shared by all its
    /// passthrough readers: the kernel wants the same one for every open of an inode).
    fn backing(
        &self,
        id: u64,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
        reply: &ReplyOpen,
    ) -> std::io::Result<Arc<fuser::BackingId>> {
        let mut cache = crate::sync::lock(&self.backing);
        if let Some(id) = cache.get(&id).and_then(std::sync::Weak::upgrade) {
            return Ok(id);
        }
        let fd = fd.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::Unsupported))?;
        let backing = Arc::new(reply.open_backing(fd)?);
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(id, Arc::downgrade(&backing));
        Ok(backing)
    }

    /// Keep the backing id of `v` (the newest version of its file read by passthrough) after
    /// its readers close: a program that opens, reads and closes a list over and over would
    /// otherwise have it registered and dropped at each open, a fifth of the open's time.
    /// One per live file, let go when a newer version takes its place or when its last
    /// reader closes after it was superseded; the one kept for a version superseded since
    /// its readers closed stays until the file's next passthrough open.
    fn keep_backing(&self, v: &LiveVersion, backing: &Arc<fuser::BackingId>) {
        let before = crate::sync::lock(&self.kept_backing).insert(v.of(), backing.clone());
        // Out of the lock: dropping the last reference unregisters it (an ioctl).
        drop(before);
    }

    /// A passthrough reader of `v` closed: if `v` is no longer its file's current version,
    /// its kept backing id goes (the kernel closes the backing file once no reader has it).
    pub(super) fn release_backing(&self, v: &LiveVersion, backing: Arc<fuser::BackingId>) {
        if self.store.current(v.of()).id == v.id {
            return;
        }
        let mut kept = crate::sync::lock(&self.kept_backing);
        let gone = match kept.get(&v.of()) {
            Some(k) if Arc::ptr_eq(k, &backing) => kept.remove(&v.of()),
            _ => None,
        };
        drop(kept);
        drop((gone, backing));
    }

    /// For a reader walking the tier files: start inflating the next files of `next` with
    /// anything in them, which it will open soon (only what passthrough readers would get).
    pub(super) fn inflate_next(&self, next: &[walk::TierFile]) {
        if next.is_empty()
            || !self.passthrough
            || !self
                .tier_passthrough
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let files = next.iter().map(|&(t, ty)| self.store.tier(t, ty));
        let files = files.filter(|v| v.size() > 0).take(walk::FILES_AHEAD);
        self.store.inflate_ahead(files.collect());
    }

    /// A read-only open of a tier file. With passthrough on, a whole-file reader gets the
    /// version inflated into a file the kernel reads itself (made now on every core, made
    /// ahead of a walking reader, or kept from an earlier open); `O_DIRECT` readers (random
    /// reads), versions too large for the copy budget and opens of an inode that page-cache
    /// readers hold are served from the blocks, through the kernel's page cache of the inode.
    pub(super) fn open_tier_reader(
        &self,
        reader: Arc<TierReader>,
        flags: OpenFlags,
        reply: ReplyOpen,
    ) {
        let v = reader.version.clone();
        let mut opens = v.opens();
        let copy = match opens.held_copy() {
            Some(held) => Some(held),
            None if !self.passthrough
                || !self
                    .tier_passthrough
                    .load(std::sync::atomic::Ordering::Relaxed)
                || opens.cached_readers()
                || flags.0 & libc::O_DIRECT != 0 =>
            {
                None
            }
            None => self.store.inflated_tier(&v).unwrap_or_else(|e| {
                lograte::warn(|| {
                    format!(
                        "inflating {}/{} for passthrough: {e}; served by the daemon",
                        v.tier,
                        v.ty.file_name()
                    )
                });
                None
            }),
        };
        if let Some(copy) = copy {
            match self.backing(copy.version_id, copy.fd(), &reply) {
                Ok(backing) => {
                    opens.passthrough_opened(copy);
                    drop(opens);
                    let fh = self
                        .handles
                        .insert(Handle::TierPassthrough(reader, backing.clone()));
                    return reply.opened_passthrough(fh, FopenFlags::FOPEN_NOFLUSH, &backing);
                }
                // (Not while passthrough readers hold the copy: its backing id is alive.)
                Err(e) => {
                    // Short of descriptors or memory it may work next time; otherwise the
                    // kernel refuses these files (permissions, filesystem stacking): stop
                    // inflating copies it will not take.
                    let transient = matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
                    );
                    if !transient {
                        self.tier_passthrough
                            .store(false, std::sync::atomic::Ordering::Relaxed);
                        self.store.drop_inflated();
                    }
                    log::warn!(
                        "passthrough open of {}/{}: {e}; served by the daemon{}",
                        v.tier,
                        v.ty.file_name(),
                        if transient {
                            ""
                        } else {
                            ", and so are tier files from now on"
                        }
                    );
                }
            }
        }
        opens.cached_opened();
        drop(opens);
        let fh = self.handles.insert(Handle::Tier(reader));
        reply.opened(fh, FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH)
    }
}
