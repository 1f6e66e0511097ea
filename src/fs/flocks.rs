//! `flock(2)` locks, kept by the daemon per file rather than by the kernel per inode.
//!
//! Every version of a type file is its own inode, and the kernel keeps flock locks per
//! inode: a lock taken before a replace (or before an append a passthrough reader made a
//! copy for) stayed on an inode the name no longer led to, and the next `flock` got the lock
//! at once, so a read-modify-write under `flock live/x.txt` lost updates. With
//! FUSE_FLOCK_LOCKS the kernel asks the daemon, which keys locks by the file (a type file of
//! live/, allow/ or a source; a tier file) whatever its version. POSIX locks (`fcntl`,
//! `lockf`) stay with the kernel: it would send their unlock at close in a FLUSH, which
//! read-only opens skip (FOPEN_NOFLUSH), so a daemon could never see some of them go.
//!
//! A flock lock belongs to an open file description, which is one daemon handle (`fh`,
//! never reused: the kernel's lock owner is a hash of the `struct file`, which a new open
//! can reuse before the old one's release arrives), and goes at its release, or at an
//! explicit unlock. A waiter (`flock` without LOCK_NB) is
//! answered when the lock is free. fuser does not pass the kernel's interrupts on, and the
//! kernel waits out a request the daemon has read, even on SIGKILL: so while anyone waits,
//! the daemon looks at each waiting thread's pending signals (`/proc/TID/status`) every
//! [`SIGNAL_POLL`] and answers EINTR once one would be delivered to it. The kernel turns
//! that into a restart of the call after the signal is handled (or the process dies of it),
//! as for a lock wait of its own: `flock -w`, `timeout` and Ctrl-C work. A waiter in
//! another pid namespace (the kernel gives no thread id) waits until the lock is free.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use fuser::Errno;

use crate::ioc::IocType;
use crate::store::model::{Target, Tier};
use crate::sync::lock;

/// How often waiting threads' pending signals are looked at.
pub const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// What a lock is on: a file, whatever version of it an inode is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LockKey {
    /// A type file of live/, allow/ or a source.
    File(Target, IocType),
    Tier(Tier, IocType),
    /// Anything else (scratch files, views, control files): its inode.
    Inode(u64),
}

/// How a lock request is answered, now or once the lock is free.
pub type Reply = Box<dyn FnOnce(Result<(), Errno>) + Send>;

struct Waiter {
    key: LockKey,
    owner: u64,
    exclusive: bool,
    /// The waiting thread, for its signals (0: unknown).
    tid: u32,
    reply: Reply,
}

#[derive(Default)]
struct State {
    /// Per file: each owner holding a lock, and whether it is exclusive.
    held: HashMap<LockKey, Vec<(u64, bool)>>,
    waiting: VecDeque<Waiter>,
}

impl State {
    fn conflicts(&self, key: LockKey, owner: u64, exclusive: bool) -> bool {
        self.held.get(&key).is_some_and(|holders| {
            holders
                .iter()
                .any(|&(o, ex)| o != owner && (ex || exclusive))
        })
    }

    /// Take (or convert) `owner`'s lock on `key`.
    fn take(&mut self, key: LockKey, owner: u64, exclusive: bool) {
        let holders = self.held.entry(key).or_default();
        match holders.iter_mut().find(|(o, _)| *o == owner) {
            Some(h) => h.1 = exclusive,
            None => holders.push((owner, exclusive)),
        }
    }

    fn drop_lock(&mut self, key: LockKey, owner: u64) -> bool {
        let Some(holders) = self.held.get_mut(&key) else {
            return false;
        };
        let before = holders.len();
        holders.retain(|(o, _)| *o != owner);
        let dropped = holders.len() != before;
        if holders.is_empty() {
            self.held.remove(&key);
        }
        dropped
    }

    /// Waiters on `key` that can have their lock now, in the order they came, taken.
    fn grant(&mut self, key: LockKey) -> Vec<Reply> {
        let mut granted = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            let w = &self.waiting[i];
            if w.key == key && !self.conflicts(key, w.owner, w.exclusive) {
                if let Some(w) = self.waiting.remove(i) {
                    self.take(key, w.owner, w.exclusive);
                    granted.push(w.reply);
                }
            } else {
                i += 1;
            }
        }
        granted
    }
}

/// Every flock lock of the mount, and the threads waiting for one.
#[derive(Default)]
pub struct Flocks {
    shared: Arc<(Mutex<State>, Condvar)>,
    watcher: OnceLock<()>,
}

impl Flocks {
    /// Lock (`exclusive` or shared) `key` for `owner`, converting a lock it holds. Without
    /// `wait` a conflict is EAGAIN (LOCK_NB); with it the reply waits for the lock or for a
    /// signal to thread `tid` (0: none can be seen).
    pub fn lock(&self, key: LockKey, owner: u64, exclusive: bool, wait: Option<u32>, reply: Reply) {
        let mut st = lock(&self.shared.0);
        if !st.conflicts(key, owner, exclusive) {
            st.take(key, owner, exclusive);
            // A downgrade (exclusive to shared) may let shared waiters in.
            let granted = if exclusive { Vec::new() } else { st.grant(key) };
            drop(st);
            reply(Ok(()));
            return answer(granted);
        }
        let Some(tid) = wait else {
            drop(st);
            return reply(Err(Errno::EAGAIN));
        };
        // A conversion that waits gives up the lock held meanwhile (as flock(2) does), so
        // two shared holders both asking for exclusive do not wait for each other forever.
        let released = st.drop_lock(key, owner);
        st.waiting.push_back(Waiter {
            key,
            owner,
            exclusive,
            tid,
            reply,
        });
        let granted = if released { st.grant(key) } else { Vec::new() };
        drop(st);
        self.shared.1.notify_all();
        self.watch_signals();
        answer(granted);
    }

    /// Drop `owner`'s lock on `key` (LOCK_UN, or the release of its open file) and give
    /// the lock to whoever can have it now. (An open file is released only once no call
    /// uses it, so none of its waits is left then.)
    pub fn unlock(&self, key: LockKey, owner: u64) {
        let mut st = lock(&self.shared.0);
        let granted = if st.drop_lock(key, owner) {
            st.grant(key)
        } else {
            Vec::new()
        };
        drop(st);
        answer(granted);
    }

    /// The thread that answers waiters a signal interrupts, started at the first wait.
    fn watch_signals(&self) {
        self.watcher.get_or_init(|| {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("iocfs-flock".into())
                .spawn(move || loop {
                    interrupt_signalled(&shared);
                });
            if let Err(e) = spawned {
                log::error!("flock waiters can't be interrupted by signals: no thread: {e}");
            }
        });
    }
}

/// Wait until someone waits, then every [`SIGNAL_POLL`] answer EINTR to the waiters a
/// signal is pending for.
fn interrupt_signalled(shared: &(Mutex<State>, Condvar)) {
    let mut st = lock(&shared.0);
    while st.waiting.is_empty() {
        st = shared
            .1
            .wait(st)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    drop(st);
    std::thread::sleep(SIGNAL_POLL);
    // /proc is read without the table's lock (locks and releases go on meanwhile); a
    // thread found signalled is looked at again under it, since its wait may have ended
    // and a new one begun (after the signal was delivered) in between.
    let tids: Vec<u32> = lock(&shared.0)
        .waiting
        .iter()
        .map(|w| w.tid)
        .filter(|&tid| tid != 0)
        .collect();
    let signalled: Vec<u32> = tids.into_iter().filter(|&t| signal_pending(t)).collect();
    if signalled.is_empty() {
        return;
    }
    let mut st = lock(&shared.0);
    let mut interrupted = Vec::new();
    let mut i = 0;
    while i < st.waiting.len() {
        let tid = st.waiting[i].tid;
        if signalled.contains(&tid) && signal_pending(tid) {
            if let Some(w) = st.waiting.remove(i) {
                interrupted.push(w.reply);
            }
        } else {
            i += 1;
        }
    }
    drop(st);
    for reply in interrupted {
        reply(Err(Errno::EINTR));
    }
}

fn answer(granted: Vec<Reply>) {
    for reply in granted {
        reply(Ok(()));
    }
}

/// Whether a signal would interrupt thread `tid` now: its own pending signals, and the
/// process's if it is the only thread (otherwise the kernel may deliver those to another).
/// An EINTR with no signal for the caller would reach it as an unrestarted error (errno
/// 512), so anything unsure is "no": a `/proc` that can't be read (hidden, or another pid
/// namespace's: see [`proc_is_ours`]). A waiting thread can't be gone: the kernel waits
/// out its request.
fn signal_pending(tid: u32) -> bool {
    proc_is_ours()
        && std::fs::read_to_string(format!("/proc/{tid}/status")).is_ok_and(|s| deliverable(&s))
}

/// Whether `/proc` shows this process's pid namespace (the one the kernel gives FUSE
/// requests' thread ids in): `/proc/self` is this process.
fn proc_is_ours() -> bool {
    static OURS: OnceLock<bool> = OnceLock::new();
    *OURS.get_or_init(|| {
        let ours = std::fs::read_link("/proc/self")
            .ok()
            .and_then(|p| p.to_str()?.parse::<u32>().ok())
            == Some(std::process::id());
        if !ours {
            log::warn!("/proc is not this process's pid namespace: flock waiters can't be interrupted by signals");
        }
        ours
    })
}

/// [`signal_pending`] for the text of a `/proc/TID/status`.
fn deliverable(status: &str) -> bool {
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let kill = 1u64 << (libc::SIGKILL - 1);
    let mut pending = field("SigPnd:");
    if threads == 1 {
        pending |= field("ShdPnd:");
    }
    pending & (!field("SigBlk:") | kill) != 0
}

impl super::IocFs {
    /// flock(2) of open file `fh` on `ino` by thread `tid`, sent as a whole-file lock
    /// (`F_RDLCK`, `F_WRLCK`, `F_UNLCK`); `sleep`: wait for it.
    pub(super) fn set_flock(
        &self,
        tid: u32,
        ino: fuser::INodeNo,
        fh: fuser::FileHandle,
        typ: i32,
        sleep: bool,
        reply: fuser::ReplyEmpty,
    ) {
        let key = self.lock_key(ino);
        let exclusive = match typ {
            libc::F_UNLCK => {
                self.flocks.unlock(key, fh.0);
                return reply.ok();
            }
            libc::F_WRLCK => true,
            libc::F_RDLCK => false,
            _ => return reply.error(Errno::EINVAL),
        };
        let answer: Reply = Box::new(move |r| match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        });
        self.flocks
            .lock(key, fh.0, exclusive, sleep.then_some(tid), answer);
    }

    /// What a lock on inode `ino` is on.
    pub(super) fn lock_key(&self, ino: fuser::INodeNo) -> LockKey {
        match self.nodes.get(ino) {
            Some(super::nodes::Node::Live(v)) => {
                let (target, ty) = v.of();
                LockKey::File(target, ty)
            }
            Some(super::nodes::Node::LiveAlias((target, ty))) => LockKey::File(target, ty),
            Some(super::nodes::Node::Tier(v)) => LockKey::Tier(v.tier, v.ty),
            _ => LockKey::Inode(ino.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    const FILE: LockKey = LockKey::File(Target::Live, IocType::Ipv4);

    fn replies() -> (impl Fn() -> Reply, mpsc::Receiver<Result<(), Errno>>) {
        let (tx, rx) = mpsc::channel();
        let make = move || -> Reply {
            let tx = tx.clone();
            Box::new(move |r| {
                let _ = tx.send(r);
            })
        };
        (make, rx)
    }

    #[test]
    fn exclusive_excludes_and_shared_shares() {
        let f = Flocks::default();
        let (reply, got) = replies();
        f.lock(FILE, 1, false, None, reply());
        f.lock(FILE, 2, false, None, reply());
        assert_eq!(got.try_iter().collect::<Vec<_>>(), [Ok(()), Ok(())]);
        f.lock(FILE, 3, true, None, reply());
        assert_eq!(got.try_recv(), Ok(Err(Errno::EAGAIN)));
        f.unlock(FILE, 1);
        f.unlock(FILE, 2);
        f.lock(FILE, 3, true, None, reply());
        f.lock(FILE, 1, false, None, reply());
        f.lock(LockKey::Inode(9), 1, true, None, reply());
        assert_eq!(
            got.try_iter().collect::<Vec<_>>(),
            [Ok(()), Err(Errno::EAGAIN), Ok(())],
            "another file is another lock"
        );
    }

    #[test]
    fn a_waiter_gets_the_lock_when_its_holder_lets_go() {
        let f = Flocks::default();
        let (reply, got) = replies();
        f.lock(FILE, 1, true, None, reply());
        f.lock(FILE, 2, true, Some(0), reply());
        f.lock(FILE, 3, false, Some(0), reply());
        assert_eq!(got.try_iter().collect::<Vec<_>>(), [Ok(())]);
        f.unlock(FILE, 1);
        assert_eq!(got.try_recv(), Ok(Ok(())), "the first waiter");
        assert!(got.try_recv().is_err(), "the second waits on");
        f.unlock(FILE, 2);
        assert_eq!(got.try_recv(), Ok(Ok(())));
    }

    #[test]
    fn two_shared_holders_converting_to_exclusive_do_not_deadlock() {
        let f = Flocks::default();
        let (reply, got) = replies();
        f.lock(FILE, 1, false, None, reply());
        f.lock(FILE, 2, false, None, reply());
        f.lock(FILE, 1, true, Some(0), reply());
        // 1 gave up its shared lock to wait (as flock(2) does), so 2 converts at once.
        f.lock(FILE, 2, true, Some(0), reply());
        assert_eq!(got.try_iter().collect::<Vec<_>>(), [Ok(()), Ok(()), Ok(())]);
        f.unlock(FILE, 2);
        assert_eq!(got.try_recv(), Ok(Ok(())), "then 1");
    }

    #[test]
    fn a_waiter_whose_thread_cant_be_seen_is_not_interrupted() {
        let f = Flocks::default();
        let (reply, got) = replies();
        f.lock(FILE, 1, true, None, reply());
        // A thread id /proc does not know: an EINTR without a signal would reach the
        // caller as errno 512. (Signals themselves: `tests/mount_locks.rs`.)
        f.lock(FILE, 2, true, Some(u32::MAX - 1), reply());
        assert_eq!(got.recv(), Ok(Ok(())));
        assert!(got.recv_timeout(SIGNAL_POLL * 4).is_err(), "still waiting");
        f.unlock(FILE, 1);
        assert_eq!(got.try_recv(), Ok(Ok(())));
    }

    #[test]
    fn a_downgrade_lets_shared_waiters_in() {
        let f = Flocks::default();
        let (reply, got) = replies();
        f.lock(FILE, 1, true, None, reply());
        f.lock(FILE, 2, false, Some(0), reply());
        assert_eq!(got.try_iter().collect::<Vec<_>>(), [Ok(())]);
        f.lock(FILE, 1, false, None, reply());
        assert_eq!(got.try_iter().collect::<Vec<_>>(), [Ok(()), Ok(())]);
    }

    #[test]
    fn pending_signals_count_unless_blocked() {
        let status = |pnd: &str, shd: &str, blk: &str, threads: u32| {
            format!(
                "Name:\tflock\nThreads:\t{threads}\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\n\
                 SigBlk:\t{blk}\nSigIgn:\t0000000000000000\n"
            )
        };
        let none = "0000000000000000";
        let sigint = "0000000000000002";
        let sigkill = "0000000000000100";
        assert!(!deliverable(&status(none, none, none, 1)));
        assert!(deliverable(&status(sigint, none, none, 1)));
        assert!(!deliverable(&status(sigint, none, sigint, 1)), "blocked");
        assert!(
            deliverable(&status(none, sigint, none, 1)),
            "to the process"
        );
        assert!(
            !deliverable(&status(none, sigint, none, 2)),
            "another thread may take it"
        );
        assert!(deliverable(&status(sigkill, none, "ffffffffffffffff", 4)));
    }
}
