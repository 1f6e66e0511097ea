//! Load driver behind `scripts/load`: sustained concurrent appends and reads against a
//! mounted release iocfs (default config, so `durability.mode = "always"`: every write(2)
//! returns after its WAL record is fsync'd), then a check that nothing acknowledged is lost.
//!
//! 1. Seed: 27 tier files (chaud, tiede, froid × nine types) of `--tier-lines` indicators
//!    each, through `iocfs import` with file times inside each bucket's age range, so the
//!    readers have compressed, block-cached content to read.
//! 2. Run for `--seconds`: `--writers` threads keep one `O_APPEND` handle open on each of the
//!    nine live files and write(2) 1–10 new lines at a time to a random one (so concurrent
//!    writes to different files share WAL fsyncs), timing every write; their values are
//!    unique per writer, type and sequence number, so each acknowledged write can be looked
//!    for afterwards. `--readers` threads open a random live or tier file, read it to end of
//!    file, close it, and count the bytes; every read must end on a whole line.
//! 3. SIGTERM (exit 0), remount, then: every acknowledged line is served (`lost` counts those
//!    that are not), live files hold exactly the acknowledged lines once each, tier files
//!    hold what was seeded, health is `ok`; SIGTERM again and `iocfs check` (clean).
//!
//! `errors` counts failed or short calls on any thread, failed checks of step 3 other than
//! lost lines, and ERROR lines in the daemon log. The last line is
//! `load: writers=W readers=R seconds=S acked_writes/s=N lines/s=N read_MB/s=N
//! p50_write_ms=N p99_write_ms=N errors=E lost=L`; the exit status is non-zero if E or L is.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod common;
use common::{Daemon, Rng, BUCKETS, TYPE_FILES};

const HASH_HEX: [usize; 4] = [32, 40, 64, 128];
/// Origins of values: writers are 0..MAX_WRITERS, the seed of tier `b` is SEED_ORIGIN + b.
const MAX_WRITERS: usize = 128;
const SEED_ORIGIN: u32 = 200;
/// How long the threads may take to notice the stop before the daemon counts as hung.
const HANG: Duration = Duration::from_secs(60);
/// How many error messages are printed (all are counted).
const SHOW: usize = 12;

/// All defaults (`always` durability, 1 s commits, 60 s aging) are what is measured.
const CONFIG: &str = "# written by examples/load.rs: built-in defaults\n";

/// Value `n` of type `ty` (index into TYPE_FILES) from `origin`: distinct for every triple,
/// already normalized, so it is served byte for byte as written.
fn value(ty: usize, origin: u32, n: u32) -> String {
    match ty {
        0 => {
            assert!(n < 1 << 24, "ipv4 values of one origin exhausted");
            Ipv4Addr::from(((origin + 11) << 24) | n).to_string()
        }
        1 => {
            let v = (0x2001_0db8u128 << 96) | (u128::from(origin) << 32) | u128::from(n);
            Ipv6Addr::from(v).to_string()
        }
        2 => format!("o{origin}n{n}.load.example"),
        3 => format!("http://o{origin}.load.example/n/{n}"),
        4 => format!("n{n}@o{origin}.load.example"),
        _ => format!("{origin:08x}{n:0w$x}", w = HASH_HEX[ty - 5] - 8),
    }
}

/// Age of seeded indicators per tier (chaud, tiede, froid): inside each bucket's range.
const SEED_AGE_DAYS: [u64; 3] = [2, 10, 60];

struct Args {
    seconds: u64,
    writers: usize,
    readers: usize,
    tier_lines: u32,
    bin: PathBuf,
    dir: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: load [--quick] [--seconds N] [--writers N] [--readers N] [--tier-lines N]\n\
         \x20           [--bin PATH/iocfs] [--dir WORKDIR]\n\
         (run by scripts/load; needs root and /dev/fuse)"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 30,
        writers: 8,
        readers: 8,
        tier_lines: 20_000,
        bin: PathBuf::new(),
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => args.seconds = 5,
            "--seconds" => args.seconds = val().parse().unwrap_or_else(|_| usage()),
            "--writers" => args.writers = val().parse().unwrap_or_else(|_| usage()),
            "--readers" => args.readers = val().parse().unwrap_or_else(|_| usage()),
            "--tier-lines" => args.tier_lines = val().parse().unwrap_or_else(|_| usage()),
            "--bin" => args.bin = PathBuf::from(val()),
            "--dir" => args.dir = Some(PathBuf::from(val())),
            _ => usage(),
        }
    }
    if args.seconds == 0 || args.writers > MAX_WRITERS {
        usage();
    }
    if args.bin.as_os_str().is_empty() {
        args.bin = common::sibling_iocfs();
    }
    args
}

/// Errors from every thread: all counted, the first SHOW kept to print.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    shown: Mutex<Vec<String>>,
}

impl Errors {
    fn add(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        if shown.len() < SHOW {
            shown.push(what);
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// One writer's acknowledged work.
#[derive(Default)]
struct Written {
    writes: u64,
    lines: u64,
    latencies_us: Vec<u32>,
    /// Per type: sequence numbers acknowledged, as `start..end` ranges.
    acked: [Vec<(u32, u32)>; 9],
    /// A write failed or was short: its lines may or may not be stored.
    uncertain: bool,
}

fn writer(mnt: &Path, w: usize, stop: &AtomicBool, errors: &Errors) -> Written {
    let mut out = Written::default();
    let mut rng = Rng::new(0x10ad ^ ((w as u64) << 32));
    let mut files = Vec::with_capacity(9);
    for name in TYPE_FILES {
        let path = mnt.join("live").join(name);
        match OpenOptions::new().append(true).open(&path) {
            Ok(f) => files.push(f),
            Err(e) => {
                errors.add(format!("writer {w}: open {}: {e}", path.display()));
                return out;
            }
        }
    }
    let mut next = [0u32; 9];
    let mut text = String::new();
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) && failures < SHOW {
        let ty = rng.below(9) as usize;
        let k = rng.range(1, 10) as u32;
        let start = next[ty];
        next[ty] += k;
        text.clear();
        for n in start..start + k {
            text.push_str(&value(ty, w as u32, n));
            text.push('\n');
        }
        let t = Instant::now();
        let result = files[ty].write(text.as_bytes());
        let took = t.elapsed();
        match result {
            Ok(len) if len == text.len() => {
                out.writes += 1;
                out.lines += u64::from(k);
                out.latencies_us
                    .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                match out.acked[ty].last_mut() {
                    Some(r) if r.1 == start => r.1 = start + k,
                    _ => out.acked[ty].push((start, start + k)),
                }
            }
            Ok(len) => {
                failures += 1;
                out.uncertain = true;
                errors.add(format!(
                    "writer {w}: live/{}: short write {len} of {}",
                    TYPE_FILES[ty],
                    text.len()
                ));
            }
            Err(e) => {
                failures += 1;
                out.uncertain = true;
                errors.add(format!("writer {w}: write live/{}: {e}", TYPE_FILES[ty]));
            }
        }
    }
    // close(2) explicitly: dropping a File would hide a failed FLUSH.
    for (ty, f) in files.into_iter().enumerate() {
        if let Err(e) = nix::unistd::close(f) {
            errors.add(format!("writer {w}: close live/{}: {e}", TYPE_FILES[ty]));
        }
    }
    out
}

/// Bytes read from live files and from tier files, and whole-file reads done.
#[derive(Default)]
struct ReadTotals {
    live: u64,
    tier: u64,
    files: u64,
}

fn reader(mnt: &Path, r: usize, stop: &AtomicBool, errors: &Errors) -> ReadTotals {
    let mut out = ReadTotals::default();
    let mut rng = Rng::new(0x4ead ^ ((r as u64) << 32));
    let mut buf = vec![0u8; 256 << 10];
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) && failures < SHOW {
        // Half live (direct I/O: every read reaches the daemon), half tiers (page cache and
        // the daemon's block cache).
        let b = if rng.chance(0.5) {
            0
        } else {
            rng.range(1, 3) as usize
        };
        let path = mnt.join(BUCKETS[b]).join(TYPE_FILES[rng.below(9) as usize]);
        match read_whole(&path, &mut buf) {
            Ok(n) => {
                out.files += 1;
                if b == 0 {
                    out.live += n;
                } else {
                    out.tier += n;
                }
            }
            Err(e) => {
                failures += 1;
                errors.add(format!("reader {r}: {}: {e}", path.display()));
            }
        }
    }
    out
}

/// Open, read to end of file, close: the byte count, or why it failed or was not whole lines.
fn read_whole(path: &Path, buf: &mut [u8]) -> Result<u64, String> {
    let mut f = File::open(path).map_err(|e| format!("open: {e}"))?;
    let (mut total, mut last) = (0u64, b'\n');
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                last = buf[n - 1];
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read at {total}: {e}")),
        }
    }
    nix::unistd::close(f).map_err(|e| format!("close: {e}"))?;
    if last != b'\n' {
        return Err(format!("{total} bytes, not ending with a newline"));
    }
    Ok(total)
}

/// Writes the seed folder and imports it into the (unmounted) data dir.
fn seed(args: &Args, daemon: &Daemon, src: &Path) -> Result<(), String> {
    for (i, days) in SEED_AGE_DAYS.iter().enumerate() {
        let dir = src.join(BUCKETS[i + 1]);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let mtime = SystemTime::now() - Duration::from_secs(days * 86_400);
        for (ty, name) in TYPE_FILES.iter().enumerate() {
            let path = dir.join(name);
            let mut text = String::new();
            for n in 0..args.tier_lines {
                text.push_str(&value(ty, SEED_ORIGIN + i as u32 + 1, n));
                text.push('\n');
            }
            let f = File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
            (&f).write_all(text.as_bytes())
                .and_then(|()| f.set_modified(mtime))
                .map_err(|e| format!("write {}: {e}", path.display()))?;
        }
    }
    let out = Command::new(&daemon.bin)
        .arg("import")
        .arg("--data")
        .arg(&daemon.data)
        .arg("--config")
        .arg(&daemon.config)
        .arg(src)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run iocfs import: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iocfs import ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::remove_dir_all(src).map_err(|e| format!("remove {}: {e}", src.display()))
}

/// Step 3 on the remounted filesystem: returns how many acknowledged lines are missing;
/// every other discrepancy goes to `errors`.
fn verify(args: &Args, mnt: &Path, written: &[Written], errors: &Errors) -> Result<u64, String> {
    let read = |rel: String| {
        let path = mnt.join(&rel);
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))
    };
    let health = read(".iocfs/health".into())?;
    if health != "ok\n" {
        errors.add(format!("health after remount: {health:?}"));
    }
    let uncertain = written.iter().any(|w| w.uncertain);
    let mut lost = 0;
    for (ty, name) in TYPE_FILES.iter().enumerate() {
        let text = read(format!("live/{name}"))?;
        let lines: Vec<&str> = text.lines().collect();
        let served: HashSet<&str> = lines.iter().copied().collect();
        if served.len() != lines.len() {
            errors.add(format!(
                "live/{name}: {} lines served more than once",
                lines.len() - served.len()
            ));
        }
        let mut acked = 0;
        for (w, out) in written.iter().enumerate() {
            for &(start, end) in &out.acked[ty] {
                acked += u64::from(end - start);
                for n in start..end {
                    let v = value(ty, w as u32, n);
                    if !served.contains(v.as_str()) {
                        lost += 1;
                        if lost <= SHOW as u64 {
                            println!("LOST: {v} (live/{name}, writer {w}, acknowledged)");
                        }
                    }
                }
            }
        }
        // Without a failed write, nothing but acknowledged lines can be there.
        if !uncertain && served.len() as u64 != acked {
            errors.add(format!(
                "live/{name}: {} distinct lines served, {acked} acknowledged",
                served.len()
            ));
        }
        for tier in &BUCKETS[1..] {
            let n = read(format!("{tier}/{name}"))?.lines().count();
            if n != args.tier_lines as usize {
                errors.add(format!(
                    "{tier}/{name}: {n} lines served, {} seeded",
                    args.tier_lines
                ));
            }
        }
    }
    Ok(lost)
}

/// The file system type holding `dir` (longest mount point that is a prefix of it).
fn fs_type(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (point, ty) = (f.nth(1)?, f.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), ty.to_string()))
        })
        .max()
        .map_or_else(|| "?".into(), |(_, ty)| ty)
}

fn percentile_ms(sorted_us: &[u32], pct: usize) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = (sorted_us.len() * pct / 100).min(sorted_us.len() - 1);
    f64::from(sorted_us[i]) / 1000.0
}

#[derive(Default)]
struct Outcome {
    written: Vec<Written>,
    read: ReadTotals,
    elapsed: Duration,
    lost: u64,
}

fn run(args: &Args, dir: &Path, daemon: &mut Daemon, errors: &Errors) -> Result<Outcome, String> {
    let t = Instant::now();
    seed(args, daemon, &dir.join("seed"))?;
    daemon.start(None)?;
    println!(
        "load: seeded 27 tier files × {} lines (iocfs import) and mounted in {:.1} s",
        args.tier_lines,
        t.elapsed().as_secs_f64()
    );

    let stop = AtomicBool::new(false);
    let mnt = daemon.mnt.clone();
    let pid = daemon.pid();
    let started = Instant::now();
    let (written, reads): (Vec<Written>, Vec<ReadTotals>) = std::thread::scope(|s| {
        let (mnt, stop) = (&mnt, &stop);
        let ws: Vec<_> = (0..args.writers)
            .map(|w| s.spawn(move || writer(mnt, w, stop, errors)))
            .collect();
        let rs: Vec<_> = (0..args.readers)
            .map(|r| s.spawn(move || reader(mnt, r, stop, errors)))
            .collect();
        std::thread::sleep(Duration::from_secs(args.seconds));
        stop.store(true, Ordering::Relaxed);
        // A call stuck in the daemon would block the joins for ever: give the threads a
        // minute, then kill the daemon so that the stuck calls fail (ENOTCONN).
        let deadline = Instant::now() + HANG;
        let done = || ws.iter().all(|h| h.is_finished()) && rs.iter().all(|h| h.is_finished());
        while !done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !done() {
            errors.add(format!(
                "threads still in a call {} s after the stop: daemon hung? (SIGKILLed it)",
                HANG.as_secs()
            ));
            if let Some(pid) = pid {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            common::detach(mnt);
        }
        (
            ws.into_iter()
                .map(|h| h.join().expect("writer thread panicked"))
                .collect(),
            rs.into_iter()
                .map(|h| h.join().expect("reader thread panicked"))
                .collect(),
        )
    });
    let elapsed = started.elapsed();
    let read = reads.iter().fold(ReadTotals::default(), |a, r| ReadTotals {
        live: a.live + r.live,
        tier: a.tier + r.tier,
        files: a.files + r.files,
    });
    println!(
        "load: {:.1} s: {} acknowledged writes ({} lines); {} whole-file reads, {:.1} MB live + {:.1} MB tiers",
        elapsed.as_secs_f64(),
        written.iter().map(|w| w.writes).sum::<u64>(),
        written.iter().map(|w| w.lines).sum::<u64>(),
        read.files,
        read.live as f64 / 1e6,
        read.tier as f64 / 1e6
    );

    let t = Instant::now();
    let status = daemon.stop()?;
    if !status.success() {
        errors.add(format!("SIGTERM: exit status {status}"));
    }
    let stopped = t.elapsed();
    daemon.start(None)?;
    let lost = verify(args, &daemon.mnt, &written, errors)?;
    let status = daemon.stop()?;
    if !status.success() {
        errors.add(format!("SIGTERM after verifying: exit status {status}"));
    }
    let t2 = Instant::now();
    if let Some(why) = daemon.check()? {
        errors.add(why);
    }
    println!(
        "load: stop {:.1} s, remount + verify {:.1} s, iocfs check {:.1} s",
        stopped.as_secs_f64(),
        (t2 - t).saturating_sub(stopped).as_secs_f64(),
        t2.elapsed().as_secs_f64()
    );
    Ok(Outcome {
        written,
        read,
        elapsed,
        lost,
    })
}

fn main() {
    let args = parse_args();
    let (_tmpdir, dir) = common::work_dir(args.dir.as_deref(), "iocfs-load-", &["data", "mnt"]);
    let dir = dir.canonicalize().expect("canonicalize work dir");
    let config = dir.join("iocfs.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    println!(
        "load: writers={} readers={} seconds={} tier_lines={} dir={} (fs {}) nproc={} bin={}",
        args.writers,
        args.readers,
        args.seconds,
        args.tier_lines,
        dir.display(),
        fs_type(&dir),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.bin.display()
    );
    let errors = Errors::default();
    let mut daemon = Daemon::new("load", &args.bin, &config, &dir);
    let result = run(&args, &dir, &mut daemon, &errors);
    let _ = daemon.kill9();
    // The daemon logs an ERROR only for a real problem (a failed commit, fsync, unmount…).
    let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
    let logged = log.lines().filter(|l| l.contains(" ERROR ")).count();
    if logged > 0 {
        errors.add(format!("{logged} ERROR lines in the daemon log"));
        daemon.print_errors();
    }
    let (outcome, fatal) = match result {
        Ok(o) => (o, false),
        Err(e) => {
            println!("FATAL: {e}");
            (Outcome::default(), true)
        }
    };
    for what in errors
        .shown
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        println!("ERROR: {what}");
    }
    let errors = errors.count() + u64::from(fatal);
    let mut latencies: Vec<u32> = outcome
        .written
        .iter()
        .flat_map(|w| w.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    let writes: u64 = outcome.written.iter().map(|w| w.writes).sum();
    let lines: u64 = outcome.written.iter().map(|w| w.lines).sum();
    println!("load: daemon log {}", daemon.log.display());
    println!(
        "load: writers={} readers={} seconds={} acked_writes/s={:.0} lines/s={:.0} read_MB/s={:.1} \
         p50_write_ms={:.2} p99_write_ms={:.2} errors={} lost={}",
        args.writers,
        args.readers,
        args.seconds,
        writes as f64 / secs,
        lines as f64 / secs,
        (outcome.read.live + outcome.read.tier) as f64 / 1e6 / secs,
        percentile_ms(&latencies, 50),
        percentile_ms(&latencies, 99),
        errors,
        outcome.lost
    );
    std::process::exit(i32::from(errors > 0 || outcome.lost > 0));
}
