//! Power-loss driver behind `scripts/powerloss`: runs the engine on the simulated disk of
//! `iocfs::disk::sim` (no FUSE, no real disk) and cuts power at every step of a run.
//!
//! A run executes a seeded workload (`workload.rs`) and records, after every action, what
//! the store serves (the model: what was acknowledged). Before every numbered I/O step it
//! makes crash images of the disk (nothing unsynced kept, everything kept, and seeded
//! subsets: pages new, old or zero, sizes, a prefix of the unsynced metadata operations),
//! and once the action in flight has returned, each image is recovered by the real
//! recovery (`Store::open_on`) and checked:
//! - recovery does not refuse;
//! - what the recovered store serves is exactly what was acknowledged before the cut, or
//!   that plus the action in flight (all of it: a mutation is one record). So nothing
//!   acknowledged is lost, nothing removed or withdrawn comes back, and no indicator is in
//!   two buckets (a live file keeps its bytes and order; tier files as sets of lines);
//! - `iocfs check` of the recovered directory is clean.
//!
//! Then I/O errors: the run is repeated with `EIO` on one fsync, `ENOSPC` on one write or
//! `EIO` on one rename, for each such step. The action that meets the error must fail
//! (never a false acknowledgement) or have succeeded for real; the run stops at the first
//! failed action, and the directory as left (a restart: the page cache survives) and
//! crash images of it must hold what was acknowledged, as above.
//!
//! Last line: `powerloss: states=N cuts=K acknowledged=A lost=L violations=V seed=S`; the
//! exit status is non-zero on any violation, each printed with what reproduces it
//! (`--seed S --run R --cut N --image I`, or `--fault N`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod workload;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use iocfs::clock::{Clock, ManualClock};
use iocfs::config::{Config, DurabilityMode};
use iocfs::disk::sim::{Choices, Rng, SimDisk, Step};
use iocfs::store::Store;
use workload::{contents, values, Action, Contents, Workload, T0};

const DATA: &str = "/data";

#[derive(Debug, Clone)]
struct Opts {
    seed: u64,
    runs: u64,
    actions: u64,
    images: usize,
    /// Runs that also get the I/O error pass.
    error_runs: u64,
    /// Reproduce one state: (run, cut, image) or (run, fault step).
    only_run: Option<u64>,
    only_cut: Option<u64>,
    only_image: Option<usize>,
    only_fault: Option<u64>,
    verbose: bool,
}

fn parse() -> Opts {
    let mut o = Opts {
        seed: 18,
        runs: 48,
        actions: 120,
        images: 6,
        error_runs: 4,
        only_run: None,
        only_cut: None,
        only_image: None,
        only_fault: None,
        verbose: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let num = |i: usize| -> u64 {
        args.get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{} needs a number", args[i]))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => {
                o.runs = 2;
                o.actions = 60;
                o.images = 5;
                o.error_runs = 1;
                i += 1;
                continue;
            }
            "--verbose" => {
                o.verbose = true;
                i += 1;
                continue;
            }
            "--seed" => o.seed = num(i),
            "--runs" => o.runs = num(i),
            "--actions" => o.actions = num(i),
            "--images" => o.images = num(i).max(1) as usize,
            "--error-runs" => o.error_runs = num(i),
            "--run" => o.only_run = Some(num(i)),
            "--cut" => o.only_cut = Some(num(i)),
            "--image" => o.only_image = Some(num(i) as usize),
            "--fault" => o.only_fault = Some(num(i)),
            other => panic!("unknown argument {other} (see scripts/powerloss)"),
        }
        i += 2;
    }
    o
}

fn config() -> Arc<Config> {
    let mut c = Config {
        data_dir: PathBuf::from(DATA),
        ..Config::default()
    };
    c.tiers.block_size = 4096;
    c.durability.segment_size = 1 << 16;
    c.durability.mode = DurabilityMode::Always;
    c.cache.size = 4 << 20;
    Arc::new(c)
}

/// Open the store on `disk`; replaces are journaled in 4 KiB pieces (staged) as of 16 KiB.
fn open(disk: &SimDisk, now: u64) -> iocfs::error::Result<(Arc<Store>, Arc<ManualClock>)> {
    let clock = Arc::new(ManualClock::new(now));
    let store = Store::open_on(disk.disk(), config(), clock.clone() as Arc<dyn Clock>)?;
    store.set_record_limit(16 << 10);
    Ok((store, clock))
}

/// A crash image of one cut, waiting for the action in flight to return.
struct Cut {
    step: u64,
    kind: Step,
    /// Which image of the cut (0: nothing unsynced kept, 1: everything, then seeded).
    index: usize,
    image: SimDisk,
}

#[derive(Default)]
struct Tally {
    states: u64,
    cuts: u64,
    acknowledged: u64,
    lost: u64,
    violations: u64,
}

fn image_choice(seed: u64, run: u64, step: u64, index: usize) -> Choices {
    match index {
        0 => Choices::Nothing,
        1 => Choices::Everything,
        _ => {
            let mut r = Rng::new(seed ^ (run << 48) ^ (step << 8) ^ index as u64);
            Choices::Random(r.next_u64())
        }
    }
}

/// Err: what is wrong, and whether something acknowledged was lost.
type Verdict = Result<(), (String, bool)>;

/// Recover `image` and check it against the states it may hold.
fn check(image: &SimDisk, allowed: &[&Contents], now: u64) -> Verdict {
    let got = {
        let (store, _) = open(image, now).map_err(|e| (format!("recovery refused: {e}"), true))?;
        contents(&store).map_err(|e| (format!("read after recovery: {e}"), false))?
    };
    if !allowed.iter().any(|a| **a == got) {
        let have = values(&got);
        let must: Vec<_> = allowed.iter().map(|a| values(a)).collect();
        let lost: Vec<_> = must[0]
            .iter()
            .filter(|v| must.iter().all(|m| m.contains(*v)) && !have.contains(*v))
            .collect();
        let back: Vec<_> = have
            .iter()
            .filter(|v| must.iter().all(|m| !m.contains(*v)))
            .collect();
        let show = |v: &[&(iocfs::ioc::IocType, Vec<u8>)]| {
            v.iter()
                .take(3)
                .map(|(ty, l)| format!("{ty}:{}", String::from_utf8_lossy(l)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        // The files whose content differs from the closest acknowledged state.
        let differ: Vec<String> = allowed
            .iter()
            .map(|a| {
                let mut keys: Vec<String> = a
                    .keys()
                    .chain(got.keys())
                    .filter(|k| a.get(*k) != got.get(*k))
                    .map(|(dir, ty)| format!("{dir}/{ty}"))
                    .collect();
                keys.dedup();
                keys
            })
            .min_by_key(Vec::len)
            .unwrap_or_default();
        return Err((
            format!(
                "served state is none of the acknowledged ones: {} acknowledged indicators lost ({}), \
                 {} came back or appeared ({}), or moved between buckets; differing: {}",
                lost.len(),
                show(&lost),
                back.len(),
                show(&back),
                differ.join(" ")
            ),
            !lost.is_empty(),
        ));
    }
    let report = iocfs::cli::check::check_on(&image.disk(), &config())
        .map_err(|e| (format!("check failed to run: {e}"), false))?;
    if !report.is_clean() {
        return Err((format!("check: {}", report.problems.join("; ")), false));
    }
    Ok(())
}

/// Check `cuts` against `allowed`, two at a time (the machine's two cores).
fn check_all(
    cuts: Vec<Cut>,
    allowed: &[&Contents],
    now: u64,
    report: &dyn Fn(&Cut, &str),
    tally: &mut Tally,
) {
    let results: Vec<(usize, Verdict)> = std::thread::scope(|s| {
        let (a, b) = cuts.split_at(cuts.len() / 2);
        let left = s.spawn(|| {
            a.iter()
                .enumerate()
                .map(|(i, c)| (i, check(&c.image, allowed, now)))
                .collect::<Vec<_>>()
        });
        let mut right: Vec<_> = b
            .iter()
            .enumerate()
            .map(|(i, c)| (a.len() + i, check(&c.image, allowed, now)))
            .collect();
        let mut all = left.join().expect("checker thread");
        all.append(&mut right);
        all
    });
    for (i, result) in results {
        tally.states += 1;
        if let Err((why, lost)) = result {
            tally.violations += 1;
            tally.lost += u64::from(lost);
            report(&cuts[i], &why);
        }
    }
}

/// What the observer of a run saw: crash images waiting for a check, and every step.
#[derive(Default)]
struct Recorder {
    cuts: Vec<Cut>,
    /// Steps seen, with their kind (the error pass injects at each).
    steps: Vec<Step>,
}

/// Number steps, make crash images before the wanted ones, fail the one `fault` names.
fn observe(
    disk: &SimDisk,
    rec: &Arc<Mutex<Recorder>>,
    images: Option<(u64, u64, usize)>,
    only: (Option<u64>, Option<usize>),
    fault: Option<u64>,
) {
    let rec = rec.clone();
    disk.set_observer(Some(Box::new(move |d: &SimDisk, n, kind, _path: &Path| {
        let mut r = rec.lock().unwrap();
        r.steps.push(kind);
        if let Some((seed, run, count)) = images {
            if only.0.is_none_or(|c| c == n) {
                // Nothing unsynced: every image would be the same one.
                let count = if d.unsynced() == (0, 0) { 1 } else { count };
                for i in (0..count).filter(|i| only.1.is_none_or(|o| o == *i)) {
                    let image = d.crash_image(image_choice(seed, run, n, i));
                    r.cuts.push(Cut {
                        step: n,
                        kind,
                        index: i,
                        image,
                    });
                }
            }
        }
        if fault == Some(n) {
            let errno = if kind.is_write() {
                libc::ENOSPC
            } else {
                libc::EIO
            };
            if std::env::var_os("POWERLOSS_TRACE").is_some() {
                eprintln!("fault at step {n}: {kind:?} of {}", _path.display());
            }
            return Some(io::Error::from_raw_os_error(errno));
        }
        None
    })));
}

/// One run with a cut at every step. Returns the state after each action (index 0: empty).
fn power_run(o: &Opts, run: u64, tally: &mut Tally) -> (Vec<Contents>, Vec<Step>) {
    let disk = SimDisk::new();
    let rec = Arc::new(Mutex::new(Recorder::default()));
    observe(
        &disk,
        &rec,
        Some((o.seed, run, o.images)),
        (o.only_cut, o.only_image),
        None,
    );
    let mut states = vec![Contents::new()];
    let (store, clock) = open(&disk, T0).expect("open a new data directory");
    // Cuts while opening: nothing was acknowledged yet.
    flush_cuts(o, run, &rec, &states, None, clock.now(), tally);
    let mut work = Workload::new(o.seed ^ (run << 32));
    for i in 0..o.actions {
        let action = work.next(&store);
        run_action(&action, &store, &clock)
            .unwrap_or_else(|e| panic!("run {run} action {i} ({}) failed: {e}", action.name()));
        if action.is_mutation() {
            tally.acknowledged += 1;
        }
        states.push(contents(&store).expect("read the workload store"));
        flush_cuts(o, run, &rec, &states, Some(&action), clock.now(), tally);
    }
    // The end of the run is a cut too.
    let last = states.len() - 1;
    let end: Vec<Cut> = (0..o.images)
        .map(|i| Cut {
            step: disk.steps(),
            kind: Step::SyncAll,
            index: i,
            image: disk.crash_image(image_choice(o.seed, run, disk.steps(), i)),
        })
        .filter(|c| o.only_cut.is_none_or(|n| n == c.step))
        .collect();
    tally.cuts += u64::from(!end.is_empty());
    let now = clock.now();
    check_all(
        end,
        &[&states[last]],
        now,
        &|c, why| violation(o, run, c, why),
        tally,
    );
    disk.set_observer(None);
    let steps = rec.lock().unwrap().steps.clone();
    drop(store);
    (states, steps)
}

fn run_action(
    action: &Action,
    store: &Store,
    clock: &Arc<ManualClock>,
) -> iocfs::error::Result<()> {
    workload::run(action, store, clock)
}

fn flush_cuts(
    o: &Opts,
    run: u64,
    rec: &Arc<Mutex<Recorder>>,
    states: &[Contents],
    action: Option<&Action>,
    now: u64,
    tally: &mut Tally,
) {
    let cuts = std::mem::take(&mut rec.lock().unwrap().cuts);
    let mut steps: Vec<u64> = cuts.iter().map(|c| c.step).collect();
    steps.dedup();
    tally.cuts += steps.len() as u64;
    let n = states.len();
    let allowed: Vec<&Contents> = match action {
        None => vec![&states[n - 1]],
        Some(_) => vec![&states[n - 2], &states[n - 1]],
    };
    let what = action.map_or("opening", Action::name);
    check_all(
        cuts,
        &allowed,
        now,
        &|c, why| violation(o, run, c, &format!("during {what}: {why}")),
        tally,
    );
}

fn violation(o: &Opts, run: u64, c: &Cut, why: &str) {
    println!(
        "VIOLATION seed={} run={run} cut={} ({:?}) image={}: {why}\n  reproduce: scripts/powerloss --seed {} --run {run} --cut {} --image {} --verbose",
        o.seed, c.step, c.kind, c.index, o.seed, c.step, c.index
    );
    if o.verbose {
        for (path, len) in c.image.listing() {
            match len {
                Some(len) => println!("    {} ({len} bytes)", path.display()),
                None => println!("    {}/", path.display()),
            }
        }
    }
}

/// Re-run `run` with one step failing (`EIO` on an fsync or a rename, `ENOSPC` on a write).
fn fault_run(o: &Opts, run: u64, fault: u64, states: &[Contents], tally: &mut Tally) {
    let disk = SimDisk::new();
    let rec = Arc::new(Mutex::new(Recorder::default()));
    observe(&disk, &rec, None, (None, None), Some(fault));
    let report = |why: String| {
        println!(
            "VIOLATION seed={} run={run} fault={fault}: {why}\n  reproduce: scripts/powerloss --seed {} --run {run} --fault {fault} --verbose",
            o.seed, o.seed
        );
    };
    let (store, clock) = match open(&disk, T0) {
        Ok(s) => s,
        Err(_) => return, // the fault stopped the first open: nothing was acknowledged
    };
    let mut work = Workload::new(o.seed ^ (run << 32));
    let mut allowed: Vec<&Contents> = vec![&states[states.len() - 1]];
    for i in 0..o.actions as usize {
        let action = work.next(&store);
        if let Err(e) = run_action(&action, &store, &clock) {
            if std::env::var_os("POWERLOSS_TRACE").is_some() {
                eprintln!("action {i} ({}) failed: {e}", action.name());
            }
            allowed = vec![&states[i], &states[i + 1]];
            break;
        }
        // Acknowledged: it must be what the run without the fault acknowledged.
        if contents(&store).ok().as_ref() != Some(&states[i + 1]) {
            tally.violations += 1;
            report(format!(
                "action {i} ({}) was acknowledged but the store differs from the run without the fault",
                action.name()
            ));
            return;
        }
    }
    disk.set_observer(None);
    // A restart (the page cache survives) and power cuts now.
    let now = clock.now();
    let cuts: Vec<Cut> = (1..o.images.max(2))
        .map(|i| Cut {
            step: fault,
            kind: Step::SyncAll,
            index: i,
            image: disk.crash_image(image_choice(o.seed, run, fault, i)),
        })
        .collect();
    drop(store);
    tally.cuts += 1;
    check_all(
        cuts,
        &allowed,
        now,
        &|_, why| report(why.to_string()),
        tally,
    );
}

fn main() {
    let o = parse();
    let started = Instant::now();
    let mut tally = Tally::default();
    let runs: Vec<u64> = match o.only_run {
        Some(r) => vec![r],
        None => (0..o.runs).collect(),
    };
    for &run in &runs {
        let before = tally.states;
        if o.only_fault.is_none() {
            let (states, steps) = power_run(&o, run, &mut tally);
            let faults: Vec<u64> = match o.only_fault {
                Some(f) => vec![f],
                None if run < o.error_runs && o.only_cut.is_none() => steps
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.is_sync() || k.is_write() || **k == Step::Rename)
                    .map(|(n, _)| n as u64)
                    .collect(),
                None => Vec::new(),
            };
            for fault in faults {
                fault_run(&o, run, fault, &states, &mut tally);
            }
        } else if let Some(fault) = o.only_fault {
            let quiet = Opts {
                only_cut: Some(u64::MAX),
                ..o.clone()
            };
            let mut scratch = Tally::default();
            let (states, _) = power_run(&quiet, run, &mut scratch);
            fault_run(&o, run, fault, &states, &mut tally);
        }
        if o.verbose || runs.len() > 4 {
            eprintln!(
                "run {run}: {} states, {} s so far",
                tally.states - before,
                started.elapsed().as_secs()
            );
        }
    }
    println!(
        "powerloss: states={} cuts={} acknowledged={} lost={} violations={} seed={}",
        tally.states, tally.cuts, tally.acknowledged, tally.lost, tally.violations, o.seed
    );
    if tally.violations > 0 {
        std::process::exit(1);
    }
}
