//! The committed form of a live set: `DATA/live/<type>.txt` (the raw lines, exactly what the
//! mount serves) and its sidecar `DATA/live/.<type>.txt.meta` holding what plain text can't:
//!
//! ```text
//!  0   8  magic "IOCFSLV1"
//!  8   8  applied_seq u64 LE        the WAL sequence the pair reflects
//! 16   8  generation u64 LE         random id of this commit of the pair
//! 24   8  lines u64 LE
//! 32   8  text_len u64 LE           length of the .txt file
//! 40   4  text_crc u32 LE           CRC32C of the .txt file
//! 44  8n  per line: first_seen u32 LE, last_seen u32 LE
//! ..   4  CRC32C of everything before
//! ```
//! Both files are written by the same journaled group commit, so they always match; the
//! CRC of the text lets recovery prove it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::store::live::Times;

const MAGIC: &[u8; 8] = b"IOCFSLV1";
const HEADER: usize = 44;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveMeta {
    pub applied_seq: u64,
    pub generation: u64,
    pub lines: u64,
    pub text_len: u64,
    pub text_crc: u32,
}

pub fn meta_name(text_name: &str) -> String {
    format!(".{text_name}.meta")
}

pub fn encode(meta: &LiveMeta, times: &[Times]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + times.len() * 8 + 4);
    out.extend_from_slice(MAGIC);
    for v in [meta.applied_seq, meta.generation, meta.lines, meta.text_len] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&meta.text_crc.to_le_bytes());
    for (first, last) in times {
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&last.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode(bytes: &[u8], path: &Path) -> Result<(LiveMeta, Vec<Times>)> {
    let bad = |what: &str| Error::corruption(path, None, what.to_string());
    if bytes.len() < HEADER + 4 || &bytes[..8] != MAGIC {
        return Err(bad("not an iocfs live metadata file"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(bad("checksum mismatch"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap_or([0; 4]));
    let meta = LiveMeta {
        applied_seq: u64_at(8),
        generation: u64_at(16),
        lines: u64_at(24),
        text_len: u64_at(32),
        text_crc: u32_at(40),
    };
    let per_line = &body[HEADER..];
    if per_line.len() % 8 != 0 || (per_line.len() / 8) as u64 != meta.lines {
        return Err(bad("line count does not match the times table"));
    }
    let times = per_line
        .chunks_exact(8)
        .map(|c| {
            (
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    Ok((meta, times))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detects_damage() {
        let meta = LiveMeta {
            applied_seq: 9,
            generation: 77,
            lines: 2,
            text_len: 16,
            text_crc: 5,
        };
        let bytes = encode(&meta, &[(1, 2), (3, 4)]);
        assert_eq!(
            decode(&bytes, Path::new("m")).unwrap(),
            (meta, vec![(1, 2), (3, 4)])
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 4;
            assert!(decode(&bad, Path::new("m")).is_err(), "flip at {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1], Path::new("m")).is_err());
    }
}
