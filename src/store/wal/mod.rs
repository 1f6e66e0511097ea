//! The write-ahead log on disk: segment files, appends, fsync, rotation, retirement and the
//! recovery scan. Group commit and ordering live in `group_commit`; this type is driven by
//! one thread at a time (the pipeline's leader).
//!
//! Failure rules (docs/internals.md): a write that fails is cut back off the file, so nothing half
//! written stays behind. A failed fsync is fatal — the page cache may have dropped the data —
//! except ENOSPC/EDQUOT, where the unsynced tail is truncated away and fsync'd again: if that
//! succeeds nothing unacknowledged remains on disk and writing may resume once space is freed.

mod damage;
pub mod fsync_stats;
pub mod group_commit;
pub mod record;
pub mod segment;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::atomic::fsync_dir;
use crate::disk::{Bytes, Disk, Handle};
use crate::error::{Error, IoContext, Result};
use crate::failpoint;
use fsync_stats::FsyncHistogram;

/// Batches of at least this many bytes extend the file themselves (see `zero_fill_for`).
const ZERO_FILL_MAX_BATCH: usize = 256 << 10;

/// A record read back at recovery. Its payload stays in the bytes of its segment, shared by
/// every record of the segment (a million small copies would cost a tenth of the replay).
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    segment: Arc<Bytes>,
    payload: Range<usize>,
}

impl Record {
    pub fn payload(&self) -> &[u8] {
        &self.segment[self.payload.clone()]
    }
}

/// What recovery found, for the mount log line.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: usize,
    /// Torn tail that was truncated: (file, offset, why).
    pub truncated: Option<(PathBuf, u64, String)>,
}

/// One segment file as found by a scan.
#[derive(Debug)]
pub struct Segment {
    pub first_seq: u64,
    /// Last sequence written to it (first_seq - 1 when empty).
    pub last_seq: u64,
    pub path: PathBuf,
    pub len: u64,
}

#[derive(Debug)]
pub struct WalFiles {
    disk: Disk,
    dir: PathBuf,
    segment_size: u64,
    closed: Vec<Segment>,
    active: Segment,
    file: Handle,
    synced_len: u64,
    /// Length of the active file: bytes from `active.len` to here are zeros written ahead.
    zeroed_end: u64,
    /// fsyncs slower than this are logged.
    slow_sync: Duration,
    /// Every fsync of appended records, timed (shared with stats, which never lock the log).
    fsyncs: Arc<FsyncHistogram>,
}

/// Outcome of a failed sync, telling the pipeline whether it may go on.
#[derive(Debug)]
pub enum SyncError {
    /// Nothing unacknowledged is left on disk; later writes may succeed.
    Retryable(Error),
    /// The log's durable state is unknown: stop acknowledging writes.
    Fatal(Error),
}

/// Every record of the log in `dir`, after dealing with a torn tail: truncated when
/// `truncate_torn` (mounting), only reported otherwise (`iocfs check`).
pub fn read_log(
    disk: &Disk,
    dir: &Path,
    truncate_torn: bool,
) -> Result<(Vec<Record>, RecoveryReport, Vec<Segment>)> {
    let listed = match segment::list(disk, dir) {
        Ok(l) => l,
        Err(_) if !disk.exists(dir) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut report = RecoveryReport {
        segments: listed.len(),
        ..Default::default()
    };
    let mut records = Vec::new();
    let mut segments = Vec::new();
    let mut next_seq: Option<u64> = None;
    for (i, (first_seq, path)) in listed.iter().enumerate() {
        let is_last = i + 1 == listed.len();
        let bytes = disk.map(path).ctx(|| format!("map {}", path.display()))?;
        if let Some(expected) = next_seq {
            // A last segment named inside the previous one's records and holding none is a
            // creation that failed or was cut before its first record (the records went on
            // in the previous segment): it is dropped, like a torn tail.
            if is_last && *first_seq < expected && segment::holds_no_record(&bytes, path) {
                let why = format!(
                    "segment {} holds no record and its sequence {first_seq} is already in the previous one: a segment creation that did not complete",
                    path.display()
                );
                if truncate_torn {
                    log::warn!("WAL: {why}; removing it");
                    disk.remove_file(path)
                        .ctx(|| format!("remove {}", path.display()))?;
                    fsync_dir(disk, dir)?;
                }
                report.truncated = Some((path.clone(), 0, why));
                break;
            }
            if *first_seq != expected {
                return Err(Error::corruption(
                    path,
                    None,
                    format!(
                        "segment starts at sequence {first_seq} but the previous one ended at {}",
                        expected - 1
                    ),
                ));
            }
        }
        let scan = segment::scan(&bytes, path, Some(next_seq.unwrap_or(*first_seq)), is_last)?;
        // Without a torn tail, any bytes past `valid_len` are the zero-filled unused end.
        let len = scan.valid_len as u64;
        if let Some(why) = scan.torn {
            if truncate_torn {
                log::warn!(
                    "WAL {}: torn tail ({why}); truncating {} bytes at offset {}",
                    path.display(),
                    bytes.len() - scan.valid_len,
                    scan.valid_len
                );
                truncate_synced(disk, path, len)?;
            }
            report.truncated = Some((path.clone(), len, why));
        }
        let last_seq = scan
            .records
            .last()
            .map_or(first_seq.saturating_sub(1), |r| r.seq);
        let shared = Arc::new(bytes);
        records.extend(scan.records.into_iter().map(|found| Record {
            seq: found.seq,
            segment: shared.clone(),
            payload: found.payload,
        }));
        next_seq = Some(last_seq + 1);
        segments.push(Segment {
            first_seq: *first_seq,
            last_seq,
            path: path.clone(),
            len,
        });
    }
    report.records = records.len();
    Ok((records, report, segments))
}

impl WalFiles {
    /// Open the log in `dir`, scanning every segment. Returns the records after the torn-tail
    /// repair, or a corruption error naming the file and offset.
    pub fn open(
        disk: &Disk,
        dir: &Path,
        segment_size: u64,
    ) -> Result<(WalFiles, Vec<Record>, RecoveryReport)> {
        let (records, report, mut segments) = read_log(disk, dir, true)?;
        let (active, file) = match segments.pop() {
            Some(seg) if seg.len >= segment::HEADER_LEN as u64 => {
                let file = crate::atomic::open_existing(disk, &seg.path)?;
                (seg, file)
            }
            Some(seg) => {
                // A segment whose header was cut by a crash: start it again.
                create_segment(disk, dir, seg.first_seq)?
            }
            None => create_segment(disk, dir, 1)?,
        };
        let synced_len = active.len;
        let zeroed_end = file
            .size()
            .ctx(|| format!("stat {}", active.path.display()))?
            .max(active.len);
        Ok((
            WalFiles {
                disk: disk.clone(),
                dir: dir.to_path_buf(),
                segment_size: segment_size.max(1 << 16),
                closed: segments,
                active,
                file,
                synced_len,
                zeroed_end,
                slow_sync: Duration::from_millis(100),
                fsyncs: Arc::default(),
            },
            records,
            report,
        ))
    }

    /// The timings of this log's fsyncs.
    pub fn fsync_histogram(&self) -> Arc<FsyncHistogram> {
        self.fsyncs.clone()
    }

    /// The sequence number the next record must carry.
    pub fn next_seq(&self) -> u64 {
        self.active.last_seq + 1
    }

    /// Append encoded records `first_seq..=last_seq`. On error the file is cut back to where it
    /// was, so a later append starts on a clean boundary.
    pub fn append(&mut self, first_seq: u64, last_seq: u64, bytes: &[u8]) -> Result<()> {
        if self.active.len > segment::HEADER_LEN as u64
            && self.active.len + bytes.len() as u64 > self.segment_size
        {
            self.rotate(first_seq)?;
        }
        let at = self.active.len;
        // Best effort: on a nearly full disk the record itself may still fit. A large batch
        // (bulk input) is not worth it: its fsync is mostly its own data, and zeros written
        // after it would be flushed with it.
        if bytes.len() < ZERO_FILL_MAX_BATCH {
            if let Err(e) = self.zero_fill_for(at + bytes.len() as u64) {
                log::debug!("zero-fill of {}: {e}", self.active.path.display());
            }
        }
        let written = self.file.write_all_at(bytes, at);
        if let Err(e) = written {
            // Cut off whatever part did reach the file. If even that fails the file's tail is
            // unknown and the caller must treat it as fatal.
            self.cut(at).ctx(|| {
                format!(
                    "truncate {} after a failed write",
                    self.active.path.display()
                )
            })?;
            return Err(Error::io(
                format!("write WAL {} at offset {at}", self.active.path.display()),
                e,
            ));
        }
        self.active.len += bytes.len() as u64;
        self.active.last_seq = last_seq;
        // If the zero-fill fell short, the record itself extended the file: zeros may only
        // ever be written after it.
        self.zeroed_end = self.zeroed_end.max(self.active.len);
        Ok(())
    }

    /// Records are written over zeros written earlier, so that the fdatasync of an append
    /// flushes only data blocks: a write that extends the file also has to journal the new
    /// size and block allocation, which costs about a fifth of the fsync rate on ext4. The
    /// zeros go out `ZERO_FILL` bytes at a time and are flushed by the next sync.
    fn zero_fill_for(&mut self, end: u64) -> std::io::Result<()> {
        const ZERO_FILL: u64 = 1 << 20;
        if end <= self.zeroed_end {
            return Ok(());
        }
        let target = end.div_ceil(ZERO_FILL) * ZERO_FILL;
        let target = target.min(self.segment_size.max(end));
        self.file
            .write_zeros(self.zeroed_end, target - self.zeroed_end)?;
        self.zeroed_end = target;
        Ok(())
    }

    /// Truncate the active file to `len` (dropping the zero-filled end too).
    fn cut(&mut self, len: u64) -> std::io::Result<()> {
        let cut = self.file.set_len(len);
        // Whatever happened, no zeros can be assumed past `len` any more.
        self.zeroed_end = len;
        cut
    }

    /// Cut the zero-filled end, so that a log closed in order ends on its last record. No
    /// fsync needed: a zero-filled end reads the same.
    pub fn trim(&mut self) -> std::io::Result<()> {
        if self.zeroed_end > self.active.len {
            self.cut(self.active.len)?;
        }
        Ok(())
    }

    /// Make everything appended so far durable.
    pub fn sync(&mut self) -> Result<(), SyncError> {
        if self.synced_len == self.active.len {
            return Ok(());
        }
        let started = Instant::now();
        failpoint::pause("wal::sync_pause");
        let synced = self.file.sync_data();
        let took = started.elapsed();
        self.fsyncs.observe(took);
        if took > self.slow_sync {
            log::warn!(
                "slow WAL fsync: {} ms on {}",
                took.as_millis(),
                self.active.path.display()
            );
        }
        match synced {
            Ok(()) => {
                self.synced_len = self.active.len;
                Ok(())
            }
            Err(e) => {
                let err = Error::io(format!("fsync WAL {}", self.active.path.display()), e);
                // Cut the unsynced tail off and make that durable: the writes in this batch
                // were refused, so a restart must not replay them.
                let cut = self
                    .cut(self.synced_len)
                    .and_then(|()| self.file.sync_all());
                if cut.is_ok() {
                    self.active.len = self.synced_len;
                }
                if !err.is_retryable() {
                    // Writing stays refused, whether or not the cut worked.
                    return Err(SyncError::Fatal(err));
                }
                // Out of space: writing may resume if the cut is durable.
                match cut {
                    Ok(()) => Err(SyncError::Retryable(err)),
                    Err(e2) => Err(SyncError::Fatal(Error::io(
                        format!(
                            "truncate {} after failed fsync ({err})",
                            self.active.path.display()
                        ),
                        e2,
                    ))),
                }
            }
        }
    }

    /// Forget the records appended since the last sync (after a retryable failure): the
    /// sequence numbers are reused by the next append.
    pub fn rewind_to_synced(&mut self, last_synced_seq: u64) -> Result<()> {
        self.cut(self.synced_len)
            .ctx(|| format!("truncate {}", self.active.path.display()))?;
        self.active.len = self.synced_len;
        self.active.last_seq = last_synced_seq;
        Ok(())
    }

    fn rotate(&mut self, first_seq: u64) -> Result<()> {
        // The old segment must be durable before records land in the new one.
        if let Err(SyncError::Fatal(e) | SyncError::Retryable(e)) = self.sync() {
            return Err(e);
        }
        // The closed segment keeps its zero-filled end: it scans as unused space.
        let (seg, file) = create_segment(&self.disk, &self.dir, first_seq)?;
        let old = std::mem::replace(&mut self.active, seg);
        self.closed.push(old);
        self.file = file;
        self.synced_len = self.active.len;
        self.zeroed_end = self.active.len;
        Ok(())
    }

    /// Delete closed segments whose records are all ≤ `seq` (covered by a commit).
    pub fn retire_upto(&mut self, seq: u64) -> Result<usize> {
        let keep_from = self
            .closed
            .iter()
            .position(|s| s.last_seq > seq)
            .unwrap_or(self.closed.len());
        let retired: Vec<Segment> = self.closed.drain(..keep_from).collect();
        for seg in &retired {
            self.disk
                .remove_file(&seg.path)
                .ctx(|| format!("remove {}", seg.path.display()))?;
        }
        if !retired.is_empty() {
            fsync_dir(&self.disk, &self.dir)?;
        }
        Ok(retired.len())
    }

    /// Total bytes and number of segment files.
    pub fn size(&self) -> (u64, usize) {
        let bytes = self.closed.iter().map(|s| s.len).sum::<u64>() + self.active.len;
        (bytes, self.closed.len() + 1)
    }
}

impl Drop for WalFiles {
    /// For logs closed without a shutdown (tests, `iocfs check`); the daemon may exit the
    /// process right after its shutdown, which therefore trims explicitly.
    fn drop(&mut self) {
        let _ = self.trim();
    }
}

fn create_segment(disk: &Disk, dir: &Path, first_seq: u64) -> Result<(Segment, Handle)> {
    let path = dir.join(segment::file_name(first_seq));
    // A segment that could not be made is removed again: the records meant for it go on in
    // the current segment, and a file left behind would claim their sequence numbers
    // (recovery refused such a log: found by scripts/powerloss, ENOSPC on the header).
    let abandon = |e: Error| {
        if disk.remove_file(&path).is_ok() {
            let _ = fsync_dir(disk, dir);
        }
        e
    };
    let file = crate::atomic::write_synced(disk, &path, |w| w.write_all(&segment::header()))
        .map_err(abandon)?;
    if let Err(e) = fsync_dir(disk, dir) {
        drop(file);
        return Err(abandon(e));
    }
    Ok((
        Segment {
            first_seq,
            last_seq: first_seq - 1,
            path,
            len: segment::HEADER_LEN as u64,
        },
        file,
    ))
}

fn truncate_synced(disk: &Disk, path: &Path, len: u64) -> Result<()> {
    let file = crate::atomic::open_existing(disk, path)?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .ctx(|| format!("truncate {} to {len}", path.display()))
}

#[cfg(test)]
mod tests;
