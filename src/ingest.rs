//! Turning bytes written to a live file into normalized lines (README "What a write means").
//!
//! A write is cut into lines; the last, unterminated piece is carried in the handle until
//! the next write or the close. Each complete line is normalized; blank and comment lines are
//! dropped. Rejections carry the line number (counted per handle, from 1) and an escaped
//! excerpt, and are logged with a rate limit so a hostile feed can't flood the journal.

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
    /// The unterminated rest grew past the longest line: it was rejected and dropped, and
    /// the caller skips input up to the next newline ([`skip_line_end`]).
    pub overflowed: bool,
}

/// While an overlong line is being skipped: how much of `data` belongs to it (up to and
/// including its newline), and whether that newline was found.
pub fn skip_line_end(data: &[u8]) -> (usize, bool) {
    match memchr::memchr(b'\n', data) {
        Some(nl) => (nl + 1, true),
        None => (data.len(), false),
    }
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
    let complete = memchr::memrchr(b'\n', rest).map_or(0, |nl| nl + 1);
    whole_lines(ty, &rest[..complete], first_line_no, limits, &mut out);
    rest = &rest[complete..];
    if !rest.is_empty() {
        out.partial = rest.to_vec();
    }
    // A line that can't end in time is rejected now, not after megabytes more of it, and
    // dropped: what is left of it is skipped, so a handle never holds more than a line.
    if out.partial.len() > MAX_LINE_LEN + 1 {
        let why = ioc::normalize(ty, &out.partial, limits).err();
        if let Some(why) = why {
            out.rejected.push(Rejection {
                line_no: first_line_no + out.lines,
                excerpt: ioc::escape_excerpt(&out.partial, 80),
                why,
            });
            out.partial = Vec::new();
            out.overflowed = true;
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

/// Below this, a write is normalized on the calling thread; above, in pieces on every core:
/// a bulk `cat feed >> live/x.txt` arrives in 1 MiB writes that the kernel serializes, so
/// this is the only parallelism such a feed gets.
const PARALLEL_MIN: usize = 256 << 10;

/// Normalize `text` (complete lines, each ending in '\n') into `out`; line numbers continue
/// from `first_line_no + out.lines`.
fn whole_lines(ty: IocType, text: &[u8], first_line_no: u64, limits: &Limits, out: &mut Ingested) {
    if text.len() < PARALLEL_MIN || crate::cores() < 2 {
        sequential_lines(ty, text, first_line_no, limits, out);
    } else {
        parallel_lines(ty, text, first_line_no, limits, out, crate::cores());
    }
}

fn parallel_lines(
    ty: IocType,
    text: &[u8],
    first_line_no: u64,
    limits: &Limits,
    out: &mut Ingested,
    threads: usize,
) {
    let pieces = split_at_lines(text, threads);
    let parts = crate::sync::fan_out(
        &pieces,
        |first| sequential_lines(ty, first, first_line_no, limits, out),
        |piece| {
            let mut part = Ingested {
                values: Vec::with_capacity(piece.len()),
                ..Default::default()
            };
            // Numbered from 0 here; shifted once the lines before are counted.
            sequential_lines(ty, piece, 0, limits, &mut part);
            part
        },
    );
    for part in parts {
        let shift = first_line_no + out.lines;
        out.values.extend_from_slice(&part.values);
        out.value_count += part.value_count;
        out.lines += part.lines;
        out.rejected
            .extend(part.rejected.into_iter().map(|r| Rejection {
                line_no: r.line_no + shift,
                ..r
            }));
    }
}

/// `text` cut into about `n` pieces of whole lines.
pub(crate) fn split_at_lines(text: &[u8], n: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::with_capacity(n);
    let mut rest = text;
    for k in (1..n).rev() {
        let want = rest.len() / (k + 1);
        let Some(nl) = memchr::memchr(b'\n', &rest[want..]) else {
            break;
        };
        let (piece, tail) = rest.split_at(want + nl + 1);
        pieces.push(piece);
        rest = tail;
    }
    pieces.push(rest);
    pieces
}

fn sequential_lines(
    ty: IocType,
    mut text: &[u8],
    first_line_no: u64,
    limits: &Limits,
    out: &mut Ingested,
) {
    while let Some(nl) = memchr::memchr(b'\n', text) {
        one_line(ty, &text[..nl], first_line_no + out.lines, limits, out);
        text = &text[nl + 1..];
    }
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

/// Read one line of a file (without its `\n`) into `line`, keeping at most `max` bytes of it:
/// the rest of a longer line is read and dropped, so a file without newlines (or a gzip bomb)
/// costs no more memory than that. Returns the line's full length, None at end of input.
pub fn read_line_bounded(
    r: &mut impl std::io::BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<usize>> {
    line.clear();
    let mut total = None;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (chunk, consumed, ended) = match memchr::memchr(b'\n', buf) {
            Some(nl) => (&buf[..nl], nl + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        total = Some(total.unwrap_or(0) + chunk.len());
        r.consume(consumed);
        if ended {
            return Ok(total);
        }
    }
}

/// Log one rejection ("live/ipv4.txt line 3: not an IPv4 address: 'foo'"), within the
/// budget of log lines requests may cause (see `lograte`).
pub fn log_rejection(file: &str, r: &Rejection, action: &str) {
    crate::lograte::warn(|| {
        format!(
            "{action} {file} line {}: {}: \"{}\"",
            r.line_no, r.why, r.excerpt
        )
    });
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
    fn a_large_write_normalized_in_pieces_equals_one_pass() {
        // Mixed valid, skipped and invalid lines, well past the parallel threshold.
        let mut data = Vec::new();
        let mut k = 0u32;
        while data.len() < 3 * PARALLEL_MIN {
            let line = match k % 7 {
                0 => format!("Host{k}.Example.COM."),
                1 => "# comment".to_string(),
                2 => format!("bad_{k}!"),
                3 => String::new(),
                _ => format!("h{k}.example.org"),
            };
            data.extend_from_slice(line.as_bytes());
            data.extend_from_slice(if k % 3 == 0 { b"\r\n" } else { b"\n" });
            k += 1;
        }
        data.extend_from_slice(b"tail.exa");
        let got = ingest(IocType::Domain, b"head.", &data, 7, &L);
        assert_eq!(got.partial, b"tail.exa");
        let mut text = b"head.".to_vec();
        text.extend_from_slice(&data);
        let text = &text[..memchr::memrchr(b'\n', &text).unwrap() + 1];
        let mut want = Ingested::default();
        sequential_lines(IocType::Domain, text, 7, &L, &mut want);
        assert!(want.rejected.len() > 100);
        // Whatever the machine's core count, and through `ingest` itself.
        for threads in [2, 3, 5] {
            let mut pieces = Ingested::default();
            parallel_lines(IocType::Domain, text, 7, &L, &mut pieces, threads);
            for part in [&pieces, &got] {
                assert_eq!(part.rejected, want.rejected);
                assert_eq!(part.values, want.values);
                assert_eq!(
                    (part.lines, part.value_count),
                    (want.lines, want.value_count)
                );
            }
        }
        assert_eq!(split_at_lines(b"a\nb\nc\n", 8).concat(), b"a\nb\nc\n");
    }

    #[test]
    fn bounded_lines_keep_a_prefix_and_skip_the_rest() {
        let text = format!("ab\n{}\ncd", "x".repeat(100));
        let mut r = std::io::BufReader::with_capacity(7, text.as_bytes());
        let mut line = Vec::new();
        let mut got = Vec::new();
        while let Some(n) = read_line_bounded(&mut r, &mut line, 10).unwrap() {
            got.push((n, line.clone()));
        }
        assert_eq!(
            got,
            vec![
                (2, b"ab".to_vec()),
                (100, b"xxxxxxxxxx".to_vec()),
                (2, b"cd".to_vec())
            ]
        );
    }

    #[test]
    fn an_endless_line_is_rejected_early_and_dropped() {
        let big = vec![b'a'; MAX_LINE_LEN + 10];
        let a = ingest(IocType::Domain, b"", &big, 1, &L);
        assert_eq!(a.rejected.len(), 1);
        assert!(a.overflowed && a.partial.is_empty());
        assert_eq!(skip_line_end(b"aaa"), (3, false));
        assert_eq!(skip_line_end(b"aa\nb.example\n"), (3, true));
    }
}
