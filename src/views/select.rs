//! Selecting a view's indicators of one type: which buckets, how recently seen.
//!
//! Memory is what bounds a build (a view over every bucket of a 10M-indicator store reads
//! all of it), so the selection is compact: addresses and networks are parsed at once into
//! packed entries ([`Nets`]), other values are copied into one arena (a single large allocation,
//! given back to the system whole), and each partition buffer — a live version's content,
//! an inflated tier block — is dropped as soon as its lines are taken.

use super::nets::Nets;
use crate::cache::BlockCache;
use crate::cidr::Net;
use crate::config::views::View;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::read::{PartitionSnapshot, ProvenanceSnapshot};
use crate::store::tier;

/// A value in the arena, and when it was last seen.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    start: u64,
    len: u32,
    pub last_seen: u32,
}

/// What a view selected of one type.
#[derive(Clone)]
pub enum Values {
    /// Addresses and networks (ipv4, ipv6), with when each was last seen.
    Nets(Nets),
    /// Everything else, as arena slices.
    Text { arena: Vec<u8>, items: Vec<Item> },
}

#[derive(Clone)]
pub struct Selected {
    pub values: Values,
    /// The earliest time one of the values leaves the view by `max_age` (None: never).
    pub expires: Option<u64>,
    /// Damaged tier blocks skipped (their lines could not be read).
    pub unreadable_blocks: u64,
    /// Stored values that did not parse as what their type promises (never expected).
    pub unparsable: u64,
}

impl Selected {
    fn empty(ty: IocType) -> Selected {
        Selected {
            values: if is_ip(ty) {
                Values::Nets(Nets::default())
            } else {
                Values::Text {
                    arena: Vec::new(),
                    items: Vec::new(),
                }
            },
            expires: None,
            unreadable_blocks: 0,
            unparsable: 0,
        }
    }

    /// Append what `other` selected after this one's values.
    fn absorb(&mut self, other: Selected) {
        match (&mut self.values, other.values) {
            (Values::Nets(nets), Values::Nets(more)) => nets.append(more),
            (Values::Text { arena, items }, Values::Text { arena: a, items: i }) => {
                let shift = arena.len() as u64;
                arena.extend_from_slice(&a);
                items.extend(i.into_iter().map(|it| Item {
                    start: it.start + shift,
                    ..it
                }));
            }
            // Both come from `Selected::empty` of one type.
            _ => {}
        }
        self.expires = match (self.expires, other.expires) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.unreadable_blocks += other.unreadable_blocks;
        self.unparsable += other.unparsable;
    }

    pub fn len(&self) -> usize {
        match &self.values {
            Values::Nets(n) => n.len(),
            Values::Text { items, .. } => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn text_of<'a>(arena: &'a [u8], item: &Item) -> &'a [u8] {
    let start = item.start as usize;
    arena
        .get(start..start + item.len as usize)
        .unwrap_or_default()
}

/// The types whose values are addresses or networks (ordered numerically).
pub fn is_ip(ty: IocType) -> bool {
    matches!(ty, IocType::Ipv4 | IocType::Ipv6)
}

/// Which indicators a view that selects by source keeps.
pub struct SourceFilter {
    pub provenance: ProvenanceSnapshot,
    /// At least one of these (0: any).
    pub any_of: u64,
    pub min_sources: u32,
}

impl SourceFilter {
    pub fn of(view: &View, provenance: ProvenanceSnapshot) -> SourceFilter {
        SourceFilter {
            any_of: provenance.mask(&view.sources),
            provenance,
            min_sources: view.min_sources,
        }
    }

    fn keeps(&self, ty: IocType, value: &[u8], listed: bool) -> bool {
        let set = self.provenance.sources_of(ty, value);
        // A `sources` list that names no declared source selects nothing.
        (!listed || set & self.any_of != 0) && set.count_ones() >= self.min_sources
    }
}

/// Below this, a buffer's lines are taken on the calling thread.
const PARALLEL_MIN: usize = 1 << 20;

/// Select from `parts` (snapshots of one type's partitions taken at one instant) what
/// `view` includes at time `now` (and, for a view by source, what `sources` keeps).
pub fn select(
    view: &View,
    ty: IocType,
    parts: &[PartitionSnapshot],
    now: u64,
    (cache, sources): (&BlockCache, Option<&SourceFilter>),
) -> Result<Selected> {
    let listed = !view.sources.is_empty();
    let mut out = Selected::empty(ty);
    let max_age = view.max_age.map(|d| d.as_secs());
    // A value is in the view while now - last_seen < max_age.
    let keep = |last_seen: u32| max_age.is_none_or(|m| now.saturating_sub(last_seen.into()) < m);
    let take = |out: &mut Selected, buf: &[u8], times: &[(u32, u32)]| {
        for (line, t) in tier::lines(buf).zip(times) {
            if line.is_empty() || !keep(t.1) {
                continue;
            }
            if sources.is_some_and(|f| !f.keeps(ty, line, listed)) {
                continue;
            }
            if let Some(m) = max_age {
                let leaves = u64::from(t.1) + m;
                out.expires = Some(out.expires.map_or(leaves, |e| e.min(leaves)));
            }
            match &mut out.values {
                Values::Nets(nets) => match Net::from_line(line) {
                    Some(net) => nets.push(net, t.1),
                    None => out.unparsable += 1,
                },
                Values::Text { arena, items } => {
                    items.push(Item {
                        start: arena.len() as u64,
                        len: line.len() as u32,
                        last_seen: t.1,
                    });
                    arena.extend_from_slice(line);
                }
            }
        }
    };
    // A large buffer (a live version) is parsed in pieces on every core: one thread took
    // a third of a rebuild of 1M addresses parsing them.
    let take_all = |out: &mut Selected, buf: &[u8], times: &[(u32, u32)]| {
        let cores = crate::cores();
        if buf.len() < PARALLEL_MIN || cores < 2 {
            return take(out, buf, times);
        }
        let mut pieces = Vec::with_capacity(cores);
        let mut rest = times;
        for piece in crate::ingest::split_at_lines(buf, cores) {
            let (mine, after) =
                rest.split_at(memchr::memchr_iter(b'\n', piece).count().min(rest.len()));
            pieces.push((piece, mine));
            rest = after;
        }
        if let Some(last) = pieces.last_mut() {
            last.1 = &times[times.len() - rest.len() - last.1.len()..];
        }
        let parts = crate::sync::fan_out(
            &pieces,
            |&(piece, mine)| take(out, piece, mine),
            |&(piece, mine)| {
                let mut part = Selected::empty(ty);
                take(&mut part, piece, mine);
                part
            },
        );
        for part in parts {
            out.absorb(part);
        }
    };
    for part in parts {
        match part {
            PartitionSnapshot::Live {
                version,
                len,
                times,
            } => {
                let content = version.read_at(0, *len as usize)?;
                if let Values::Nets(nets) = &mut out.values {
                    nets.reserve(times.len(), ty == IocType::Ipv6);
                }
                take_all(&mut out, &content, times);
            }
            PartitionSnapshot::Tier(v) => {
                for block in v.blocks() {
                    if block.bad {
                        out.unreadable_blocks += 1;
                        continue;
                    }
                    if !keep(block.max_last) {
                        continue; // every line of it is too old
                    }
                    match block.contents(cache) {
                        Ok((raw, times)) => take(&mut out, &raw, &times),
                        Err(e) => {
                            log::warn!("view build: {}/{} block {}: {e}", v.tier, v.ty, block.id);
                            out.unreadable_blocks += 1;
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}
