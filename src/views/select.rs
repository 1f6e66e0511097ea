//! Selecting a view's indicators of one type: which buckets, how recently seen. The bytes
//! stay in the partitions' own buffers (a live version's content, inflated tier blocks);
//! items point into them.

use std::sync::Arc;

use crate::cache::BlockCache;
use crate::config::views::View;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::read::PartitionSnapshot;
use crate::store::tier;

/// One selected indicator: where its bytes are and when it was last seen.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    buf: u32,
    start: u32,
    len: u32,
    pub last_seen: u32,
}

/// The indicators a view selected, with the buffers holding their bytes.
#[derive(Default)]
pub struct Selected {
    buffers: Vec<Arc<Vec<u8>>>,
    pub items: Vec<Item>,
    /// The earliest time one of the items leaves the view by `max_age` (None: never).
    pub expires: Option<u64>,
    /// Damaged tier blocks skipped (their lines could not be read).
    pub unreadable_blocks: u64,
}

impl Selected {
    pub fn value(&self, item: &Item) -> &[u8] {
        let start = item.start as usize;
        self.buffers
            .get(item.buf as usize)
            .and_then(|b| b.get(start..start + item.len as usize))
            .unwrap_or_default()
    }

    fn add_buffer(&mut self, buf: Arc<Vec<u8>>) -> u32 {
        self.buffers.push(buf);
        (self.buffers.len() - 1) as u32
    }
}

/// Select from `parts` (snapshots of one type's partitions taken at one instant) what
/// `view` includes at time `now`.
pub fn select(
    view: &View,
    parts: &[PartitionSnapshot],
    now: u64,
    cache: &BlockCache,
) -> Result<Selected> {
    let mut out = Selected::default();
    let max_age = view.max_age.map(|d| d.as_secs());
    // An indicator is in the view while now - last_seen < max_age.
    let keep = |last_seen: u32| max_age.is_none_or(|m| now.saturating_sub(last_seen.into()) < m);
    let add = |out: &mut Selected, buf: Arc<Vec<u8>>, times: &[(u32, u32)]| {
        let id = out.add_buffer(buf.clone());
        let mut at = 0usize;
        for (line, t) in tier::lines(&buf).zip(times) {
            let start = at;
            at += line.len() + 1;
            if line.is_empty() || !keep(t.1) {
                continue;
            }
            if let Some(m) = max_age {
                let leaves = u64::from(t.1) + m;
                out.expires = Some(out.expires.map_or(leaves, |e| e.min(leaves)));
            }
            out.items.push(Item {
                buf: id,
                start: start as u32,
                len: line.len() as u32,
                last_seen: t.1,
            });
        }
    };
    for part in parts {
        match part {
            PartitionSnapshot::Live {
                version,
                len,
                times,
            } => {
                let content = Arc::new(version.read_at(0, *len as usize)?);
                add(&mut out, content, times);
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
                        Ok((raw, times)) => add(&mut out, raw, &times),
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

/// The types a value of which is an IP address or network (rendered numerically).
pub fn is_ip(ty: IocType) -> bool {
    matches!(ty, IocType::Ipv4 | IocType::Ipv6)
}
