//! On-disk codec of tier files.
//!
//! # Format (reference)
//!
//! A tier file `DATA/<tier>/<type>.txt.gz` is a **multi-member gzip file** (RFC 1952) such
//! that `zcat file` prints exactly the served content (the concatenation of the blocks' raw
//! bytes). It is a sequence of *block members* followed by exactly one *trailer member*.
//!
//! **Block member**: one complete gzip member holding one block: ≤ block_size (e.g. 64 KiB)
//! raw bytes of whole `\n`-terminated lines (the caller guarantees lines), at most
//! `MAX_BLOCK_LINES = 6500` lines.
//! - Header: `1f 8b 08`, FLG = FEXTRA (0x04) only, MTIME = 0, XFL = 0, OS = 3 (unix),
//!   XLEN (u16 LE), then the extra field holding exactly one subfield `SI1='I' SI2='B'` with
//!   LEN (u16 LE) and payload:
//!   - `version: u8 = 1`, `flags: u8 = 0`,
//!   - `block_id: u32 LE` (opaque to this module),
//!   - `lines: u32 LE`, `raw_len: u32 LE` (uncompressed bytes of this block),
//!   - `member_len: u32 LE` = total length in bytes of this whole gzip member from its first
//!     byte `1f` through its ISIZE (like BGZF's BSIZE; lets a reader hop from member to
//!     member without inflating),
//!   - timestamps of every line, in line order: `base_first: u32 LE`, `base_last: u32 LE`
//!     (the minimum first_seen and minimum last_seen of the block), then per line
//!     `varint(first_seen - base_first)`, `varint(last_seen - base_last)` (LEB128 unsigned
//!     varints),
//!   - `crc32c: u32 LE` of all preceding payload bytes (the gzip format does not protect the
//!     header; this does).
//!   - With MAX_BLOCK_LINES = 6500 the worst case (5-byte varints) fits XLEN ≤ 65535
//!     (asserted at compile time below).
//! - Data: raw DEFLATE of the block's bytes (libdeflater `Compressor`, level given by the
//!   caller), then the gzip trailer CRC32 (of the raw bytes) and ISIZE (raw_len mod 2^32),
//!   both LE.
//!
//! **Trailer member**: the last member; a gzip member with the same fixed header and an
//! FEXTRA subfield `SI1='I' SI2='T'`, an empty DEFLATE stream (bytes `03 00`), CRC32 = 0,
//! ISIZE = 0, so zcat prints nothing for it. Payload: `version: u8 = 1`, `flags: u8 = 0`,
//! `applied_seq: u64 LE` (the WAL sequence the file reflects), `generation: u64 LE` (random
//! id of this file version), `blocks: u32 LE`, `lines: u64 LE`, `raw_bytes: u64 LE` (totals
//! over the block members, so a reader can check it saw every member), `crc32c: u32 LE` of
//! the preceding payload bytes. Its size is fixed ([`TRAILER_MEMBER_LEN`] = 68 bytes), so
//! the trailer always occupies the last 68 bytes of the file.
//!
//! A file that does not start with a member carrying an `IB` or `IT` subfield is a *plain*
//! gzip (e.g. adopted from an older installation); [`probe_kind`] tells them apart so the
//! caller can convert plain files.
//!
//! Empty blocks (no lines, no bytes) are allowed: they are valid members that zcat prints
//! nothing for, usable as placeholders.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use libdeflater::{CompressionLvl, Compressor, Decompressor};

/// Most lines one block may hold; bounds the extra field (see `MAX_BLOCK_HEADER_LEN`).
pub const MAX_BLOCK_LINES: usize = 6500;
/// Bytes [`probe_kind`] needs to recognise a blocked file (or the whole file if shorter).
pub const PROBE_LEN: usize = 16;
/// Length of the trailer member, which always occupies the last bytes of a blocked file.
pub const TRAILER_MEMBER_LEN: usize = TRAILER_HEADER_LEN + TRAILER_TAIL.len();
/// Largest possible block member header (fixed part + extra field): all varints 5 bytes.
pub const MAX_BLOCK_HEADER_LEN: usize =
    FIXED_HEADER_LEN + SUBFIELD_HEADER_LEN + BLOCK_FIXED_PAYLOAD + MAX_BLOCK_LINES * 2 * 5;

const FEXTRA: u8 = 0x04;
/// ID1 ID2 CM FLG MTIME(4) XFL OS: every byte is fixed, so parsing compares them exactly.
const GZ_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, FEXTRA, 0, 0, 0, 0, 0, 3];
const FIXED_HEADER_LEN: usize = GZ_HEADER.len() + 2;
const SUBFIELD_HEADER_LEN: usize = 4;
const GZ_TAIL_LEN: usize = 8;
/// The smallest DEFLATE stream (an empty fixed-Huffman block) is 2 bytes.
const MIN_DEFLATE_LEN: usize = 2;
const VERSION: u8 = 1;
/// version, flags, block_id, lines, raw_len, member_len, base_first, base_last, crc32c.
const BLOCK_FIXED_PAYLOAD: usize = 2 + 6 * 4 + 4;
/// Offset of `member_len` inside the block payload (patched after compression).
const MEMBER_LEN_AT: usize = 14;
/// version, flags, applied_seq, generation, blocks, lines, raw_bytes, crc32c.
const TRAILER_PAYLOAD_LEN: usize = 2 + 8 + 8 + 4 + 8 + 8 + 4;
const TRAILER_HEADER_LEN: usize = FIXED_HEADER_LEN + SUBFIELD_HEADER_LEN + TRAILER_PAYLOAD_LEN;
/// Empty DEFLATE stream, CRC32 = 0, ISIZE = 0.
const TRAILER_TAIL: [u8; 10] = [0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];

const _: () = assert!(MAX_BLOCK_HEADER_LEN - FIXED_HEADER_LEN <= u16::MAX as usize);
const _: () = assert!(TRAILER_MEMBER_LEN == 68);

/// Header of one block member, as stored in its extra field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    pub block_id: u32,
    pub lines: u32,
    pub raw_len: u32,
    pub member_len: u32,
    /// Offset of the DEFLATE data from the member start (= 12 + XLEN).
    pub data_offset: u32,
    /// (first_seen, last_seen) per line, in line order.
    pub timestamps: Vec<(u32, u32)>,
}

/// Contents of the trailer member: what the file reflects, and totals to check it against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trailer {
    pub applied_seq: u64,
    pub generation: u64,
    pub blocks: u32,
    pub lines: u64,
    pub raw_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    Block(BlockHeader),
    Trailer(Trailer),
}

/// What a file looks like from its first bytes (see [`probe_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Starts with an `IB`/`IT` member: written by this module.
    Blocked,
    /// A gzip file without our index: to be converted.
    PlainGzip,
    NotGzip,
    Empty,
}

/// Codec errors. File-related variants name the absolute byte offset of the member at fault
/// (and the file path once the caller attached it with [`FormatError::with_path`]); the
/// encode-side variants (`TooManyLines`, `InvalidBlock`) concern caller input, not a file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("I/O error {}: {source}", at(.path, .offset))]
    Io {
        path: Option<PathBuf>,
        offset: u64,
        source: io::Error,
    },
    #[error("truncated tier file {}: member incomplete or missing", at(.path, .offset))]
    Truncated { path: Option<PathBuf>, offset: u64 },
    #[error("bad member header {}: {what}", at(.path, .offset))]
    BadHeader {
        path: Option<PathBuf>,
        offset: u64,
        what: String,
    },
    #[error("{what} mismatch {}: stored {stored:#010x}, computed {computed:#010x}", at(.path, .offset))]
    ChecksumMismatch {
        path: Option<PathBuf>,
        offset: u64,
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    /// The DEFLATE stream is invalid or its length disagrees with the header.
    #[error("corrupt block data {}: {what}", at(.path, .offset))]
    Corrupt {
        path: Option<PathBuf>,
        offset: u64,
        what: String,
    },
    /// Members are individually valid but do not form a valid file (trailer totals, order).
    #[error("inconsistent tier file {}: {what}", at(.path, .offset))]
    Inconsistent {
        path: Option<PathBuf>,
        offset: u64,
        what: String,
    },
    #[error("block has {lines} lines, more than MAX_BLOCK_LINES ({MAX_BLOCK_LINES})")]
    TooManyLines { lines: usize },
    #[error("invalid block input: {what}")]
    InvalidBlock { what: String },
}

fn at(path: &Option<PathBuf>, offset: &u64) -> String {
    match path {
        Some(p) => format!("in {} at offset {offset}", p.display()),
        None => format!("at offset {offset}"),
    }
}

impl FormatError {
    /// Attach the file path (errors are built where only offsets are known).
    pub fn with_path(mut self, file: impl Into<PathBuf>) -> Self {
        match &mut self {
            Self::Io { path, .. }
            | Self::Truncated { path, .. }
            | Self::BadHeader { path, .. }
            | Self::ChecksumMismatch { path, .. }
            | Self::Corrupt { path, .. }
            | Self::Inconsistent { path, .. } => *path = Some(file.into()),
            Self::TooManyLines { .. } | Self::InvalidBlock { .. } => {}
        }
        self
    }

    /// The file offset the error is about, if it concerns a file.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Io { offset, .. }
            | Self::Truncated { offset, .. }
            | Self::BadHeader { offset, .. }
            | Self::ChecksumMismatch { offset, .. }
            | Self::Corrupt { offset, .. }
            | Self::Inconsistent { offset, .. } => Some(*offset),
            Self::TooManyLines { .. } | Self::InvalidBlock { .. } => None,
        }
    }
}

fn truncated(offset: u64) -> FormatError {
    FormatError::Truncated { path: None, offset }
}
fn bad(offset: u64, what: impl fmt::Display) -> FormatError {
    FormatError::BadHeader {
        path: None,
        offset,
        what: what.to_string(),
    }
}
fn corrupt(offset: u64, what: impl fmt::Display) -> FormatError {
    FormatError::Corrupt {
        path: None,
        offset,
        what: what.to_string(),
    }
}
fn inconsistent(offset: u64, what: impl fmt::Display) -> FormatError {
    FormatError::Inconsistent {
        path: None,
        offset,
        what: what.to_string(),
    }
}
fn invalid(what: impl fmt::Display) -> FormatError {
    FormatError::InvalidBlock {
        what: what.to_string(),
    }
}
fn check_crc(
    offset: u64,
    what: &'static str,
    stored: u32,
    computed: u32,
) -> Result<(), FormatError> {
    let err = FormatError::ChecksumMismatch {
        path: None,
        offset,
        what,
        stored,
        computed,
    };
    if stored == computed {
        Ok(())
    } else {
        Err(err)
    }
}

/// `return Err(err)` unless `cond`; keeps the many format checks one line each.
macro_rules! ensure {
    ($cond:expr, $err:expr) => {
        if !$cond {
            return Err($err);
        }
    };
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bounds-checked little-endian reader over an extra-field payload.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = *self.buf.get(self.pos..)?.first_chunk::<N>()?;
        self.pos += N;
        Some(bytes)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    /// LEB128 u32; rejects encodings longer than 5 bytes or exceeding u32.
    fn varint(&mut self) -> Option<u32> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.u8()?;
            if i == 4 && b > 0x0f {
                return None;
            }
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

/// Append one block member to `out`. `raw` must be whole lines ('\n'-terminated, or empty with
/// no lines); `timestamps.len()` must equal the number of '\n' in `raw` and be
/// ≤ MAX_BLOCK_LINES, else Err. On error `out` is left as it was.
pub fn encode_block(
    c: &mut Compressor,
    block_id: u32,
    raw: &[u8],
    timestamps: &[(u32, u32)],
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let lines = timestamps.len();
    ensure!(
        lines <= MAX_BLOCK_LINES,
        FormatError::TooManyLines { lines }
    );
    let newlines = raw.iter().filter(|&&b| b == b'\n').count();
    let what = || format!("{newlines} lines but {lines} timestamps");
    ensure!(newlines == lines, invalid(what()));
    let whole_lines = raw.last().is_none_or(|&b| b == b'\n');
    ensure!(whole_lines, invalid("raw bytes do not end with '\\n'"));
    // Keeps member_len (raw + DEFLATE overhead + header) within u32.
    ensure!(
        raw.len() <= (u32::MAX / 2) as usize,
        invalid("block over 2 GiB")
    );
    let base_first = timestamps.iter().map(|t| t.0).min().unwrap_or(0);
    let base_last = timestamps.iter().map(|t| t.1).min().unwrap_or(0);

    let bound = c.deflate_compress_bound(raw.len());
    let start = out.len();
    // One allocation for the whole member: worst-case header + DEFLATE bound + gzip tail.
    out.reserve(MAX_BLOCK_HEADER_LEN.min(64 + lines * 10) + bound + GZ_TAIL_LEN);
    out.extend_from_slice(&GZ_HEADER);
    out.extend_from_slice(&[0, 0, b'I', b'B', 0, 0]); // XLEN, SI1 SI2, LEN: patched below
    let payload_start = out.len();
    out.extend_from_slice(&[VERSION, 0]);
    let raw_len = raw.len() as u32;
    // The 0 is member_len, patched below.
    for v in [block_id, lines as u32, raw_len, 0, base_first, base_last] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for &(first, last) in timestamps {
        put_varint(out, first - base_first);
        put_varint(out, last - base_last);
    }
    out.extend_from_slice(&[0; 4]); // crc32c, patched below
    let crc_at = out.len() - 4;

    let data_start = out.len();
    out.resize(data_start + bound, 0);
    let Ok(n) = c.deflate_compress(raw, &mut out[data_start..]) else {
        out.truncate(start);
        return Err(invalid("DEFLATE output exceeded its bound"));
    };
    out.truncate(data_start + n);
    out.extend_from_slice(&libdeflater::crc32(raw).to_le_bytes());
    out.extend_from_slice(&raw_len.to_le_bytes());

    // Both fit u16 by the MAX_BLOCK_HEADER_LEN assertion, member_len fits u32 by the size limit.
    let payload_len = (crc_at + 4 - payload_start) as u16;
    out[start + 10..start + 12].copy_from_slice(&(payload_len + 4).to_le_bytes());
    out[payload_start - 2..payload_start].copy_from_slice(&payload_len.to_le_bytes());
    let member_len = ((out.len() - start) as u32).to_le_bytes();
    out[payload_start + MEMBER_LEN_AT..][..4].copy_from_slice(&member_len);
    let crc = crc32c::crc32c(&out[payload_start..crc_at]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Append the trailer member for `t` to `out`.
pub fn encode_trailer(t: &Trailer, out: &mut Vec<u8>) {
    out.reserve(TRAILER_MEMBER_LEN);
    out.extend_from_slice(&GZ_HEADER);
    out.extend_from_slice(&((SUBFIELD_HEADER_LEN + TRAILER_PAYLOAD_LEN) as u16).to_le_bytes());
    out.extend_from_slice(b"IT");
    out.extend_from_slice(&(TRAILER_PAYLOAD_LEN as u16).to_le_bytes());
    let payload_start = out.len();
    out.extend_from_slice(&[VERSION, 0]);
    out.extend_from_slice(&t.applied_seq.to_le_bytes());
    out.extend_from_slice(&t.generation.to_le_bytes());
    out.extend_from_slice(&t.blocks.to_le_bytes());
    out.extend_from_slice(&t.lines.to_le_bytes());
    out.extend_from_slice(&t.raw_bytes.to_le_bytes());
    let crc = crc32c::crc32c(&out[payload_start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&TRAILER_TAIL);
}

/// Parse the member that starts at `buf[0]` (which is at absolute file offset `offset`, used in
/// errors). Needs only the gzip header + extra field; returns the member and the header length
/// (12 + XLEN). `buf` may be shorter than the member; Err(Truncated) if it is shorter than the
/// header+extra.
pub fn parse_member(buf: &[u8], offset: u64) -> Result<(Member, usize), FormatError> {
    let (gz, xlen) = buf
        .first_chunk::<FIXED_HEADER_LEN>()
        .ok_or(truncated(offset))?
        .split_at(10);
    ensure!(
        gz == GZ_HEADER,
        bad(offset, "not a tier member's gzip header")
    );
    let header_len = FIXED_HEADER_LEN + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    let extra = buf
        .get(FIXED_HEADER_LEN..header_len)
        .ok_or(truncated(offset))?;
    let Some((&[si1, si2, l0, l1], payload)) = extra.split_first_chunk::<SUBFIELD_HEADER_LEN>()
    else {
        return Err(bad(offset, "extra field shorter than a subfield header"));
    };
    let one_subfield = usize::from(u16::from_le_bytes([l0, l1])) == payload.len();
    ensure!(
        one_subfield,
        bad(offset, "extra field is not exactly one subfield")
    );
    let (body, crc) = payload
        .split_last_chunk::<4>()
        .ok_or_else(|| bad(offset, "no crc32c"))?;
    let crc = u32::from_le_bytes(*crc);
    check_crc(offset, "extra-field crc32c", crc, crc32c::crc32c(body))?;

    let mut cur = Cursor { buf: body, pos: 0 };
    let short = || bad(offset, "payload too short");
    let (version, flags) = (cur.u8().ok_or_else(short)?, cur.u8().ok_or_else(short)?);
    let what = || format!("unsupported version {version} / flags {flags:#x}");
    ensure!(version == VERSION && flags == 0, bad(offset, what()));
    let member = match [si1, si2] {
        [b'I', b'B'] => Member::Block(parse_block(&mut cur, header_len, offset)?),
        [b'I', b'T'] => Member::Trailer(Trailer {
            applied_seq: cur.u64().ok_or_else(short)?,
            generation: cur.u64().ok_or_else(short)?,
            blocks: cur.u32().ok_or_else(short)?,
            lines: cur.u64().ok_or_else(short)?,
            raw_bytes: cur.u64().ok_or_else(short)?,
        }),
        _ => return Err(bad(offset, "unknown subfield ID")),
    };
    ensure!(
        cur.pos == body.len(),
        bad(offset, "trailing bytes in payload")
    );
    Ok((member, header_len))
}

/// Rest of a block payload after version/flags; checks that the fields agree with each other.
fn parse_block(
    cur: &mut Cursor<'_>,
    header_len: usize,
    offset: u64,
) -> Result<BlockHeader, FormatError> {
    let mut field = || {
        cur.u32()
            .ok_or_else(|| bad(offset, "block payload too short"))
    };
    let (block_id, lines, raw_len) = (field()?, field()?, field()?);
    let (member_len, base_first, base_last) = (field()?, field()?, field()?);
    let what = || format!("{lines} lines, {raw_len} bytes, member_len {member_len}");
    let fits = (member_len as usize) >= header_len + MIN_DEFLATE_LEN + GZ_TAIL_LEN;
    let ok =
        lines as usize <= MAX_BLOCK_LINES && raw_len >= lines && (lines == 0) == (raw_len == 0);
    ensure!(ok && fits, bad(offset, what()));

    let bad_ts = || bad(offset, "bad timestamp varint");
    let mut timestamps = Vec::with_capacity(lines as usize);
    let (mut min_first, mut min_last) = (u32::MAX, u32::MAX);
    for _ in 0..lines {
        let (df, dl) = (
            cur.varint().ok_or_else(bad_ts)?,
            cur.varint().ok_or_else(bad_ts)?,
        );
        (min_first, min_last) = (min_first.min(df), min_last.min(dl));
        let first = base_first.checked_add(df).ok_or_else(bad_ts)?;
        timestamps.push((first, base_last.checked_add(dl).ok_or_else(bad_ts)?));
    }
    let bases_are_min = lines == 0 || (min_first == 0 && min_last == 0);
    ensure!(
        bases_are_min,
        bad(offset, "timestamp bases are not the minimum")
    );
    let data_offset = header_len as u32; // ≤ 12 + 65535
    Ok(BlockHeader {
        block_id,
        lines,
        raw_len,
        member_len,
        data_offset,
        timestamps,
    })
}

/// Inflate a whole block member (`member` = exactly member_len bytes) into `out` (cleared first,
/// resized to raw_len), verifying gzip CRC32 and ISIZE against the header. On error `out` is
/// left empty, so wrong bytes are never handed out.
/// Where the DEFLATE data of a member starts (12 + XLEN), from its first 12 bytes.
pub fn data_offset_of(member: &[u8]) -> Option<u32> {
    let x = member.get(10..12)?;
    Some(FIXED_HEADER_LEN as u32 + u32::from(u16::from_le_bytes([x[0], x[1]])))
}

pub fn decode_block(
    d: &mut Decompressor,
    member: &[u8],
    header: &BlockHeader,
    offset: u64,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    out.clear();
    let len = header.member_len as usize;
    ensure!(member.len() >= len, truncated(offset));
    ensure!(
        member.len() == len,
        bad(offset, "member longer than member_len")
    );
    // Cheap guard against reading the wrong offset; the full header was parsed by the caller.
    let data_offset = member
        .get(10..12)
        .map(|x| FIXED_HEADER_LEN + usize::from(u16::from_le_bytes([x[0], x[1]])));
    let same = member.starts_with(&GZ_HEADER) && data_offset == Some(header.data_offset as usize);
    ensure!(same, bad(offset, "member does not match its block header"));
    let (rest, &[c0, c1, c2, c3, s0, s1, s2, s3]) =
        member.split_last_chunk().ok_or(truncated(offset))?;
    let data = rest
        .get(header.data_offset as usize..)
        .ok_or(truncated(offset))?;
    let (crc, isize) = (
        u32::from_le_bytes([c0, c1, c2, c3]),
        u32::from_le_bytes([s0, s1, s2, s3]),
    );
    let raw_len = header.raw_len;
    ensure!(
        isize == raw_len,
        corrupt(offset, format_args!("ISIZE {isize} but raw_len {raw_len}"))
    );

    out.resize(header.raw_len as usize, 0);
    let result = match d.deflate_decompress(data, out) {
        Ok(n) if n == out.len() => check_crc(offset, "gzip CRC32", crc, libdeflater::crc32(out)),
        Ok(n) => Err(corrupt(
            offset,
            format_args!("inflated {n} bytes, raw_len {raw_len}"),
        )),
        Err(e) => Err(corrupt(offset, format_args!("inflate failed: {e}"))),
    };
    if result.is_err() {
        out.clear();
    }
    result
}

/// One member's place in a file, as found by `read_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedBlock {
    pub offset: u64,
    pub header: BlockHeader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIndex {
    pub blocks: Vec<IndexedBlock>,
    pub trailer: Trailer,
    pub file_len: u64,
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), FormatError> {
    file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => truncated(offset), // the file shrank under us
        _ => FormatError::Io {
            path: None,
            offset,
            source: e,
        },
    })
}

/// Walk a blocked file from offset 0 using positioned reads (each member's fixed 12-byte header,
/// then its extra field, then hop by member_len), without inflating anything. Checks: every
/// member parses, block members precede exactly one trailer member which ends exactly at EOF,
/// trailer totals (blocks, lines, raw_bytes) match the sum over blocks. Errors name the offset.
pub fn read_index(file: &File) -> Result<FileIndex, FormatError> {
    let io_err = |source| FormatError::Io {
        path: None,
        offset: 0,
        source,
    };
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut buf = Vec::with_capacity(1024); // reused: no per-member allocation but timestamps
    let mut blocks = Vec::new();
    let (mut off, mut lines, mut raw_bytes) = (0u64, 0u64, 0u64);
    loop {
        let remaining = file_len.saturating_sub(off);
        ensure!(remaining >= FIXED_HEADER_LEN as u64, truncated(off));
        buf.resize(FIXED_HEADER_LEN, 0);
        read_at(file, &mut buf, off)?;
        let header_len = FIXED_HEADER_LEN + usize::from(u16::from_le_bytes([buf[10], buf[11]]));
        // A foreign header fails in parse_member; do not read a bogus XLEN's worth for it.
        if buf.starts_with(&GZ_HEADER) {
            ensure!(remaining >= header_len as u64, truncated(off));
            buf.resize(header_len, 0);
            let extra_at = off + FIXED_HEADER_LEN as u64;
            read_at(file, &mut buf[FIXED_HEADER_LEN..], extra_at)?;
        }
        match parse_member(&buf, off)?.0 {
            Member::Block(header) => {
                ensure!(remaining >= u64::from(header.member_len), truncated(off));
                lines += u64::from(header.lines);
                raw_bytes += u64::from(header.raw_len);
                let offset = off;
                off += u64::from(header.member_len);
                blocks.push(IndexedBlock { offset, header });
            }
            Member::Trailer(trailer) => {
                ensure!(remaining >= TRAILER_MEMBER_LEN as u64, truncated(off));
                let mut tail = [0u8; TRAILER_TAIL.len()];
                read_at(file, &mut tail, off + TRAILER_HEADER_LEN as u64)?;
                ensure!(tail == TRAILER_TAIL, bad(off, "trailer data is not empty"));
                let end = off + TRAILER_MEMBER_LEN as u64;
                ensure!(end == file_len, inconsistent(end, "data after the trailer"));
                let counted = (blocks.len() as u64, lines, raw_bytes);
                let stated = (u64::from(trailer.blocks), trailer.lines, trailer.raw_bytes);
                let what = || format!("trailer totals {stated:?}, members hold {counted:?}");
                ensure!(stated == counted, inconsistent(off, what()));
                return Ok(FileIndex {
                    blocks,
                    trailer,
                    file_len,
                });
            }
        }
    }
}

/// Look at the first bytes of a file (at least [`PROBE_LEN`] of them, or the whole file if
/// shorter): `Blocked` if its first member carries an `IB`/`IT` subfield.
pub fn probe_kind(first_bytes: &[u8]) -> Kind {
    if first_bytes.is_empty() {
        return Kind::Empty;
    }
    if !first_bytes.starts_with(&[0x1f, 0x8b, 0x08]) {
        return Kind::NotGzip;
    }
    let (Some(flg), Some(&[x0, x1])) = (first_bytes.get(3), first_bytes.get(10..12)) else {
        return Kind::PlainGzip;
    };
    if flg & FEXTRA == 0 {
        return Kind::PlainGzip;
    }
    // Walk the subfields that are both inside XLEN and inside the bytes we were given.
    let end = first_bytes
        .len()
        .min(FIXED_HEADER_LEN + usize::from(u16::from_le_bytes([x0, x1])));
    let mut rest = first_bytes.get(FIXED_HEADER_LEN..end).unwrap_or(&[]);
    while let Some((&[si1, si2, l0, l1], payload)) = rest.split_first_chunk::<4>() {
        if si1 == b'I' && (si2 == b'B' || si2 == b'T') {
            return Kind::Blocked;
        }
        rest = payload
            .get(usize::from(u16::from_le_bytes([l0, l1]))..)
            .unwrap_or(&[]);
    }
    Kind::PlainGzip
}

/// Writes a whole file image (blocks then trailer) into a Vec — a convenience used by tests and
/// by small rewrites. Keeps the totals the trailer must state.
pub struct FileBuilder {
    compressor: Compressor,
    buf: Vec<u8>,
    totals: Trailer,
}

impl FileBuilder {
    pub fn new(level: CompressionLvl) -> Self {
        let compressor = Compressor::new(level);
        Self {
            compressor,
            buf: Vec::new(),
            totals: Trailer::default(),
        }
    }

    /// Offset at which the next member will start.
    pub fn position(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Compress and append one block (see [`encode_block`]).
    pub fn push_block(
        &mut self,
        block_id: u32,
        raw: &[u8],
        ts: &[(u32, u32)],
    ) -> Result<(), FormatError> {
        ensure!(self.totals.blocks < u32::MAX, invalid("too many blocks"));
        encode_block(&mut self.compressor, block_id, raw, ts, &mut self.buf)?;
        self.count(ts.len() as u64, raw.len() as u64);
        Ok(())
    }

    /// Copy an existing compressed block member verbatim (moving blocks between tiers without
    /// recompressing). `bytes` must be exactly the member `header` was parsed from: it is
    /// re-parsed and compared, since a mismatch would corrupt the new file.
    pub fn push_raw_member(
        &mut self,
        bytes: &[u8],
        header: &BlockHeader,
    ) -> Result<(), FormatError> {
        ensure!(self.totals.blocks < u32::MAX, invalid("too many blocks"));
        let same_len = bytes.len() == header.member_len as usize;
        match parse_member(bytes, 0) {
            Ok((Member::Block(parsed), _)) if same_len && parsed == *header => {}
            Ok(_) => return Err(invalid("member bytes do not match the given header")),
            Err(e) => return Err(invalid(format_args!("member bytes do not parse: {e}"))),
        }
        self.buf.extend_from_slice(bytes);
        self.count(u64::from(header.lines), u64::from(header.raw_len));
        Ok(())
    }

    /// Append the trailer and return the file image.
    pub fn finish(mut self, applied_seq: u64, generation: u64) -> Vec<u8> {
        let trailer = Trailer {
            applied_seq,
            generation,
            ..self.totals
        };
        encode_trailer(&trailer, &mut self.buf);
        self.buf
    }

    fn count(&mut self, lines: u64, raw_bytes: u64) {
        self.totals.blocks += 1; // < u32::MAX, checked before appending
        self.totals.lines += lines;
        self.totals.raw_bytes += raw_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// xorshift64*: deterministic test data without a rand dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// `n` IOC-like lines and plausible (first_seen, last_seen) pairs.
    fn block(rng: &mut Rng, n: usize) -> (Vec<u8>, Vec<(u32, u32)>) {
        let mut raw = Vec::new();
        let mut ts = Vec::new();
        for _ in 0..n {
            let line = match rng.below(3) {
                0 => format!(
                    "10.{}.{}.{}",
                    rng.below(256),
                    rng.below(256),
                    rng.below(256)
                ),
                1 => format!("evil{}.example.com", rng.below(100_000)),
                _ => format!("{:016x}{:016x}", rng.next(), rng.next()),
            };
            raw.extend_from_slice(line.as_bytes());
            raw.push(b'\n');
            let first = 1_700_000_000 + rng.below(1_000_000) as u32;
            ts.push((first, first + rng.below(100_000) as u32));
        }
        (raw, ts)
    }

    type Blocks = Vec<(Vec<u8>, Vec<(u32, u32)>)>;

    /// Blocks with 0, 1, 7, 60 lines plus one with extreme timestamps.
    fn sample_blocks() -> Blocks {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut blocks: Blocks = [0, 1, 7, 60].iter().map(|&n| block(&mut rng, n)).collect();
        blocks.push((
            b"a\nbb\n\n".to_vec(),
            vec![(0, u32::MAX), (u32::MAX, 0), (5, 5)],
        ));
        blocks
    }

    fn build(blocks: &Blocks) -> Vec<u8> {
        let mut b = FileBuilder::new(CompressionLvl::new(6).unwrap());
        for (i, (raw, ts)) in blocks.iter().enumerate() {
            b.push_block(100 + i as u32, raw, ts).unwrap();
        }
        b.finish(42, 0xdead_beef)
    }

    fn temp_file(bytes: &[u8]) -> File {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(bytes, 0).unwrap();
        f
    }

    fn member(image: &[u8], b: &IndexedBlock) -> Vec<u8> {
        image[b.offset as usize..][..b.header.member_len as usize].to_vec()
    }

    /// Index + decode everything, concatenating block contents.
    fn decode_all(file: &File) -> Result<Vec<u8>, FormatError> {
        let index = read_index(file)?;
        let mut d = Decompressor::new();
        let (mut all, mut out) = (Vec::new(), Vec::new());
        for b in &index.blocks {
            let mut m = vec![0; b.header.member_len as usize];
            file.read_exact_at(&mut m, b.offset).unwrap();
            decode_block(&mut d, &m, &b.header, b.offset, &mut out)?;
            all.extend_from_slice(&out);
        }
        Ok(all)
    }

    fn concat(blocks: &Blocks) -> Vec<u8> {
        blocks
            .iter()
            .flat_map(|(raw, _)| raw.iter().copied())
            .collect()
    }

    #[test]
    fn round_trip() {
        let blocks = sample_blocks();
        let image = build(&blocks);
        let index = read_index(&temp_file(&image)).unwrap();
        assert_eq!(index.file_len, image.len() as u64);
        let total_lines: usize = blocks.iter().map(|b| b.1.len()).sum();
        let total_raw: usize = blocks.iter().map(|b| b.0.len()).sum();
        assert_eq!(
            index.trailer,
            Trailer {
                applied_seq: 42,
                generation: 0xdead_beef,
                blocks: 5,
                lines: total_lines as u64,
                raw_bytes: total_raw as u64
            }
        );
        assert_eq!(index.blocks.len(), blocks.len());
        let mut d = Decompressor::new();
        let mut out = vec![1, 2, 3];
        let mut expected_offset = 0;
        for (i, (b, (raw, ts))) in index.blocks.iter().zip(&blocks).enumerate() {
            assert_eq!(b.offset, expected_offset);
            expected_offset += u64::from(b.header.member_len);
            assert_eq!(b.header.block_id, 100 + i as u32);
            assert_eq!(b.header.lines as usize, ts.len());
            assert_eq!(b.header.raw_len as usize, raw.len());
            assert_eq!(&b.header.timestamps, ts);
            let m = member(&image, b);
            let (parsed, header_len) = parse_member(&m, b.offset).unwrap();
            assert_eq!(parsed, Member::Block(b.header.clone()));
            assert_eq!(header_len, b.header.data_offset as usize);
            decode_block(&mut d, &m, &b.header, b.offset, &mut out).unwrap();
            assert_eq!(&out, raw);
        }
        // The trailer is always the last TRAILER_MEMBER_LEN bytes.
        assert_eq!(expected_offset + TRAILER_MEMBER_LEN as u64, index.file_len);
        let (t, len) =
            parse_member(&image[image.len() - TRAILER_MEMBER_LEN..], expected_offset).unwrap();
        assert_eq!(
            (t, len),
            (Member::Trailer(index.trailer), TRAILER_MEMBER_LEN - 10)
        );
    }

    #[test]
    fn zcat_compatible() {
        let blocks = sample_blocks();
        let image = build(&blocks);
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(&image[..])
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text, concat(&blocks));

        let gzip = std::path::Path::new("/usr/bin/gzip");
        if !gzip.exists() {
            eprintln!("skipping gzip -dc/-t check: /usr/bin/gzip is absent");
            return;
        }
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut tmp, &image).unwrap();
        let dc = std::process::Command::new(gzip)
            .arg("-dc")
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(
            dc.status.success(),
            "gzip -dc: {}",
            String::from_utf8_lossy(&dc.stderr)
        );
        assert_eq!(dc.stdout, text);
        let t = std::process::Command::new(gzip)
            .arg("-t")
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(
            t.status.success(),
            "gzip -t: {}",
            String::from_utf8_lossy(&t.stderr)
        );
        assert!(
            t.stderr.is_empty(),
            "gzip -t warns: {}",
            String::from_utf8_lossy(&t.stderr)
        );
    }

    #[test]
    fn push_raw_member_copies_verbatim() {
        let blocks = sample_blocks();
        let src = build(&blocks);
        let src_index = read_index(&temp_file(&src)).unwrap();

        let mut rng = Rng(7);
        let (raw, ts) = block(&mut rng, 30);
        let mut b = FileBuilder::new(CompressionLvl::new(1).unwrap());
        b.push_block(1, &raw, &ts).unwrap();
        let moved = &src_index.blocks[3];
        let moved_at = b.position();
        b.push_raw_member(&member(&src, moved), &moved.header)
            .unwrap();
        // Mismatched bytes/header pairs are refused rather than written.
        let other = &src_index.blocks[2];
        assert!(b
            .push_raw_member(&member(&src, other), &moved.header)
            .is_err());
        assert!(b
            .push_raw_member(&member(&src, moved)[1..], &moved.header)
            .is_err());
        let image = b.finish(9, 10);

        let file = temp_file(&image);
        let index = read_index(&file).unwrap();
        assert_eq!(index.trailer.blocks, 2);
        assert_eq!(index.trailer.lines, 30 + moved.header.lines as u64);
        assert_eq!(
            index.trailer.raw_bytes,
            (raw.len() + moved.header.raw_len as usize) as u64
        );
        assert_eq!(
            index.blocks[1],
            IndexedBlock {
                offset: moved_at,
                header: moved.header.clone()
            }
        );
        let mut expected = raw.clone();
        expected.extend_from_slice(&blocks[3].0);
        assert_eq!(decode_all(&file).unwrap(), expected);
    }

    /// Flip every bit of each block's DEFLATE data and gzip tail: decoding must fail, except
    /// for flips of unused padding bits, which must still give exactly the original bytes.
    #[test]
    fn data_bit_flips_never_yield_wrong_bytes() {
        let blocks = sample_blocks();
        let image = build(&blocks);
        let index = read_index(&temp_file(&image)).unwrap();
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        for (b, (raw, _)) in index.blocks.iter().zip(&blocks) {
            let m = member(&image, b);
            let mut harmless = 0;
            for bit in b.header.data_offset as usize * 8..m.len() * 8 {
                let mut bad = m.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                match decode_block(&mut d, &bad, &b.header, b.offset, &mut out) {
                    Ok(()) => {
                        assert_eq!(&out, raw, "bit {bit} gave wrong bytes");
                        assert!(
                            bit < (m.len() - GZ_TAIL_LEN) * 8,
                            "gzip tail bit {bit} not checked"
                        );
                        harmless += 1;
                    }
                    Err(e) => {
                        assert!(out.is_empty());
                        assert_eq!(e.offset(), Some(b.offset));
                    }
                }
            }
            // Padding bits only: at most the stored-block header padding plus the final byte.
            assert!(
                harmless <= 12,
                "{harmless} undetected flips in block {}",
                b.header.block_id
            );
        }
    }

    /// The header and extra field are fully fixed or crc32c-protected: any flip is caught by
    /// `parse_member`, and by `read_index`.
    #[test]
    fn header_bit_flips_detected() {
        let image = build(&sample_blocks());
        let index = read_index(&temp_file(&image)).unwrap();
        let trailer_at = image.len() - TRAILER_MEMBER_LEN;
        let mut ranges: Vec<(usize, usize)> = index
            .blocks
            .iter()
            .map(|b| (b.offset as usize, b.header.data_offset as usize))
            .collect();
        ranges.push((trailer_at, TRAILER_MEMBER_LEN - 10));
        let file = tempfile::tempfile().unwrap();
        for (start, header_len) in ranges {
            for bit in 0..header_len * 8 {
                let mut bad = image.clone();
                bad[start + bit / 8] ^= 1 << (bit % 8);
                // A flip in XLEN or member_len may move the parse elsewhere; it must still fail.
                if let Ok((m, _)) = parse_member(&bad[start..], start as u64) {
                    panic!("flip of bit {bit} at member {start} parsed as {m:?}");
                }
                file.set_len(0).unwrap();
                file.write_all_at(&bad, 0).unwrap();
                let err = read_index(&file).unwrap_err();
                assert!(err.to_string().contains("offset"), "{err}");
            }
        }
    }

    /// Whole-file fuzz: every single-bit flip anywhere ends in an error or the exact content.
    #[test]
    fn any_bit_flip_errors_or_returns_original() {
        let blocks = sample_blocks();
        let image = build(&blocks);
        let expected = concat(&blocks);
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(&image, 0).unwrap();
        for bit in 0..image.len() * 8 {
            let byte = bit / 8;
            let flipped = [image[byte] ^ (1 << (bit % 8))];
            file.write_all_at(&flipped, byte as u64).unwrap();
            if let Ok(all) = decode_all(&file) {
                assert_eq!(all, expected, "bit {bit}");
            }
            file.write_all_at(&image[byte..byte + 1], byte as u64)
                .unwrap();
        }
    }

    #[test]
    fn truncation_at_every_offset_errors() {
        let image = build(&sample_blocks());
        let file = tempfile::tempfile().unwrap();
        for len in 0..image.len() {
            file.set_len(0).unwrap();
            file.write_all_at(&image[..len], 0).unwrap();
            let err = read_index(&file).unwrap_err();
            assert!(
                matches!(err, FormatError::Truncated { .. }),
                "len {len}: {err}"
            );
            assert!(err.offset().unwrap() <= len as u64);
            let err = err.with_path("/data/t1/ip.txt.gz");
            assert!(
                err.to_string().contains("in /data/t1/ip.txt.gz at offset"),
                "{err}"
            );
        }
        // parse_member needs header + extra; less is Truncated.
        let b = read_index(&temp_file(&image)).unwrap().blocks[2].clone();
        let m = &image[b.offset as usize..];
        let hl = b.header.data_offset as usize;
        for len in 0..hl {
            let err = parse_member(&m[..len], b.offset).unwrap_err();
            assert!(
                matches!(err, FormatError::Truncated { offset, .. } if offset == b.offset),
                "{err}"
            );
        }
        assert!(parse_member(&m[..hl], b.offset).is_ok());
    }

    #[test]
    fn file_structure_errors() {
        let blocks = sample_blocks();
        let mut c = Compressor::new(CompressionLvl::new(6).unwrap());
        let mut one = Vec::new();
        encode_block(&mut c, 1, &blocks[2].0, &blocks[2].1, &mut one).unwrap();
        let good = Trailer {
            applied_seq: 1,
            generation: 2,
            blocks: 1,
            lines: 7,
            raw_bytes: blocks[2].0.len() as u64,
        };
        let image = |t: Option<Trailer>, extra: &[u8]| {
            let mut v = one.clone();
            if let Some(t) = t {
                encode_trailer(&t, &mut v);
            }
            v.extend_from_slice(extra);
            read_index(&temp_file(&v))
        };
        assert!(image(Some(good), b"").is_ok());
        assert!(matches!(
            image(None, b""),
            Err(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            image(Some(Trailer { lines: 8, ..good }), b""),
            Err(FormatError::Inconsistent { .. })
        ));
        assert!(matches!(
            image(Some(Trailer { blocks: 0, ..good }), b""),
            Err(FormatError::Inconsistent { .. })
        ));
        assert!(matches!(
            image(
                Some(Trailer {
                    raw_bytes: 1,
                    ..good
                }),
                b""
            ),
            Err(FormatError::Inconsistent { .. })
        ));
        assert!(matches!(
            image(Some(good), &one),
            Err(FormatError::Inconsistent { .. })
        ));
        assert!(matches!(
            image(Some(good), b"\0"),
            Err(FormatError::Inconsistent { .. })
        ));
        let mut second = Vec::new();
        encode_trailer(&good, &mut second);
        assert!(matches!(
            image(Some(good), &second),
            Err(FormatError::Inconsistent { .. })
        ));
        // A plain gzip member in the middle is named by its offset.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"x\n").unwrap();
        let plain = gz.finish().unwrap();
        let mut v = one.clone();
        v.extend_from_slice(&plain);
        encode_trailer(&good, &mut v);
        let err = read_index(&temp_file(&v)).unwrap_err();
        assert!(
            matches!(err, FormatError::BadHeader { offset, .. } if offset == one.len() as u64),
            "{err}"
        );
    }

    #[test]
    fn varint_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            (1 << 28) - 1,
            1 << 28,
            u32::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert!(buf.len() <= 5);
            let mut cur = Cursor { buf: &buf, pos: 0 };
            assert_eq!(cur.varint(), Some(v));
            assert_eq!(cur.pos, buf.len());
        }
        // Overflowing u32, over-long and cut-short encodings are rejected.
        for bad in [
            &[0xff, 0xff, 0xff, 0xff, 0x10][..],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            &[0x80],
        ] {
            assert_eq!(Cursor { buf: bad, pos: 0 }.varint(), None);
        }
        // Full-range deltas through a block header.
        let ts = vec![(0, u32::MAX), (u32::MAX, 0), (0, 0), (u32::MAX, u32::MAX)];
        let mut out = Vec::new();
        encode_block(
            &mut Compressor::default(),
            0,
            b"1\n2\n3\n4\n",
            &ts,
            &mut out,
        )
        .unwrap();
        let (Member::Block(h), _) = parse_member(&out, 0).unwrap() else {
            panic!()
        };
        assert_eq!(h.timestamps, ts);
    }

    #[test]
    fn max_block_lines_boundary() {
        let mut c = Compressor::new(CompressionLvl::new(1).unwrap());
        // Worst case: every delta needs 5 bytes.
        let ts: Vec<(u32, u32)> = (0..MAX_BLOCK_LINES as u32 + 1)
            .map(|i| {
                if i == 0 {
                    (0, 0)
                } else {
                    (u32::MAX - i, u32::MAX - i)
                }
            })
            .collect();
        let raw = vec![b'\n'; MAX_BLOCK_LINES + 1];
        let mut out = vec![9];
        let err = encode_block(&mut c, 0, &raw, &ts, &mut out).unwrap_err();
        assert!(matches!(err, FormatError::TooManyLines { lines: 6501 }));
        assert_eq!(out, [9]);
        out.clear();
        encode_block(&mut c, 0, &raw[1..], &ts[1..], &mut out).unwrap();
        encode_block(
            &mut c,
            0,
            &raw[..MAX_BLOCK_LINES],
            &ts[..MAX_BLOCK_LINES],
            &mut Vec::new(),
        )
        .unwrap();
        let mut w = Vec::new();
        encode_block(
            &mut c,
            0,
            &raw[..MAX_BLOCK_LINES],
            &ts[..MAX_BLOCK_LINES],
            &mut w,
        )
        .unwrap();
        let (Member::Block(h), header_len) = parse_member(&w, 0).unwrap() else {
            panic!()
        };
        assert_eq!(h.lines as usize, MAX_BLOCK_LINES);
        // Line 0 has (0, 0) deltas (1 byte each), every other line 5-byte deltas.
        assert_eq!(header_len, MAX_BLOCK_HEADER_LEN - 2 * (5 - 1));
        assert!(MAX_BLOCK_HEADER_LEN - FIXED_HEADER_LEN <= usize::from(u16::MAX));
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(&w[..])
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text, raw[..MAX_BLOCK_LINES]);
    }

    #[test]
    fn encode_rejects_bad_input() {
        let mut c = Compressor::default();
        let mut out = b"keep".to_vec();
        for (raw, ts) in [
            (&b"a\nb"[..], &[(1, 1)][..]),
            (b"a\nb\n", &[(1, 1)]),
            (b"a", &[]),
            (b"", &[(1, 1)]),
        ] {
            let err = encode_block(&mut c, 0, raw, ts, &mut out).unwrap_err();
            assert!(matches!(err, FormatError::InvalidBlock { .. }), "{err}");
            assert_eq!(out, b"keep");
        }
        // Empty blocks are allowed, and decode to nothing.
        encode_block(&mut c, 3, b"", &[], &mut out).unwrap();
        let (Member::Block(h), _) = parse_member(&out[4..], 4).unwrap() else {
            panic!()
        };
        let mut text = vec![1];
        decode_block(&mut Decompressor::new(), &out[4..], &h, 4, &mut text).unwrap();
        assert!(text.is_empty());
    }

    #[test]
    fn probe() {
        let image = build(&sample_blocks());
        assert_eq!(probe_kind(&image[..PROBE_LEN]), Kind::Blocked);
        assert_eq!(probe_kind(&image), Kind::Blocked);
        let mut trailer_only = Vec::new();
        encode_trailer(
            &Trailer {
                applied_seq: 0,
                generation: 0,
                blocks: 0,
                lines: 0,
                raw_bytes: 0,
            },
            &mut trailer_only,
        );
        assert_eq!(probe_kind(&trailer_only), Kind::Blocked);
        assert!(read_index(&temp_file(&trailer_only))
            .unwrap()
            .blocks
            .is_empty());

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"1.2.3.4\nexample.com\n").unwrap();
        let plain = gz.finish().unwrap();
        assert_eq!(probe_kind(&plain), Kind::PlainGzip);
        assert_eq!(probe_kind(&plain[..PROBE_LEN]), Kind::PlainGzip);
        // A gzip with an unrelated extra subfield (BGZF-like) is still plain.
        let mut bgzf = plain.clone();
        bgzf[3] |= FEXTRA;
        bgzf.splice(10..10, [6, 0, b'B', b'C', 2, 0, 0, 0]);
        assert_eq!(probe_kind(&bgzf), Kind::PlainGzip);
        let mut rng = Rng(99);
        let random: Vec<u8> = (0..64).map(|_| rng.next() as u8).collect();
        assert_eq!(probe_kind(&random), Kind::NotGzip);
        assert_eq!(probe_kind(&[0x1f]), Kind::NotGzip);
        assert_eq!(probe_kind(&[]), Kind::Empty);
        assert!(read_index(&temp_file(&plain)).is_err());
    }
}
