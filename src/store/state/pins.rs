//! Live versions pinned by FUSE passthrough readers (docs/internals.md, "The mount"): the
//! kernel reads a pinned version's file itself, up to its size, so it must not grow; an
//! append goes to a copy instead. The copy is made before the state lock is taken (by the
//! batch's prepare step), and no new pin is taken on a type between that step and the
//! batch's apply, so the apply finds the copy it needs and never copies under the lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::State;
use crate::ioc::IocType;
use crate::store::live::{LiveVersion, Storage};

impl State {
    /// A batch will append to `ty`: no new pins until [`State::end_append`]. Returns the
    /// current version, for the caller to copy (outside the lock) if it is pinned.
    pub fn begin_append(&mut self, ty: IocType) -> Arc<LiveVersion> {
        self.appending[ty] += 1;
        self.live[ty].version.clone()
    }

    pub fn end_append(&mut self, ty: IocType) {
        self.appending[ty] = self.appending[ty].saturating_sub(1);
        self.live[ty].drop_successor();
    }

    /// Whether a passthrough reader may pin the current version of `ty` now.
    pub fn may_pin(&self, ty: IocType) -> bool {
        self.appending[ty] == 0
            && self.pins_paused_until[ty].is_none_or(|until| Instant::now() >= until)
    }

    /// A batch copied a pinned version of `ty` holding `bytes`. Readers that reopen a large
    /// live file while a feed appends to it would otherwise have every batch copy it whole:
    /// after a copy of 2 MiB or more, new readers of `ty` are served by the daemon (same
    /// bytes, not by passthrough) for nine times as long as such a copy takes (at 2 GB/s,
    /// about what memory copies reach here), so copying takes about a tenth of the time at
    /// most. Priced by size, not timed, so the pause does not depend on machine load.
    pub fn ration_copies(&mut self, ty: IocType, bytes: u64) {
        const SMALL: u64 = 2 << 20;
        if bytes >= SMALL {
            self.pause_pins(ty, Duration::from_nanos(bytes.saturating_mul(9) / 2));
        }
    }

    /// Until when new pins of `ty` are paused, if they are.
    #[cfg(test)]
    pub fn pins_paused_until(&self, ty: IocType) -> Option<Instant> {
        self.pins_paused_until[ty]
    }

    /// No new passthrough pins of `ty` for `pause` (or longer, if already paused longer).
    pub fn pause_pins(&mut self, ty: IocType, pause: Duration) {
        let until = Instant::now() + pause;
        let paused = &mut self.pins_paused_until[ty];
        *paused = Some(paused.map_or(until, |t| t.max(until)));
    }

    /// A copy of version `base` of `ty`, for an append that finds it pinned.
    pub fn offer_successor(&mut self, ty: IocType, base: u64, copy: Arc<LiveVersion>) {
        self.live[ty].offer_successor(base, copy);
    }

    /// Make `copy` (of `base`, made without the lock) the current version of `ty` if `base`
    /// is current and unchanged. Returns the superseded id if it was.
    pub fn install_live_copy(
        &mut self,
        ty: IocType,
        base: u64,
        copy: Arc<LiveVersion>,
    ) -> Option<u64> {
        self.live[ty].install_copy(base, copy).then_some(base)
    }

    /// Where new live versions and staged replaces are kept (to reserve files for them).
    pub fn storages(&self) -> (Storage, Storage) {
        let any = crate::ioc::IocType::Ipv4;
        (
            self.live[any].version.storage().clone(),
            self.staging.clone(),
        )
    }
}
