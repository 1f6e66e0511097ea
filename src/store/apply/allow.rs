//! Applying writes to the allowlist (see `state::allow`).

use super::Applied;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::state::{Chunks, State};

pub(super) fn append(state: &mut State, ts: u64, ty: IocType, values: &[u8]) -> Result<Applied> {
    let before = state.allow(ty).version().id;
    let added = state.allow_append(ty, values, ts)?;
    // Values written again move their last-written times, which the next commit saves.
    state.changes_mut().mark_allow(ty);
    Ok(Applied {
        added,
        superseded_allow: superseded(state, ty, before),
        ..Applied::default()
    })
}

pub(super) fn replace(
    state: &mut State,
    ts: u64,
    ty: IocType,
    chunks: &mut Chunks<'_>,
) -> Result<Applied> {
    let before = state.allow(ty).version().id;
    let (added, removed) = state.allow_replace(ty, ts, chunks)?;
    let superseded_allow = superseded(state, ty, before);
    // The list as it stood (see `allow_replace`) changes nothing to save or rebuild.
    if !superseded_allow.is_empty() {
        state.changes_mut().mark_allow(ty);
    }
    Ok(Applied {
        added,
        removed,
        superseded_allow,
        ..Applied::default()
    })
}

fn superseded(state: &State, ty: IocType, before: u64) -> Vec<(IocType, u64)> {
    if state.allow(ty).version().id == before {
        Vec::new()
    } else {
        vec![(ty, before)]
    }
}
