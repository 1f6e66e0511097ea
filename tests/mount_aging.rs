//! Mounted tests on a manual clock: aging through the buckets, re-sightings, tier files
//! (zcat, random reads, block cache), removal, checkpoints and config reload.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod aging;
mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use aging::*;
use common::{poll_until, Daemon, Rng, TYPE_FILES};
use nix::sys::signal::Signal;

/// Each indicator's last sighting and the file it was written to, to derive where it must be.
#[derive(Default)]
struct Model {
    last_seen: BTreeMap<String, u64>,
}

impl Model {
    fn seen(&mut self, d: &Daemon, file: &str, value: &str, now: u64) {
        d.append_lines(&format!("live/{file}"), &[value]);
        self.last_seen.insert(value.to_string(), now);
    }

    /// After an aging step at `now`: every indicator where its age says, once, and lookup/
    /// agreeing; dropped ones nowhere.
    fn verify(&self, d: &Daemon, now: u64, ctx: &str) {
        let scan = scan(d);
        let at = scan.single(ctx);
        for (value, &last) in &self.last_seen {
            let want = bucket_for(now, last);
            assert_eq!(
                at.get(value).copied(),
                want,
                "{ctx}: bucket of {value} (last seen {})",
                rfc3339(last)
            );
            assert_eq!(
                lookup_bucket(d, value).as_deref(),
                want,
                "{ctx}: lookup/{value} disagrees with the files"
            );
        }
        let strange: Vec<_> = at
            .keys()
            .filter(|v| !self.last_seen.contains_key(*v))
            .collect();
        assert!(strange.is_empty(), "{ctx}: never written: {strange:?}");
    }
}

fn timeline(restarts: bool) {
    let Some(mut d) = start_at(T0, "") else {
        return;
    };
    let mut m = Model::default();
    m.seen(&d, "ipv4.txt", "1.2.3.4", T0);
    m.seen(&d, "domain.txt", "first.example", T0);
    m.verify(&d, T0, "at t0");
    // (relative clock move, time it reaches, where 1.2.3.4 must be then)
    let steps = [
        ("+23h", T0 + 23 * HOUR, Some("live")),
        ("+2h", T0 + 25 * HOUR, Some("chaud")),
        ("+167h", T0 + 8 * DAY, Some("tiede")),
        ("+23d", T0 + 31 * DAY, Some("froid")),
        ("+335d", T0 + 366 * DAY, None),
    ];
    for (delta, now, want) in steps {
        let ctx = format!(
            "t0{delta} → t0+{}h{}",
            (now - T0) / HOUR,
            if restarts { " (with restarts)" } else { "" }
        );
        ctl_ok(&d, &format!("clock {delta}"));
        // Seen at every step: always live. Written once at t0+25h: ages on its own schedule.
        m.seen(&d, "ipv4.txt", "9.9.9.9", now);
        if now == T0 + 25 * HOUR {
            m.seen(&d, "ipv4.txt", "5.6.7.8", now);
        }
        ctl_ok(&d, "age");
        assert_eq!(
            scan(&d).single(&ctx).get("1.2.3.4").copied(),
            want,
            "{ctx}: 1.2.3.4"
        );
        m.verify(&d, now, &ctx);
        match lookup(&d, "1.2.3.4") {
            Some(v) => {
                assert_eq!(v["first_seen"], rfc3339(T0), "{ctx}: {v}");
                assert_eq!(v["last_seen"], rfc3339(T0), "{ctx}: {v}");
                assert_eq!(v["type"], "ipv4", "{ctx}: {v}");
            }
            None => assert!(want.is_none(), "{ctx}: lookup/1.2.3.4 missing"),
        }
        if restarts {
            let status = d.stop();
            assert!(status.success(), "{ctx}: SIGTERM exit status {status}");
            restart_at(&mut d, now);
            assert_eq!(stats(&d)["now"], rfc3339(now), "{ctx}: clock after restart");
            m.verify(&d, now, &format!("{ctx}, after a restart"));
            // Aging again at the same time moves nothing.
            ctl_ok(&d, "age");
            m.verify(&d, now, &format!("{ctx}, after a restart and age"));
        }
    }
    assert_eq!(d.read(".iocfs/health"), "ok\n");
}

#[test]
fn timeline_live_chaud_tiede_froid_gone() {
    timeline(false);
}

#[test]
fn timeline_with_a_restart_after_every_step() {
    timeline(true);
}

#[test]
fn re_sighting_in_chaud_moves_back_to_live_keeping_first_seen() {
    let Some(d) = start_at(T0, "") else { return };
    d.append_lines("live/domain.txt", &["again.example", "other.example"]);
    age_at(&d, T0 + 2 * DAY);
    let at = scan(&d).single("after aging to t0+2d");
    assert_eq!(at["again.example"], "chaud");
    assert_eq!(at["other.example"], "chaud");

    let t1 = T0 + 2 * DAY + 5 * HOUR;
    set_clock(&d, t1);
    d.append_lines("live/domain.txt", &["Again.Example."]);
    let s = scan(&d);
    let at = s.single("after the re-sighting");
    assert_eq!(at["again.example"], "live");
    assert_eq!(at["other.example"], "chaud");
    assert_eq!(s.lines("live", "domain.txt"), ["again.example"]);
    assert_eq!(s.lines("chaud", "domain.txt"), ["other.example"]);
    let v = lookup(&d, "again.example").expect("lookup again.example");
    assert_eq!(v["bucket"], "live", "{v}");
    assert_eq!(v["first_seen"], rfc3339(T0), "first_seen kept: {v}");
    assert_eq!(
        v["last_seen"],
        rfc3339(t1),
        "last_seen is the sighting: {v}"
    );
    let v = lookup(&d, "other.example").expect("lookup other.example");
    assert_eq!(v["last_seen"], rfc3339(T0), "{v}");

    // It now ages from the new sighting: live 23 h later, chaud at 24 h.
    age_at(&d, t1 + 23 * HOUR);
    assert_eq!(lookup_bucket(&d, "again.example").as_deref(), Some("live"));
    age_at(&d, t1 + DAY);
    let at = scan(&d).single("a day after the re-sighting");
    assert_eq!(at["again.example"], "chaud");
    // other.example, last seen at t0, is 3 days old: still chaud.
    assert_eq!(at["other.example"], "chaud");
}

#[test]
fn staggered_batches_land_in_the_bucket_their_age_demands() {
    let Some(d) = start_at(T0, "") else { return };
    // (name, written at, bucket at t0+40d)
    let batches = [
        ("a", T0, "froid"),
        ("b", T0 + 20 * DAY, "tiede"),
        ("c", T0 + 37 * DAY, "chaud"),
        ("e", T0 + 38 * DAY + 23 * HOUR, "chaud"),
        ("d", T0 + 39 * DAY + 6 * HOUR, "live"),
    ];
    let mut want: BTreeMap<String, &str> = BTreeMap::new();
    for (name, at, bucket) in batches {
        age_at(&d, at);
        let lines: Vec<String> = (0..600)
            .map(|i| format!("{name}{i:04}.stagger.example"))
            .collect();
        append_all(&d, "live/domain.txt", &lines);
        want.extend(lines.into_iter().map(|l| (l, bucket)));
    }
    age_at(&d, T0 + 40 * DAY);
    let got = scan(&d).single("at t0+40d");
    assert_eq!(got.len(), want.len(), "indicators stored");
    let wrong: Vec<_> = want
        .iter()
        .filter(|(v, b)| got.get(*v) != Some(*b))
        .take(10)
        .map(|(v, b)| (v, b, got.get(v)))
        .collect();
    assert!(wrong.is_empty(), "(value, want, got): {wrong:?}");
    let st = stats(&d);
    for (bucket, n) in [
        ("live", 600),
        ("chaud", 1200),
        ("tiede", 600),
        ("froid", 600),
    ] {
        let wc = d.sh_ok(&format!("wc -l < {bucket}/domain.txt"));
        let wc: u64 = String::from_utf8_lossy(&wc.stdout).trim().parse().unwrap();
        assert_eq!(wc, n, "wc -l {bucket}/domain.txt");
        assert_eq!(
            stat_lines(&st, bucket, "domain"),
            n,
            "stats.json buckets.{bucket}.domain.lines"
        );
        assert_eq!(stat_lines(&st, bucket, "total"), n, "{bucket} total");
    }
    // The last step moved exactly the batch that crossed 24 h.
    assert_eq!(
        st["aging"]["last"]["moved"],
        serde_json::json!({"live->chaud": 600}),
        "aging.last: {}",
        st["aging"]["last"]
    );
}

/// Indicators of four types spread over the three tiers.
fn fill_tiers(d: &Daemon) {
    let ips: Vec<String> = (0..3000)
        .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let domains: Vec<String> = (0..3000)
        .map(|i| format!("host{i}.tiers.example"))
        .collect();
    let urls: Vec<String> = (0..1500)
        .map(|i| format!("https://u{i}.example/path/{i}?q={}", i * 7))
        .collect();
    let hashes: Vec<String> = (0..1000u64)
        .map(|i| format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    // Written in thirds at t0, t0+10d, t0+35d; at t0+36d they are froid, tiede, chaud.
    for (k, at) in [T0, T0 + 10 * DAY, T0 + 35 * DAY].into_iter().enumerate() {
        age_at(d, at);
        let third = |v: &[String]| -> Vec<String> {
            let n = v.len() / 3;
            v[k * n..(k + 1) * n].to_vec()
        };
        append_all(d, "live/ipv4.txt", &third(&ips));
        append_all(d, "live/domain.txt", &third(&domains));
        append_all(d, "live/url.txt", &third(&urls));
        append_all(d, "live/sha256.txt", &third(&hashes));
    }
    age_at(d, T0 + 36 * DAY);
}

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

#[test]
fn remove_in_tiede_deletes_and_survives_sigkill() {
    let Some(mut d) = start_at(T0, "") else {
        return;
    };
    d.append_lines("live/ipv4.txt", &["198.51.100.7", "198.51.100.8"]);
    d.append_lines("live/url.txt", &["http://fp.example/a/b"]);
    let now = T0 + 8 * DAY;
    age_at(&d, now);
    let at = scan(&d).single("at t0+8d");
    assert_eq!(at["198.51.100.7"], "tiede");
    assert_eq!(at["http://fp.example/a/b"], "tiede");
    ctl_ok(&d, "remove 198.51.100.7 http://fp.example/a/b");
    let check = |d: &Daemon, ctx: &str| {
        let s = scan(d);
        let at = s.single(ctx);
        assert!(!at.contains_key("198.51.100.7"), "{ctx}: still served");
        assert!(!at.contains_key("http://fp.example/a/b"), "{ctx}");
        assert_eq!(at.get("198.51.100.8").copied(), Some("tiede"), "{ctx}");
        assert_eq!(s.lines("tiede", "ipv4.txt"), ["198.51.100.8"], "{ctx}");
        assert!(lookup(d, "198.51.100.7").is_none(), "{ctx}: lookup");
        assert!(lookup(d, "http://fp.example/a/b").is_none(), "{ctx}");
        assert!(lookup(d, "198.51.100.8").is_some(), "{ctx}");
    };
    check(&d, "after remove");
    d.kill9();
    restart_at(&mut d, now);
    check(&d, "after SIGKILL and restart");
    ctl_ok(&d, "age");
    check(&d, "after restart and age");
    // Committed files agree too.
    ctl_ok(&d, "commit");
    let out = Command::new("zcat")
        .arg(d.data().join("tiede/ipv4.txt.gz"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "198.51.100.8\n");
}

#[test]
fn restart_from_a_checkpoint_and_from_a_damaged_one_serves_the_same() {
    let Some(mut d) = start_at(T0, "") else {
        return;
    };
    fill_tiers(&d);
    let now = T0 + 36 * DAY;
    ctl_ok(&d, "commit");
    ctl_ok(&d, "checkpoint");
    let before = snapshot(&d);
    let st = stats(&d);
    assert!(
        st["checkpoint"]["last"].is_object(),
        "checkpoint.last: {st}"
    );
    // SIGKILL: no shutdown checkpoint, so the restart uses the one from ctl.
    d.kill9();
    restart_at(&mut d, now);
    let st = stats(&d);
    let parts = st["recovery"]["partitions_from_checkpoint"]
        .as_u64()
        .unwrap_or(0);
    assert!(parts > 0, "recovery: {}", st["recovery"]);
    assert_same(
        &before,
        &snapshot(&d),
        "after a restart from the checkpoint",
    );

    let status = d.stop();
    assert!(status.success(), "SIGTERM exit status {status}");
    let newest = common::checkpoints(&d.data())
        .pop()
        .expect("a checkpoint file");
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    restart_at(&mut d, now);
    assert_same(
        &before,
        &snapshot(&d),
        "after corrupting the newest checkpoint",
    );
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("damaged checkpoint") && l.contains(&name)),
        "the log does not report the damaged checkpoint {name}:\n{}",
        d.log()
    );
    ctl_ok(&d, "age");
    assert_same(&before, &snapshot(&d), "after aging again at the same time");
}

#[test]
fn sighup_reloads_retention_and_keeps_the_old_config_when_the_new_one_is_bad() {
    let retention = |live: &str| config(&format!("[retention]\nlive_to_chaud = \"{live}\"\n"));
    let Some(d) = Daemon::builder()
        .manual_clock(T0)
        .config(&retention("24h"))
        .start()
    else {
        return;
    };
    d.append_lines("live/ipv4.txt", &["203.0.113.9"]);
    ctl_ok(&d, "clock +2h");
    ctl_ok(&d, "age");
    assert_eq!(lookup_bucket(&d, "203.0.113.9").as_deref(), Some("live"));

    std::fs::write(d.config_path(), retention("1h")).unwrap();
    d.signal(Signal::SIGHUP);
    let reloaded = poll_until(Duration::from_secs(5), || {
        d.log().contains("SIGHUP: reloaded").then_some(())
    });
    assert!(reloaded.is_some(), "no reload in the log:\n{}", d.log());
    ctl_ok(&d, "age");
    let at = scan(&d).single("after the reload");
    assert_eq!(at.get("203.0.113.9").copied(), Some("chaud"));

    // A bad file: kept running on the previous config (live_to_chaud 1h), said so.
    std::fs::write(
        d.config_path(),
        config("[durability]\nmode = \"sometimes\"\n"),
    )
    .unwrap();
    d.signal(Signal::SIGHUP);
    let kept = poll_until(Duration::from_secs(5), || {
        d.log()
            .lines()
            .find(|l| l.contains("not reloaded"))
            .map(String::from)
    });
    let kept = kept.unwrap_or_else(|| panic!("no rejection in the log:\n{}", d.log()));
    assert!(
        kept.contains("keeping the running config") && kept.contains("durability.mode"),
        "log line: {kept}"
    );
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    d.append_lines("live/ipv4.txt", &["203.0.113.10"]);
    ctl_ok(&d, "clock +90m");
    ctl_ok(&d, "age");
    assert_eq!(
        lookup_bucket(&d, "203.0.113.10").as_deref(),
        Some("chaud"),
        "the 1h retention from the last good config still applies"
    );
}
