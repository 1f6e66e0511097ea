//! Mounted tests on a manual clock: aging through the buckets, re-sightings, removal,
//! checkpoints and config reload (reads of tier files: mount_tier_reads.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod aging;
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use aging::*;
use common::{poll_until, Daemon};
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
    let health = d.read(".iocfs/health");
    assert!(
        health.starts_with("config: ") && health.contains("not reloaded"),
        "{health}"
    );
    d.append_lines("live/ipv4.txt", &["203.0.113.10"]);
    ctl_ok(&d, "clock +90m");
    ctl_ok(&d, "age");
    assert_eq!(
        lookup_bucket(&d, "203.0.113.10").as_deref(),
        Some("chaud"),
        "the 1h retention from the last good config still applies"
    );
    // A good file again: reloaded, and health says so.
    std::fs::write(d.config_path(), retention("1h")).unwrap();
    d.signal(Signal::SIGHUP);
    let cleared = poll_until(Duration::from_secs(5), || {
        (d.log().matches("SIGHUP: reloaded").count() == 2).then_some(())
    });
    assert!(
        cleared.is_some(),
        "no second reload in the log:\n{}",
        d.log()
    );
    assert_eq!(d.read(".iocfs/health"), "ok\n");
}

/// The aging thread journals a step only when something is due: an idle store's log stays
/// empty, and a clean restart replays nothing.
#[test]
fn the_aging_thread_writes_nothing_while_nothing_is_due() {
    let Some(mut d) = Daemon::builder()
        .arg("--manual-clock")
        .arg(T0.to_string())
        .config("[aging]\ninterval = \"50ms\"\n")
        .start()
    else {
        return;
    };
    let stats = |d: &Daemon| -> serde_json::Value {
        serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap()
    };
    d.append_lines("live/ipv4.txt", &["6.51.100.7"]);
    let seq = stats(&d)["wal"]["applied_seq"].as_u64().unwrap();
    // The thread checks (stats show the check as the last aging) and journals nothing.
    set_clock(&d, T0 + HOUR);
    poll_until(common::READY_TIMEOUT, || {
        (stats(&d)["aging"]["last"]["at"] == rfc3339(T0 + HOUR).as_str()).then_some(())
    })
    .expect("the aging thread ran at T0+1h");
    assert_eq!(stats(&d)["wal"]["applied_seq"].as_u64(), Some(seq));
    // Due: journaled and applied.
    set_clock(&d, T0 + 25 * HOUR);
    poll_until(common::READY_TIMEOUT, || {
        (d.read("chaud/ipv4.txt") == "6.51.100.7\n").then_some(())
    })
    .expect("the aging thread moved the address to chaud");
    assert!(stats(&d)["wal"]["applied_seq"].as_u64().unwrap() > seq);
    set_clock(&d, T0 + 26 * HOUR);
    poll_until(common::READY_TIMEOUT, || {
        (stats(&d)["aging"]["last"]["at"] == rfc3339(T0 + 26 * HOUR).as_str()).then_some(())
    })
    .expect("the aging thread ran at T0+26h");
    d.stop();
    restart_at(&mut d, T0 + 26 * HOUR);
    assert!(d.log().contains(", 0 WAL records replayed"), "{}", d.log());
    assert_eq!(d.read("chaud/ipv4.txt"), "6.51.100.7\n");
}
