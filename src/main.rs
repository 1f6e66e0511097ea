//! `iocfs` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use iocfs::cli::progress;
use iocfs::clock::{Clock, SystemClock};
use iocfs::config::{Config, DEFAULT_CONFIG_PATH};
use iocfs::daemon;
use iocfs::ioc::escape_path;

#[derive(Parser)]
#[command(
    name = "iocfs",
    version,
    about = "FUSE filesystem serving threat-intel indicators as plain, aged, durable files",
    after_help = "Example:\n  iocfs mount --data /var/lib/iocfs /srv/iocfs\n  echo 203.0.113.7 >> /srv/iocfs/live/ipv4.txt\n  iocfs stats /srv/iocfs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount the filesystem in the foreground (for systemd or a terminal); SIGTERM unmounts.
    #[command(after_help = "Example:\n  iocfs mount --data /tmp/iocfs-data /tmp/iocfs")]
    Mount {
        /// Config file (default: /etc/iocfs/iocfs.toml if it exists, else built-in defaults).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Data directory; overrides `data_dir` from the config.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Test builds only: run on a manual clock starting at this Unix time, moved with
        /// `clock +25h` written to .iocfs/ctl.
        #[cfg(feature = "testing")]
        #[arg(long, value_name = "UNIX_SECONDS")]
        manual_clock: Option<u64>,
        /// Where to mount.
        mountpoint: PathBuf,
    },
    /// Check a config file; prints the first error (with its key) and exits non-zero.
    #[command(
        name = "validate-config",
        after_help = "Example:\n  iocfs validate-config /etc/iocfs/iocfs.toml"
    )]
    ValidateConfig { file: PathBuf },
    /// Check a data directory offline (refuses while mounted); --repair fixes what it can,
    /// keeping a copy of anything it removes in DATA/lost+found/. Exits non-zero on problems.
    #[command(
        after_help = "Example:\n  systemctl stop iocfs\n  iocfs check /var/lib/iocfs\n  iocfs check --repair /var/lib/iocfs"
    )]
    Check {
        /// Fix: cut a damaged log, set damaged files aside, re-import what still reads,
        /// rewrite every backing file.
        #[arg(long)]
        repair: bool,
        /// Config file (its cache size and ingest limits are used).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The data directory.
        data: PathBuf,
    },
    /// Adopt a TinyCTI-style bucket folder (SRC/{live,chaud,tiede,froid}/*.txt[.gz]) offline.
    #[command(after_help = "Example:\n  iocfs import --data /var/lib/iocfs /opt/tinycti/output")]
    Import {
        /// Data directory to import into (created if missing).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Config file (ingest limits).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Attribute every imported indicator to this source (declared if it is not);
        /// default: local, as writes to live/.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// The folder holding live/, chaud/, tiede/, froid/.
        src: PathBuf,
    },
    /// Back up into DEST (a new or empty directory), as a data directory a mount or
    /// `iocfs check` takes as is: from a running daemon (--mount) or an unmounted data
    /// directory (--data). Holds every write acknowledged before the command started; files
    /// are hard-linked where DEST is on the same file system. DEST is checked at the end.
    #[command(
        after_help = "Examples:\n  iocfs backup --mount /srv/iocfs /var/backups/iocfs/$(date +%F)\n  iocfs backup --data /var/lib/iocfs /mnt/usb/iocfs\nRestore: iocfs mount --data DEST MOUNTPOINT (or copy DEST to the data directory)"
    )]
    Backup {
        /// The mount point of a running iocfs (asks it through .iocfs/ctl; root only).
        #[arg(
            long,
            value_name = "MOUNT",
            conflicts_with = "data",
            required_unless_present = "data"
        )]
        mount: Option<PathBuf>,
        /// A data directory no iocfs has mounted.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Config file (offline: its settings are used to open the data directory).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where the backup goes: must not exist, or be an empty directory.
        dest: PathBuf,
    },
    /// Print a mounted filesystem's statistics (`.iocfs/stats.json`) as a table.
    #[command(
        after_help = "Example:\n  iocfs stats /srv/iocfs\n  iocfs stats --json /srv/iocfs | jq .cache"
    )]
    Stats {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        mountpoint: PathBuf,
    },
}

/// glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB),
/// after which such blocks come from the per-thread arenas and stay resident when freed:
/// with 16 FUSE threads, 12 `cp` replaces of a 3.5 MB list left the daemon at 277 MB
/// anonymous RSS. A fixed 1 MiB threshold gives blocks that large back at free (42 MB
/// after the same replaces; a 3M-line `cat >>` ingest took as long). Other C libraries
/// keep their own policy.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
        if set != 1 {
            eprintln!("iocfs: mallopt(M_MMAP_THRESHOLD) failed; memory freed by large writes stays resident");
        }
    }
}

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    let cli = Cli::parse();
    match cli.command {
        Command::Mount {
            config,
            data,
            #[cfg(feature = "testing")]
            manual_clock,
            mountpoint,
        } => {
            #[cfg(not(feature = "testing"))]
            let manual_clock: Option<u64> = None;
            mount(config, data, manual_clock, mountpoint)
        }
        Command::ValidateConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        Command::Stats { json, mountpoint } => iocfs::cli::stats::run(&mountpoint, json),
        Command::Check {
            repair,
            config,
            data,
        } => offline(config, data, false, |c| check(c, repair)),
        Command::Import {
            data,
            config,
            source,
            src,
        } => offline(config, data, true, |c| import(c, &src, source.as_deref())),
        Command::Backup {
            mount,
            data,
            config,
            dest,
        } => backup(mount, data, config, &dest),
    }
}

/// Config for an offline command: the file (explicit or the default one), with `data` as
/// the data directory (`create`d if missing).
fn offline(
    config: Option<PathBuf>,
    data: PathBuf,
    create: bool,
    run: impl FnOnce(&Config) -> ExitCode,
) -> ExitCode {
    let path = config.or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()));
    let mut c = match path.as_ref().map(|p| (p, Config::load(p))) {
        Some((_, Ok(c))) => c,
        Some((p, Err(e))) => {
            eprintln!("iocfs: {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
        None => Config::default(),
    };
    iocfs::logging::init("warn");
    let trusted = if create {
        iocfs::secure::ensure_trusted_dir(&data, "data directory")
    } else {
        iocfs::secure::trusted_dir(&data, "data directory")
    };
    match trusted {
        Ok(d) => c.data_dir = d,
        Err(e) => {
            eprintln!("iocfs: {e}");
            return ExitCode::FAILURE;
        }
    }
    run(&c)
}

fn check(config: &Config, repair: bool) -> ExitCode {
    let bar = progress::Phases::new();
    let result = iocfs::cli::check::run(config, repair, &bar);
    bar.finish();
    match result {
        Ok(report) => {
            println!("iocfs check {}", config.data_dir.display());
            for line in &report.summary {
                println!("  {line}");
            }
            for line in &report.repaired {
                println!("  repaired: {line}");
            }
            for line in &report.problems {
                println!("  PROBLEM: {line}");
            }
            if report.is_clean() {
                println!("clean");
                ExitCode::SUCCESS
            } else {
                println!(
                    "{} problems{}",
                    report.problems.len(),
                    if repair {
                        " remain"
                    } else {
                        "; run with --repair to fix them"
                    }
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("iocfs check: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import(config: &Config, src: &Path, source: Option<&str>) -> ExitCode {
    let total = match iocfs::cli::import::scan_source(src) {
        Ok(source) => source.bytes,
        Err(e) => {
            eprintln!("iocfs import: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bar = progress::Bar::new(total);
    let result = iocfs::cli::import::run(config, src, source, &|read| bar.set(read));
    bar.finish();
    match result {
        Ok(report) => {
            for f in &report.files {
                println!(
                    "{}: {} lines, {} imported into {}/{}, {} invalid",
                    escape_path(&f.path),
                    f.lines,
                    f.imported,
                    f.bucket.map_or("?", |b| b.name()),
                    f.ty.map_or("?", |t| t.name()),
                    f.invalid
                );
            }
            for r in &report.rejections {
                println!("  invalid: {r}");
            }
            for u in &report.unknown {
                println!(
                    "skipped {}: the file name maps to no indicator type",
                    escape_path(u)
                );
            }
            for (path, why) in &report.skipped {
                println!("skipped {}: {why}", escape_path(path));
            }
            println!(
                "{} indicators stored in {}",
                report.indicators_after,
                config.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iocfs import: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mount(
    config_path: Option<PathBuf>,
    data: Option<PathBuf>,
    manual_clock: Option<u64>,
    mountpoint: PathBuf,
) -> ExitCode {
    let config_path =
        config_path.or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()));
    let mut config = match &config_path {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("iocfs: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    iocfs::logging::init(&config.log.level);
    let data_override = match data.map(|d| iocfs::secure::ensure_trusted_dir(&d, "data directory"))
    {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("iocfs: --data: {e}");
            return ExitCode::FAILURE;
        }
        None => None,
    };
    if let Some(d) = &data_override {
        config.data_dir = d.clone();
    }
    let clock: Arc<dyn Clock> = match manual_clock {
        #[cfg(feature = "testing")]
        Some(start) => {
            let c = Arc::new(iocfs::clock::ManualClock::new(start));
            iocfs::clock::install_manual(c.clone());
            log::warn!("running on a MANUAL clock starting at {start} (test build)");
            c
        }
        _ => Arc::new(SystemClock),
    };
    let request = daemon::MountRequest {
        config: Arc::new(config),
        config_path,
        data_override,
        mountpoint,
        clock,
    };
    match daemon::run(request) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("iocfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn backup(
    mount: Option<PathBuf>,
    data: Option<PathBuf>,
    config: Option<PathBuf>,
    dest: &Path,
) -> ExitCode {
    let dest = match iocfs::cli::backup::absolute_dest(dest) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("iocfs backup: {e}");
            return ExitCode::FAILURE;
        }
    };
    let made = match (mount, data) {
        (Some(mount), _) => iocfs::cli::backup::online(&mount, &dest).map(|()| {
            println!(
                "iocfs backup: {} written by the daemon at {}",
                dest.display(),
                mount.display()
            )
        }),
        (None, Some(data)) => {
            return offline(config, data, false, |c| {
                match iocfs::cli::backup::offline(c, &dest) {
                    Ok(r) => {
                        println!(
                            "iocfs backup: {} holds the state at sequence {} ({} files linked, {} copied)",
                            dest.display(),
                            r.upto,
                            r.linked,
                            r.copied
                        );
                        verify_backup(&dest)
                    }
                    Err(e) => {
                        eprintln!("iocfs backup: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        (None, None) => unreachable!("clap requires --mount or --data"),
    };
    match made {
        Ok(()) => verify_backup(&dest),
        Err(e) => {
            eprintln!("iocfs backup: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `iocfs check` of a fresh backup: it must be clean.
fn verify_backup(dest: &Path) -> ExitCode {
    let config = Config {
        data_dir: dest.to_path_buf(),
        ..Config::default()
    };
    check(&config, false)
}
