//! Making the filesystem: who owns its files, what time empty ones show, empty tables.

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
