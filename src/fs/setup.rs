//! Making the filesystem: who owns its files, what time empty ones show, empty tables, and
//! what it asks of the kernel at init.

use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};

use fuser::Notifier;

use super::inode::Owner;
use super::nodes::{Handles, Nodes};
use super::{closes, Inval, IocFs};
use crate::store::Store;
use crate::views::Views;

impl IocFs {
    pub fn new(store: Arc<Store>, views: Arc<Views>, inval: Sender<Inval>) -> IocFs {
        let c = store.config();
        let owner = Owner {
            uid: c.mount.uid,
            gid: c.mount.gid,
            file_mode: (c.mount.file_mode & 0o7777) as u16,
        };
        // What empty files and directories show as their times: when the data directory
        // was made (nothing is created or removed at its top level afterwards), so that a
        // restart changes no time `rsync -a` compares. Not later than now (a manual clock).
        let now = store.clock.now();
        let made = store
            .disk
            .metadata(&store.data_dir)
            .map_or(0, |m| m.mtime_secs());
        let contentless_time = if made == 0 { now } else { made.min(now) };
        let ids = store.id_source();
        IocFs {
            store,
            owner,
            nodes: Nodes::new(ids),
            handles: Handles::default(),
            inval,
            contentless_time,
            pending: closes::Pending::default(),
            passthrough: c.mount.passthrough,
            tier_passthrough: std::sync::atomic::AtomicBool::new(true),
            tier_walk: Default::default(),
            backing: Default::default(),
            kept_backing: Default::default(),
            copying_for_readers: Default::default(),
            retries: Default::default(),
            replace_retries: Default::default(),
            replacing: Default::default(),
            views,
            view_dirs: Default::default(),
            pins: Default::default(),
            stats: Default::default(),
            stat_pins: Default::default(),
            flocks: Default::default(),
            kernel: Default::default(),
        }
    }

    /// Where the daemon puts the session's notifier once it has one (the session takes
    /// the filesystem first).
    pub fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        self.kernel.clone()
    }
}

/// What the daemon asks of the kernel at init (passthrough aside: `negotiate_passthrough`).
pub(super) fn negotiate(config: &mut fuser::KernelConfig) {
    use fuser::InitFlags;
    // O_TRUNC must reach open() (not a separate truncate) so a replace handle can keep
    // readers on the old set until it is closed.
    if config
        .add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC)
        .is_err()
    {
        log::warn!("kernel lacks atomic O_TRUNC: `>` on a live file empties it before the new lines arrive");
    }
    let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
    // flock(2) locks kept per file, not per version (see `flocks`).
    if config
        .add_capabilities(InitFlags::FUSE_FLOCK_LOCKS)
        .is_err()
    {
        log::info!("kernel keeps flock locks itself: a lock on a type file does not outlive a change of the file");
    }
    // Descriptors served by the daemon use direct I/O, which the kernel refuses to mmap
    // (ENODEV: `look`, Python's mmap, ripgrep) unless told it may (Linux >= 6.6). The
    // mapping then reads through the page cache, and a version's bytes never change
    // under it: appends only add after its end.
    if config
        .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
        .is_err()
    {
        log::info!("kernel cannot mmap direct-I/O files: mmap of a live file a write just touched fails with ENODEV");
    }
    if let Err(max) = config.set_max_write(super::MAX_WRITE) {
        let _ = config.set_max_write(max);
    }
    if let Err(max) = config.set_max_readahead(super::MAX_WRITE) {
        let _ = config.set_max_readahead(max);
    }
}
