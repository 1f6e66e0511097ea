//! Writing a view's selected indicators of one type as the file's bytes: the format, the
//! entry cap over what it serves (newest first), aggregation of networks, and the canonical
//! order —
//! addresses numerically, everything else bytewise — so the bytes depend only on the
//! selected set, never on insertion order or on re-sightings.

use std::cmp::Reverse;
use std::io::{self, Write};
use std::sync::Arc;

use serde::Serialize;

use super::format::{self, Formatted};
use super::nets::Seen4;
use super::select::{text_of, Selected, Values};
use super::suppress::Suppressed;
use crate::cidr::{self, IntervalSet, Net};
use crate::config::views::View;
use crate::ioc::IocType;

/// What one build of one view file did, for stats.json and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// What the allowlist and the reserved ranges took out (before `max_entries`).
    #[serde(flatten)]
    pub suppression: Suppressed,
    /// For the shrink guard of an address view with `max_shrink`: the union of all the
    /// networks the build selected before `max_entries` cut it (None when it cut nothing).
    /// A capped list turning over leaves older entries selected, merely not served; a
    /// broken feed takes them out.
    #[serde(skip)]
    pub uncapped: Option<Arc<IntervalSet>>,
}

/// One file to render: its view's name, what it was built from (its definition among
/// them), its selection and the staged file it is written to.
pub type Job<I, W> = (String, I, Selected, W);

/// [`render`] each job on a thread of its own (the caller bounds how many), returning each
/// job's name, inputs, staged file, result and rendering time, in the jobs' order.
pub fn render_side_by_side<I, W>(
    ty: IocType,
    jobs: Vec<Job<I, W>>,
) -> Vec<(String, I, W, io::Result<FileStats>, std::time::Duration)>
where
    I: AsRef<View> + Send,
    W: Write + Send,
{
    let one = |(name, inputs, selected, mut out): Job<I, W>| {
        let started = std::time::Instant::now();
        let stats = render(inputs.as_ref(), ty, selected, &mut out);
        (name, inputs, out, stats, started.elapsed())
    };
    if jobs.len() < 2 {
        return jobs.into_iter().map(one).collect();
    }
    std::thread::scope(|s| {
        let running: Vec<_> = jobs
            .into_iter()
            .map(|job| s.spawn(move || one(job)))
            .collect();
        running
            .into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Write the file for `selected` to `out`.
pub fn render(
    view: &View,
    ty: IocType,
    selected: Selected,
    out: &mut impl Write,
) -> io::Result<FileStats> {
    // Lines are written in pieces (an address, a '/', a length, a newline): gathered here
    // first, the file and its running hash see large writes instead of a call per piece,
    // which cost more than the sorting (a third of a 1M-address build).
    let mut out = io::BufWriter::with_capacity(256 << 10, out);
    let mut stats = FileStats::default();
    let cap = view.max_entries.map(|m| m as usize);
    match selected.values {
        Values::Nets(mut nets) => {
            if let Some(max) = cap {
                if view.max_shrink.is_some() && nets.len() > max {
                    let all = IntervalSet::build(nets.iter().map(|(n, _)| n));
                    stats.uncapped = Some(Arc::new(all));
                }
                stats.capped = nets.keep_newest(max) as u64;
            }
            stats.entries = if view.aggregate {
                let aggregated = cidr::aggregate(nets.iter().map(|(n, _)| n));
                drop(nets);
                write_nets(&mut out, aggregated)?
            } else {
                let mut v4: Vec<u64> = nets.v4.iter().map(Seen4::key).collect();
                let mut v6: Vec<Net> = nets.v6.iter().map(|&(n, _)| n).collect();
                drop(nets);
                cidr::sort_dedup_v4(&mut v4);
                v6.sort_unstable();
                v6.dedup();
                write_nets(&mut out, v4.into_iter().map(Net::from_v4_key))?
                    + write_nets(&mut out, v6)?
            };
        }
        Values::Text { arena, items } => {
            // The format first: the cap counts what is served, so entries the format drops
            // or merges leave room for older ones.
            let mut lines: Vec<(u32, std::borrow::Cow<'_, [u8]>)> = Vec::with_capacity(items.len());
            for i in &items {
                match format::apply(view.format, ty, text_of(&arena, i)) {
                    Formatted::Same(v) => lines.push((i.last_seen, v.into())),
                    Formatted::Rewritten(v) => {
                        stats.format_rewritten += 1;
                        lines.push((i.last_seen, v.into()));
                    }
                    Formatted::Dropped(_) => stats.format_dropped += 1,
                }
            }
            drop(items);
            let by_line = |a: &(u32, std::borrow::Cow<'_, [u8]>),
                           b: &(u32, std::borrow::Cow<'_, [u8]>)| {
                a.1.cmp(&b.1).then_with(|| Reverse(a.0).cmp(&Reverse(b.0)))
            };
            lines.sort_unstable_by(by_line);
            // A rewrite can make two values one (http:// and https:// of the same page): the
            // newest sighting stands for both.
            lines.dedup_by(|later, first| later.1 == first.1);
            if let Some(max) = cap.filter(|&m| lines.len() > m) {
                lines.select_nth_unstable_by(max, |a, b| {
                    Reverse(a.0).cmp(&Reverse(b.0)).then_with(|| a.1.cmp(&b.1))
                });
                stats.capped = (lines.len() - max) as u64;
                lines.truncate(max);
                lines.sort_unstable_by(by_line);
            }
            for (_, l) in &lines {
                out.write_all(l)?;
                out.write_all(b"\n")?;
            }
            stats.entries = lines.len() as u64;
        }
    }
    if stats.entries == 0 && !view.placeholder.is_empty() {
        writeln!(out, "{}", view.placeholder)?;
    }
    out.flush()?;
    Ok(stats)
}

/// Write `nets` one per line; returns how many.
fn write_nets(out: &mut impl Write, nets: impl IntoIterator<Item = Net>) -> io::Result<u64> {
    let mut line = Vec::with_capacity(64);
    let mut count = 0;
    for n in nets {
        line.clear();
        n.push_text(&mut line);
        line.push(b'\n');
        out.write_all(&line)?;
        count += 1;
    }
    Ok(count)
}
