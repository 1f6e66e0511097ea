//! The health registry: what is wrong with the store right now, as typed problems.
//!
//! `.iocfs/health` prints one line per problem (`ok` when there is none); code asks about
//! kinds ([`Health::has`]) instead of matching text. A problem of a kind is replaced by the
//! next one of the same kind about the same subject (a file, a thread), and cleared when
//! the condition ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

/// What kind of trouble a problem is. Each line of `.iocfs/health` starts with its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The write-ahead log could not be made durable: writes are refused until a restart.
    Wal,
    /// Writes fail with ENOSPC (cleared by the next write that goes through).
    Disk,
    /// Damaged tier blocks: reads of them fail with EIO until `iocfs check --repair`.
    Tier,
    /// The last commit of backing files failed and will be retried.
    Commit,
    /// The last checkpoint failed and will be retried.
    Checkpoint,
    /// A thread panicked: the store refuses writes until a restart.
    Panic,
    /// A view file's rebuild is held back by `max_shrink` (the last version is served).
    View,
    /// The store stopped taking writes for another reason (a commit that could not
    /// finish): a restart recovers.
    Failed,
    /// A feed with `expect_every` stopped writing (or was never declared).
    Source,
    /// The config file could not be reloaded (SIGHUP): the daemon runs on the one before.
    Config,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Wal => "wal",
            Kind::Disk => "disk",
            Kind::Tier => "tier",
            Kind::Commit => "commit",
            Kind::Checkpoint => "checkpoint",
            Kind::Panic => "panic",
            Kind::Failed => "failed",
            Kind::View => "view",
            Kind::Source => "source",
            Kind::Config => "config",
        }
    }
}

/// One problem: its kind, what it concerns (a file, a thread; empty for the store as a
/// whole) and what to tell the admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: Kind,
    pub subject: String,
    pub message: String,
}

impl Problem {
    pub fn new(kind: Kind, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            subject: String::new(),
            message: message.into(),
        }
    }

    /// A problem about one thing (a tier file, a thread): several can stand side by side.
    pub fn about(kind: Kind, subject: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            subject: subject.into(),
            message: message.into(),
        }
    }

    /// The line `.iocfs/health` prints.
    pub fn line(&self) -> String {
        if self.subject.is_empty() {
            format!("{}: {}", self.kind.name(), self.message)
        } else {
            format!("{} {}: {}", self.kind.name(), self.subject, self.message)
        }
    }
}

#[derive(Default)]
pub struct Health {
    problems: Mutex<Vec<Problem>>,
    /// Bumped by every change (so a stats snapshot knows it is stale).
    changes: AtomicU64,
    /// A write failed with ENOSPC and none has succeeded since: kept apart from the list so
    /// that every successful write does not take its lock.
    disk_full: AtomicBool,
}

impl Health {
    /// Record `p`, replacing a problem of the same kind about the same subject.
    pub fn set(&self, p: Problem) {
        let mut all = lock(&self.problems);
        all.retain(|q| !(q.kind == p.kind && q.subject == p.subject));
        all.push(p);
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// The condition behind every problem of `kind` is over.
    pub fn clear(&self, kind: Kind) {
        let mut all = lock(&self.problems);
        let before = all.len();
        all.retain(|q| q.kind != kind);
        if all.len() != before {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Changes so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    pub fn has(&self, kind: Kind) -> bool {
        lock(&self.problems).iter().any(|q| q.kind == kind)
    }

    pub fn problems(&self) -> Vec<Problem> {
        lock(&self.problems).clone()
    }

    /// A write failed because the disk (or quota) is full.
    pub fn disk_full(&self, message: String) {
        self.disk_full.store(true, Ordering::Relaxed);
        self.set(Problem::new(Kind::Disk, message));
    }

    /// A write went through: a full disk is over.
    pub fn write_succeeded(&self) {
        if self.disk_full.swap(false, Ordering::Relaxed) {
            self.clear(Kind::Disk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_replace_their_own_kind_and_subject_only() {
        let h = Health::default();
        h.set(Problem::new(Kind::Commit, "commit failed: EIO"));
        h.set(Problem::about(Kind::Tier, "chaud/ipv4.txt", "damaged"));
        h.set(Problem::about(Kind::Tier, "froid/url.txt", "damaged"));
        h.set(Problem::new(Kind::Commit, "commit failed: ENOSPC"));
        let lines: Vec<String> = h.problems().iter().map(Problem::line).collect();
        assert_eq!(
            lines,
            [
                "tier chaud/ipv4.txt: damaged",
                "tier froid/url.txt: damaged",
                "commit: commit failed: ENOSPC"
            ]
        );
        h.clear(Kind::Tier);
        assert!(!h.has(Kind::Tier) && h.has(Kind::Commit));
    }

    #[test]
    fn a_full_disk_lasts_until_a_write_succeeds() {
        let h = Health::default();
        h.write_succeeded();
        assert!(h.problems().is_empty());
        h.disk_full("writes fail: ENOSPC".into());
        assert!(h.has(Kind::Disk));
        h.write_succeeded();
        assert!(!h.has(Kind::Disk));
    }
}
