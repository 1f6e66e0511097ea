//! Mounted tests of reading tier files: each served file equals its committed `.gz`
//! inflated, random reads equal slices of the whole, and the block cache stays within its
//! size and hits on a second pass.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod aging;
mod common;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::process::Command;

use aging::*;
use common::{Daemon, Rng, TYPE_FILES};

#[test]
fn zcat_of_each_committed_tier_file_equals_the_served_file() {
    let Some(d) = start_at(T0, "[tiers]\nblock_size = \"4KiB\"") else {
        return;
    };
    fill_tiers(&d);
    ctl_ok(&d, "commit");
    let mut compared = 0;
    for tier in ["chaud", "tiede", "froid"] {
        for f in TYPE_FILES {
            let served = std::fs::read(d.path(&format!("{tier}/{f}"))).unwrap();
            let backing = d.data().join(tier).join(format!("{f}.gz"));
            if served.is_empty() {
                if backing.exists() {
                    let out = Command::new("zcat").arg(&backing).output().unwrap();
                    assert!(out.status.success(), "zcat {}", backing.display());
                    assert!(out.stdout.is_empty(), "{} is not empty", backing.display());
                }
                continue;
            }
            let out = Command::new("zcat").arg(&backing).output().unwrap();
            assert!(
                out.status.success(),
                "zcat {}: {}",
                backing.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.stdout == served,
                "zcat {} gives {} bytes, the mount serves {} for {tier}/{f}",
                backing.display(),
                out.stdout.len(),
                served.len()
            );
            // Multi-member: the first gzip member alone holds at most one block.
            let mut first = Vec::new();
            flate2::read::GzDecoder::new(File::open(&backing).unwrap())
                .read_to_end(&mut first)
                .unwrap();
            assert!(
                first.len() <= 4096 && first.len() < served.len(),
                "{}: first member inflates to {} bytes of {} (block_size 4KiB)",
                backing.display(),
                first.len(),
                served.len()
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 12, "non-empty tier files (4 types × 3 tiers)");
}

/// `n` distinct domains, about 27 bytes a line.
fn many_domains(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("d{i:07}.bulk-test.example"))
        .collect()
}

/// One pread; the bytes it returned.
fn pread(f: &File, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = f
        .read_at(&mut buf, off)
        .unwrap_or_else(|e| panic!("pread {len} at {off}: {e}"));
    buf.truncate(n);
    buf
}

#[test]
fn random_preads_of_a_tier_file_equal_slices_of_the_whole_file() {
    let Some(d) = start_at(T0, "[tiers]\nblock_size = \"16KiB\"") else {
        return;
    };
    append_all(&d, "live/domain.txt", &many_domains(200_000));
    age_at(&d, T0 + 25 * HOUR);
    ctl_ok(&d, "commit");
    let full = std::fs::read(d.path("chaud/domain.txt")).unwrap();
    assert_eq!(
        full,
        many_domains(200_000)
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect::<Vec<u8>>(),
        "chaud/domain.txt read whole"
    );
    let size = full.len() as u64;
    let st_size = std::fs::metadata(d.path("chaud/domain.txt")).unwrap().len();
    assert_eq!(st_size, size, "st_size of chaud/domain.txt");
    let expect = |off: u64, len: usize| -> &[u8] {
        let a = off.min(size) as usize;
        let b = (off + len as u64).min(size) as usize;
        &full[a..b]
    };
    let direct = open_direct(&d, "chaud/domain.txt");
    let cached = File::open(d.path("chaud/domain.txt")).unwrap();
    let mut rng = Rng::new(0x5eed_0005);
    const BLOCK: u64 = 16 * 1024;
    for i in 0..1000 {
        let (off, len) = match i % 5 {
            // Anywhere, up to 64 KiB.
            0 | 1 => (rng.range(0, size), rng.range(1, 65_536) as usize),
            // Straddling a multiple of the block size (blocks end on lines, so near them).
            2 => {
                let boundary = rng.range(1, size / BLOCK) * BLOCK;
                (boundary - rng.range(1, 200), rng.range(2, 2000) as usize)
            }
            // Across the end of the file: short.
            3 => (size - rng.range(1, 5000), rng.range(1, 20_000) as usize),
            // At or past the end: nothing.
            _ => (size + rng.range(0, 100_000), rng.range(1, 10_000) as usize),
        };
        let f = if i % 2 == 0 { &direct } else { &cached };
        let got = pread(f, off, len);
        let want = expect(off, len);
        assert!(
            got == want,
            "pread #{i} ({}) of {len} at {off}: {} bytes {:?}…, want {} bytes {:?}…",
            if i % 2 == 0 { "O_DIRECT" } else { "cached" },
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(40)]),
            want.len(),
            String::from_utf8_lossy(&want[..want.len().min(40)])
        );
    }
}

/// Read all of `f` sequentially in 128 KiB reads.
fn scan_direct(f: &File) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = 0u64;
    loop {
        let chunk = pread(f, off, 128 * 1024);
        if chunk.is_empty() {
            return out;
        }
        off += chunk.len() as u64;
        out.extend_from_slice(&chunk);
    }
}

fn cache_stats(d: &Daemon) -> (u64, u64, u64, u64, f64) {
    let c = &stats(d)["cache"];
    let n = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("cache.{k} in stats.json: {c}"))
    };
    (
        n("hits"),
        n("misses"),
        n("bytes"),
        n("capacity"),
        c["hit_rate"].as_f64().expect("cache.hit_rate"),
    )
}

#[test]
fn block_cache_stays_within_its_size_and_hits_on_a_second_pass() {
    let Some(d) = start_at(T0, "[cache]\nsize = \"1MiB\"") else {
        return;
    };
    append_all(&d, "live/domain.txt", &many_domains(200_000));
    let urls: Vec<String> = (0..16_000)
        .map(|i| format!("http://small{i}.example/p/{i}"))
        .collect();
    append_all(&d, "live/url.txt", &urls);
    age_at(&d, T0 + 25 * HOUR);
    ctl_ok(&d, "commit");
    let big = std::fs::read(d.path("chaud/domain.txt")).unwrap();
    let small = std::fs::read(d.path("chaud/url.txt")).unwrap();
    assert!(big.len() > 4 << 20, "big file: {} bytes", big.len());
    assert!(
        small.len() > 300_000 && small.len() < 700_000,
        "small file: {} bytes",
        small.len()
    );

    let (.., capacity, _) = cache_stats(&d);
    assert_eq!(capacity, 1 << 20, "cache.capacity");
    for pass in 1..=2 {
        let f = open_direct(&d, "chaud/domain.txt");
        assert!(scan_direct(&f) == big, "pass {pass} over the big file");
        let (_, _, bytes, capacity, _) = cache_stats(&d);
        assert!(
            bytes <= capacity,
            "after pass {pass} over a {} byte file: cache.bytes {bytes} > capacity {capacity}",
            big.len()
        );
    }

    let f = open_direct(&d, "chaud/url.txt");
    assert!(scan_direct(&f) == small, "first pass over the small file");
    let (hits1, misses1, bytes1, _, rate1) = cache_stats(&d);
    assert!(bytes1 <= capacity);
    let f = open_direct(&d, "chaud/url.txt");
    assert!(scan_direct(&f) == small, "second pass over the small file");
    let (hits2, misses2, bytes2, _, rate2) = cache_stats(&d);
    assert!(bytes2 <= capacity);
    assert!(
        hits2 > hits1,
        "cache.hits did not rise on the second pass: {hits1} → {hits2}"
    );
    assert_eq!(
        misses2, misses1,
        "a file smaller than the cache missed on its second pass"
    );
    assert!(rate2 > rate1, "cache.hit_rate {rate1} → {rate2}");
}
