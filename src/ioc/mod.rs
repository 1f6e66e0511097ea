//! Indicator types: parse, validate, normalize and classify one input line.
//!
//! Every indicator file holds one normalized value per line. This module is the
//! single place that decides what a line means, so ingest, lookup and removal
//! agree on when two spellings are the same indicator. Nothing here panics,
//! whatever bytes it is given.
//!
//! # Line rules
//!
//! Applied in this order to one raw line (without its `\n`):
//!
//! 1. One trailing `\r` is removed, so CRLF files work.
//! 2. Rejected: longer than [`MAX_LINE_LEN`] bytes (counted after step 1),
//!    a NUL byte anywhere, invalid UTF-8.
//! 3. A leading byte-order mark (U+FEFF) is removed, then surrounding whitespace is
//!    trimmed (ASCII, including tabs, and Unicode).
//! 4. An empty line is skipped.
//! 5. A line starting with `#`, `;` or `//` is a comment and is skipped.
//! 6. A trailing comment begins at the first whitespace character that is
//!    directly followed by `#`, `;` or `//`; it is dropped and the value trimmed
//!    again (`1.2.3.0/24 ; SBL123` → `1.2.3.0/24`).
//! 7. Rejected: whitespace left inside the value, any control character
//!    (below 0x20, 0x7f, and the Unicode C1 controls), or an invisible
//!    formatting character ([`is_invisible_format`]: bidirectional controls,
//!    zero-width space, word joiner, soft hyphen, a byte-order mark).
//! 8. The type rules below. When a value fails for the requested type but
//!    [`classify`] accepts it as another one, the error names that type
//!    ("looks like a domain indicator, not ipv4"): it was appended to the
//!    wrong file.
//!
//! # Type rules
//!
//! - **ipv4**: dotted quad of decimal octets 0–255 without leading zeros
//!   (`010.1.1.1` is ambiguous octal and rejected), optional `/prefix` 0–32
//!   (decimal, no sign or leading zero). A prefix below
//!   [`Limits::min_prefix_v4`] is rejected. Host bits are zeroed
//!   (`1.2.3.4/24` → `1.2.3.0/24`) and `/32` is dropped (`1.2.3.4/32` →
//!   `1.2.3.4`).
//! - **ipv6**: anything `std` parses (full, compressed, upper case, embedded
//!   IPv4 such as `::ffff:1.2.3.4`), optional `/prefix` 0–128 checked against
//!   [`Limits::min_prefix_v6`]. Zone ids (`%eth0`) and brackets are rejected.
//!   Printed in RFC 5952 form (lower case, longest zero run as `::`), host bits
//!   zeroed, `/128` dropped.
//! - **domain**: ASCII only (internationalized names must be given in their
//!   punycode `xn--` form), lower-cased, one trailing dot removed. An optional
//!   leading `*.` wildcard is kept. Labels are 1–63 characters of
//!   `[a-z0-9_-]`, not starting or ending with `-`. At least two labels are
//!   required after the wildcard, so `*.com` is rejected (a wildcard over a
//!   whole TLD is not an indicator). At most 253 characters, not counting the
//!   `*.` prefix. The last label must not be all digits, so addresses are never
//!   domains.
//! - **url**: `scheme://authority` followed by an optional path, query and
//!   fragment. The scheme (`[A-Za-z][A-Za-z0-9+.-]*`) is lower-cased. The
//!   authority runs to the first `/`, `?` or `#`; an optional `userinfo@` (up to
//!   the last `@`) is kept verbatim. The host is lower-cased and is either a
//!   bracketed IPv6 literal (re-printed in RFC 5952 form) or a non-empty name of
//!   `[a-z0-9._-]`, which covers IPv4 addresses (percent-encoding is rejected).
//!   An optional `:port` must be 1–65535 and is printed without leading zeros.
//!   Everything after the authority is kept byte for byte; no trailing slash is
//!   added or removed.
//! - **email**: `local@domain` with exactly one `@`. The local part is 1–64
//!   bytes of printable ASCII except `@ " ( ) , : ; < > [ ] \`, with no leading,
//!   trailing or doubled dot, and keeps its case. The domain follows the domain
//!   rules without wildcard and is lower-cased. (An address whose local part
//!   starts with `#` or `//` reads as a comment line and cannot be stored.)
//! - **md5 / sha1 / sha256 / sha512**: exactly 32 / 40 / 64 / 128 hex digits,
//!   lower-cased.
//!
//! No value is accepted by two types, so [`classify`] is unambiguous, and every
//! normalized value `v` of type `t` satisfies `classify(v) == Some((t, v))`
//! and normalizes to itself.

mod hash;
mod names;
mod net;
pub(crate) use net::{normal_ipv4, parse_prefix, push_ipv4};
#[cfg(test)]
mod props;

use std::fmt;

use memchr::memchr;

use hash::hash;
use names::{domain, email, url};
use net::{ipv4, ipv6};

/// The nine indicator types, in this fixed order (their `code()` is the index 0..=8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IocType {
    Ipv4,
    Ipv6,
    Domain,
    Url,
    Email,
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl IocType {
    /// All types in code order.
    pub const ALL: [IocType; 9] = [
        IocType::Ipv4,
        IocType::Ipv6,
        IocType::Domain,
        IocType::Url,
        IocType::Email,
        IocType::Md5,
        IocType::Sha1,
        IocType::Sha256,
        IocType::Sha512,
    ];

    /// Stable numeric code (0..=8), used in on-disk formats.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`IocType::code`].
    pub fn from_code(code: u8) -> Option<IocType> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Lower-case name as used in config, messages and file names.
    pub fn name(self) -> &'static str {
        match self {
            IocType::Ipv4 => "ipv4",
            IocType::Ipv6 => "ipv6",
            IocType::Domain => "domain",
            IocType::Url => "url",
            IocType::Email => "email",
            IocType::Md5 => "md5",
            IocType::Sha1 => "sha1",
            IocType::Sha256 => "sha256",
            IocType::Sha512 => "sha512",
        }
    }

    /// Name of the file holding this type's indicators.
    pub fn file_name(self) -> &'static str {
        match self {
            IocType::Ipv4 => "ipv4.txt",
            IocType::Ipv6 => "ipv6.txt",
            IocType::Domain => "domain.txt",
            IocType::Url => "url.txt",
            IocType::Email => "email.txt",
            IocType::Md5 => "md5.txt",
            IocType::Sha1 => "sha1.txt",
            IocType::Sha256 => "sha256.txt",
            IocType::Sha512 => "sha512.txt",
        }
    }

    /// Exact match of [`IocType::file_name`].
    pub fn from_file_name(name: &str) -> Option<IocType> {
        Self::ALL.into_iter().find(|t| t.file_name() == name)
    }

    /// Exact match of [`IocType::name`].
    pub fn from_name(name: &str) -> Option<IocType> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Number of hex digits for hash types.
    fn hex_len(self) -> Option<usize> {
        match self {
            IocType::Md5 => Some(32),
            IocType::Sha1 => Some(40),
            IocType::Sha256 => Some(64),
            IocType::Sha512 => Some(128),
            _ => None,
        }
    }

    /// Indefinite article for messages, by how the name is read aloud.
    fn article(self) -> &'static str {
        match self {
            IocType::Ipv4 | IocType::Ipv6 | IocType::Email | IocType::Md5 => "an",
            _ => "a",
        }
    }
}

impl fmt::Display for IocType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Limits that come from the config (`[ingest]` `min_prefix_v4` / `min_prefix_v6`).
///
/// A network broader than the minimum prefix would match huge parts of the
/// address space, which is almost always a feed error. Values above 32 / 128
/// act as 32 / 128 (only single addresses accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_prefix_v4: 8,
            min_prefix_v6: 16,
        }
    }
}

/// Maximum length of one input line in bytes, excluding the line terminator.
pub const MAX_LINE_LEN: usize = 4096;

/// Why a line was rejected. `Display` gives a short human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    kind: InvalidKind,
}

/// Machine-readable reason behind an [`Invalid`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidKind {
    /// Longer than [`MAX_LINE_LEN`] bytes.
    TooLong,
    /// Contains a NUL byte.
    Nul,
    /// Not valid UTF-8.
    Utf8,
    /// Contains a control character.
    Control,
    /// Contains an invisible formatting character ([`is_invisible_format`]).
    InvisibleFormat(char),
    /// Whitespace remains inside the value after comment removal.
    Whitespace,
    /// Invalid as `expected`, but valid as `found`.
    WrongType { expected: IocType, found: IocType },
    /// Network prefix shorter than the configured minimum.
    TooBroad { min_prefix: u8 },
    /// Non-ASCII domain name (must be given in punycode).
    NonAsciiDomain,
    /// Hex string of the wrong length for the hash type.
    HashLength { ty: IocType, got: usize },
    /// Hash containing a non-hex character.
    NotHex { ty: IocType },
    /// Any other type-specific syntax error, with a human message.
    Malformed(&'static str),
}

impl Invalid {
    /// The reason, for callers that count or branch on it.
    pub fn kind(&self) -> &InvalidKind {
        &self.kind
    }
}

/// Names of the reasons a line is rejected, as stats.json and the metrics count them.
pub const REASONS: [&str; 12] = [
    "too_long",
    "nul",
    "utf8",
    "control",
    "invisible_format",
    "whitespace",
    "wrong_type",
    "too_broad",
    "non_ascii_domain",
    "hash_length",
    "not_hex",
    "malformed",
];

impl InvalidKind {
    /// Position of this reason's name in [`REASONS`].
    pub fn reason(&self) -> usize {
        match self {
            InvalidKind::TooLong => 0,
            InvalidKind::Nul => 1,
            InvalidKind::Utf8 => 2,
            InvalidKind::Control => 3,
            InvalidKind::InvisibleFormat(_) => 4,
            InvalidKind::Whitespace => 5,
            InvalidKind::WrongType { .. } => 6,
            InvalidKind::TooBroad { .. } => 7,
            InvalidKind::NonAsciiDomain => 8,
            InvalidKind::HashLength { .. } => 9,
            InvalidKind::NotHex { .. } => 10,
            InvalidKind::Malformed(_) => 11,
        }
    }
}

impl From<InvalidKind> for Invalid {
    fn from(kind: InvalidKind) -> Self {
        Invalid { kind }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            InvalidKind::TooLong => write!(f, "line longer than {MAX_LINE_LEN} bytes"),
            InvalidKind::Nul => f.write_str("contains a NUL byte"),
            InvalidKind::Utf8 => f.write_str("invalid UTF-8"),
            InvalidKind::Control => f.write_str("contains a control character"),
            InvalidKind::InvisibleFormat(c) => write!(
                f,
                "contains an invisible formatting character (U+{:04X}): the value would not \
                 show what it matches",
                u32::from(*c)
            ),
            InvalidKind::Whitespace => f.write_str("contains whitespace inside the value"),
            InvalidKind::WrongType { expected, found } => write!(
                f,
                "looks like {} {found} indicator, not {expected}",
                found.article()
            ),
            InvalidKind::TooBroad { min_prefix } => {
                write!(f, "network broader than /{min_prefix}")
            }
            InvalidKind::NonAsciiDomain => {
                f.write_str("non-ASCII domain: use the punycode (xn--) form")
            }
            InvalidKind::HashLength { ty, got } => write!(
                f,
                "expected {} hex digits for {ty}, got {got}",
                ty.hex_len().unwrap_or(0)
            ),
            InvalidKind::NotHex { ty } => {
                write!(
                    f,
                    "not {} {ty} hash: contains a non-hex character",
                    ty.article()
                )
            }
            InvalidKind::Malformed(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Invalid {}

/// What one raw input line (without its '\n') amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// Blank or comment line: nothing to store.
    Skip,
    /// A normalized value was appended to the output buffer.
    Value,
}

/// Clean one raw input line for type `ty` and append its normalized form.
///
/// `raw` is the bytes between two `'\n'`, possibly ending in `'\r'`. On success
/// the normalized value (without newline) is appended to `out`; blank and
/// comment lines return `Line::Skip` and append nothing; on error `out` is left
/// exactly as it was. Only `out` is ever allocated into, so bulk ingest can
/// reuse one buffer.
pub fn normalize_into(
    ty: IocType,
    raw: &[u8],
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Result<Line, Invalid> {
    let Some(value) = clean(raw)? else {
        return Ok(Line::Skip);
    };
    let start = out.len();
    match parse_as(ty, value, limits, out) {
        Ok(()) => Ok(Line::Value),
        Err(err) => {
            out.truncate(start);
            // `out` doubles as scratch space so the error path does not allocate.
            let found = detect(value, limits, out);
            out.truncate(start);
            match found {
                Some(found) if found != ty => Err(InvalidKind::WrongType {
                    expected: ty,
                    found,
                }
                .into()),
                _ => Err(err),
            }
        }
    }
}

/// Convenience: `Ok(Some(normalized))`, `Ok(None)` for a skipped line, or the error.
pub fn normalize(ty: IocType, raw: &[u8], limits: &Limits) -> Result<Option<String>, Invalid> {
    let mut out = Vec::new();
    match normalize_into(ty, raw, limits, &mut out)? {
        Line::Skip => Ok(None),
        Line::Value => String::from_utf8(out)
            .map(Some)
            .map_err(|_| InvalidKind::Utf8.into()),
    }
}

/// Find the type of a bare value and normalize it.
///
/// Used by `.iocfs/lookup/VALUE` and `remove VALUE`, where the user does not
/// say the type. The line rules apply, so blank or comment input gives `None`,
/// as does a value no type accepts.
pub fn classify(raw: &[u8], limits: &Limits) -> Option<(IocType, String)> {
    let value = clean(raw).ok().flatten()?;
    let mut out = Vec::with_capacity(value.len() + 8);
    let ty = detect(value, limits, &mut out)?;
    String::from_utf8(out).ok().map(|s| (ty, s))
}

/// Printable excerpt of a rejected line for logs.
///
/// Printable ASCII is kept (backslash doubled), every other byte becomes
/// `\xNN`. The result is never longer than `max` characters: when the input
/// does not fit, it is cut between escapes and `...` is appended within the
/// budget (for `max < 3` only part of the `...` fits).
pub fn escape_excerpt(raw: &[u8], max: usize) -> String {
    const ELLIPSIS: &str = "...";
    let mut s = String::with_capacity(max.min(raw.len().saturating_mul(4)));
    // Longest prefix (at an escape boundary) that still leaves room for "...".
    let mut keep = 0;
    for &b in raw {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                s.push_str("\\x");
                for nibble in [b >> 4, b & 0xf] {
                    s.push(char::from_digit(u32::from(nibble), 16).unwrap_or('?'));
                }
            }
        }
        if s.len() > max {
            s.truncate(keep);
            s.push_str(ELLIPSIS.get(..max.min(ELLIPSIS.len())).unwrap_or(""));
            return s;
        }
        if s.len() + ELLIPSIS.len() <= max {
            keep = s.len();
        }
    }
    s
}

/// A file name for a terminal or a log: bytes other than printable ASCII escaped, so a name
/// holding a newline or an escape sequence can't forge or garble output.
pub fn escape_path(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    escape_excerpt(path.as_os_str().as_bytes(), 4096)
}

/// Line rules 1–7: `Ok(None)` for a line to skip, else the bare value.
fn clean(raw: &[u8]) -> Result<Option<&[u8]>, Invalid> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.len() > MAX_LINE_LEN {
        return Err(InvalidKind::TooLong.into());
    }
    // Fast path, nearly every line of a feed: printable ASCII without spaces holds no NUL,
    // byte-order mark, whitespace, control character or trailing comment, and is UTF-8.
    if raw.iter().all(|b| (0x21..0x7f).contains(b)) {
        return Ok((!raw.is_empty() && !is_comment_start(raw)).then_some(raw));
    }
    if memchr(0, raw).is_some() {
        return Err(InvalidKind::Nul.into());
    }
    let line = std::str::from_utf8(raw).map_err(|_| Invalid::from(InvalidKind::Utf8))?;
    // A byte-order mark starts lists saved by Windows tools (and, after `cat a b`, a line
    // in the middle); it is not whitespace to `trim`.
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let value = line.trim();
    if value.is_empty() || is_comment_start(value.as_bytes()) {
        return Ok(None);
    }
    let value = strip_trailing_comment(value).trim();
    for c in value.chars() {
        if c.is_whitespace() {
            return Err(InvalidKind::Whitespace.into());
        }
        if c.is_control() {
            return Err(InvalidKind::Control.into());
        }
        if is_invisible_format(c) {
            return Err(InvalidKind::InvisibleFormat(c).into());
        }
    }
    Ok(Some(value.as_bytes()))
}

/// Characters that change how text is displayed without being seen: bidirectional controls
/// (a U+202E in a URL path shows its tail reversed, "Trojan Source"), zero-width space, word
/// joiner, a byte-order mark inside a value, soft hyphen. No indicator needs one, and a
/// listed value that displays differently from what it matches misleads whoever reviews
/// the list. Zero-width (non-)joiners stay allowed: scripts such as Persian need them.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

fn is_comment_start(s: &[u8]) -> bool {
    s.starts_with(b"#") || s.starts_with(b";") || s.starts_with(b"//")
}

/// Cut at the first whitespace directly followed by a comment marker.
fn strip_trailing_comment(s: &str) -> &str {
    for (i, c) in s.char_indices() {
        let rest = s.get(i + c.len_utf8()..).unwrap_or("");
        if c.is_whitespace() && is_comment_start(rest.as_bytes()) {
            return s.get(..i).unwrap_or(s);
        }
    }
    s
}

/// Type rules. May leave partial output in `out` on error; callers truncate.
fn parse_as(ty: IocType, v: &[u8], limits: &Limits, out: &mut Vec<u8>) -> Result<(), Invalid> {
    // `clean` hands out UTF-8 only; the parsers that work on `str` check it again.
    let text = || std::str::from_utf8(v).map_err(|_| Invalid::from(InvalidKind::Utf8));
    match ty {
        IocType::Ipv4 if net::is_normal_ipv4(v) => {
            out.extend_from_slice(v);
            Ok(())
        }
        IocType::Ipv4 => ipv4(text()?, limits.min_prefix_v4, out),
        IocType::Ipv6 => ipv6(text()?, limits.min_prefix_v6, out),
        IocType::Domain => domain(v, true, out),
        IocType::Url => url(v, out),
        IocType::Email => email(v, out),
        IocType::Md5 | IocType::Sha1 | IocType::Sha256 | IocType::Sha512 => hash(ty, text()?, out),
    }
}

/// Order in which [`classify`] tries the types. The types are mutually
/// exclusive, so the order only matters for speed: cheap, strict checks first.
const CLASSIFY_ORDER: [IocType; 9] = [
    IocType::Ipv4,
    IocType::Ipv6,
    IocType::Md5,
    IocType::Sha1,
    IocType::Sha256,
    IocType::Sha512,
    IocType::Url,
    IocType::Email,
    IocType::Domain,
];

/// First type accepting the cleaned `value`; its normalized form is appended to `out`.
fn detect(value: &[u8], limits: &Limits, out: &mut Vec<u8>) -> Option<IocType> {
    let start = out.len();
    for ty in CLASSIFY_ORDER {
        if parse_as(ty, value, limits, out).is_ok() {
            return Some(ty);
        }
        out.truncate(start);
    }
    None
}

#[cfg(test)]
mod tests;
