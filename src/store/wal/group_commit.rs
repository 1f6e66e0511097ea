//! Sequencing, group commit and apply.
//!
//! A writer encodes its mutation into the shared batch under a short lock, getting the next
//! sequence number, then waits. Whoever finds no leader becomes it: it takes the whole batch,
//! appends it to the WAL, fsyncs once for everyone (`always` mode), applies the
//! batch to the state in order, and wakes the others. Writers that arrive during the fsync
//! form the next batch, so concurrent writers share fsyncs. State changes become visible only
//! after they are durable.
//!
//! Modes: `batch` has the leader wait up to `batch_window` before taking the batch;
//! `periodic` returns without fsync (a background tick calls [`Pipeline::sync`]) — a crash
//! can lose up to `sync_interval` of acknowledged writes.
//!
//! Failures: an append that fails with ENOSPC fails every queued writer and rewinds the
//! sequence (nothing reached the log); any other WAL failure, or a failure to apply a durable
//! record, is sticky: all later writes fail with EIO until a restart replays the log.
//!
//! A record whose payload would exceed the limit recovery accepts ([`record::MAX_PAYLOAD`])
//! is refused here with EFBIG before it takes a sequence number: no acknowledged write can
//! leave a record the next mount rejects (large replaces are journaled in pieces instead).

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::DurabilityMode;
use crate::error::{Error, Result};
use crate::store::mutation::{Mutation, Op};
use crate::store::wal::fsync_stats::FsyncHistogram;
use crate::store::wal::{record, SyncError, WalFiles};

/// The largest batch buffer kept for reuse.
const KEPT_BATCH_CAPACITY: usize = 8 << 20;

/// What the leader does with a batch besides logging it (the store).
pub trait Batch {
    /// Made before the batch is written, handed to `apply`.
    type Prepared;
    /// Get what applying the batch will need (files, copies) before it is written: a
    /// failure here fails the batch's writers (nothing reached the log), while a failure to
    /// apply a durable record is fatal.
    fn prepare(&self, batch: &[(u64, Mutation)]) -> Result<Self::Prepared>;
    /// Apply a durable batch, in order.
    fn apply(&self, batch: &[(u64, Mutation)], prepared: Self::Prepared) -> Result<()>;
    /// The batch was not written after all: undo what `prepare` set up.
    fn abandon(&self, prepared: Self::Prepared);
}

pub struct Pipeline {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Signalled when a record joins the batch (for a lingering leader).
    arrived: Condvar,
    wal: Mutex<WalFiles>,
    mode: Mutex<(DurabilityMode, Duration)>,
    clock: std::sync::Arc<dyn Clock>,
    /// Largest payload accepted: [`record::MAX_PAYLOAD`], lower only in tests.
    max_payload: AtomicUsize,
    /// The log's size and segment count as of the last release of `wal`: stats read these,
    /// never the WAL mutex, which a leader holds across its fsync.
    wal_bytes: AtomicU64,
    wal_segments: AtomicUsize,
    fsyncs: std::sync::Arc<FsyncHistogram>,
}

/// The WAL, locked; its size figures are published when the lock is released.
struct WalGuard<'a> {
    files: MutexGuard<'a, WalFiles>,
    pipeline: &'a Pipeline,
}

impl Deref for WalGuard<'_> {
    type Target = WalFiles;
    fn deref(&self) -> &WalFiles {
        &self.files
    }
}

impl DerefMut for WalGuard<'_> {
    fn deref_mut(&mut self) -> &mut WalFiles {
        &mut self.files
    }
}

impl Drop for WalGuard<'_> {
    fn drop(&mut self) {
        let (bytes, segments) = self.files.size();
        self.pipeline.wal_bytes.store(bytes, Ordering::Relaxed);
        self.pipeline
            .wal_segments
            .store(segments, Ordering::Relaxed);
    }
}

struct Queue {
    next_seq: u64,
    next_ticket: u64,
    last_ts: u64,
    batch: Vec<u8>,
    pending: Vec<(u64, Mutation)>,
    leader: bool,
    /// Every ticket up to this one is finished (successfully unless listed in `failures`).
    completed: u64,
    failures: VecDeque<(u64, u64, FailedBatch)>,
    fatal: Option<String>,
    closed: bool,
    /// Records in the last batch and how long its fsync took: when writers are
    /// concurrent, a leader lingers briefly for the rest of them (see `linger`).
    last_batch: usize,
    last_sync: Duration,
    /// Writers between queueing their record and being told it is done: with those of
    /// the batch just finished still on their way out, how many will be back soon.
    writers: usize,
    /// Records a lingering leader waits for (0: none lingers). Only the record that
    /// completes the count wakes it: a wake-up per record costs more than it saves.
    linger_for: usize,
}

#[derive(Clone)]
struct FailedBatch {
    errno: i32,
    message: String,
}

impl Pipeline {
    pub fn new(
        wal: WalFiles,
        mode: DurabilityMode,
        batch_window: Duration,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Pipeline {
        let next_seq = wal.next_seq();
        let (bytes, segments) = wal.size();
        let fsyncs = wal.fsync_histogram();
        Pipeline {
            queue: Mutex::new(Queue {
                next_seq,
                next_ticket: 1,
                last_ts: 0,
                batch: Vec::new(),
                pending: Vec::new(),
                leader: false,
                completed: 0,
                failures: VecDeque::new(),
                fatal: None,
                closed: false,
                last_batch: 0,
                last_sync: Duration::ZERO,
                writers: 0,
                linger_for: 0,
            }),
            arrived: Condvar::new(),
            wake: Condvar::new(),
            wal: Mutex::new(wal),
            mode: Mutex::new((mode, batch_window)),
            clock,
            max_payload: AtomicUsize::new(record::MAX_PAYLOAD),
            wal_bytes: AtomicU64::new(bytes),
            wal_segments: AtomicUsize::new(segments),
            fsyncs,
        }
    }

    /// Test builds: a lower record limit, so the handling of large writes is exercised with
    /// small ones (never above the limit recovery accepts).
    pub fn set_max_payload(&self, bytes: usize) {
        self.max_payload
            .store(bytes.min(record::MAX_PAYLOAD), Ordering::Relaxed);
    }

    pub fn max_payload(&self) -> usize {
        self.max_payload.load(Ordering::Relaxed)
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        crate::sync::lock(&self.queue)
    }

    fn wal(&self) -> WalGuard<'_> {
        WalGuard {
            files: crate::sync::lock(&self.wal),
            pipeline: self,
        }
    }

    /// Durability settings can change on reload, except the mode's loss guarantees are
    /// only ever tightened by the caller.
    pub fn set_batch_window(&self, window: Duration) {
        crate::sync::lock(&self.mode).1 = window;
    }

    /// Sequence `op`, wait until it is durable (per the mode) and applied; returns its
    /// sequence number. `batch` is the same for every caller (the store).
    pub fn submit<B: Batch>(&self, op: Op, batch: &B) -> Result<u64> {
        let (ticket, seq, wake_leader) = {
            let mut q = self.queue();
            if let Some(why) = &q.fatal {
                return Err(Error::Failed(why.clone()));
            }
            if crate::crash::has_panicked() {
                return Err(Error::Failed(
                    "a thread of the daemon panicked (see .iocfs/health)".into(),
                ));
            }
            // A closing store still journals its final commit.
            if q.closed && !matches!(op, Op::Commit { .. }) {
                return Err(Error::ShuttingDown);
            }
            let ts = self.clock.now().max(q.last_ts);
            let m = Mutation { ts, op };
            let len = m.encoded_len();
            if len > self.max_payload() {
                return Err(Error::TooLarge(format!(
                    "a {len}-byte WAL record is over the {}-byte limit; refused",
                    self.max_payload()
                )));
            }
            q.last_ts = ts;
            let seq = q.next_seq;
            q.next_seq += 1;
            record::encode_with(seq, &mut q.batch, |out| m.encode(out));
            q.pending.push((seq, m));
            q.writers += 1;
            let ticket = q.next_ticket;
            q.next_ticket += 1;
            let wake_leader = q.linger_for != 0 && q.pending.len() >= q.linger_for;
            (ticket, seq, wake_leader)
        };
        if wake_leader {
            self.arrived.notify_one();
        }
        // A panic while leading has failed every waiter (see `FailOnUnwind`); this caller
        // gets an error too instead of a dead thread that never answers its request.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.wait_for(ticket, batch)
        })) {
            Ok(done) => done?,
            Err(panic) => {
                return Err(Error::Panicked {
                    thread: crate::sync::thread_name(),
                    message: crate::sync::panic_message(&*panic),
                })
            }
        }
        Ok(seq)
    }

    fn wait_for<B: Batch>(&self, ticket: u64, batch: &B) -> Result<()> {
        let mut q = self.queue();
        loop {
            if q.completed >= ticket {
                q.writers = q.writers.saturating_sub(1);
                return match q
                    .failures
                    .iter()
                    .find(|(lo, hi, _)| (*lo..=*hi).contains(&ticket))
                {
                    Some((_, _, f)) => Err(Error::io(
                        f.message.clone(),
                        std::io::Error::from_raw_os_error(f.errno),
                    )),
                    None => Ok(()),
                };
            }
            if q.leader {
                q = crate::sync::wait(&self.wake, q);
                continue;
            }
            q.leader = true;
            let (mode, window) = *crate::sync::lock(&self.mode);
            if mode == DurabilityMode::Batch && !window.is_zero() {
                drop(q);
                std::thread::sleep(window);
                q = self.queue();
            } else if mode == DurabilityMode::Always {
                q = self.linger(q);
            }
            q = self.lead(q, mode, batch);
            q.leader = false;
            self.wake.notify_all();
        }
    }

    /// Group commit in `always` mode: when the last batch held several writers, they are
    /// likely on their way back with their next record (each is a FUSE round trip behind).
    /// Wait a fraction of an fsync for them, so they share the next fsync instead of
    /// forming a batch of one and a batch of the rest. A lone writer never waits. Counting
    /// the writers not yet out of the last batch too: else 8 writers settle into two
    /// batches of 4 taking turns, each waiting out the other's fsync.
    fn linger<'a>(&'a self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let target = q.last_batch.max(q.writers).min(64);
        if target < 2 || q.pending.len() >= target {
            return q;
        }
        let budget = q
            .last_sync
            .clamp(Duration::from_micros(20), Duration::from_micros(1000));
        let deadline = std::time::Instant::now() + budget;
        q.linger_for = target;
        while q.pending.len() < target {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            q = crate::sync::wait_timeout(&self.arrived, q, deadline - now);
        }
        q.linger_for = 0;
        q
    }

    /// Write, sync and apply the current batch. Called with the queue lock held and `leader`
    /// set; releases the lock for the I/O.
    fn lead<'a, B: Batch>(
        &'a self,
        mut q: MutexGuard<'a, Queue>,
        mode: DurabilityMode,
        b: &B,
    ) -> MutexGuard<'a, Queue> {
        let batch = std::mem::take(&mut q.batch);
        let pending = std::mem::take(&mut q.pending);
        let last_ticket = q.next_ticket - 1;
        let first_ticket = q.completed + 1;
        let (Some(first), Some(last)) = (pending.first().map(|p| p.0), pending.last().map(|p| p.0))
        else {
            q.completed = last_ticket;
            return q;
        };
        drop(q);
        // Unwinding out of here (a panic in apply) must not strand the writers waiting for
        // this batch and every later one: the guard fails them all and refuses further writes.
        let unwinding = FailOnUnwind {
            pipeline: self,
            first_ticket,
        };
        let started = std::time::Instant::now();
        let outcome = self.write_and_apply(&batch, &pending, (first, last), mode, b);
        unwinding.disarm();
        let mut q = self.queue();
        // Hand the buffer back for the next batch: fresh memory costs a page fault per
        // 4 KiB, and bulk writes make batches of a MiB. An outsized one is let go.
        if q.batch.is_empty() && batch.capacity() <= KEPT_BATCH_CAPACITY {
            let mut batch = batch;
            batch.clear();
            q.batch = batch;
        }
        q.last_batch = pending.len();
        q.last_sync = started.elapsed();
        match outcome {
            Ok(()) => q.completed = last_ticket,
            Err(Outcome::Retryable(e)) => {
                // Nothing reached the log: fail this batch and everything queued behind it
                // (their records carry sequence numbers that are now given back).
                log::warn!("write refused: {e}");
                let all = q.next_ticket - 1;
                q.batch.clear();
                q.pending.clear();
                q.next_seq = first;
                self.fail(&mut q, first_ticket, all, &e);
                q.completed = all;
            }
            Err(Outcome::Fatal(e)) => {
                log::error!("WAL failure, no further writes are acknowledged until restart: {e}");
                q.fatal = Some(e.to_string());
                let all = q.next_ticket - 1;
                q.batch.clear();
                q.pending.clear();
                self.fail(&mut q, first_ticket, all, &e);
                q.completed = all;
            }
        }
        q
    }

    fn fail(&self, q: &mut Queue, lo: u64, hi: u64, e: &Error) {
        if lo > hi {
            return;
        }
        q.failures.push_back((
            lo,
            hi,
            FailedBatch {
                errno: e.errno(),
                message: e.to_string(),
            },
        ));
        while q.failures.len() > 64 {
            q.failures.pop_front();
        }
    }

    fn write_and_apply<B: Batch>(
        &self,
        batch: &[u8],
        pending: &[(u64, Mutation)],
        (first, last): (u64, u64),
        mode: DurabilityMode,
        b: &B,
    ) -> Result<(), Outcome> {
        // Nothing is written yet: failing here only fails these writes.
        let prepared = b.prepare(pending).map_err(Outcome::Retryable)?;
        if let Err(e) = self.write_batch(batch, (first, last), mode) {
            b.abandon(prepared);
            return Err(e);
        }
        b.apply(pending, prepared).map_err(Outcome::Fatal)
    }

    fn write_batch(
        &self,
        batch: &[u8],
        (first, last): (u64, u64),
        mode: DurabilityMode,
    ) -> Result<(), Outcome> {
        {
            let mut wal = self.wal();
            wal.append(first, last, batch).map_err(|e| {
                if e.is_retryable() {
                    Outcome::Retryable(e)
                } else {
                    Outcome::Fatal(e)
                }
            })?;
            if mode != DurabilityMode::Periodic {
                match wal.sync() {
                    Ok(()) => {}
                    Err(SyncError::Retryable(e)) => {
                        wal.rewind_to_synced(first - 1).map_err(Outcome::Fatal)?;
                        return Err(Outcome::Retryable(e));
                    }
                    Err(SyncError::Fatal(e)) => return Err(Outcome::Fatal(e)),
                }
            }
        }
        Ok(())
    }

    /// Make everything written durable now (fsync(2) on a handle, the periodic tick).
    pub fn sync(&self) -> Result<()> {
        let mut q = self.queue();
        if let Some(why) = &q.fatal {
            return Err(Error::Failed(why.clone()));
        }
        // Hold the leader role so no batch is half-written while we sync.
        while q.leader {
            q = crate::sync::wait(&self.wake, q);
        }
        q.leader = true;
        drop(q);
        let result = match self.wal().sync() {
            Ok(()) => Ok(()),
            // Records written without sync were already acknowledged (periodic mode):
            // losing them silently is not an option, so any failure is fatal.
            Err(SyncError::Retryable(e) | SyncError::Fatal(e)) => Err(e),
        };
        let mut q = self.queue();
        if let Err(e) = &result {
            log::error!("WAL fsync failed, no further writes are acknowledged until restart: {e}");
            q.fatal = Some(e.to_string());
        }
        q.leader = false;
        self.wake.notify_all();
        result
    }

    /// Drop the log's zero-filled end (clean shutdown, after the last commit).
    pub fn trim_wal(&self) -> std::io::Result<()> {
        self.wal().trim()
    }

    /// Refuse new writes (shutdown); writes already queued and commit records still complete.
    pub fn close(&self) {
        self.queue().closed = true;
    }

    /// Refuse all further writes (the durable state needs a restart to settle).
    pub fn set_fatal(&self, why: &str) {
        let mut q = self.queue();
        if q.fatal.is_none() {
            q.fatal = Some(why.to_string());
        }
    }

    /// Why writes are refused, if they are.
    pub fn fatal(&self) -> Option<String> {
        self.queue().fatal.clone()
    }

    pub fn next_seq(&self) -> u64 {
        self.queue().next_seq
    }

    /// Bytes and segments of the log, without waiting for a leader's fsync.
    pub fn wal_size(&self) -> (u64, usize) {
        (
            self.wal_bytes.load(Ordering::Relaxed),
            self.wal_segments.load(Ordering::Relaxed),
        )
    }

    /// How long the log's fsyncs took, without waiting for a leader's fsync.
    pub fn fsync_histogram(&self) -> &FsyncHistogram {
        &self.fsyncs
    }

    pub fn retire_upto(&self, seq: u64) -> Result<usize> {
        self.wal().retire_upto(seq)
    }
}

/// Armed while a leader writes and applies a batch without holding the queue lock.
struct FailOnUnwind<'a> {
    pipeline: &'a Pipeline,
    first_ticket: u64,
}

impl FailOnUnwind<'_> {
    /// The batch was handled (successfully or not): nothing to do on drop.
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for FailOnUnwind<'_> {
    fn drop(&mut self) {
        let why = format!(
            "a panic in thread {} while writing or applying a batch",
            crate::sync::thread_name()
        );
        log::error!("{why}; no further writes are acknowledged until restart");
        let p = self.pipeline;
        let mut q = p.queue();
        if q.fatal.is_none() {
            q.fatal = Some(why.clone());
        }
        let all = q.next_ticket - 1;
        q.batch.clear();
        q.pending.clear();
        p.fail(&mut q, self.first_ticket, all, &Error::Failed(why));
        q.completed = all;
        q.leader = false;
        p.wake.notify_all();
    }
}

enum Outcome {
    Retryable(Error),
    Fatal(Error),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Retryable(e) | Outcome::Fatal(e) => e.fmt(f),
        }
    }
}
