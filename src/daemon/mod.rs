//! The mounted daemon: background threads, signals, systemd notification, clean shutdown.
//!
//! Threads: FUSE workers (fuser), the invalidation notifier, commit, aging, the periodic WAL
//! sync (periodic mode), the health/watchdog loop, and the signal handler. Each background
//! loop sleeps on a shared [`Stop`] so shutdown wakes it at once.

mod loops;
mod mountpoint;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fuser::{INodeNo, MountOption, SessionACL};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::clock::Clock;
use crate::config::{Config, DurabilityMode};
use crate::crash::PoisonDart;
use crate::error::{IoContext, Result};
use crate::fs::{Inval, IocFs};
use crate::store::health::{Kind, Problem};
use crate::store::Store;
use crate::views::Views;
use loops::{aging_loop, checkpoint_loop, commit_loop, health_loop, notify_loop};
use loops::{indicator_summary, inval_attrs, sync_loop, views_loop};
use mountpoint::{clear_stale_mount, detach, refuse_live_fuse_mount, widen_read_ahead};

/// What `iocfs mount` was asked to do.
pub struct MountRequest {
    pub config: Arc<Config>,
    /// Where SIGHUP rereads the config from (None: embedded defaults, nothing to reload).
    pub config_path: Option<PathBuf>,
    /// `--data` given on the command line: it wins over the file on reload too.
    pub data_override: Option<PathBuf>,
    pub mountpoint: PathBuf,
    pub clock: Arc<dyn Clock>,
}

/// A flag background loops sleep on.
#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Sleep up to `d`; true if stop was requested.
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = crate::sync::lock(&self.stopped);
        let guard = crate::sync::wait_timeout_while(&self.wake, guard, d, |stopped| !*stopped);
        *guard
    }

    pub fn stop(&self) {
        *crate::sync::lock(&self.stopped) = true;
        self.wake.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        *crate::sync::lock(&self.stopped)
    }
}

pub fn run(req: MountRequest) -> Result<()> {
    crate::crash::install_hook();
    let config = with_passthrough_resolved(req.config.clone());
    // Mounting over a path another user could redirect (a symlink to /etc) would hide what
    // it points to: everything above the mount point is checked before touching it (a dead
    // mount left by a crash is detached first), then the mount point itself.
    crate::secure::trusted_parent(&req.mountpoint, "mount point")?;
    clear_stale_mount(&req.mountpoint);
    refuse_live_fuse_mount(&req.mountpoint)?;
    crate::secure::trusted_dir(&req.mountpoint, "mount point")?;
    let store = Store::open(config.clone(), req.clock.clone())?;
    log_recovery(&store);
    // The versions published before the last stop are served at once; the views thread
    // rebuilds in the background every file not known current since a clean stop (an
    // identical build keeps its version).
    let views = Arc::new(Views::open(&store.disk, &config.data_dir, &config.views)?);
    if let Err(e) = views.adopt_fresh(&store) {
        log::warn!("views: every file is rebuilt: {e}");
    }

    let (inval_tx, inval_rx) = mpsc::channel::<Inval>();
    let fs = IocFs::new(store.clone(), views.clone(), inval_tx);
    let notifier_slot = fs.notifier_slot();
    let options = vec![
        MountOption::FSName("iocfs".into()),
        MountOption::Subtype("iocfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
    ];
    let mut fuse_config = fuser::Config::default();
    if config.mount.allow_other() {
        fuse_config.acl = SessionACL::All;
    }
    fuse_config.mount_options = options;
    fuse_config.n_threads = Some(config.mount.threads);
    fuse_config.clone_fd = true;
    let mut session = fuser::Session::new(fs, &req.mountpoint, &fuse_config)
        .ctx(|| format!("mount FUSE at {}", req.mountpoint.display()))?;
    let notifier = session.notifier();
    let _ = notifier_slot.set(session.notifier());
    let unmounter = Arc::new(Mutex::new(session.unmount_callable()));
    widen_read_ahead(&req.mountpoint);

    let stop = Arc::new(Stop::default());
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    // Ends when the filesystem (holding the channel's sender) is dropped.
    spawn("iocfs-inval", &store, move || {
        notify_loop(inval_rx, notifier)
    })?;
    // Every version is a new inode: drop the superseded inode's cached attributes before
    // the change is acknowledged, so a `stat` by a name the kernel still maps to it asks
    // again (and is told the current version's).
    let change_notifier = session.notifier();
    store.on_change(Box::new(move |change| {
        inval_attrs(&change_notifier, INodeNo(change.superseded))
    }));
    let views_notifier = session.notifier();
    views.on_superseded(Box::new(move |ino| {
        inval_attrs(&views_notifier, INodeNo(ino))
    }));
    {
        let v = views.clone();
        store.on_applied(Box::new(move || v.wake()));
    }
    {
        let (s, v, stop) = (store.clone(), views.clone(), stop.clone());
        threads.push(spawn("iocfs-views", &store, move || {
            views_loop(&s, &v, &stop)
        })?);
    }
    for (name, run) in [
        ("iocfs-commit", commit_loop as fn(&Store, &Stop)),
        ("iocfs-aging", aging_loop),
        ("iocfs-checkpoint", checkpoint_loop),
        ("iocfs-health", health_loop),
    ] {
        let (s, stop) = (store.clone(), stop.clone());
        threads.push(spawn(name, &store, move || run(&s, &stop))?);
    }
    if config.durability.mode == DurabilityMode::Periodic {
        let (s, stop) = (store.clone(), stop.clone());
        threads.push(spawn("iocfs-sync", &store, move || sync_loop(&s, &stop))?);
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .ctx(|| "install signal handlers")?;
    let signal_handle = signals.handle();
    let ending = Arc::new(Ending::default());
    {
        let ending = ending.clone();
        let (s, v, stop, unmounter) = (
            store.clone(),
            views.clone(),
            stop.clone(),
            unmounter.clone(),
        );
        let mountpoint = req.mountpoint.clone();
        let (config_path, data_override) = (req.config_path.clone(), req.data_override.clone());
        threads.push(spawn("iocfs-signals", &store, move || {
            for sig in signals.forever() {
                match sig {
                    SIGHUP => reload(&s, &v, config_path.as_deref(), data_override.as_deref()),
                    _ => {
                        log::info!("signal {sig}: stopping");
                        begin_shutdown(&s, &stop, &unmounter, &mountpoint);
                        exit_if_still_serving(s.clone(), ending.clone(), Duration::from_secs(3));
                        break;
                    }
                }
            }
        })?);
    }

    let counts = indicator_summary(&store);
    log::info!(
        "mounted {} (data {}, {} mode): {counts}",
        req.mountpoint.display(),
        config.data_dir.display(),
        config.durability.mode.as_str()
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&counts),
    ]);

    let served = session.run();
    // The session ends when the filesystem is unmounted (by us on a signal, or by an admin).
    if !ending.take(Ender::Main) {
        // The grace period ran out first: that thread is committing and exits the process.
        loop {
            std::thread::park();
        }
    }
    stop.stop();
    views.wake();
    signal_handle.close();
    store.close_writes();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let committed = store
        .shutdown()
        .and_then(|()| store.checkpoint().map(|_| ()));
    for t in threads {
        let name = t.thread().name().unwrap_or("?").to_string();
        if t.join().is_err() {
            log::error!("thread {name} had panicked (the store was marked failed then)");
        }
    }
    if let Err(e) = &served {
        log::error!("FUSE session ended with an error: {e}");
    }
    committed?;
    // No build runs or will: record which view files the next start need not rebuild.
    if let Err(e) = views.save_fresh(&store) {
        log::warn!(
            "views: could not record which files are current (the next start rebuilds them): {e}"
        );
    }
    log::info!("stopped cleanly; everything is committed");
    served.ctx(|| "serve FUSE requests")
}

/// Start a daemon thread carrying a [`PoisonDart`]: if it panics, the store is failed.
fn spawn(
    name: &str,
    store: &Arc<Store>,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    let store = store.clone();
    let dart = PoisonDart::new(move |problem| store.fail(problem));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _dart = dart;
            f()
        })
        .ctx(|| format!("start thread {name}"))
}

/// Stop taking writes, commit, then unmount; the main thread's session loop then returns.
fn begin_shutdown(
    store: &Store,
    stop: &Stop,
    unmounter: &Mutex<fuser::SessionUnmounter>,
    mountpoint: &Path,
) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    store.close_writes();
    stop.stop();
    if let Err(e) = store.commit() {
        log::error!("final commit failed: {e}");
    }
    let plain = crate::sync::lock(unmounter).unmount();
    if let Err(e) = plain {
        // Busy (a reader holds a file open): detach now; the kernel ends the session when the
        // last file is closed, and we cut it short after a grace period.
        log::warn!("unmount {}: {e}; detaching", mountpoint.display());
        detach(mountpoint);
    }
}

/// Who finishes a stop: the main thread once the FUSE session ends, or the grace thread
/// when the session outlives the grace period. Whichever comes first; the other stands by.
#[derive(Default)]
struct Ending(AtomicU8);

#[derive(Clone, Copy)]
#[repr(u8)]
enum Ender {
    Main = 1,
    Grace = 2,
}

impl Ending {
    /// Whether `who` finishes the stop (false: the other one does).
    fn take(&self, who: Ender) -> bool {
        self.0
            .compare_exchange(0, who as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// A detached mount lives on while a reader (say `tail -f`) holds a file open, and with it
/// the session. Everything is committed by now, so after a grace period exit anyway: the
/// kernel then fails the remaining open files with ENOTCONN. Nothing to do if the session
/// ended meanwhile (the main thread's final checkpoint and view builds may take longer).
fn exit_if_still_serving(store: Arc<Store>, ending: Arc<Ending>, grace: Duration) {
    let _ = std::thread::Builder::new()
        .name("iocfs-grace".into())
        .spawn(move || {
            std::thread::sleep(grace);
            if !ending.take(Ender::Grace) {
                return;
            }
            log::warn!(
                "files were still open {} s after unmount; exiting anyway",
                grace.as_secs()
            );
            match store.shutdown() {
                Ok(()) => std::process::exit(0),
                Err(e) => {
                    log::error!("final commit failed: {e}");
                    std::process::exit(1)
                }
            }
        });
}

fn reload(store: &Store, views: &Views, path: Option<&Path>, data_override: Option<&Path>) {
    let Some(path) = path else {
        log::info!("SIGHUP: running on embedded defaults; nothing to reload");
        return;
    };
    match Config::load(path) {
        Ok(mut new) => {
            if let Some(d) = data_override {
                new.data_dir = d.to_path_buf();
            }
            let old = store.config();
            for key in old.restart_required(&new) {
                log::warn!(
                    "SIGHUP: {key} changed in {}; it takes effect at the next restart",
                    path.display()
                );
            }
            apply_log_level(&new.log.level);
            views.set_config(new.views.clone());
            store.set_config(Arc::new(keep_restart_only(&old, new)));
            store.health().clear(Kind::Config);
            // Only now: whoever waits for this line (an admin, a test) finds it in effect.
            log::info!("SIGHUP: reloaded {}", path.display());
        }
        Err(e) => {
            // Until a reload works: an admin who reloaded sees that nothing changed.
            store.health().set(Problem::new(
                Kind::Config,
                format!(
                    "{} not reloaded (running on the config before it): {e}",
                    path.display()
                ),
            ));
            log::error!(
                "SIGHUP: {} not reloaded, keeping the running config: {e}",
                path.display()
            );
        }
    }
}

/// `config` with `mount.passthrough` turned off where it can't work, so that the store keeps
/// live versions in memory and never copies for pins that will not come. The FUSE init
/// checks the kernel's answer too and logs which way live files are read.
fn with_passthrough_resolved(config: Arc<Config>) -> Arc<Config> {
    if !config.mount.passthrough {
        log::info!("live files: reads served by the daemon (mount.passthrough = false)");
        return config;
    }
    match passthrough_unsupported() {
        None => config,
        Some(why) => {
            log::info!("live files: reads served by the daemon, not FUSE passthrough: {why}");
            let mut c = (*config).clone();
            c.mount.passthrough = false;
            Arc::new(c)
        }
    }
}

/// Why FUSE passthrough can't work for this process, if it can't: it needs Linux 6.9 and
/// CAP_SYS_ADMIN (to register backing files).
fn passthrough_unsupported() -> Option<String> {
    let uts = nix::sys::utsname::uname().ok()?;
    let release = uts.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    if (major, minor) < (6, 9) {
        return Some(format!("Linux {release} (needs 6.9 or later)"));
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (registering backing files needs CAP_SYS_ADMIN)".into());
    }
    None
}

/// The new config, except settings that can only change at a restart keep their old value.
fn keep_restart_only(old: &Config, mut new: Config) -> Config {
    new.data_dir = old.data_dir.clone();
    new.mount = old.mount.clone();
    new.durability.mode = old.durability.mode;
    new.durability.segment_size = old.durability.segment_size;
    new.tiers = old.tiers.clone();
    new
}

pub fn apply_log_level(level: &str) {
    if std::env::var_os("RUST_LOG").is_none() {
        if let Ok(l) = level.parse::<log::LevelFilter>() {
            log::set_max_level(l);
        }
    }
}

fn log_recovery(store: &Store) {
    let r = &store.recovery;
    log::info!(
        "recovered in {} ms: committed state at sequence {}, {} WAL records replayed{}{}",
        r.millis,
        r.committed_upto,
        r.replayed,
        if r.removed_temps > 0 {
            format!(", {} leftover temp files removed", r.removed_temps)
        } else {
            String::new()
        },
        r.truncated
            .as_ref()
            .map(|t| format!(", torn WAL tail truncated in {} at {}", t.0.display(), t.1))
            .unwrap_or_default()
    );
}
