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
//! 3. Surrounding whitespace is trimmed (ASCII, including tabs, and Unicode).
//! 4. An empty line is skipped.
//! 5. A line starting with `#`, `;` or `//` is a comment and is skipped.
//! 6. A trailing comment begins at the first whitespace character that is
//!    directly followed by `#`, `;` or `//`; it is dropped and the value trimmed
//!    again (`1.2.3.0/24 ; SBL123` → `1.2.3.0/24`).
//! 7. Rejected: whitespace left inside the value, or any control character
//!    (below 0x20, 0x7f, and the Unicode C1 controls).
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

use std::fmt;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use memchr::{memchr, memmem, memrchr};

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

/// Line rules 1–7: `Ok(None)` for a line to skip, else the bare value.
fn clean(raw: &[u8]) -> Result<Option<&str>, Invalid> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.len() > MAX_LINE_LEN {
        return Err(InvalidKind::TooLong.into());
    }
    if memchr(0, raw).is_some() {
        return Err(InvalidKind::Nul.into());
    }
    let line = std::str::from_utf8(raw).map_err(|_| Invalid::from(InvalidKind::Utf8))?;
    let mut value = line.trim();
    if value.is_empty() || is_comment_start(value) {
        return Ok(None);
    }
    // Fast path: printable ASCII without spaces cannot hold a trailing comment,
    // whitespace or control characters.
    if !value.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        value = strip_trailing_comment(value).trim();
        for c in value.chars() {
            if c.is_whitespace() {
                return Err(InvalidKind::Whitespace.into());
            }
            if c.is_control() {
                return Err(InvalidKind::Control.into());
            }
        }
    }
    Ok(Some(value))
}

fn is_comment_start(s: &str) -> bool {
    s.starts_with('#') || s.starts_with(';') || s.starts_with("//")
}

/// Cut at the first whitespace directly followed by a comment marker.
fn strip_trailing_comment(s: &str) -> &str {
    for (i, c) in s.char_indices() {
        if c.is_whitespace() && s.get(i + c.len_utf8()..).is_some_and(is_comment_start) {
            return s.get(..i).unwrap_or(s);
        }
    }
    s
}

/// Type rules. May leave partial output in `out` on error; callers truncate.
fn parse_as(ty: IocType, v: &str, limits: &Limits, out: &mut Vec<u8>) -> Result<(), Invalid> {
    match ty {
        IocType::Ipv4 => ipv4(v, limits.min_prefix_v4, out),
        IocType::Ipv6 => ipv6(v, limits.min_prefix_v6, out),
        IocType::Domain => domain(v.as_bytes(), true, out),
        IocType::Url => url(v.as_bytes(), out),
        IocType::Email => email(v.as_bytes(), out),
        IocType::Md5 | IocType::Sha1 | IocType::Sha256 | IocType::Sha512 => hash(ty, v, out),
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
fn detect(value: &str, limits: &Limits, out: &mut Vec<u8>) -> Option<IocType> {
    let start = out.len();
    for ty in CLASSIFY_ORDER {
        if parse_as(ty, value, limits, out).is_ok() {
            return Some(ty);
        }
        out.truncate(start);
    }
    None
}

/// Split `s` around the separator of length `sep_len` at `i`, without panicking.
fn cut(s: &[u8], i: usize, sep_len: usize) -> (&[u8], &[u8]) {
    (
        s.get(..i).unwrap_or(s),
        s.get(i.saturating_add(sep_len)..).unwrap_or(&[]),
    )
}

/// Decimal prefix length `0..=max`, no sign or leading zero.
fn parse_prefix(s: &str, max: u8) -> Option<u8> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 3 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b.first() == Some(&b'0') {
        return None;
    }
    let n = b
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    u8::try_from(n).ok().filter(|&n| n <= max)
}

/// Check an optional `/prefix` against its range and the configured minimum.
/// Called after the address parsed, so garbage is not reported as "too broad".
fn check_prefix(
    prefix: Option<&str>,
    bits: u8,
    min_prefix: u8,
    bad_prefix: &'static str,
) -> Result<u8, Invalid> {
    let Some(prefix) = prefix else {
        return Ok(bits);
    };
    let prefix = parse_prefix(prefix, bits).ok_or(InvalidKind::Malformed(bad_prefix))?;
    let min_prefix = min_prefix.min(bits);
    if prefix < min_prefix {
        return Err(InvalidKind::TooBroad { min_prefix }.into());
    }
    Ok(prefix)
}

fn ipv4(v: &str, min_prefix: u8, out: &mut Vec<u8>) -> Result<(), Invalid> {
    let (addr, prefix) = v.split_once('/').map_or((v, None), |(a, p)| (a, Some(p)));
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| InvalidKind::Malformed("not an IPv4 address or network"))?;
    let prefix = check_prefix(
        prefix,
        32,
        min_prefix,
        "invalid IPv4 prefix length (expected /0 to /32)",
    )?;
    let mask = u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0);
    let [a, b, c, d] = (u32::from(addr) & mask).to_be_bytes();
    push_u8(out, a);
    for octet in [b, c, d] {
        out.push(b'.');
        push_u8(out, octet);
    }
    if prefix < 32 {
        out.push(b'/');
        push_u8(out, prefix);
    }
    Ok(())
}

fn ipv6(v: &str, min_prefix: u8, out: &mut Vec<u8>) -> Result<(), Invalid> {
    let (addr, prefix) = v.split_once('/').map_or((v, None), |(a, p)| (a, Some(p)));
    let addr: Ipv6Addr = addr.parse().map_err(|_| {
        InvalidKind::Malformed(if v.contains('%') {
            "IPv6 zone ids (%...) are not allowed"
        } else if v.starts_with('[') {
            "remove the brackets around the IPv6 address"
        } else {
            "not an IPv6 address or network"
        })
    })?;
    let prefix = check_prefix(
        prefix,
        128,
        min_prefix,
        "invalid IPv6 prefix length (expected /0 to /128)",
    )?;
    let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
    let _ = write!(out, "{}", Ipv6Addr::from(u128::from(addr) & mask));
    if prefix < 128 {
        out.push(b'/');
        push_u8(out, prefix);
    }
    Ok(())
}

fn push_u8(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + n / 10 % 10);
    }
    out.push(b'0' + n % 10);
}

/// Shorthand for a type-specific syntax error.
fn bad<T>(msg: &'static str) -> Result<T, Invalid> {
    Err(InvalidKind::Malformed(msg).into())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Domain rules; `allow_wildcard` is false inside email addresses.
fn domain(v: &[u8], allow_wildcard: bool, out: &mut Vec<u8>) -> Result<(), Invalid> {
    if !v.is_ascii() {
        return Err(InvalidKind::NonAsciiDomain.into());
    }
    let (wildcard, body) = match v.strip_prefix(b"*.") {
        Some(rest) if allow_wildcard => (true, rest),
        _ => (false, v),
    };
    let body = body.strip_suffix(b".").unwrap_or(body);
    if body.is_empty() {
        return bad("empty domain name");
    }
    if body.len() > 253 {
        return bad("domain name longer than 253 characters");
    }
    let mut labels = 0usize;
    let mut numeric_tld = false;
    for label in body.split(|&b| b == b'.') {
        if label.is_empty() {
            return bad("empty label in domain name");
        }
        if label.len() > 63 {
            return bad("domain label longer than 63 characters");
        }
        if !label.iter().all(|&b| is_name_byte(b)) {
            return bad("domain may only contain letters, digits, '-', '_' and '.'");
        }
        if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return bad("domain label starts or ends with '-'");
        }
        labels += 1;
        numeric_tld = label.iter().all(u8::is_ascii_digit);
    }
    if labels < 2 {
        return bad("domain needs at least two labels (name.tld)");
    }
    if numeric_tld {
        return bad("last label of a domain must not be all digits");
    }
    if wildcard {
        out.extend_from_slice(b"*.");
    }
    out.extend(body.iter().map(u8::to_ascii_lowercase));
    Ok(())
}

/// Port 1..=65535, leading zeros allowed on input.
fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let start = p.iter().position(|&d| d != b'0').unwrap_or(p.len());
    let digits = p.get(start..).unwrap_or(&[]);
    if digits.len() > 5 {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok().filter(|&n| n != 0)
}

fn url(v: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
    use InvalidKind::Malformed;
    let sep = memmem::find(v, b"://").ok_or(Malformed("not a URL (expected scheme://host...)"))?;
    let (scheme, rest) = cut(v, sep, 3);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return bad("invalid URL scheme");
    }
    let auth_end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, tail) = cut(rest, auth_end, 0);
    let (userinfo, hostport) = match memrchr(b'@', authority) {
        Some(i) => {
            let (user, hp) = cut(authority, i, 1);
            (Some(user), hp)
        }
        None => (None, authority),
    };

    out.extend(scheme.iter().map(u8::to_ascii_lowercase));
    out.extend_from_slice(b"://");
    if let Some(user) = userinfo {
        out.extend_from_slice(user);
        out.push(b'@');
    }
    let port = if let Some(inner) = hostport.strip_prefix(b"[") {
        let close = memchr(b']', inner).ok_or(Malformed("unterminated [IPv6] host in URL"))?;
        let (literal, after) = cut(inner, close, 1);
        let addr: Ipv6Addr = std::str::from_utf8(literal)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Malformed("invalid [IPv6] host in URL"))?;
        let _ = write!(out, "[{addr}]");
        match after {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return bad("unexpected characters after ']' in URL host"),
        }
    } else {
        let (host, port) = match memchr(b':', hostport) {
            Some(i) => {
                let (host, port) = cut(hostport, i, 1);
                (host, Some(port))
            }
            None => (hostport, None),
        };
        if host.is_empty() {
            return bad("URL has an empty host");
        }
        if !host.iter().all(|&b| is_name_byte(b) || b == b'.') {
            return bad("URL host may only contain letters, digits, '-', '_' and '.'");
        }
        out.extend(host.iter().map(u8::to_ascii_lowercase));
        port
    };
    if let Some(port) = port {
        let port =
            parse_port(port).ok_or(Malformed("URL port must be a number from 1 to 65535"))?;
        let _ = write!(out, ":{port}");
    }
    out.extend_from_slice(tail);
    Ok(())
}

fn email(v: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
    use InvalidKind::Malformed;
    let at = memchr(b'@', v).ok_or(Malformed("not an email address (no '@')"))?;
    let (local, dom) = cut(v, at, 1);
    if memchr(b'@', dom).is_some() {
        return bad("email address has more than one '@'");
    }
    if local.is_empty() {
        return bad("email local part is empty");
    }
    if local.len() > 64 {
        return bad("email local part longer than 64 bytes");
    }
    if !local
        .iter()
        .all(|&b| b.is_ascii_graphic() && !b"@\"(),:;<>[]\\".contains(&b))
    {
        return bad("email local part contains a character that is not allowed");
    }
    if local.first() == Some(&b'.')
        || local.last() == Some(&b'.')
        || memmem::find(local, b"..").is_some()
    {
        return bad("email local part has a leading, trailing or double dot");
    }
    out.extend_from_slice(local);
    out.push(b'@');
    domain(dom, false, out)
}

fn hash(ty: IocType, v: &str, out: &mut Vec<u8>) -> Result<(), Invalid> {
    if !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InvalidKind::NotHex { ty }.into());
    }
    if Some(v.len()) != ty.hex_len() {
        return Err(InvalidKind::HashLength { ty, got: v.len() }.into());
    }
    out.extend(v.bytes().map(|b| b.to_ascii_lowercase()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits::default()
    }

    fn norm(ty: IocType, s: &str) -> Result<Option<String>, Invalid> {
        normalize(ty, s.as_bytes(), &lim())
    }

    /// Each valid input must normalize to the expected value.
    fn check_valid(ty: IocType, cases: &[(&str, &str)]) {
        for &(input, want) in cases {
            match norm(ty, input) {
                Ok(Some(got)) => assert_eq!(got, want, "{ty} input {input:?}"),
                other => panic!("{ty} input {input:?}: expected {want:?}, got {other:?}"),
            }
        }
    }

    /// Each invalid input must be rejected with a message containing the fragment.
    fn check_invalid(ty: IocType, cases: &[(&str, &str)]) {
        for &(input, fragment) in cases {
            match norm(ty, input) {
                Err(e) => assert!(
                    e.to_string().contains(fragment),
                    "{ty} input {input:?}: message {:?} lacks {fragment:?}",
                    e.to_string()
                ),
                other => panic!("{ty} input {input:?}: expected error, got {other:?}"),
            }
        }
    }

    #[test]
    fn type_codes_names_and_files() {
        let names = [
            "ipv4", "ipv6", "domain", "url", "email", "md5", "sha1", "sha256", "sha512",
        ];
        for (i, ty) in IocType::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(ty.code()), i);
            assert_eq!(IocType::from_code(ty.code()), Some(ty));
            assert_eq!(ty.name(), names[i]);
            assert_eq!(ty.to_string(), names[i]);
            assert_eq!(ty.file_name(), format!("{}.txt", names[i]));
            assert_eq!(IocType::from_name(ty.name()), Some(ty));
            assert_eq!(IocType::from_file_name(ty.file_name()), Some(ty));
        }
        assert_eq!(IocType::from_code(9), None);
        assert_eq!(IocType::from_code(255), None);
        for bad in ["", "IPV4", "ipv4 ", "ipv4.TXT", "ipv4.txt.bak", "sha3"] {
            assert_eq!(IocType::from_name(bad), None, "{bad:?}");
            assert_eq!(IocType::from_file_name(bad), None, "{bad:?}");
        }
        assert_eq!(IocType::from_file_name("ipv4"), None);
        assert_eq!(IocType::from_name("ipv4.txt"), None);
        let mut sorted = IocType::ALL;
        sorted.sort();
        assert_eq!(sorted, IocType::ALL, "Ord follows code order");
    }

    #[test]
    fn default_limits() {
        assert_eq!(
            Limits::default(),
            Limits {
                min_prefix_v4: 8,
                min_prefix_v6: 16
            }
        );
    }

    #[test]
    fn line_rules_skip() {
        for ty in IocType::ALL {
            for line in [
                "",
                "\r",
                " ",
                "\t \t",
                " \r",
                "\u{a0}\u{2003}",
                "#",
                "# comment",
                "  # indented comment",
                ";",
                "; comment",
                "//",
                "// comment",
                "\t//x",
                "#1.2.3.4",
                ";evil.com",
                "//evil.com",
            ] {
                assert_eq!(norm(ty, line), Ok(None), "{ty} {line:?}");
                let mut out = b"keep".to_vec();
                assert_eq!(
                    normalize_into(ty, line.as_bytes(), &lim(), &mut out),
                    Ok(Line::Skip)
                );
                assert_eq!(out, b"keep");
            }
        }
    }

    #[test]
    fn line_rules_trim_and_comments() {
        let d = IocType::Domain;
        check_valid(
            d,
            &[
                ("evil.com\r", "evil.com"),
                ("evil.com \r", "evil.com"),
                ("  evil.com\t", "evil.com"),
                ("\u{a0}evil.com\u{2003}", "evil.com"),
                ("evil.com # from feed X", "evil.com"),
                ("evil.com\t#x", "evil.com"),
                ("evil.com ; note", "evil.com"),
                ("evil.com // note", "evil.com"),
                ("evil.com   #", "evil.com"),
                ("evil.com #a # b", "evil.com"),
                ("evil.com\u{a0}# nbsp before marker", "evil.com"),
                ("evil.com # comment with \u{1} control", "evil.com"),
            ],
        );
        check_valid(
            IocType::Ipv4,
            &[
                ("1.2.3.0/24 ; SBL123", "1.2.3.0/24"),
                ("1.2.3.4\r", "1.2.3.4"),
            ],
        );
        check_valid(
            IocType::Url,
            &[
                ("http://a.com/x#frag # note", "http://a.com/x#frag"),
                ("http://a.com/;x // note", "http://a.com/;x"),
            ],
        );
        // Only one '\r' is stripped by rule 1; further ones are whitespace and trimmed.
        check_valid(
            d,
            &[("evil.com\r\r", "evil.com"), ("evil.com\r\r\r", "evil.com")],
        );
        // Markers not preceded by whitespace are part of the value.
        check_invalid(
            d,
            &[
                ("evil.com#x", "may only contain"),
                ("evil.com;x", "may only contain"),
                ("evil.com//x", "may only contain"),
            ],
        );
        // A single '/' after whitespace is not a comment.
        check_invalid(d, &[("evil.com /x", "whitespace inside")]);
    }

    #[test]
    fn line_rules_rejections() {
        let d = IocType::Domain;
        check_invalid(
            d,
            &[
                ("evil .com", "contains whitespace inside the value"),
                ("evil\t.com", "contains whitespace inside the value"),
                ("evil\u{a0}.com", "contains whitespace inside the value"),
                ("evil\r.com", "contains whitespace inside the value"),
                ("a.com b.com", "contains whitespace inside the value"),
                ("evil\u{1}.com", "contains a control character"),
                ("evil.com\u{7f}", "contains a control character"),
                ("\u{1b}[31mevil.com", "contains a control character"),
                ("evil\u{85}.com", "whitespace"), // NEL is Unicode whitespace
                ("evil\u{9f}.com", "contains a control character"),
                ("evil\0.com", "contains a NUL byte"),
                ("# comment\0", "contains a NUL byte"),
            ],
        );
        for ty in IocType::ALL {
            for raw in [
                &b"\xff"[..],
                b"evil\xc3.com",
                b"# \xfe comment",
                b"\xed\xa0\x80",
            ] {
                let e = normalize(ty, raw, &lim()).unwrap_err();
                assert_eq!(e.to_string(), "invalid UTF-8");
                assert_eq!(e.kind(), &InvalidKind::Utf8);
            }
        }
    }

    #[test]
    fn line_length_limit() {
        let prefix = "http://a.com/";
        let exact = format!("{prefix}{}", "p".repeat(MAX_LINE_LEN - prefix.len()));
        assert_eq!(exact.len(), MAX_LINE_LEN);
        assert_eq!(norm(IocType::Url, &exact), Ok(Some(exact.clone())));
        assert_eq!(
            norm(IocType::Url, &format!("{exact}\r")),
            Ok(Some(exact.clone()))
        );
        let long = format!("{exact}p");
        let e = norm(IocType::Url, &long).unwrap_err();
        assert_eq!(e.to_string(), "line longer than 4096 bytes");
        assert_eq!(e.kind(), &InvalidKind::TooLong);
        // Length is checked before trimming and comment removal.
        let padded = format!("{}evil.com", " ".repeat(MAX_LINE_LEN));
        assert_eq!(
            norm(IocType::Domain, &padded).unwrap_err().kind(),
            &InvalidKind::TooLong
        );
        let comment = format!("#{}", "x".repeat(MAX_LINE_LEN));
        assert_eq!(
            norm(IocType::Domain, &comment).unwrap_err().kind(),
            &InvalidKind::TooLong
        );
    }

    #[test]
    fn ipv4_table() {
        let t = IocType::Ipv4;
        check_valid(
            t,
            &[
                ("1.2.3.4", "1.2.3.4"),
                ("0.0.0.0", "0.0.0.0"),
                ("255.255.255.255", "255.255.255.255"),
                ("10.0.0.1", "10.0.0.1"),
                ("1.2.3.4/24", "1.2.3.0/24"),
                ("1.2.3.0/24", "1.2.3.0/24"),
                ("1.2.3.4/32", "1.2.3.4"),
                ("1.2.3.4/31", "1.2.3.4/31"),
                ("1.2.3.5/31", "1.2.3.4/31"),
                ("192.168.255.255/16", "192.168.0.0/16"),
                ("10.255.255.255/8", "10.0.0.0/8"),
                ("255.255.255.255/9", "255.128.0.0/9"),
            ],
        );
        check_invalid(
            t,
            &[
                ("1.2.3", "not an IPv4 address or network"),
                ("1.2.3.4.5", "not an IPv4 address or network"),
                ("256.1.1.1", "not an IPv4 address or network"),
                ("010.1.1.1", "not an IPv4 address or network"),
                ("1.2.3.04", "not an IPv4 address or network"),
                ("+1.2.3.4", "not an IPv4 address or network"),
                ("1.2.3.-4", "not an IPv4 address or network"),
                ("1..2.3", "not an IPv4 address or network"),
                ("0x1.2.3.4", "not an IPv4 address or network"),
                ("16909060", "not an IPv4 address or network"),
                ("1.2.3.4/", "invalid IPv4 prefix length"),
                ("1.2.3.4/33", "invalid IPv4 prefix length"),
                ("1.2.3.4/024", "invalid IPv4 prefix length"),
                ("1.2.3.4/08", "invalid IPv4 prefix length"),
                ("1.2.3.4/+24", "invalid IPv4 prefix length"),
                ("1.2.3.4/-1", "invalid IPv4 prefix length"),
                ("1.2.3.4/24/8", "invalid IPv4 prefix length"),
                ("1.2.3.4/255.255.255.0", "invalid IPv4 prefix length"),
                ("1.2.3.4/0", "network broader than /8"),
                ("1.2.3.4/7", "network broader than /8"),
                ("/24", "not an IPv4 address"),
                ("garbage/4", "not an IPv4 address"),
                ("1.2.3/4", "not an IPv4 address"),
            ],
        );
        // The limit comes from the config.
        let loose = Limits {
            min_prefix_v4: 0,
            ..Limits::default()
        };
        assert_eq!(
            normalize(t, b"1.2.3.4/7", &loose),
            Ok(Some("0.0.0.0/7".into()))
        );
        assert_eq!(
            normalize(t, b"1.2.3.4/0", &loose),
            Ok(Some("0.0.0.0/0".into()))
        );
        let strict = Limits {
            min_prefix_v4: 24,
            ..Limits::default()
        };
        assert_eq!(
            normalize(t, b"1.2.3.4/23", &strict)
                .unwrap_err()
                .to_string(),
            "network broader than /24"
        );
        assert_eq!(
            normalize(t, b"1.2.3.4/24", &strict),
            Ok(Some("1.2.3.0/24".into()))
        );
        // Limits above 32 mean "single addresses only".
        let hosts = Limits {
            min_prefix_v4: 200,
            ..Limits::default()
        };
        assert_eq!(normalize(t, b"1.2.3.4", &hosts), Ok(Some("1.2.3.4".into())));
        assert_eq!(
            normalize(t, b"1.2.3.4/32", &hosts),
            Ok(Some("1.2.3.4".into()))
        );
        assert_eq!(
            normalize(t, b"1.2.3.4/31", &hosts).unwrap_err().to_string(),
            "network broader than /32"
        );
    }

    #[test]
    fn ipv6_table() {
        let t = IocType::Ipv6;
        check_valid(
            t,
            &[
                ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
                ("2001:db8::1", "2001:db8::1"),
                ("2001:DB8::1", "2001:db8::1"),
                ("2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
                ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
                ("::", "::"),
                ("::1", "::1"),
                ("1::", "1::"),
                ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
                ("::FFFF:102:304", "::ffff:1.2.3.4"),
                ("2001:DB8::1/32", "2001:db8::/32"),
                ("2001:db8::1/128", "2001:db8::1"),
                ("2001:db8::1/127", "2001:db8::/127"),
                ("2001:db8:ffff::/16", "2001::/16"),
                ("ffff::/16", "ffff::/16"),
                ("fe80::1", "fe80::1"),
            ],
        );
        check_invalid(
            t,
            &[
                ("2001:db8::1/15", "network broader than /16"),
                ("::/0", "network broader than /16"),
                ("2001:db8::1/129", "invalid IPv6 prefix length"),
                ("2001:db8::1/", "invalid IPv6 prefix length"),
                ("2001:db8::1/064", "invalid IPv6 prefix length"),
                ("fe80::1%eth0", "zone ids"),
                ("fe80::1%25eth0", "zone ids"),
                ("[2001:db8::1]", "brackets"),
                ("2001:db8:::1", "not an IPv6 address"),
                ("1:2:3:4:5:6:7:8:9", "not an IPv6 address"),
                ("2001:db8::g", "not an IPv6 address"),
                ("12345::", "not an IPv6 address"),
                (":", "not an IPv6 address"),
                ("::g/4", "not an IPv6 address"),
                ("1.2.3.4", "looks like an ipv4 indicator, not ipv6"),
                ("1.2.3.0/24", "looks like an ipv4 indicator, not ipv6"),
            ],
        );
        let loose = Limits {
            min_prefix_v6: 0,
            ..Limits::default()
        };
        assert_eq!(normalize(t, b"::/0", &loose), Ok(Some("::/0".into())));
        assert_eq!(
            normalize(t, b"2001:db8::1/15", &loose),
            Ok(Some("2000::/15".into()))
        );
    }

    #[test]
    fn domain_table() {
        let t = IocType::Domain;
        let l63 = "a".repeat(63);
        let max = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        assert_eq!(max.len(), 253);
        let max_dot = format!("{max}.");
        let wild_max = format!("*.{max}");
        let long_label = format!("{l63}a.com");
        let too_long = format!("{max}b");
        check_valid(
            t,
            &[
                ("evil.com", "evil.com"),
                ("Evil.COM", "evil.com"),
                ("evil.com.", "evil.com"),
                ("a.b.c.d.e.example", "a.b.c.d.e.example"),
                ("xn--bcher-kva.de", "xn--bcher-kva.de"),
                ("_dmarc.example.com", "_dmarc.example.com"),
                ("a-b.c_d.com", "a-b.c_d.com"),
                ("1.2.3.com", "1.2.3.com"),
                ("123.com4", "123.com4"),
                ("x.y", "x.y"),
                ("*.Evil.COM.", "*.evil.com"),
                ("*.evil.com", "*.evil.com"),
                (&max, &max),
                (&max_dot, &max),
                (&wild_max, &wild_max),
            ],
        );
        check_invalid(
            t,
            &[
                ("bücher.de", "use the punycode (xn--) form"),
                ("evil.cöm", "punycode"),
                ("com", "at least two labels"),
                ("localhost", "at least two labels"),
                ("*.com", "at least two labels"),
                ("*.com.", "at least two labels"),
                ("*", "may only contain"),
                ("*.", "empty domain name"),
                (".", "empty domain name"),
                ("a..b", "empty label"),
                (".evil.com", "empty label"),
                ("evil.com..", "empty label"),
                ("*.*.evil.com", "may only contain"),
                ("a.*.com", "may only contain"),
                ("**.evil.com", "may only contain"),
                ("-evil.com", "starts or ends with '-'"),
                ("evil-.com", "starts or ends with '-'"),
                ("evil.-com", "starts or ends with '-'"),
                ("evil.com-", "starts or ends with '-'"),
                ("ev!l.com", "may only contain"),
                ("evil.com:80", "may only contain"),
                ("evil.com/path", "may only contain"),
                ("evil%2ecom", "may only contain"),
                ("1.2.3.4.5", "all digits"),
                ("example.123", "all digits"),
                (&long_label, "longer than 63"),
                (&too_long, "longer than 253"),
                ("1.2.3.4", "looks like an ipv4 indicator, not domain"),
                ("http://evil.com", "looks like a url indicator, not domain"),
                ("a@evil.com", "looks like an email indicator, not domain"),
            ],
        );
    }

    #[test]
    fn url_table() {
        let t = IocType::Url;
        check_valid(
            t,
            &[
                ("HTTP://Example.COM/Path?Q=1", "http://example.com/Path?Q=1"),
                ("http://example.com", "http://example.com"),
                ("http://example.com/", "http://example.com/"),
                ("https://evil.com/a/b/", "https://evil.com/a/b/"),
                ("hxxp://evil.com/x", "hxxp://evil.com/x"),
                ("svn+SSH://Host.Example/repo", "svn+ssh://host.example/repo"),
                ("a.b-c+d://x", "a.b-c+d://x"),
                ("http://localhost:8080/x", "http://localhost:8080/x"),
                ("http://evil.com:080/", "http://evil.com:80/"),
                ("http://evil.com:65535", "http://evil.com:65535"),
                ("http://evil.com?q=A", "http://evil.com?q=A"),
                ("http://evil.com#Frag", "http://evil.com#Frag"),
                ("http://User:PaSS@Evil.com/", "http://User:PaSS@evil.com/"),
                ("http://a@b@Evil.com/", "http://a@b@evil.com/"),
                ("http://@evil.com/", "http://@evil.com/"),
                ("http://1.2.3.4/x.exe", "http://1.2.3.4/x.exe"),
                ("http://1.2.3.4:81/", "http://1.2.3.4:81/"),
                ("http://[2001:DB8::1]/x", "http://[2001:db8::1]/x"),
                (
                    "http://[::FFFF:1.2.3.4]:8443/",
                    "http://[::ffff:1.2.3.4]:8443/",
                ),
                ("http://evil.com/%20%41?x=ü", "http://evil.com/%20%41?x=ü"),
                ("http://evil.com/a@b:c", "http://evil.com/a@b:c"),
                ("ftp://evil.com/path//x", "ftp://evil.com/path//x"),
                ("http://evil.com/?", "http://evil.com/?"),
                ("http://Evil_Host.com./", "http://evil_host.com./"),
            ],
        );
        check_invalid(
            t,
            &[
                ("evil.com/path", "not a URL"),
                ("http:/evil.com", "not a URL"),
                ("://evil.com", "invalid URL scheme"),
                ("1http://evil.com", "invalid URL scheme"),
                ("ht_tp://evil.com", "invalid URL scheme"),
                ("http://", "empty host"),
                ("http:///etc/passwd", "empty host"),
                ("file:///etc/passwd", "empty host"),
                ("http://user@/x", "empty host"),
                ("http://:80/", "empty host"),
                ("http://evil.com:/", "port"),
                ("http://evil.com:0/", "port"),
                ("http://evil.com:65536/", "port"),
                ("http://evil.com:8x/", "port"),
                ("http://evil.com:80:80/", "port"),
                ("http://ev%69l.com/", "URL host may only contain"),
                ("http://bücher.de/", "URL host may only contain"),
                ("http://evil.com\\x", "URL host may only contain"),
                ("http://[2001:db8::1/", "unterminated"),
                ("http://[1.2.3.4]/", "invalid [IPv6] host"),
                ("http://[fe80::1%25eth0]/", "invalid [IPv6] host"),
                ("http://[::1]x/", "unexpected characters after ']'"),
                ("http://[::1]:0/", "port"),
                ("http://evil.com/a b", "whitespace inside"),
            ],
        );
    }

    #[test]
    fn email_table() {
        let t = IocType::Email;
        let local64 = "l".repeat(64);
        let max_local = format!("{local64}@x.com");
        let long_local = format!("{local64}l@x.com");
        check_valid(
            t,
            &[
                ("John.Doe@Example.COM", "John.Doe@example.com"),
                ("a@b.co", "a@b.co"),
                ("user+tag@evil.com.", "user+tag@evil.com"),
                ("o'brien@evil.com", "o'brien@evil.com"),
                (
                    "!#$%&'*+/=?^_`{|}~-@evil.com",
                    "!#$%&'*+/=?^_`{|}~-@evil.com",
                ),
                ("a.b.c@sub.evil.com", "a.b.c@sub.evil.com"),
                (&max_local, &max_local),
            ],
        );
        check_invalid(
            t,
            &[
                ("evil.com", "looks like a domain indicator, not email"),
                ("@evil.com", "local part is empty"),
                ("a@b@evil.com", "more than one '@'"),
                ("a@", "empty domain name"),
                ("a@com", "at least two labels"),
                ("a@*.evil.com", "may only contain"),
                ("a@1.2.3.4", "all digits"),
                ("a@[1.2.3.4]", "may only contain"),
                ("a@bücher.de", "punycode"),
                ("jöhn@evil.com", "not allowed"),
                ("\"john\"@evil.com", "not allowed"),
                ("a,b@evil.com", "not allowed"),
                ("a:b@evil.com", "not allowed"),
                ("a;b@evil.com", "not allowed"),
                ("a<b@evil.com", "not allowed"),
                ("a[b@evil.com", "not allowed"),
                ("a\\b@evil.com", "not allowed"),
                ("a(b)@evil.com", "not allowed"),
                (".a@evil.com", "leading, trailing or double dot"),
                ("a.@evil.com", "leading, trailing or double dot"),
                ("a..b@evil.com", "leading, trailing or double dot"),
                (&long_local, "longer than 64"),
            ],
        );
        // Such an address reads as a comment line.
        assert_eq!(norm(t, "#a@evil.com"), Ok(None));
    }

    #[test]
    fn hash_table() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let sha1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
        let sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let sha512 = format!("{sha256}{sha256}");
        for (ty, h) in [
            (IocType::Md5, md5),
            (IocType::Sha1, sha1),
            (IocType::Sha256, sha256),
            (IocType::Sha512, sha512.as_str()),
        ] {
            let upper = h.to_ascii_uppercase();
            let crlf = format!("{upper}\r");
            let commented = format!("  {h}  # sample");
            check_valid(ty, &[(h, h), (&upper, h), (&crlf, h), (&commented, h)]);
            let n = h.len();
            let short = &h[..n - 1];
            let long = format!("{h}0");
            let nonhex = format!("{}g", &h[..n - 1]);
            let short_msg = format!("expected {n} hex digits for {ty}, got {}", n - 1);
            let long_msg = format!("expected {n} hex digits for {ty}, got {}", n + 1);
            check_invalid(
                ty,
                &[
                    (short, &short_msg),
                    (&long, &long_msg),
                    (&nonhex, "contains a non-hex character"),
                    ("abc", "got 3"),
                    ("0x1234", "non-hex"),
                ],
            );
        }
        // A hash in the wrong hash file names the right one.
        check_invalid(
            IocType::Sha256,
            &[(md5, "looks like an md5 indicator, not sha256")],
        );
        check_invalid(
            IocType::Md5,
            &[(sha1, "looks like a sha1 indicator, not md5")],
        );
        check_invalid(
            IocType::Sha1,
            &[("evil.com", "looks like a domain indicator, not sha1")],
        );
    }

    #[test]
    fn wrong_type_per_file() {
        let cases: &[(IocType, &str, IocType)] = &[
            (IocType::Ipv4, "evil.com", IocType::Domain),
            (IocType::Ipv4, "2001:db8::1", IocType::Ipv6),
            (IocType::Ipv4, "http://1.2.3.4/", IocType::Url),
            (
                IocType::Ipv4,
                "d41d8cd98f00b204e9800998ecf8427e",
                IocType::Md5,
            ),
            (IocType::Ipv6, "1.2.3.4", IocType::Ipv4),
            (IocType::Domain, "1.2.3.4", IocType::Ipv4),
            (IocType::Domain, "::1", IocType::Ipv6),
            (IocType::Url, "evil.com", IocType::Domain),
            (IocType::Url, "a@evil.com", IocType::Email),
            (IocType::Email, "http://a@evil.com/", IocType::Url),
            (IocType::Md5, "1.2.3.4", IocType::Ipv4),
        ];
        for &(ty, input, found) in cases {
            let e = norm(ty, input).unwrap_err();
            assert_eq!(
                e.kind(),
                &InvalidKind::WrongType {
                    expected: ty,
                    found
                },
                "{ty} {input:?}"
            );
        }
        assert_eq!(
            norm(IocType::Ipv4, "evil.com").unwrap_err().to_string(),
            "looks like a domain indicator, not ipv4"
        );
        assert_eq!(
            norm(IocType::Ipv4, "::1").unwrap_err().to_string(),
            "looks like an ipv6 indicator, not ipv4"
        );
        // Nothing recognisable: keep the type's own message.
        assert_eq!(
            norm(IocType::Ipv4, "nonsense").unwrap_err().to_string(),
            "not an IPv4 address or network"
        );
    }

    #[test]
    fn normalize_into_appends_or_leaves_out_alone() {
        let l = lim();
        let mut out = b"prev\n".to_vec();
        assert_eq!(
            normalize_into(IocType::Ipv4, b"1.2.3.4/24", &l, &mut out),
            Ok(Line::Value)
        );
        assert_eq!(out, b"prev\n1.2.3.0/24");
        out.push(b'\n');
        assert_eq!(
            normalize_into(IocType::Domain, b"Evil.COM # x\r", &l, &mut out),
            Ok(Line::Value)
        );
        assert_eq!(out, b"prev\n1.2.3.0/24\nevil.com");

        let before = out.clone();
        let failing: &[(IocType, &[u8])] = &[
            (IocType::Ipv4, b"1.2.3.4/4"),
            (IocType::Ipv4, b"evil.com"),
            (IocType::Ipv6, b"1.2.3.4"),
            (IocType::Domain, b"evil..com"),
            (IocType::Domain, b"bad\xff"),
            (IocType::Url, b"http://evil.com:99999/"),
            (IocType::Url, b"http://[::1"),
            (IocType::Url, b"HTTP://EVIL.COM:0/"),
            (IocType::Email, b"USER@EVIL..COM"),
            (IocType::Email, b"user@evil.com@x"),
            (IocType::Sha1, b"d41d8cd98f00b204e9800998ecf8427e"),
            (IocType::Md5, b"a b"),
            (IocType::Md5, b"a\0b"),
        ];
        for &(ty, raw) in failing {
            assert!(
                normalize_into(ty, raw, &l, &mut out).is_err(),
                "{ty} {raw:?}"
            );
            assert_eq!(out, before, "{ty} {raw:?} modified out");
        }
        assert_eq!(
            normalize_into(IocType::Url, b"# c", &l, &mut out),
            Ok(Line::Skip)
        );
        assert_eq!(out, before);
    }

    #[test]
    fn classify_table() {
        let l = lim();
        let cases: &[(&str, Option<(IocType, &str)>)] = &[
            ("1.2.3.4", Some((IocType::Ipv4, "1.2.3.4"))),
            ("1.2.3.4/24", Some((IocType::Ipv4, "1.2.3.0/24"))),
            ("1.2.3.4/32", Some((IocType::Ipv4, "1.2.3.4"))),
            ("1.2.3.4/4", None),
            ("2001:DB8::1", Some((IocType::Ipv6, "2001:db8::1"))),
            ("::ffff:1.2.3.4", Some((IocType::Ipv6, "::ffff:1.2.3.4"))),
            ("2001:db8::/32", Some((IocType::Ipv6, "2001:db8::/32"))),
            (
                "D41D8CD98F00B204E9800998ECF8427E",
                Some((IocType::Md5, "d41d8cd98f00b204e9800998ecf8427e")),
            ),
            (
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
                Some((IocType::Sha1, "da39a3ee5e6b4b0d3255bfef95601890afd80709")),
            ),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                Some((
                    IocType::Sha256,
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                )),
            ),
            ("abcdef", None),
            (
                "HTTP://Evil.com/X",
                Some((IocType::Url, "http://evil.com/X")),
            ),
            (
                "http://a@evil.com",
                Some((IocType::Url, "http://a@evil.com")),
            ),
            ("John@Evil.COM", Some((IocType::Email, "John@evil.com"))),
            ("Evil.COM.", Some((IocType::Domain, "evil.com"))),
            ("*.Evil.com", Some((IocType::Domain, "*.evil.com"))),
            ("deadbeef.com", Some((IocType::Domain, "deadbeef.com"))),
            ("  evil.com  # note\r", Some((IocType::Domain, "evil.com"))),
            ("evil", None),
            ("*.com", None),
            ("1.2.3.4.5", None),
            ("", None),
            ("   ", None),
            ("# evil.com", None),
            ("; evil.com", None),
            ("// evil.com", None),
            ("evil .com", None),
            ("evil\0.com", None),
        ];
        for &(input, want) in cases {
            let got = classify(input.as_bytes(), &l);
            let want = want.map(|(t, s)| (t, s.to_string()));
            assert_eq!(got, want, "{input:?}");
        }
        assert_eq!(classify(b"\xffevil.com", &l), None);
        let loose = Limits {
            min_prefix_v4: 0,
            min_prefix_v6: 0,
        };
        assert_eq!(
            classify(b"1.2.3.4/4", &loose),
            Some((IocType::Ipv4, "0.0.0.0/4".to_string()))
        );
        assert_eq!(
            classify(b"::/0", &loose),
            Some((IocType::Ipv6, "::/0".to_string()))
        );
    }

    #[test]
    fn escape_excerpt_cases() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"", 10, ""),
            (b"", 0, ""),
            (b"abc", 3, "abc"),
            (b"abc", 10, "abc"),
            (b"abcd", 3, "..."),
            (b"abcdef", 5, "ab..."),
            (b"abcdef", 6, "abcdef"),
            (b"abcdefg", 6, "abc..."),
            (b"a\\b", 10, "a\\\\b"),
            (
                b"a\0b\n\r\t\x7f\xff",
                100,
                "a\\x00b\\x0a\\x0d\\x09\\x7f\\xff",
            ),
            ("é".as_bytes(), 100, "\\xc3\\xa9"),
            (b"ab\xffcdef", 8, "ab..."), // "\xff" does not fit before "...": not split
            (b"ab\xffcdef", 9, "ab\\xff..."),
            (b"\\\\\\", 4, "..."),
            (b"\\\\\\", 5, "\\\\..."),
            (b"abcdef", 2, ".."),
            (b"abcdef", 0, ""),
            (b"ab", 2, "ab"),
            (b"a\"b' ", 10, "a\"b' "),
        ];
        for &(raw, max, want) in cases {
            let got = escape_excerpt(raw, max);
            assert_eq!(got, want, "{raw:?} max {max}");
            assert!(got.len() <= max, "{raw:?} max {max}: {got:?}");
        }
        let long = vec![0u8; 100_000];
        let e = escape_excerpt(&long, 80);
        assert!(e.len() <= 80 && e.ends_with("..."));
        assert_eq!(e, format!("{}...", "\\x00".repeat(19)));
    }

    #[test]
    fn invalid_messages() {
        let cases: &[(InvalidKind, &str)] = &[
            (InvalidKind::TooLong, "line longer than 4096 bytes"),
            (InvalidKind::Nul, "contains a NUL byte"),
            (InvalidKind::Utf8, "invalid UTF-8"),
            (InvalidKind::Control, "contains a control character"),
            (
                InvalidKind::Whitespace,
                "contains whitespace inside the value",
            ),
            (
                InvalidKind::WrongType {
                    expected: IocType::Ipv4,
                    found: IocType::Ipv6,
                },
                "looks like an ipv6 indicator, not ipv4",
            ),
            (
                InvalidKind::WrongType {
                    expected: IocType::Ipv4,
                    found: IocType::Domain,
                },
                "looks like a domain indicator, not ipv4",
            ),
            (
                InvalidKind::TooBroad { min_prefix: 8 },
                "network broader than /8",
            ),
            (
                InvalidKind::NonAsciiDomain,
                "non-ASCII domain: use the punycode (xn--) form",
            ),
            (
                InvalidKind::HashLength {
                    ty: IocType::Sha256,
                    got: 63,
                },
                "expected 64 hex digits for sha256, got 63",
            ),
            (
                InvalidKind::NotHex { ty: IocType::Md5 },
                "not an md5 hash: contains a non-hex character",
            ),
            (InvalidKind::Malformed("x y"), "x y"),
        ];
        for (kind, msg) in cases {
            let e = Invalid::from(kind.clone());
            assert_eq!(e.to_string(), *msg);
            assert_eq!(e.kind(), kind);
            let _: &dyn std::error::Error = &e;
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;
        use proptest::sample::select;

        fn lim() -> Limits {
            Limits::default()
        }

        fn any_type() -> impl Strategy<Value = IocType> {
            select(IocType::ALL.to_vec())
        }

        /// Upper-case the ASCII letters whose bit is set in `mask`.
        fn mix_case(s: &str, mask: u64) -> String {
            s.chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        }

        fn label() -> impl Strategy<Value = String> {
            "[a-z0-9_]([a-z0-9_-]{0,10}[a-z0-9_])?"
        }

        /// A lower-case domain without wildcard (TLD starts with a letter).
        fn domain_name() -> impl Strategy<Value = String> {
            (
                prop::collection::vec(label(), 1..4),
                "[a-z]([a-z0-9-]{0,5}[a-z0-9])?",
            )
                .prop_map(|(mut labels, tld)| {
                    labels.push(tld);
                    labels.join(".")
                })
        }

        /// (type, input, expected normalized form) for valid values.
        fn valid_ipv4() -> impl Strategy<Value = (IocType, String, String)> {
            (any::<u32>(), prop::option::of(8u8..=32)).prop_map(|(a, p)| {
                let addr = std::net::Ipv4Addr::from(a);
                match p {
                    None => (IocType::Ipv4, addr.to_string(), addr.to_string()),
                    Some(p) => {
                        let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
                        let net = std::net::Ipv4Addr::from(a & mask);
                        let want = if p == 32 {
                            net.to_string()
                        } else {
                            format!("{net}/{p}")
                        };
                        (IocType::Ipv4, format!("{addr}/{p}"), want)
                    }
                }
            })
        }

        fn valid_ipv6() -> impl Strategy<Value = (IocType, String, String)> {
            (
                any::<u128>(),
                prop::option::of(16u8..=128),
                0..3u8,
                any::<u64>(),
            )
                .prop_map(|(a, p, form, mask)| {
                    let addr = std::net::Ipv6Addr::from(a);
                    let seg = addr.segments();
                    let text = match form {
                        0 => addr.to_string(),
                        1 => seg.map(|s| format!("{s:x}")).join(":"),
                        _ => seg.map(|s| format!("{s:04x}")).join(":"),
                    };
                    let text = mix_case(&text, mask);
                    match p {
                        None => (IocType::Ipv6, text, addr.to_string()),
                        Some(p) => {
                            let m = u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0);
                            let net = std::net::Ipv6Addr::from(a & m);
                            let want = if p == 128 {
                                net.to_string()
                            } else {
                                format!("{net}/{p}")
                            };
                            (IocType::Ipv6, format!("{text}/{p}"), want)
                        }
                    }
                })
        }

        fn valid_domain() -> impl Strategy<Value = (IocType, String, String)> {
            (domain_name(), any::<bool>(), any::<bool>(), any::<u64>()).prop_map(
                |(d, wild, dot, mask)| {
                    let want = if wild { format!("*.{d}") } else { d };
                    let mut input = mix_case(&want, mask);
                    if dot {
                        input.push('.');
                    }
                    (IocType::Domain, input, want)
                },
            )
        }

        fn url_host() -> impl Strategy<Value = (String, String)> {
            prop_oneof![
                domain_name().prop_map(|d| (d.clone(), d)),
                "[a-z0-9_-]{1,8}".prop_map(|h| (h.clone(), h)),
                any::<u32>().prop_map(|a| {
                    let s = std::net::Ipv4Addr::from(a).to_string();
                    (s.clone(), s)
                }),
                any::<u128>().prop_map(|a| {
                    let addr = std::net::Ipv6Addr::from(a);
                    let full = addr.segments().map(|s| format!("{s:X}")).join(":");
                    (format!("[{full}]"), format!("[{addr}]"))
                }),
            ]
        }

        fn valid_url() -> impl Strategy<Value = (IocType, String, String)> {
            (
                "[a-z][a-z0-9+.-]{0,6}",
                prop::option::of("[A-Za-z0-9._~!$&'()*+,;=:%-]{0,10}"),
                url_host(),
                prop::option::of((1u16..=65535, 0usize..3)),
                "(/[A-Za-z0-9._~%!$&'()*+,;=:@ü-]{0,8}){0,3}",
                prop::option::of("[A-Za-z0-9=&/?:@._%-]{0,12}"),
                prop::option::of("[A-Za-z0-9=&/?:@._%#-]{0,12}"),
                any::<u64>(),
            )
                .prop_map(
                    |(scheme, user, (host_in, host_want), port, path, query, frag, mask)| {
                        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
                        let (port_in, port_want) = match port {
                            Some((p, zeros)) => {
                                (format!(":{}{p}", "0".repeat(zeros)), format!(":{p}"))
                            }
                            None => (String::new(), String::new()),
                        };
                        let mut rest = path;
                        if let Some(q) = query {
                            rest.push('?');
                            rest.push_str(&q);
                        }
                        if let Some(f) = frag {
                            rest.push('#');
                            rest.push_str(&f);
                        }
                        let input = format!(
                            "{}://{user}{}{port_in}{rest}",
                            mix_case(&scheme, mask),
                            mix_case(&host_in, mask.rotate_left(17))
                        );
                        let want = format!("{scheme}://{user}{host_want}{port_want}{rest}");
                        (IocType::Url, input, want)
                    },
                )
        }

        fn valid_email() -> impl Strategy<Value = (IocType, String, String)> {
            (
                // The first character avoids '#' and '/', which would read as a comment.
                "[A-Za-z0-9!$%&'*+=?^_`{|}~-][A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{0,15}(\\.[A-Za-z0-9_+-]{1,10}){0,2}",
                domain_name(),
                any::<u64>(),
                any::<bool>(),
            )
                .prop_map(|(local, dom, mask, dot)| {
                    let input = format!("{local}@{}{}", mix_case(&dom, mask), if dot { "." } else { "" });
                    (IocType::Email, input, format!("{local}@{dom}"))
                })
        }

        fn valid_hash() -> impl Strategy<Value = (IocType, String, String)> {
            (
                select(vec![
                    IocType::Md5,
                    IocType::Sha1,
                    IocType::Sha256,
                    IocType::Sha512,
                ]),
                prop::collection::vec(select(b"0123456789abcdefABCDEF".to_vec()), 128),
            )
                .prop_map(|(ty, digits)| {
                    let n = ty.hex_len().unwrap();
                    let input = String::from_utf8(digits[..n].to_vec()).unwrap();
                    let want = input.to_ascii_lowercase();
                    (ty, input, want)
                })
        }

        fn valid_any() -> impl Strategy<Value = (IocType, String, String)> {
            prop_oneof![
                valid_ipv4(),
                valid_ipv6(),
                valid_domain(),
                valid_url(),
                valid_email(),
                valid_hash(),
            ]
        }

        /// Inputs near the valid ones: mutated valid values and strings from
        /// the characters that matter to the parsers.
        fn ioc_ish() -> impl Strategy<Value = Vec<u8>> {
            let alphabet = b"0123456789abcdefxAF.:/@[]*#;%_- \t\r\0\x7f\xc3\xa9\xff\\?".to_vec();
            prop_oneof![
                valid_any().prop_map(|(_, s, _)| s.into_bytes()),
                (
                    valid_any(),
                    prop::collection::vec(
                        (
                            any::<prop::sample::Index>(),
                            select(alphabet.clone()),
                            0..3u8
                        ),
                        1..4
                    )
                )
                    .prop_map(|((_, s, _), edits)| {
                        let mut b = s.into_bytes();
                        for (at, byte, op) in edits {
                            let i = at.index(b.len() + 1);
                            match op {
                                0 => b.insert(i, byte),
                                1 if i < b.len() => b[i] = byte,
                                _ if i < b.len() => {
                                    b.remove(i);
                                }
                                _ => b.push(byte),
                            }
                        }
                        b
                    }),
                prop::collection::vec(select(alphabet), 0..48),
                prop::collection::vec(any::<u8>(), 0..300),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// (1) Arbitrary bytes never panic, whatever the type.
            #[test]
            fn never_panics(raw in prop::collection::vec(any::<u8>(), 0..5000), max in 0usize..200) {
                for ty in IocType::ALL {
                    let _ = normalize(ty, &raw, &lim());
                }
                let _ = classify(&raw, &lim());
                prop_assert!(escape_excerpt(&raw, max).len() <= max);
            }

            #[test]
            fn never_panics_ioc_ish(raw in ioc_ish(), v4 in 0u8..=255, v6 in 0u8..=255) {
                let limits = Limits { min_prefix_v4: v4, min_prefix_v6: v6 };
                for ty in IocType::ALL {
                    let _ = normalize(ty, &raw, &limits);
                }
                let _ = classify(&raw, &limits);
            }

            /// (2) + (3): accepted values are fixed points, classify to the same
            /// type and value, and no other type accepts them (so the type
            /// order in classify cannot matter).
            #[test]
            fn accepted_values_are_canonical(raw in ioc_ish(), ty in any_type()) {
                let l = lim();
                if let Ok(Some(v)) = normalize(ty, &raw, &l) {
                    prop_assert_eq!(normalize(ty, v.as_bytes(), &l), Ok(Some(v.clone())));
                    prop_assert_eq!(classify(v.as_bytes(), &l), Some((ty, v.clone())));
                    for other in IocType::ALL {
                        if other != ty {
                            let r = normalize(other, v.as_bytes(), &l);
                            prop_assert!(r.is_err(), "{} value {:?} also accepted as {}", ty, v, other);
                        }
                    }
                }
            }

            /// classify agrees with normalize on raw input as well.
            #[test]
            fn classify_agrees_with_normalize(raw in ioc_ish()) {
                let l = lim();
                match classify(&raw, &l) {
                    Some((ty, v)) => prop_assert_eq!(normalize(ty, &raw, &l), Ok(Some(v))),
                    None => {
                        for ty in IocType::ALL {
                            prop_assert!(!matches!(normalize(ty, &raw, &l), Ok(Some(_))));
                        }
                    }
                }
            }

            /// (4) Generated valid values are accepted with the expected form,
            /// also with surrounding noise the line rules remove.
            #[test]
            fn generated_values_accepted((ty, input, want) in valid_any(), crlf in any::<bool>(), comment in any::<bool>()) {
                let l = lim();
                prop_assert_eq!(normalize(ty, input.as_bytes(), &l), Ok(Some(want.clone())));
                let mut line = format!(" \t{input}");
                if comment {
                    line.push_str(" # feed X");
                }
                if crlf {
                    line.push('\r');
                }
                prop_assert_eq!(normalize(ty, line.as_bytes(), &l), Ok(Some(want.clone())));
                prop_assert_eq!(classify(input.as_bytes(), &l), Some((ty, want.clone())));
                prop_assert_eq!(normalize(ty, want.as_bytes(), &l), Ok(Some(want)));
            }

            /// normalize_into appends exactly the value, or leaves `out` alone.
            #[test]
            fn normalize_into_out_contract(raw in ioc_ish(), ty in any_type(), prefix in prop::collection::vec(any::<u8>(), 0..20)) {
                let l = lim();
                let mut out = prefix.clone();
                match normalize_into(ty, &raw, &l, &mut out) {
                    Ok(Line::Value) => {
                        let v = normalize(ty, &raw, &l).unwrap().unwrap();
                        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
                        prop_assert_eq!(&out[prefix.len()..], v.as_bytes());
                    }
                    Ok(Line::Skip) | Err(_) => prop_assert_eq!(out, prefix),
                }
            }

            /// escape_excerpt stays within budget, is printable ASCII, and
            /// never splits an escape: the kept part unescapes to a prefix.
            #[test]
            fn escape_excerpt_props(raw in prop::collection::vec(any::<u8>(), 0..64), max in 0usize..300) {
                let e = escape_excerpt(&raw, max);
                prop_assert!(e.len() <= max);
                prop_assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)));
                let full = escape_excerpt(&raw, usize::MAX);
                let body = if e == full {
                    prop_assert_eq!(unescape(&full), raw.clone());
                    e.as_str()
                } else {
                    prop_assert!(full.len() > max);
                    let dots = max.min(3);
                    prop_assert_eq!(&e[e.len() - dots..], &"..."[..dots]);
                    &e[..e.len() - dots]
                };
                let kept = unescape(body);
                prop_assert_eq!(&raw[..kept.len()], &kept[..]);
            }
        }

        fn unescape(s: &str) -> Vec<u8> {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'\\' {
                    if b[i + 1] == b'\\' {
                        out.push(b'\\');
                        i += 2;
                    } else {
                        assert_eq!(b[i + 1], b'x');
                        out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                        i += 4;
                    }
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            out
        }
    }
}
