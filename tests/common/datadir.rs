//! Looking into a data directory from outside the daemon: its WAL segments and records,
//! checkpoints, and whole copies of it.

use std::path::{Path, PathBuf};

/// The files of `dir` named `*.<ext>`, sorted by name (WAL segments and checkpoints sort
/// oldest first).
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// The WAL segments of a data dir, oldest first.
pub fn wal_segments(data: &Path) -> Vec<PathBuf> {
    files_with_ext(&data.join("wal"), "wal")
}

/// The checkpoints of a data dir, oldest first.
pub fn checkpoints(data: &Path) -> Vec<PathBuf> {
    files_with_ext(&data.join("checkpoint"), "ckpt")
}

/// (offset, sequence) of each record of a WAL segment, read by the framing alone: a
/// 16-byte segment header, then records of a 16-byte header — payload length u32 LE,
/// sequence u64, CRC32C — and the payload. Stops at an incomplete record, or at the zeros
/// a killed daemon's segment ends in.
pub fn wal_records(seg: &[u8]) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    let mut pos = 16;
    while pos + 16 <= seg.len() {
        if seg[pos..pos + 16].iter().all(|&b| b == 0) {
            break;
        }
        let len = u32::from_le_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 16 + len > seg.len() {
            break;
        }
        let seq = u64::from_le_bytes(seg[pos + 4..pos + 12].try_into().unwrap());
        out.push((pos, seq));
        pos += 16 + len;
    }
    out
}

/// Where the last record of a WAL segment ends.
pub fn wal_records_end(seg: &[u8]) -> usize {
    let (last, _) = *wal_records(seg).last().expect("a WAL record");
    last + 16 + u32::from_le_bytes(seg[last..last + 4].try_into().unwrap()) as usize
}

/// Copy a data directory tree (to save or restore one); `LOCK` is left out, since it is
/// the running daemon's and a daemon creates it when missing.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
