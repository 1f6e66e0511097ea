//! Readers opening a tier file while its version changes many times a second (found by
//! `scripts/torture`: `read tiede/sha256.txt` failed with ESTALE while the daemon was up).
//! Every open must succeed and read whole lines, however fast the versions change.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Daemon;

const T0: u64 = 1_700_000_000;

#[test]
fn opens_of_a_tier_file_never_fail_while_sightings_keep_changing_it() {
    let Some(d) = Daemon::builder()
        .manual_clock(T0)
        .config("[aging]\ninterval = \"3650d\"\n[tiers]\nblock_size = \"4KiB\"\n")
        .start()
    else {
        return;
    };
    let values: Vec<String> = (0..20_000u32).map(|i| format!("{i:064x}")).collect();
    d.append_bulk("live/sha256.txt", &values);
    d.ctl("clock +10d").unwrap();
    d.ctl("age").unwrap();
    assert_eq!(d.lines("tiede/sha256.txt").len(), values.len());

    let stop = Arc::new(AtomicBool::new(false));
    let sightings = Arc::new(AtomicU64::new(0));
    // Each append of a tiede indicator moves it back to live: a new tiede version.
    let writer = {
        let (path, stop, sightings) = (d.path("live/sha256.txt"), stop.clone(), sightings.clone());
        let values = values.clone();
        std::thread::spawn(move || {
            let mut f = OpenOptions::new().append(true).open(path).unwrap();
            for v in &values {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                f.write_all(format!("{v}\n").as_bytes()).unwrap();
                sightings.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (path, stop) = (d.path("tiede/sha256.txt"), stop.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut text = String::new();
                    match std::fs::File::open(&path) {
                        Err(e) => failures.push(format!("open: {e}")),
                        Ok(mut f) => match f.read_to_string(&mut text) {
                            Err(e) => failures.push(format!("read: {e}")),
                            Ok(_) if !text.is_empty() && !text.ends_with('\n') => {
                                failures.push(format!("{} bytes, not whole lines", text.len()))
                            }
                            Ok(_) => reads += 1,
                        },
                    }
                }
                (reads, failures)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !writer.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let mut reads = 0;
    let mut failures = Vec::new();
    for r in readers {
        let (n, f) = r.join().unwrap();
        reads += n;
        failures.extend(f);
    }
    eprintln!(
        "{reads} whole reads of tiede/sha256.txt during {} sightings",
        sightings.load(Ordering::Relaxed)
    );
    assert!(reads > 0, "no read completed");
    assert!(
        failures.is_empty(),
        "{} of {} opens/reads failed while the daemon was up, e.g. {:?}",
        failures.len(),
        reads + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
}
