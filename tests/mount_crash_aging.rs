//! Mounted crash tests on a manual clock: SIGKILL the daemon while another thread moves the
//! clock and runs aging, checkpoints and commits, then check that no indicator was lost,
//! duplicated or invented, and that each is where its age puts it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod aging;
mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aging::*;
use common::{poll_until, Rng, BIN, READY_TIMEOUT};

/// The clock never goes past this, so nothing reaches froid_retention (all last sightings
/// are at or after t0): no indicator is dropped and the set stays exactly what was written.
const CLOCK_LIMIT: u64 = T0 + 330 * DAY;

/// What the clock/aging thread was told succeeded.
#[derive(Default)]
struct Acked {
    /// The last `clock T` that returned success.
    clock: AtomicU64,
    /// The clock value of the last `age` that returned success.
    aged_at: AtomicU64,
    /// Commands that returned success.
    commands: AtomicU64,
}

fn ctl_write(ctl: &Path, cmd: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(ctl)?;
    f.write_all(format!("{cmd}\n").as_bytes())
}

/// Move the clock (1–72 h a step, up to CLOCK_LIMIT), age, checkpoint, commit, until a
/// command fails (the daemon was killed).
fn churn(ctl: PathBuf, seed: u64, acked: Arc<Acked>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut now = acked.clock.load(Ordering::SeqCst);
        loop {
            let next = (now + rng.range(1, 73) * HOUR).min(CLOCK_LIMIT);
            if ctl_write(&ctl, &format!("clock {next}")).is_err() {
                return;
            }
            now = next;
            acked.clock.store(now, Ordering::SeqCst);
            acked.commands.fetch_add(1, Ordering::SeqCst);
            for cmd in ["age", "checkpoint", "commit"] {
                if ctl_write(&ctl, cmd).is_err() {
                    return;
                }
                if cmd == "age" {
                    acked.aged_at.store(now, Ordering::SeqCst);
                }
                acked.commands.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
}

/// file name → values of that type.
fn known_set() -> Vec<(&'static str, Vec<String>)> {
    vec![
        (
            "ipv4.txt",
            (0..3000u32)
                .map(|i| format!("172.{}.{}.{}", 16 + i / 65536, (i / 256) % 256, i % 256))
                .collect(),
        ),
        (
            "domain.txt",
            (0..3000)
                .map(|i| format!("c{i:05}.crash-aging.example"))
                .collect(),
        ),
        (
            "sha1.txt",
            (0..1500u64)
                .map(|i| {
                    format!(
                        "{:040x}",
                        u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c)
                    )
                })
                .collect(),
        ),
    ]
}

#[test]
fn sigkill_during_aging_checkpoints_and_commits_loses_nothing_and_misplaces_nothing() {
    let Some(mut d) = start_at(T0, "") else {
        return;
    };
    let mut rng = Rng::new(0xa9e_c4a5);
    // value → last sighting. Written in thirds at t0, t0+4d, t0+8d.
    let mut last_seen: BTreeMap<String, u64> = BTreeMap::new();
    let set = known_set();
    for k in 0..3u64 {
        let at = T0 + k * 4 * DAY;
        age_at(&d, at);
        for (file, values) in &set {
            let n = values.len() / 3;
            let part = &values[k as usize * n..(k as usize + 1) * n];
            append_all(&d, &format!("live/{file}"), part);
            last_seen.extend(part.iter().map(|v| (v.clone(), at)));
        }
    }
    let values: Vec<String> = last_seen.keys().cloned().collect();
    let mut now = T0 + 8 * DAY;
    age_at(&d, now);
    // Lower bound of each indicator's bucket: where the last acknowledged aging put it.
    let mut aged_at = now;

    for round in 0..10u64 {
        let acked = Arc::new(Acked::default());
        acked.clock.store(now, Ordering::SeqCst);
        acked.aged_at.store(aged_at, Ordering::SeqCst);
        let handle = churn(d.path(".iocfs/ctl"), 0x5eed + round, acked.clone());
        let started = poll_until(READY_TIMEOUT, || {
            (acked.commands.load(Ordering::SeqCst) > 0).then_some(())
        });
        assert!(started.is_some(), "round {round}: no ctl command succeeded");
        let delay = rng.range(20, 301);
        std::thread::sleep(Duration::from_millis(delay));
        d.kill9();
        handle.join().expect("churn thread");
        // A `clock` write whose answer was lost may have moved the in-memory clock, but no
        // `age` ran after it (the thread stops at the first failure) and the clock itself is
        // not persisted: every journaled aging step ran at or before the last acknowledged
        // clock value.
        now = acked.clock.load(Ordering::SeqCst);
        let lower = acked.aged_at.load(Ordering::SeqCst);
        let ctx = format!(
            "round {round} (killed after {delay} ms, {} commands acknowledged, clock t0+{}h)",
            acked.commands.load(Ordering::SeqCst),
            (now - T0) / HOUR
        );
        eprintln!("{ctx}");

        restart_at(&mut d, now);
        assert_eq!(d.read(".iocfs/health"), "ok\n", "{ctx}: health");
        let at = scan(&d).single(&format!("{ctx}, after restart"));
        assert_set(&at, &last_seen, &format!("{ctx}, after restart"));
        for (v, b) in &at {
            let last = last_seen[v];
            let (lo, hi) = (
                bucket_for(lower, last).unwrap(),
                bucket_for(now, last).unwrap(),
            );
            assert!(
                rank(lo) <= rank(b) && rank(b) <= rank(hi),
                "{ctx}: {v} (last seen t0+{}h) is in {b}; the last acknowledged aging \
                 (t0+{}h) put it in {lo}, the clock allows at most {hi}",
                (last - T0) / HOUR,
                (lower - T0) / HOUR
            );
        }

        ctl_ok(&d, "age");
        aged_at = now;
        let at = scan(&d).single(&format!("{ctx}, after restart and age"));
        assert_set(&at, &last_seen, &format!("{ctx}, after age"));
        let wrong: Vec<_> = at
            .iter()
            .filter(|(v, b)| bucket_for(now, last_seen[*v]) != Some(**b))
            .take(10)
            .map(|(v, b)| format!("{v} in {b}, last seen t0+{}h", (last_seen[v] - T0) / HOUR))
            .collect();
        assert!(wrong.is_empty(), "{ctx}: misplaced after age: {wrong:?}");
        for _ in 0..30 {
            let v = &values[rng.range(0, values.len() as u64) as usize];
            let j = lookup(&d, v).unwrap_or_else(|| panic!("{ctx}: lookup {v} missing"));
            assert_eq!(j["bucket"], at[v], "{ctx}: lookup {v}: {j}");
            assert_eq!(
                j["last_seen"],
                rfc3339(last_seen[v]),
                "{ctx}: lookup {v}: {j}"
            );
        }

        // Re-sight a few so the next rounds age a mix of ages.
        let (file, vals) = &set[round as usize % set.len()];
        let again: Vec<&String> = (0..100)
            .map(|_| &vals[rng.range(0, vals.len() as u64) as usize])
            .collect();
        d.append_lines(&format!("live/{file}"), &again);
        for v in again {
            last_seen.insert(v.clone(), now);
        }
    }

    let status = d.stop();
    assert!(status.success(), "SIGTERM exit status {status}");
    let out = Command::new(BIN)
        .arg("check")
        .arg(d.data())
        .output()
        .expect("run iocfs check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iocfs check: {}\n{text}", out.status);
    assert!(text.contains("clean"), "iocfs check output:\n{text}");
}

/// Exactly the written set: nothing lost, nothing invented.
fn assert_set(at: &BTreeMap<String, &str>, want: &BTreeMap<String, u64>, ctx: &str) {
    let missing: Vec<_> = want
        .keys()
        .filter(|v| !at.contains_key(*v))
        .take(10)
        .collect();
    let extra: Vec<_> = at
        .keys()
        .filter(|v| !want.contains_key(*v))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{ctx}: {} stored, {} written; missing {missing:?}, never written {extra:?}",
        at.len(),
        want.len()
    );
}
