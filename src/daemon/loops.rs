//! The daemon's background loops: kernel invalidations, commit, checkpoint, aging, view
//! builds, the periodic WAL sync and the systemd watchdog. Each sleeps on the shared
//! [`Stop`] so shutdown wakes it at once.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use fuser::INodeNo;

use super::Stop;
use crate::fs::Inval;
use crate::store::model::Bucket;
use crate::store::Store;
use crate::views::Views;

pub(super) fn notify_loop(rx: mpsc::Receiver<Inval>, notifier: fuser::Notifier) {
    for inval in rx {
        match inval {
            Inval::Inode(ino) => inval_attrs(&notifier, ino),
        }
    }
}

/// Drop the kernel's cached attributes of `ino`. Attributes only (offset -1): no page or
/// directory lock is taken, so this never waits for a client (see VERSION_TTL in fs).
///
/// The change hook calls this from the WAL batch leader, before the change is
/// acknowledged, while other FUSE workers may be waiting for that batch. It can't deadlock
/// them: the kernel's handler (`fuse_reverse_inval_inode`) looks the inode up, bumps its
/// attribute version and marks its attributes stale; only a non-negative offset would
/// invalidate pages, which waits for pages locked by READs in flight (that would need a
/// worker to answer them). Looking the inode up waits only for an inode being evicted,
/// and an inode with a READ in flight has an open file, so it is not being evicted.
/// `tests/hostile_control.rs` (`inode_invalidation_never_waits_for_a_read_in_flight`)
/// checks it: with two workers, one stuck in a READ of a tier file, a change superseding
/// that very inode is acknowledged.
pub(super) fn inval_attrs(notifier: &fuser::Notifier, ino: INodeNo) {
    if let Err(e) = notifier.inval_inode(ino, -1, 0) {
        log::debug!("invalidate inode {}: {e}", ino.0);
    }
}

pub(super) fn commit_loop(store: &Store, stop: &Stop) {
    let mut wait = store.config().durability.commit_interval;
    while !stop.sleep(wait) {
        let interval = store.config().durability.commit_interval;
        let started = Instant::now();
        if let Err(e) = store.commit() {
            log::error!("commit failed (will retry): {e}");
        }
        // Rewriting big files every interval would be all the disk does: keep commits to
        // at most a tenth of the time.
        wait = interval.max(started.elapsed() * 10);
    }
}

/// Every `checkpoint_interval`, or sooner once `checkpoint_records` records were written since
/// the last one.
pub(super) fn checkpoint_loop(store: &Store, stop: &Stop) {
    let mut last = Instant::now();
    let mut last_seq = store.next_seq();
    while !stop.sleep(Duration::from_secs(1)) {
        let c = store.config();
        let records = store.next_seq().saturating_sub(last_seq);
        if last.elapsed() < c.durability.checkpoint_interval
            && records < c.durability.checkpoint_records
        {
            continue;
        }
        if let Err(e) = store.checkpoint() {
            log::error!("checkpoint failed (will retry): {e}");
        }
        last = Instant::now();
        last_seq = store.next_seq();
    }
}

pub(super) fn aging_loop(store: &Store, stop: &Stop) {
    while !stop.sleep(store.config().aging.interval) {
        crate::failpoint::panic_if("aging::panic");
        if let Err(e) = store.age_if_due() {
            if !stop.is_stopped() {
                log::error!("aging failed: {e}");
            }
        }
    }
}

/// Rebuild due views whenever the store changed (woken by the apply hook), the config did,
/// or `refresh` let a held-back rebuild through; at least every second for `max_age`.
pub(super) fn views_loop(store: &Store, views: &Views, stop: &Stop) {
    while !stop.is_stopped() {
        let wait = match views.rebuild(store, false) {
            Ok(next_due) => next_due.unwrap_or(Duration::from_secs(1)),
            Err(e) => {
                log::error!("view build failed (will retry): {e}");
                Duration::from_secs(5)
            }
        };
        views.wait(wait.min(Duration::from_secs(1)));
    }
    views.stop_waits();
}

pub(super) fn sync_loop(store: &Store, stop: &Stop) {
    while !stop.sleep(store.config().durability.sync_interval) {
        if let Err(e) = store.sync() {
            log::error!("periodic WAL sync failed: {e}");
        }
    }
}

/// Tell systemd we are alive only while the WAL can take writes.
pub(super) fn health_loop(store: &Store, stop: &Stop) {
    let period = sd_notify::watchdog_enabled().map_or(Duration::from_secs(10), |d| d / 2);
    let mut last_status = String::new();
    while !stop.sleep(period) {
        // A failed store stops petting the watchdog: systemd restarts it into recovery.
        if !store.is_failed() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
        let problems = store.problems();
        let status = if problems.is_empty() {
            indicator_summary(store)
        } else {
            problems.join("; ")
        };
        if status != last_status {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
            last_status = status;
        }
    }
}

pub(super) fn indicator_summary(store: &Store) -> String {
    let st = crate::store::stats::stats(store);
    Bucket::ALL
        .iter()
        .map(|b| format!("{} {}", b.name(), st["buckets"][b.name()]["total"]["lines"]))
        .collect::<Vec<_>>()
        .join(", ")
}
