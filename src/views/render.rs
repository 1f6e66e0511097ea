//! Turning a view's selected indicators of one type into the file's bytes: the entry cap
//! (newest first), the format, aggregation of networks, and the canonical order —
//! addresses numerically, everything else bytewise — so the bytes depend only on the
//! selected set, never on insertion order or on re-sightings.

use std::cmp::Reverse;

use serde::Serialize;

use super::format::{self, Formatted};
use super::select::{is_ip, Item, Selected};
use crate::cidr::{self, Net};
use crate::config::views::View;
use crate::ioc::IocType;

/// What one build of one view file did, for stats.json and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct FileStats {
    /// Lines served (networks after aggregation).
    pub entries: u64,
    /// Indicators the buckets and max_age selected.
    pub selected: u64,
    /// Left out by max_entries (the oldest ones).
    pub capped: u64,
    /// Dropped by the format (too long, wildcard tokens).
    pub format_dropped: u64,
    /// Rewritten by the format (scheme or default port removed).
    pub format_rewritten: u64,
}

pub struct Rendered {
    pub bytes: Vec<u8>,
    pub stats: FileStats,
}

pub fn render(view: &View, ty: IocType, mut selected: Selected) -> Rendered {
    let mut stats = FileStats {
        selected: selected.items.len() as u64,
        ..FileStats::default()
    };
    let mut items = std::mem::take(&mut selected.items);
    if let Some(max) = view.max_entries.map(|m| m as usize) {
        if items.len() > max {
            // Newest first, ties by value, so the cut is the same whatever the input order.
            let newest = |a: &Item, b: &Item| {
                Reverse(a.last_seen)
                    .cmp(&Reverse(b.last_seen))
                    .then_with(|| selected.value(a).cmp(selected.value(b)))
            };
            items.select_nth_unstable_by(max, newest);
            stats.capped = (items.len() - max) as u64;
            items.truncate(max);
        }
    }
    let mut bytes = Vec::new();
    if is_ip(ty) {
        let mut nets: Vec<Net> = items
            .iter()
            .filter_map(|i| {
                let v = selected.value(i);
                let net = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                if net.is_none() {
                    log::warn!(
                        "view: {ty} value {:?} does not parse as a network; left out",
                        crate::ioc::escape_excerpt(v, 80)
                    );
                }
                net
            })
            .collect();
        if view.aggregate {
            nets = cidr::aggregate(nets);
        } else {
            nets.sort_unstable_by_key(|n| (n.is_v6(), n.addr(), n.prefix_len()));
            nets.dedup();
        }
        for n in &nets {
            bytes.extend_from_slice(n.to_string().as_bytes());
            bytes.push(b'\n');
        }
        stats.entries = nets.len() as u64;
    } else {
        let mut lines: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(items.len());
        for i in &items {
            match format::apply(view.format, ty, selected.value(i)) {
                Formatted::Same(v) => lines.push(v.into()),
                Formatted::Rewritten(v) => {
                    stats.format_rewritten += 1;
                    lines.push(v.into());
                }
                Formatted::Dropped(_) => stats.format_dropped += 1,
            }
        }
        lines.sort_unstable();
        // A rewrite can make two values one (http:// and https:// of the same page).
        lines.dedup();
        for l in &lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        stats.entries = lines.len() as u64;
    }
    if stats.entries == 0 && !view.placeholder.is_empty() {
        bytes.extend_from_slice(view.placeholder.as_bytes());
        bytes.push(b'\n');
    }
    Rendered { bytes, stats }
}
