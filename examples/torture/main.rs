//! Torture driver behind `scripts/torture`: a seeded workload against a mounted iocfs (a
//! `--features testing` build on a manual clock) that SIGKILLs the daemon at random moments,
//! remounts it and checks the served state against a model of what was acknowledged.
//!
//! Two feeds are declared at the start (`mkdir sources/feed_a`, `sources/feed_b`; DESIGN
//! §9). Between two kills these threads run against the mount:
//! - three appenders: `O_APPEND` opens, 1–4 write()s of 1–50 lines each, new and already
//!   known indicators of four types (ipv4, domain, url, sha256), half of the time to
//!   `live/` (sightings by `local`), otherwise to a feed's file (sightings by that feed);
//! - a replacer: `cp` of a set built from the model (keeps part of the live set, drops the
//!   rest, adds new ones and promotes some tier ones), `sed -i '/pattern/d'`, or
//!   `remove VALUE…` in `.iocfs/ctl`;
//! - a feed replacer (`sources.rs`): a feed's new list of one type by `cp` or by a scratch
//!   file renamed onto the name (most of what it lists, the rest withdrawn; a few stored
//!   indicators it didn't list, tier ones included; a few new ones), `sed -i '/pattern/d'`
//!   (withdraws a group), and now and then `rmdir` of a feed that lists something
//!   (`ENOTEMPTY`);
//! - a clock thread: `clock +Nh`, `age`, `commit`, `checkpoint` in `.iocfs/ctl`;
//! - a reader: `.iocfs/lookup/VALUE`, whole files of every bucket and feed, stats.json.
//!
//! The WAL record limit is lowered after each start (`record-limit`), so most replaces are
//! journaled in pieces and kills land inside them.
//!
//! The model keeps, per indicator, the set of states the daemon may be in: absent, or
//! present in a bucket with a last-seen time and a source set (`local`, `feed_a`,
//! `feed_b`). An acknowledged operation maps every possible state to its result: an append
//! adds its source (live/: `local`); a replace of live/ keeps the sets of what it keeps and
//! gives new ones `{local}`; a feed's replace adds the feed to what it lists (bucket and
//! times unchanged, new ones live with `{feed}`), takes it from what it no longer lists,
//! and drops one left with no source; `remove` drops; aging keeps sets. One whose outcome
//! is unknown because the daemon was killed while it was in flight adds its result to the
//! possible states (either outcome is fine) until a later acknowledged operation decides
//! it again. Operations that don't commute are serialized (the clock/age thread excludes
//! all writers; `cp`, `sed -i`, `remove` and every feed replace exclude appenders of their
//! type to every target, and each other), so the model's order is the daemon's order.
//!
//! After each kill: restart on the same data dir with the manual clock at the largest value
//! ever written, then check (a) every indicator against its possible states: its bucket
//! from the 36 bucket files and which feeds list it from the feeds' files must be one
//! possible state (a certainly present one missing counts as lost; a bucket that is
//! possible with feeds that are not counts as sources_wrong), (b) no line is served twice
//! over the 36 files, the feeds' files are sorted canonically and `sources/` holds exactly
//! the two feeds, and 200 sampled lookups (half certainly present, half among those a feed
//! may list) give a possible (bucket, last seen, sources), `local` included, (c) after one
//! more `age`, (a) again and every indicator is in the bucket its age demands. Every 10
//! kills and at the end: SIGTERM (exit 0), `iocfs check DATA` (clean), restart.
//!
//! `--exclusive-commits` turns background commits and checkpoints off and has the clock
//! thread run `commit`/`checkpoint` while no mutation is in flight: a way to tell races of
//! the group commit with writers from everything else.
//!
//! The last line is `torture: kills=N acknowledged=M lost=L duplicated=D sources_wrong=W
//! check=clean|failed seed=S`; `acknowledged` counts acknowledged mutations (append
//! write()s, replacements, removals, to live/ and the feeds); `sources_wrong` counts
//! indicators whose sources (feed files or lookup) are no possible state. The exit status is
//! non-zero on any violation, listed above that line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

#[path = "../common/mod.rs"]
mod common;
mod model;
mod sources;
mod verify;
mod workload;

use common::{Daemon, Rng};
use model::{bucket_for, describe, value, Model, St, DAY, HOUR, T0};
use sources::{declare, scan_listed, source_replacer, FEEDS};
use verify::{scan, Checker, Tally};
use workload::{appender, clock_thread, reader, replacer, Shared};

/// `COMMITS` is replaced by the commit and checkpoint intervals.
const CONFIG: &str = r#"# written by examples/torture/
[aging]
# Aging only when the workload asks for it (`age` in ctl), so the model knows when it ran.
interval = "3650d"
[durability]
COMMITS
segment_size = "1MiB"
[tiers]
block_size = "4KiB"
[cache]
size = "1MiB"
"#;

/// Background commits and checkpoints run concurrently with everything.
const CONCURRENT_COMMITS: &str = "commit_interval = \"300ms\"\ncheckpoint_interval = \"2s\"";
/// `--exclusive-commits`: only the ctl commands of the clock thread commit, while no
/// mutation runs.
const EXCLUSIVE_COMMITS: &str = "commit_interval = \"3650d\"\ncheckpoint_interval = \"3650d\"";

/// The WAL record limit (test builds: `record-limit` in ctl), far above any append write
/// of the workload (at most 50 lines).
const RECORD_LIMIT: usize = 64 << 10;

/// How far the clock moves over a whole run: past froid_retention, so drops happen too.
const CLOCK_BUDGET: u64 = 500 * DAY;

// ---------------------------------------------------------------------------------------
// The run

struct Args {
    kills: u64,
    seed: u64,
    bin: PathBuf,
    dir: Option<PathBuf>,
    verbose: bool,
    exclusive_commits: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: torture [--quick] [--kills N] [--seed S] [--bin PATH/iocfs] [--dir WORKDIR] [--verbose]\n\
         \x20              [--exclusive-commits]\n\
         (run by scripts/torture; needs root, /dev/fuse and a `--features testing` iocfs)"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        kills: 200,
        seed: 0,
        bin: PathBuf::new(),
        dir: None,
        verbose: false,
        exclusive_commits: false,
    };
    let mut seed = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => args.kills = 20,
            "--kills" => args.kills = val().parse().unwrap_or_else(|_| usage()),
            "--seed" => seed = Some(val().parse().unwrap_or_else(|_| usage())),
            "--bin" => args.bin = PathBuf::from(val()),
            "--dir" => args.dir = Some(PathBuf::from(val())),
            "--verbose" | "-v" => args.verbose = true,
            "--exclusive-commits" => args.exclusive_commits = true,
            _ => usage(),
        }
    }
    args.seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)
    });
    if args.bin.as_os_str().is_empty() {
        args.bin = common::sibling_iocfs();
    }
    args
}

struct Run {
    args: Args,
    daemon: Daemon,
    shared: Shared,
    tally: Tally,
    rng: Rng,
    kills: u64,
    checks: u64,
    /// Time spent restarting, verifying, and in clean SIGTERM/check cycles.
    spent: [Duration; 3],
}

impl Run {
    fn restart(&mut self) -> Result<(), String> {
        let clock = {
            let mut m = self.shared.model();
            m.clock = m.max_clock;
            m.clock
        };
        self.daemon.start(Some(clock))?;
        // Replaces over a quarter of it are journaled in pieces (a stage, then its end):
        // lowered so that most `cp`s are, and a kill often lands inside one. Not persistent.
        self.ctl(&format!("record-limit {RECORD_LIMIT}"))
    }

    fn ctl(&self, cmd: &str) -> Result<(), String> {
        self.shared
            .ctl(cmd)
            .map_err(|e| format!("ctl {cmd} after restart: {e}"))
    }

    /// One round: the workload, then a SIGKILL after 20–500 ms.
    fn round(&mut self, round: u64) {
        let sh = &self.shared;
        sh.stop.store(false, Ordering::SeqCst);
        // Up to three times the run's average per round, within the whole run's budget.
        let per_round = (3 * CLOCK_BUDGET / self.args.kills.max(1)).max(HOUR);
        let left = (T0 + CLOCK_BUDGET).saturating_sub(sh.model().clock);
        sh.clock_allowance
            .store(per_round.min(left), Ordering::SeqCst);
        let max_step = (per_round / HOUR / 4).max(72);
        let delay = self.rng.range(20, 500);
        let seed = self.args.seed;
        let exclusive = self.args.exclusive_commits;
        let daemon = &mut self.daemon;
        let stuck = std::thread::scope(|s| {
            for i in 0..3 {
                let rng = Rng::derive(seed, round, i);
                s.spawn(move || appender(sh, rng));
            }
            let rng = Rng::derive(seed, round, 10);
            s.spawn(move || replacer(sh, rng, round));
            let rng = Rng::derive(seed, round, 13);
            s.spawn(move || source_replacer(sh, rng, round));
            let rng = Rng::derive(seed, round, 11);
            s.spawn(move || clock_thread(sh, rng, max_step, exclusive));
            let rng = Rng::derive(seed, round, 12);
            s.spawn(move || reader(sh, rng));
            std::thread::sleep(Duration::from_millis(delay));
            sh.stop.store(true, Ordering::SeqCst);
            daemon.kill9()
        });
        if let Some(what) = stuck {
            sh.violation(what);
        }
        self.kills += 1;
        if self.args.verbose {
            let (p, a, u) = self.shared.model().census();
            println!(
                "kill {round}: after {delay} ms; model: {p} present, {a} absent, {u} uncertain"
            );
        }
    }

    fn thread_violations(&mut self, ctx: &str) {
        let found: Vec<String> = std::mem::take(
            &mut *self
                .shared
                .violations
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut c = Checker {
            tally: &mut self.tally,
            shown: 0,
            ctx: ctx.to_string(),
        };
        for v in found {
            c.other(v);
        }
    }

    /// After a restart: (a), (b), lookups, then one `age` and (c).
    fn verify(&mut self, ctx: &str) -> Result<(), String> {
        let mnt = self.shared.mnt.clone();
        let health = std::fs::read_to_string(mnt.join(".iocfs/health"))
            .map_err(|e| format!("read health: {e}"))?;
        let served = scan(&mnt)?;
        let mut problems = Vec::new();
        let listed = scan_listed(&mnt, &mut problems)?;
        {
            let model = self.shared.model();
            let mut c = Checker {
                tally: &mut self.tally,
                shown: 0,
                ctx: ctx.to_string(),
            };
            if health != "ok\n" {
                c.other(format!("health after restart: {health:?}"));
            }
            for p in problems {
                c.other(p);
            }
            c.against_model(&model, &served, &listed);
            c.lookups(&model, &mnt, &mut self.rng);
        }
        // (c) one more aging step at the restarted clock.
        self.ctl("age")?;
        let served = scan(&mnt)?;
        let model = {
            let mut m = self.shared.model();
            let now = m.clock;
            m.age(now, true);
            m
        };
        let mut c = Checker {
            tally: &mut self.tally,
            shown: 0,
            ctx: format!("{ctx}, after age"),
        };
        let mut problems = Vec::new();
        let listed = scan_listed(&mnt, &mut problems)?;
        for p in problems {
            c.other(p);
        }
        c.against_model(&model, &served, &listed);
        // The model's own invariant: a known state is where its age puts it.
        for (k, states) in model.entries() {
            for s in states {
                if let St::At(b, l, _) = *s {
                    if Some(b) != bucket_for(model.clock, l) {
                        c.other(format!(
                            "model bug: {} in {} at clock T0{:+}h",
                            value(k.0, k.1),
                            describe(&[*s]),
                            (model.clock as i64 - T0 as i64) / HOUR as i64
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// `iocfs check DATA` (the daemon stopped) must say "clean".
    fn check_data(&mut self, ctx: &str) -> Result<(), String> {
        let problem = self.daemon.check()?;
        self.checks += 1;
        if let Some(why) = problem {
            self.tally.check_failed = true;
            self.tally.other += 1;
            println!("VIOLATION ({ctx}): {why}");
        }
        Ok(())
    }

    /// SIGTERM (exit 0), `iocfs check DATA` (clean), restart, check again.
    fn clean_cycle(&mut self, ctx: &str) -> Result<(), String> {
        let status = self.daemon.stop()?;
        if !status.success() {
            self.tally.other += 1;
            println!(
                "VIOLATION ({ctx}): SIGTERM exit status {status}; log tail:\n{}",
                self.daemon.log_tail(20)
            );
        }
        self.check_data(ctx)?;
        self.restart()?;
        self.verify(&format!("{ctx}, after SIGTERM and check"))
    }

    fn progress(&self, started: Instant) {
        let m = self.shared.model();
        let (p, a, u) = m.census();
        let [fa, fb] = m.feed_census();
        println!(
            "torture: {} kills in {:.0} s (restarts {:.0} s, checks {:.0} s, SIGTERM+check cycles {:.0} s): \
             {} acknowledged ({} lines, {} by the feeds), {} in flight at a kill; \
             model {p} present, {a} absent, {u} uncertain, {fa} listed by {}, {fb} by {}; \
             feed replaces withdrew {} from every bucket, unlisted {} kept by another source, \
             listed {} in a tier; clock T0+{}d; violations {}",
            self.kills,
            started.elapsed().as_secs_f64(),
            self.spent[0].as_secs_f64(),
            self.spent[1].as_secs_f64(),
            self.spent[2].as_secs_f64(),
            self.shared.acked.load(Ordering::Relaxed),
            self.shared.acked_lines.load(Ordering::Relaxed),
            self.shared.source_acked.load(Ordering::Relaxed),
            self.shared.in_flight_at_kill.load(Ordering::Relaxed),
            FEEDS[0],
            FEEDS[1],
            m.feed_stats.withdrawn,
            m.feed_stats.kept,
            m.feed_stats.listed_in_tier,
            (m.clock - T0) / DAY,
            self.tally.lost + self.tally.duplicated + self.tally.sources_wrong + self.tally.other,
        );
    }

    fn go(&mut self) -> Result<(), String> {
        let started = Instant::now();
        self.restart()?;
        declare(&self.shared.mnt)?;
        for k in 1..=self.args.kills {
            self.round(k);
            let ctx = format!("kill {k}");
            self.thread_violations(&ctx);
            let t = Instant::now();
            self.restart()?;
            self.spent[0] += t.elapsed();
            let t = Instant::now();
            self.verify(&ctx)?;
            self.spent[1] += t.elapsed();
            if k % 10 == 0 || k == self.args.kills {
                let t = Instant::now();
                self.clean_cycle(&ctx)?;
                self.spent[2] += t.elapsed();
                self.progress(started);
            }
        }
        let status = self.daemon.stop()?;
        if !status.success() {
            self.tally.other += 1;
            println!("VIOLATION (final stop): SIGTERM exit status {status}");
        }
        Ok(())
    }
}

fn main() {
    let args = parse_args();
    let (_tmpdir, dir) = common::work_dir(
        args.dir.as_deref(),
        "iocfs-torture-",
        &["data", "mnt", "tmp"],
    );
    let dir = dir.canonicalize().expect("canonicalize work dir");
    let config = dir.join("iocfs.toml");
    let commits = if args.exclusive_commits {
        EXCLUSIVE_COMMITS
    } else {
        CONCURRENT_COMMITS
    };
    std::fs::write(&config, CONFIG.replace("COMMITS", commits)).expect("write config");
    println!(
        "torture: seed={} kills={} dir={} bin={}{}",
        args.seed,
        args.kills,
        dir.display(),
        args.bin.display(),
        if args.exclusive_commits {
            " (exclusive commits)"
        } else {
            ""
        }
    );
    let model = Model {
        clock: T0,
        max_clock: T0,
        ..Model::default()
    };
    let started = Instant::now();
    let mut run = Run {
        daemon: Daemon::new("torture", &args.bin, &config, &dir),
        shared: Shared {
            mnt: dir.join("mnt"),
            tmp: dir.join("tmp"),
            model: Mutex::new(model),
            clock_lock: RwLock::new(()),
            type_locks: Default::default(),
            stop: AtomicBool::new(false),
            violations: Mutex::new(Vec::new()),
            acked: AtomicU64::new(0),
            acked_lines: AtomicU64::new(0),
            source_acked: AtomicU64::new(0),
            in_flight_at_kill: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            clock_allowance: AtomicU64::new(0),
        },
        tally: Tally::default(),
        rng: Rng::new(args.seed),
        kills: 0,
        checks: 0,
        spent: [Duration::ZERO; 3],
        args,
    };
    let result = run.go();
    if let Some(what) = run.daemon.kill9() {
        println!("VIOLATION (final): {what}");
        run.tally.other += 1;
    }
    if let Err(e) = &result {
        run.tally.other += 1;
        println!("FATAL: {e}");
        // What does the offline check make of the data directory left behind?
        if let Err(e) = run.check_data("after the fatal error") {
            println!("FATAL: {e}");
        }
    }
    let t = &run.tally;
    let failed =
        result.is_err() || t.lost + t.duplicated + t.sources_wrong + t.other > 0 || t.check_failed;
    println!(
        "torture: {} operations sent, {} iocfs checks, {:.1} s; daemon log {}",
        run.shared.ops.load(Ordering::Relaxed),
        run.checks,
        started.elapsed().as_secs_f64(),
        run.daemon.log.display()
    );
    if failed {
        run.daemon.print_errors();
        println!(
            "torture: FAILED ({} lost, {} duplicated, {} with wrong sources, {} other violations)",
            t.lost, t.duplicated, t.sources_wrong, t.other
        );
    }
    println!(
        "torture: kills={} acknowledged={} lost={} duplicated={} sources_wrong={} check={} seed={}",
        run.kills,
        run.shared.acked.load(Ordering::Relaxed),
        t.lost,
        t.duplicated,
        t.sources_wrong,
        if t.check_failed { "failed" } else { "clean" },
        run.args.seed
    );
    std::process::exit(i32::from(failed));
}
