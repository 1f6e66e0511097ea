//! WAL segment files: `DATA/wal/<first seq, 20 digits>.wal`, each a 16-byte header
//! (`IOCFSWAL`, format version u32 LE, CRC32C of the previous 12 bytes) followed by records.
//!
//! Scanning a segment tells a torn tail (the last write was cut by a crash: truncate it) from
//! corruption (a bad record with valid records after it: refuse to guess). A segment may end
//! in zeros the writer filled ahead of its records; they are its unused end, not a record.

use std::path::{Path, PathBuf};

use super::record::{self, Decoded, HEADER_LEN as RECORD_HEADER_LEN};
use crate::disk::Disk;
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"IOCFSWAL";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 16;
const SUFFIX: &str = ".wal";

/// Whether a segment's bytes hold no valid record (an incomplete, zero or whole header
/// followed by nothing valid).
pub fn holds_no_record(bytes: &[u8], path: &Path) -> bool {
    match scan(bytes, path, None, true) {
        Ok(found) => found.records.is_empty(),
        Err(_) => bytes.iter().all(|&b| b == 0),
    }
}

pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SUFFIX}")
}

/// The first sequence number encoded in a segment's name.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A record found by a scan: its sequence number and where its payload lies in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub seq: u64,
    pub payload: std::ops::Range<usize>,
}

#[derive(Debug)]
pub struct Scan {
    pub records: Vec<Found>,
    /// Bytes of the segment that hold a valid header and valid records.
    pub valid_len: usize,
    /// Why the bytes after `valid_len` were not accepted (a torn tail), if any.
    pub torn: Option<String>,
}

/// Scan a whole segment. `next_seq` is the sequence the first record must carry (None when
/// any start is acceptable, i.e. the first segment after WAL retirement). `is_last`: only the
/// last segment may end in a torn record.
pub fn scan(bytes: &[u8], path: &Path, mut next_seq: Option<u64>, is_last: bool) -> Result<Scan> {
    let torn_or_corrupt = |offset: usize, what: String| -> Result<Scan> {
        if is_last {
            Ok(Scan {
                records: Vec::new(),
                valid_len: offset,
                torn: Some(what),
            })
        } else {
            Err(Error::corruption(path, Some(offset as u64), what))
        }
    };
    match bytes.get(..HEADER_LEN) {
        None => return torn_or_corrupt(0, "segment header incomplete".into()),
        // A new segment's header is fsync'd before any record goes to it: zeros there are a
        // creation that a power cut interrupted, and only the last segment can be that new.
        Some(h) if is_last && h.iter().all(|&b| b == 0) => {
            return torn_or_corrupt(0, "segment header never written".into())
        }
        Some(h) if h != header() => {
            return Err(Error::corruption(
                path,
                Some(0),
                "bad segment header (not an iocfs WAL segment, or a newer format)",
            ));
        }
        Some(_) => {}
    }
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let why = match record::decode(rest) {
            Decoded::Record { seq, total_len, .. } => {
                if let Some(expected) = next_seq {
                    if seq != expected {
                        return Err(Error::corruption(
                            path,
                            Some(pos as u64),
                            format!("record sequence {seq} where {expected} was expected"),
                        ));
                    }
                }
                records.push(Found {
                    seq,
                    payload: pos + RECORD_HEADER_LEN..pos + total_len,
                });
                next_seq = Some(seq + 1);
                pos += total_len;
                continue;
            }
            Decoded::Incomplete => "incomplete record",
            Decoded::Bad(why) => why,
        };
        // Zeros to the end: space the writer had zero-filled ahead of its appends (see
        // `WalFiles::append`), not a record.
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        // A bad record. If any valid record follows, this is damage in the middle of the log,
        // unless a page between them reads as zeros: a write a power cut lost while a later
        // page of the same unsynced write reached the disk (a torn tail, in the last segment).
        if let Some(at) = super::damage::find_valid_record_after(bytes, pos, next_seq)
            .filter(|&at| !(is_last && lost_page_between(bytes, pos, at)))
        {
            return Err(Error::corruption(
                path,
                Some(pos as u64),
                format!("{why}, followed by a valid record at offset {at}"),
            ));
        }
        let mut scan = torn_or_corrupt(pos, format!("{why} at offset {pos}"))?;
        scan.records = records;
        return Ok(scan);
    }
    Ok(Scan {
        records,
        valid_len: pos,
        torn: None,
    })
}

/// What a lost write leaves between a bad record at `bad` and a valid one at `valid`: a
/// page (4 KiB, aligned in the file) that reads as zeros from `bad`, or from its start, to
/// its end. Records are written once, over zeros (the zero fill, or a size extended past
/// what reached the disk), so an unwritten page reads as zeros. A record's own bytes can't:
/// a header has a nonzero sequence, a payload is text and times, never a zero page.
fn lost_page_between(bytes: &[u8], bad: usize, valid: usize) -> bool {
    const PAGE: usize = 4096;
    let mut page = bad / PAGE * PAGE;
    while page < valid {
        let (from, end) = (page.max(bad), (page + PAGE).min(bytes.len()));
        if from < end && bytes[from..end].iter().all(|&b| b == 0) {
            return true;
        }
        page += PAGE;
    }
    false
}

/// Segments in a directory, sorted by first sequence number.
pub fn list(disk: &Disk, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = disk
        .read_dir(dir)
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
    for entry in entries {
        if let Some(first) = entry.name.to_str().and_then(parse_name) {
            found.push((first, dir.join(&entry.name)));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut buf = header().to_vec();
        for (seq, payload) in records {
            record::encode(*seq, payload, &mut buf);
        }
        buf
    }

    #[test]
    fn a_last_segment_whose_header_a_power_cut_lost_is_torn_not_corrupt() {
        let zeros = [0u8; HEADER_LEN];
        let found = scan(&zeros, Path::new("s"), Some(1), true).unwrap();
        assert_eq!((found.valid_len, found.records.len()), (0, 0));
        assert!(found.torn.is_some());
        assert!(scan(&zeros, Path::new("s"), Some(1), false).is_err());
        let mut flipped = header();
        flipped[3] ^= 1;
        assert!(scan(&flipped, Path::new("s"), Some(1), true).is_err());
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert_eq!(parse_name("42.wal"), None);
        assert_eq!(parse_name("00000000000000000042.tmp"), None);
    }

    #[test]
    fn clean_segment_scans_fully() {
        let buf = segment(&[(5, b"a"), (6, b"bb"), (7, b"")]);
        let scan = scan(&buf, Path::new("s"), Some(5), true).unwrap();
        assert_eq!(
            scan.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![5, 6, 7]
        );
        assert_eq!(&buf[scan.records[1].payload.clone()], b"bb");
        assert_eq!(scan.valid_len, buf.len());
        assert!(scan.torn.is_none());
    }

    #[test]
    fn torn_tail_at_every_offset_of_last_record_is_truncated() {
        let full = segment(&[(1, b"first record"), (2, b"second record")]);
        let keep = segment(&[(1, b"first record")]).len();
        for cut in keep..full.len() {
            let scan = scan(&full[..cut], Path::new("s"), Some(1), true).unwrap();
            assert_eq!(scan.records.len(), 1, "cut {cut}");
            assert_eq!(scan.valid_len, keep);
            assert_eq!(scan.torn.is_some(), cut > keep);
        }
    }

    #[test]
    fn torn_tail_in_a_middle_segment_is_corruption() {
        let full = segment(&[(1, b"first record"), (2, b"second record")]);
        let err = scan(&full[..full.len() - 3], Path::new("seg"), Some(1), false).unwrap_err();
        assert!(err.to_string().contains("seg"), "{err}");
    }

    #[test]
    fn bit_flip_before_valid_records_is_corruption_naming_offset() {
        let mut buf = segment(&[(1, b"first record"), (2, b"second record"), (3, b"third")]);
        let second_at = segment(&[(1, b"first record")]).len();
        buf[second_at + 20] ^= 0x10;
        let err = scan(&buf, Path::new("wal/x.wal"), Some(1), true).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("wal/x.wal") && msg.contains(&format!("offset {second_at}")),
            "{msg}"
        );
    }

    #[test]
    fn bit_flip_in_last_record_is_a_torn_tail() {
        let mut buf = segment(&[(1, b"first record"), (2, b"second record")]);
        let n = buf.len();
        buf[n - 2] ^= 1;
        let scan = scan(&buf, Path::new("s"), Some(1), true).unwrap();
        assert_eq!(scan.records.len(), 1);
        assert!(scan.torn.is_some());
    }

    #[test]
    fn a_zero_page_before_valid_records_is_a_lost_write_in_the_last_segment_only() {
        let mut buf = header().to_vec();
        for seq in 1..=3u64 {
            record::encode(seq, &vec![b'x'; 3000], &mut buf);
        }
        // The second page (4096..8192) never reached the disk; the third did.
        buf[4096..8192].fill(0);
        let found = scan(&buf, Path::new("s"), Some(1), true).unwrap();
        assert_eq!(found.records.len(), 1, "the record before the hole stays");
        assert!(found.torn.is_some());
        assert!(scan(&buf, Path::new("s"), Some(1), false).is_err());
        // Zeros from the bad record to the end of its page: the old end of a page whose
        // new bytes were lost.
        let mut partial = header().to_vec();
        record::encode(1, b"synced", &mut partial);
        let synced = partial.len();
        for seq in 2..=4u64 {
            record::encode(seq, &vec![b'y'; 3000], &mut partial);
        }
        partial[synced..4096].fill(0);
        let found = scan(&partial, Path::new("s"), Some(1), true).unwrap();
        assert_eq!((found.records.len(), found.valid_len), (1, synced));
        // A flipped bit is no lost write: still damage in the middle of the log.
        let mut flipped = header().to_vec();
        for seq in 1..=3u64 {
            record::encode(seq, &vec![b'x'; 3000], &mut flipped);
        }
        flipped[5000] ^= 1;
        assert!(scan(&flipped, Path::new("s"), Some(1), true).is_err());
    }

    #[test]
    fn sequence_gap_is_corruption() {
        let buf = segment(&[(1, b"a"), (3, b"b")]);
        assert!(scan(&buf, Path::new("s"), Some(1), true).is_err());
    }

    #[test]
    fn zero_filled_end_is_unused_space_in_any_segment() {
        let mut buf = segment(&[(1, b"a")]);
        let valid = buf.len();
        buf.extend_from_slice(&[0u8; 100]);
        for is_last in [true, false] {
            let found = scan(&buf, Path::new("s"), Some(1), is_last).unwrap();
            assert_eq!((found.valid_len, found.records.len()), (valid, 1));
            assert!(found.torn.is_none());
        }
        // A record cut by a crash inside the zero-filled space is a torn tail.
        let mut torn = segment(&[(1, b"a"), (2, b"second")]);
        torn.truncate(torn.len() - 3);
        torn.extend_from_slice(&[0u8; 100]);
        let found = scan(&torn, Path::new("s"), Some(1), true).unwrap();
        assert_eq!((found.valid_len, found.records.len()), (valid, 1));
        assert!(found.torn.is_some());
        // A single nonzero byte in that space: not unused (torn if last, else corrupt).
        buf[valid + 50] = 1;
        assert!(scan(&buf, Path::new("s"), Some(1), true)
            .unwrap()
            .torn
            .is_some());
        assert!(scan(&buf, Path::new("s"), Some(1), false).is_err());
    }
}
