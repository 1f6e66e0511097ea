//! Turning bytes written to a live file into normalized lines (DESIGN §3).
//!
//! A write is cut into lines; the last, unterminated piece is carried in the handle until
//! the next write or the close. Each complete line is normalized; blank and comment lines are
//! dropped. Rejections carry the line number (counted per handle, from 1) and an escaped
//! excerpt, and are logged with a rate limit so a hostile feed can't flood the journal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ioc::{self, Invalid, IocType, Limits, Line, MAX_LINE_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub line_no: u64,
    pub why: Invalid,
    pub excerpt: String,
}

/// The result of one write's worth of input.
#[derive(Debug, Default)]
pub struct Ingested {
    /// Normalized values, "v\n" each.
    pub values: Vec<u8>,
    pub value_count: u64,
    /// Complete lines consumed (valid, skipped or rejected).
    pub lines: u64,
    /// Unterminated rest, to prepend to the next write.
    pub partial: Vec<u8>,
    pub rejected: Vec<Rejection>,
}

/// Split `partial + data` into lines and normalize the complete ones. `first_line_no` is
/// the number of the first line this produces.
pub fn ingest(
    ty: IocType,
    partial: &[u8],
    data: &[u8],
    first_line_no: u64,
    limits: &Limits,
) -> Ingested {
    let mut out = Ingested {
        values: Vec::with_capacity(data.len() + partial.len()),
        ..Default::default()
    };
    let mut rest = data;
    if !partial.is_empty() {
        match memchr::memchr(b'\n', rest) {
            Some(nl) => {
                let mut line = Vec::with_capacity(partial.len() + nl);
                line.extend_from_slice(partial);
                line.extend_from_slice(&rest[..nl]);
                one_line(ty, &line, first_line_no, limits, &mut out);
                rest = &rest[nl + 1..];
            }
            None => {
                out.partial = [partial, rest].concat();
                rest = &[];
            }
        }
    }
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        one_line(ty, &rest[..nl], first_line_no + out.lines, limits, &mut out);
        rest = &rest[nl + 1..];
    }
    if !rest.is_empty() {
        out.partial = rest.to_vec();
    }
    // A line that can't end in time is rejected now, not after megabytes more of it.
    if out.partial.len() > MAX_LINE_LEN + 1 {
        let why = ioc::normalize(ty, &out.partial, limits).err();
        if let Some(why) = why {
            out.rejected.push(Rejection {
                line_no: first_line_no + out.lines,
                excerpt: ioc::escape_excerpt(&out.partial, 80),
                why,
            });
        }
    }
    out
}

/// The trailing unterminated line at close counts as a line.
pub fn finish(ty: IocType, partial: &[u8], line_no: u64, limits: &Limits) -> Ingested {
    let mut out = Ingested::default();
    if !partial.is_empty() {
        one_line(ty, partial, line_no, limits, &mut out);
    }
    out
}

fn one_line(ty: IocType, raw: &[u8], line_no: u64, limits: &Limits, out: &mut Ingested) {
    out.lines += 1;
    match ioc::normalize_into(ty, raw, limits, &mut out.values) {
        Ok(Line::Value) => {
            out.values.push(b'\n');
            out.value_count += 1;
        }
        Ok(Line::Skip) => {}
        Err(why) => out.rejected.push(Rejection {
            line_no,
            why,
            excerpt: ioc::escape_excerpt(raw, 80),
        }),
    }
}

/// At most this many rejection lines are logged per minute; the rest are counted and summed
/// up when the minute ends.
const LOG_BUDGET_PER_MINUTE: u64 = 100;

static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
static WINDOW: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

/// Log one rejection ("live/ipv4.txt line 3: not an IPv4 address: 'foo'"), rate-limited.
pub fn log_rejection(file: &str, r: &Rejection, action: &str) {
    let mut window = WINDOW.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let (start, logged) = window.get_or_insert((now, 0));
    if now.duration_since(*start) > Duration::from_secs(60) {
        let dropped = SUPPRESSED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            log::warn!("{dropped} more rejected lines were not logged in the last minute");
        }
        *start = now;
        *logged = 0;
    }
    if *logged < LOG_BUDGET_PER_MINUTE {
        *logged += 1;
        log::warn!(
            "{action} {file} line {}: {}: \"{}\"",
            r.line_no,
            r.why,
            r.excerpt
        );
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        min_prefix_v4: 8,
        min_prefix_v6: 16,
    };

    #[test]
    fn lines_are_cut_normalized_and_the_rest_is_carried() {
        let a = ingest(
            IocType::Ipv4,
            b"",
            b"1.2.3.4\r\n# comment\n\n10.0.0.1/8\n5.6",
            1,
            &L,
        );
        assert_eq!(a.values, b"1.2.3.4\n10.0.0.0/8\n");
        assert_eq!((a.lines, a.value_count), (4, 2));
        assert_eq!(a.partial, b"5.6");
        let b = ingest(IocType::Ipv4, &a.partial, b".7.8\n9.9", 5, &L);
        assert_eq!(b.values, b"5.6.7.8\n");
        assert_eq!(b.partial, b"9.9");
        let c = ingest(IocType::Ipv4, &b.partial, b".9", 6, &L);
        assert_eq!((c.values.len(), c.partial.as_slice()), (0, &b"9.9.9"[..]));
        // The unterminated rest counts as a line at close, and "9.9.9" is not an address.
        let d = finish(IocType::Ipv4, &c.partial, 6, &L);
        assert_eq!(d.rejected.len(), 1);
        assert_eq!((d.values.as_slice(), d.lines), (&b""[..], 1));
        let e = finish(IocType::Ipv4, b"9.9.9.9", 6, &L);
        assert_eq!(e.values, b"9.9.9.9\n");
    }

    #[test]
    fn rejections_carry_line_numbers() {
        let a = ingest(
            IocType::Ipv4,
            b"",
            b"1.2.3.4\nevil.com\n0.0.0.0/0\n",
            10,
            &L,
        );
        assert_eq!(
            a.rejected.iter().map(|r| r.line_no).collect::<Vec<_>>(),
            vec![11, 12]
        );
        assert_eq!(a.rejected[0].excerpt, "evil.com");
        assert_eq!(a.values, b"1.2.3.4\n");
    }

    #[test]
    fn an_endless_line_is_rejected_early() {
        let big = vec![b'a'; MAX_LINE_LEN + 10];
        let a = ingest(IocType::Domain, b"", &big, 1, &L);
        assert_eq!(a.rejected.len(), 1);
    }
}
