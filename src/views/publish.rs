//! Publishing a build: a new version, the same one kept when the bytes did not change, or
//! the build held back by `max_shrink` until `release-view`.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::render::FileStats;
use super::{disk, Views};
use crate::cidr::{IntervalSet, Net};
use crate::config::views::View;
use crate::error::{Error, Result};
use crate::ioc::IocType;
use crate::store::tier::lines;
use crate::store::Store;
use crate::sync::{lock, read, write};

/// A build kept back by `max_shrink` (its file staged in the view's directory).
pub(super) struct Held {
    pub(super) staged: disk::Staged,
    pub(super) stats: FileStats,
    pub(super) removed: u64,
    pub(super) of: u64,
}

impl Views {
    /// Publish a build, keep the current version if the bytes are the same, or hold the
    /// build back (returned) when it would remove too much at once.
    pub(super) fn publish_or_hold(
        &self,
        store: &Store,
        (name, def, ty): (&str, &View, IocType),
        mut staged: disk::Staged,
        stats: FileStats,
        uncapped: Option<Arc<IntervalSet>>,
    ) -> Result<Option<Held>> {
        if let Some(cur) = self.file(name, ty) {
            if cur.len == staged.len() && cur.hash == staged.hash() {
                return Ok(None);
            }
            // Only a rebuild that shrinks the file can be held: a capped list turning
            // over, a feed coming back after it broke, networks merged by aggregation all
            // remove entries without taking anything away from the firewall.
            // For addresses and networks that is fewer addresses, else fewer entries (a
            // capped list of names that stays full is never held). An address build the
            // cap cut is checked against all it selected (`uncapped`): a capped list
            // turning over, even from wide networks to single addresses, keeps the old
            // entries selected; a broken feed takes them out.
            let addresses = matches!(ty, IocType::Ipv4 | IocType::Ipv6);
            let may_shrink = addresses || stats.entries < cur.entries;
            if let Some(max) = def.max_shrink.filter(|_| cur.entries > 0 && may_shrink) {
                let old = cur.read_at(0, cur.len as usize)?;
                let new = staged.read_all()?;
                let removed = removed_entries(&old, &new, addresses, uncapped.as_deref());
                if removed as f64 > max.as_f64() * cur.entries as f64 {
                    let of = cur.entries;
                    // Once per hold: every later pass builds it again (health keeps saying so).
                    let again = lock(&self.files)
                        .get(&(name.to_string(), ty))
                        .and_then(|st| st.held.as_ref())
                        .is_some_and(|h| (h.removed, h.of) == (removed, of));
                    log::log!(
                        if again { log::Level::Debug } else { log::Level::Warn },
                        "view {name}/{}: held: the rebuild would remove {removed} of {of} entries (max_shrink {})",
                        ty.file_name(),
                        max.as_f64()
                    );
                    return Ok(Some(Held {
                        staged,
                        stats,
                        removed,
                        of,
                    }));
                }
            }
        }
        self.publish(store, name, ty, staged, stats.entries)?;
        Ok(None)
    }

    fn publish(
        &self,
        store: &Store,
        name: &str,
        ty: IocType,
        staged: disk::Staged,
        entries: u64,
    ) -> Result<()> {
        let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
        // HTTP validators have one-second resolution (nginx's ETag is mtime-size, and
        // Last-Modified is whole seconds): a new version always gets a later second than
        // the one it replaces, or a poller could be told "304" for a changed list of the
        // same size. Only rebuilds faster than once a second run ahead of the clock.
        let previous = self.file(name, ty).map_or(0, |f| f.mtime);
        let mtime = store.clock.now().max(previous + 1);
        let file = self.disk.commit(name, ty, staged, ino, mtime, entries)?;
        let old = write(&self.published).insert((name.to_string(), ty), Arc::new(file));
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.first_builds.published();
        if let Some(old) = old {
            for hook in read(&self.hooks).iter() {
                hook(old.ino);
            }
        }
        log::debug!(
            "view {name}/{}: published {entries} entries",
            ty.file_name()
        );
        Ok(())
    }

    /// `release-view NAME`: publish the builds of `view` that `max_shrink` held back.
    pub fn release(&self, store: &Store, view: &str) -> Result<usize> {
        let _one_at_a_time = lock(&self.build);
        if !self.config().defs.contains_key(view) {
            return Err(Error::Invalid(format!(
                "release-view: no view named {view:?}"
            )));
        }
        let held: Vec<(IocType, Held)> = {
            let mut files = lock(&self.files);
            files
                .iter_mut()
                .filter(|((v, _), _)| v == view)
                .filter_map(|((_, ty), st)| st.held.take().map(|h| (*ty, h)))
                .collect()
        };
        let n = held.len();
        for (ty, h) in held {
            let entries = h.stats.entries;
            self.publish(store, view, ty, h.staged, entries)?;
            log::info!(
                "view {view}/{}: released ({entries} entries)",
                ty.file_name()
            );
        }
        Ok(n)
    }
}

/// Entries of the `old` file the `new` one neither lists nor (`addresses`: an address
/// file) covers, nor the build selected before its cap cut it (`uncapped`); for an address
/// file, 0 unless the new one covers fewer addresses (aggregation makes entry counts say
/// little: a /8 becoming 50 /32s is more entries).
fn removed_entries(old: &[u8], new: &[u8], addresses: bool, uncapped: Option<&IntervalSet>) -> u64 {
    let union = |text| IntervalSet::build(lines(text).filter_map(net));
    let covered = if addresses {
        union(new)
    } else {
        IntervalSet::default()
    };
    if addresses && covered.address_count() >= union(old).address_count() {
        return 0;
    }
    let kept: HashSet<&[u8]> = lines(new).collect();
    let covered_now =
        |n: &Net| covered.contains_net(n) || uncapped.is_some_and(|all| all.contains_net(n));
    lines(old)
        .filter(|l| !l.is_empty() && !kept.contains(l))
        .filter(|l| !net(l).is_some_and(|n| covered_now(&n)))
        .count() as u64
}

/// An address or network entry.
fn net(line: &[u8]) -> Option<Net> {
    std::str::from_utf8(line).ok()?.parse().ok()
}
