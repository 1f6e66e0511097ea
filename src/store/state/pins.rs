//! Live versions pinned by FUSE passthrough readers (docs/internals.md, "The mount"): the
//! kernel reads a pinned version's file itself, up to its size, so it must not grow; an
//! append goes to a copy instead. The copy is made before the state lock is taken (by the
//! batch's prepare step), and no new pin is taken on a type between that step and the
//! batch's apply, so the apply finds the copy it needs and never copies under the lock.

use std::sync::Arc;

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
    }

    /// A copy of version `base` of `ty`, for an append that finds it pinned.
    pub fn offer_successor(&mut self, ty: IocType, base: u64, copy: Arc<LiveVersion>) {
        self.live[ty].offer_successor(base, copy);
    }

    /// Make `copy` (of `base`, made without the lock) the current version of `ty` if `base`
    /// is current, unchanged and still pinned. Returns the superseded id if it was.
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
