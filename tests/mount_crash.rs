//! Mounted crash tests: SIGKILL the daemon mid-stream and check that what a writer was told
//! is durable is there after a restart, exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{poll_until, Daemon, Rng, READY_TIMEOUT};

/// The n-th distinct address of a crash round.
fn addr(round: u32, n: u32) -> String {
    format!("10.{round}.{}.{}", n / 256, n % 256)
}

/// What a writer learned: lines whose write() returned Ok, and the one whose write failed
/// (or was in flight) when the daemon died.
struct Writes {
    acked: Vec<String>,
    unknown: Option<String>,
}

/// Append distinct lines, one write() each, until a write fails; `progress` counts acks.
fn writer(
    path: PathBuf,
    round: u32,
    progress: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Writes> {
    std::thread::spawn(move || {
        let mut w = Writes {
            acked: Vec::new(),
            unknown: None,
        };
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        for n in 0..65_536 {
            let line = addr(round, n);
            match f.write(format!("{line}\n").as_bytes()) {
                Ok(len) if len == line.len() + 1 => {
                    w.acked.push(line);
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    w.unknown = Some(line);
                    break;
                }
            }
        }
        w
    })
}

/// Every acknowledged line present exactly once, no duplicates at all, nothing that was
/// never written.
fn check_file(lines: &[String], acked: &HashSet<String>, maybe: &HashSet<String>, ctx: &str) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for l in lines {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    let dup: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).collect();
    assert!(dup.is_empty(), "{ctx}: duplicated lines: {dup:?}");
    let missing: Vec<_> = acked
        .iter()
        .filter(|l| !counts.contains_key(l.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{ctx}: {} acknowledged lines missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let strange: Vec<_> = counts
        .keys()
        .filter(|l| !acked.contains(**l) && !maybe.contains(**l))
        .collect();
    assert!(
        strange.is_empty(),
        "{ctx}: lines never written: {strange:?}"
    );
}

#[test]
fn sigkill_mid_stream_keeps_every_acknowledged_append_exactly_once() {
    let Some(mut d) = Daemon::start() else { return };
    let mut rng = Rng::new(0x10cf5);
    let mut acked: HashSet<String> = HashSet::new();
    let mut maybe: HashSet<String> = HashSet::new();
    for round in 0..6u32 {
        let delay = rng.range(50, 300);
        let ctx = format!("round {round} (killed {delay} ms after the first ack)");
        let progress = Arc::new(AtomicUsize::new(0));
        let handle = writer(d.path("live/ipv4.txt"), round, progress.clone());
        let started = poll_until(READY_TIMEOUT, || {
            (progress.load(Ordering::Relaxed) > 0).then_some(())
        });
        assert!(started.is_some(), "{ctx}: no write was acknowledged");
        std::thread::sleep(Duration::from_millis(delay));
        d.kill9();
        let w = handle.join().expect("writer thread");
        assert!(
            w.unknown.is_some(),
            "{ctx}: the writer finished before the kill"
        );
        eprintln!("{ctx}: {} writes acknowledged", w.acked.len());
        acked.extend(w.acked);
        maybe.extend(w.unknown);

        d.restart();
        assert_eq!(
            d.read(".iocfs/health"),
            "ok\n",
            "{ctx}: health after restart"
        );
        check_file(&d.lines("live/ipv4.txt"), &acked, &maybe, &ctx);
    }
    // A clean stop commits it all, and the committed copy is what was served.
    let served = d.read("live/ipv4.txt");
    let status = d.stop();
    assert!(status.success(), "SIGTERM exit status {status}");
    let committed = std::fs::read_to_string(d.data().join("live/ipv4.txt")).unwrap();
    assert!(
        committed == served,
        "DATA/live/ipv4.txt differs from the served file"
    );
}

#[test]
fn sigkill_right_after_a_ctl_commit_keeps_everything_once() {
    let Some(mut d) = Daemon::start() else { return };
    let first: Vec<String> = (0..300).map(|n| addr(1, n)).collect();
    d.append_lines("live/ipv4.txt", &first);
    d.ctl("commit").expect("ctl commit");
    // The committed copy holds exactly what was acknowledged before the commit.
    let committed = std::fs::read_to_string(d.data().join("live/ipv4.txt")).unwrap();
    assert_eq!(committed, d.read("live/ipv4.txt"));
    assert_eq!(common::split_lines(&committed, "DATA/live/ipv4.txt"), first);
    d.kill9();

    d.restart();
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    assert_eq!(
        d.lines("live/ipv4.txt"),
        first,
        "after a kill right after commit"
    );

    // Again with appends after the commit: replayed on top of the committed copy, once.
    let second: Vec<String> = (0..200).map(|n| addr(2, n)).collect();
    d.append_lines("live/ipv4.txt", &second[..100]);
    d.ctl("commit").expect("ctl commit");
    d.append_lines("live/ipv4.txt", &second[100..]);
    d.kill9();
    d.restart();
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    let want: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(d.lines("live/ipv4.txt"), want);
    // And a second restart (recovery of a recovered state) changes nothing.
    d.kill9();
    d.restart();
    assert_eq!(d.lines("live/ipv4.txt"), want);
}

#[test]
fn restart_after_sigterm_and_after_sigkill_shows_everything_acknowledged() {
    let Some(mut d) = Daemon::start() else { return };
    let a: Vec<String> = (0..500).map(|n| addr(3, n)).collect();
    d.append_lines("live/ipv4.txt", &a);
    d.append_lines("live/domain.txt", &["one.example", "two.example"]);
    d.sh_ok("printf 'x.example\\ny.example\\n' > live/domain.txt");
    let status = d.stop();
    assert!(status.success(), "SIGTERM exit status {status}");
    d.restart();
    assert_eq!(d.lines("live/ipv4.txt"), a, "after SIGTERM");
    assert_eq!(d.lines("live/domain.txt"), ["x.example", "y.example"]);

    let b: Vec<String> = (0..500).map(|n| addr(4, n)).collect();
    d.append_lines("live/ipv4.txt", &b);
    d.sh_ok("printf 'z.example\\n' > live/domain.txt");
    d.kill9();
    d.restart();
    let want: Vec<String> = a.iter().chain(&b).cloned().collect();
    assert_eq!(d.lines("live/ipv4.txt"), want, "after SIGKILL");
    assert_eq!(d.lines("live/domain.txt"), ["z.example"]);
    assert_eq!(d.read(".iocfs/health"), "ok\n");
}

#[test]
fn committed_copy_equals_the_served_file_after_ctl_commit() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("printf '1.2.3.4/24\\n8.8.8.8\\n' >> live/ipv4.txt");
    d.sh_ok("printf 'A.Example.\\nb.example\\n' > live/domain.txt");
    d.sh_ok("echo 'http://Evil.com/x' >> live/url.txt");
    d.sh_ok("sed -i '/^b/d' live/domain.txt");
    d.ctl("commit").expect("ctl commit");
    for f in common::TYPE_FILES {
        let served = std::fs::read(d.path(&format!("live/{f}"))).unwrap();
        let backing = d.data().join("live").join(f);
        let committed = std::fs::read(&backing).unwrap_or_default();
        assert!(
            committed == served,
            "{}: {:?} but the mount serves {:?}",
            backing.display(),
            String::from_utf8_lossy(&committed),
            String::from_utf8_lossy(&served)
        );
    }
    assert_eq!(d.read("live/domain.txt"), "a.example\n");
}

/// A SIGKILLed daemon always dies and leaves a mount that a restart can clear, even when it
/// is killed while clients create files in `live/` and the type files change version (found
/// by scripts/torture: the daemon's invalidation thread, blocked in the kernel on the
/// directory lock held by a client's `open(O_CREAT)`, kept the dead daemon's connection
/// open, so the mount hung for good).
#[test]
fn sigkill_amid_creates_and_replacements_always_ends_the_daemon() {
    let Some(mut d) = Daemon::start() else { return };
    let mut rng = Rng::new(0x5eed_c0de);
    for round in 0..30u32 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn: Vec<_> = (0..3u32)
            .map(|t| {
                let (live, stop) = (d.path("live"), stop.clone());
                std::thread::spawn(move || {
                    // Every step fails once the daemon is dead: stop there.
                    for n in 0u32.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let ok = match t {
                            0 => std::fs::write(
                                live.join("domain.txt"),
                                format!("r{round}-g{n}.example\n"),
                            )
                            .is_ok(),
                            _ => {
                                let name = live.join(format!(".scratch-{t}-{n}"));
                                std::fs::write(&name, "x.example\n").is_ok()
                                    && std::fs::remove_file(&name).is_ok()
                            }
                        };
                        if !ok {
                            return;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.range(20, 200)));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in churn {
            t.join().expect("churn thread");
        }
        d.restart();
    }
}
