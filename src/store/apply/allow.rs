//! Applying writes to the allowlist (see `state::allow`).

use super::Applied;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::state::{Chunks, State};

pub(super) fn append(state: &mut State, ts: u64, ty: IocType, values: &[u8]) -> Result<Applied> {
    let before = state.allow(ty).version().id;
    let added = state.allow_append(ty, values, ts)?;
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
    state.changes_mut().mark_allow(ty);
    Ok(Applied {
        added,
        removed,
        superseded_allow: superseded(state, ty, before),
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
