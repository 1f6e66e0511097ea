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
//!   caller: [`level_for`] the type), then the gzip trailer CRC32 (of the raw bytes) and
//!   ISIZE (raw_len mod 2^32), both LE.
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

mod decode;
mod encode;
mod index;

use std::fmt;
use std::io;
use std::path::PathBuf;

pub use decode::{data_offset_of, decode_block, decode_block_into, parse_member, probe_kind};
pub use encode::{encode_block, encode_trailer, level_for, FileBuilder};
pub use index::{read_index, FileIndex, IndexedBlock};

/// Most lines one block may hold; bounds the extra field (see `MAX_BLOCK_HEADER_LEN`).
pub const MAX_BLOCK_LINES: usize = 6500;
/// Most raw bytes one block may hold, 16 MiB: the largest `tiers.block_size` the config
/// accepts (a block is filled up to it; a line alone can't exceed it). A header claiming
/// more is damage, refused before anything of that size is allocated.
pub const MAX_RAW_LEN: u32 = 16 << 20;

/// Most bytes a member of `raw_len` raw bytes can take: its header, DEFLATE's worst case
/// (stored blocks: 5 bytes per 64 KiB) with room to spare, and the gzip tail.
pub fn max_member_len(raw_len: u32) -> u64 {
    MAX_BLOCK_HEADER_LEN as u64 + u64::from(raw_len) + u64::from(raw_len) / 8192 + 1024
}
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
// Lets the submodules import the macro by path (`use super::ensure`).
use ensure;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::real::RealFile;
    use crate::disk::FileHandle;

    use libdeflater::{CompressionLvl, Decompressor};

    /// xorshift64*: deterministic test data without a rand dependency.
    pub(super) struct Rng(pub(super) u64);
    impl Rng {
        pub(super) fn next(&mut self) -> u64 {
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
    pub(super) fn block(rng: &mut Rng, n: usize) -> (Vec<u8>, Vec<(u32, u32)>) {
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
    pub(super) fn sample_blocks() -> Blocks {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut blocks: Blocks = [0, 1, 7, 60].iter().map(|&n| block(&mut rng, n)).collect();
        blocks.push((
            b"a\nbb\n\n".to_vec(),
            vec![(0, u32::MAX), (u32::MAX, 0), (5, 5)],
        ));
        blocks
    }

    pub(super) fn build(blocks: &Blocks) -> Vec<u8> {
        let mut b = FileBuilder::new(CompressionLvl::new(6).unwrap());
        for (i, (raw, ts)) in blocks.iter().enumerate() {
            b.push_block(100 + i as u32, raw, ts).unwrap();
        }
        b.finish(42, 0xdead_beef)
    }

    /// A file of the real file system holding `bytes`, as the engine opens one.
    pub(crate) fn temp_file(bytes: &[u8]) -> RealFile {
        let f = RealFile::new(tempfile::tempfile().unwrap(), "(test)");
        f.write_all_at(bytes, 0).unwrap();
        f
    }

    pub(super) fn member(image: &[u8], b: &IndexedBlock) -> Vec<u8> {
        image[b.offset as usize..][..b.header.member_len as usize].to_vec()
    }

    /// Index + decode everything, concatenating block contents.
    pub(super) fn decode_all(file: &dyn FileHandle) -> Result<Vec<u8>, FormatError> {
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

    pub(super) fn concat(blocks: &Blocks) -> Vec<u8> {
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

    /// Whole-file fuzz: every single-bit flip anywhere ends in an error or the exact content.
    #[test]
    fn any_bit_flip_errors_or_returns_original() {
        let blocks = sample_blocks();
        let image = build(&blocks);
        let expected = concat(&blocks);
        let file = temp_file(&image);
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
}
