//! Daemon configuration: the TOML file (default [`DEFAULT_CONFIG_PATH`]), its
//! embedded defaults, and validation.
//!
//! Every key is optional; an empty file means [`Config::default`]. The
//! commented example `systemd/iocfs.toml` holds every default and a test keeps
//! it equal to [`Config::default`].
//!
//! The file is parsed into a [`toml::Table`] and walked by hand rather than
//! through serde derive, so that every error names the full dotted key
//! (`durability.mode`) and says what would have been accepted: admins read
//! these messages, usually over `journalctl`, with no source code at hand.
//!
//! Value formats:
//! - durations are strings with a unit, parsed by `humantime`: `"24h"`,
//!   `"7d"`, `"90s"`, `"2ms"`, `"1h30m"`. A bare TOML integer is rejected
//!   because its unit would be a guess.
//! - sizes are strings like `"256MiB"` (see [`parse_size`]) or a bare TOML
//!   integer counting bytes.
//! - `mount.file_mode` is a string of octal digits (`"0644"`); a TOML integer
//!   is rejected because `644` and `0o644` are indistinguishable once parsed.

mod parse;
pub mod sources;
mod units;
pub mod views;

use std::path::{Path, PathBuf};
use std::time::Duration;
use std::{fmt, fs};

use toml::Table;

use parse::{as_str, boolean, choice, duration, integer, quote, range_reason, size, Section};
pub use units::{format_duration, format_size, parse_duration, parse_mode, parse_size};
use units::{DAY, KIB, MIB};

/// Where the daemon and `validate-config` look when no path is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/iocfs/iocfs.toml";

/// Smallest and largest tier block: below 4KiB the per-block index and
/// checksum overhead dominates; above 16MiB one cache miss reads too much.
pub const MIN_BLOCK_SIZE: u64 = 4 * KIB;
/// The most the tier format lets a block hold.
pub const MAX_BLOCK_SIZE: u64 = crate::store::tier::format::MAX_RAW_LEN as u64;
/// The cache must hold at least this much (and at least one block).
pub const MIN_CACHE_SIZE: u64 = MIB;
/// Smaller WAL segments would rotate (create + fsync a file) constantly.
pub const MIN_SEGMENT_SIZE: u64 = MIB;
/// Writers wait up to `batch_window` for their fsync; longer than this is a stall.
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(1);
pub const MAX_THREADS: usize = 256;
pub const MAX_PREFIX_V4: u8 = 32;
pub const MAX_PREFIX_V6: u8 = 128;
pub const MAX_FILE_MODE: u32 = 0o7777;
/// Accepted `log.level` values (the `log` crate's level filters).
pub const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

const MODE_EXPECTED: &str = r#"expected octal permission bits like "0644""#;

/// The whole configuration, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Root of the WAL, checkpoints and tier files; must be absolute.
    pub data_dir: PathBuf,
    pub retention: Retention,
    pub durability: Durability,
    pub aging: Aging,
    pub cache: Cache,
    pub tiers: Tiers,
    pub ingest: Ingest,
    pub mount: MountOptions,
    pub log: LogConfig,
    pub views: views::Views,
    pub sources: sources::Sources,
}

/// Ages since an indicator's last sighting at which it moves down a bucket;
/// after `froid_retention` it is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub live_to_chaud: Duration,
    pub chaud_to_tiede: Duration,
    pub tiede_to_froid: Duration,
    pub froid_retention: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    pub mode: DurabilityMode,
    /// `batch` mode: longest wait to gather records into one fsync (0 = no wait).
    pub batch_window: Duration,
    /// `periodic` mode: fsync cadence, i.e. the window of writes a crash may lose.
    pub sync_interval: Duration,
    pub commit_interval: Duration,
    pub checkpoint_interval: Duration,
    /// WAL segment rotation size in bytes.
    pub segment_size: u64,
    /// A checkpoint is also taken after this many WAL records.
    pub checkpoint_records: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityMode {
    /// A write is acknowledged only once its WAL record is fsync'd;
    /// concurrent writers share one fsync (group commit).
    Always,
    /// As `Always`, but each fsync waits up to `batch_window` to gather more records.
    Batch,
    /// fsync on a timer; a crash may lose up to `sync_interval` of writes.
    Periodic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aging {
    /// How often the ager moves indicators between buckets.
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// Block cache capacity in bytes.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers {
    /// Tier file block size in bytes (the unit of compression and caching).
    pub block_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingest {
    pub on_invalid: OnInvalid,
    /// Shortest accepted CIDR prefixes: broader networks are invalid indicators.
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    /// The write() holding an invalid line fails (EINVAL) and applies nothing.
    Reject,
    /// Drop the bad lines, keep the good ones.
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Let other users (a web server's worker) use the mount; None: when run as root.
    pub allow_other: Option<bool>,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of indicator files (parsed from octal).
    pub file_mode: u32,
    /// FUSE worker threads.
    pub threads: usize,
    /// Serve read-only opens of live files through FUSE passthrough (page-cache speed; a
    /// descriptor then reads the version it opened and does not see later appends). On by
    /// default; where it can't work (not root, Linux < 6.9) the daemon serves the reads and
    /// says so in the log.
    pub passthrough: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// One of [`LOG_LEVELS`], lower-case.
    pub level: String,
}

impl Default for Config {
    /// The embedded defaults; `systemd/iocfs.toml` must spell out exactly these.
    fn default() -> Self {
        let (secs, millis) = (Duration::from_secs, Duration::from_millis);
        Config {
            data_dir: PathBuf::from("/var/lib/iocfs"),
            retention: Retention {
                live_to_chaud: secs(DAY),
                chaud_to_tiede: secs(7 * DAY),
                tiede_to_froid: secs(30 * DAY),
                froid_retention: secs(365 * DAY),
            },
            durability: Durability {
                mode: DurabilityMode::Always,
                batch_window: millis(2),
                sync_interval: millis(100),
                commit_interval: secs(1),
                checkpoint_interval: secs(300),
                segment_size: 64 * MIB,
                checkpoint_records: 1_000_000,
            },
            aging: Aging { interval: secs(60) },
            cache: Cache { size: 256 * MIB },
            tiers: Tiers {
                block_size: 64 * KIB,
            },
            ingest: Ingest {
                on_invalid: OnInvalid::Reject,
                min_prefix_v4: 8,
                min_prefix_v6: 16,
            },
            mount: MountOptions {
                allow_other: None,
                uid: 0,
                gid: 0,
                file_mode: 0o644,
                threads: 16,
                passthrough: true,
            },
            log: LogConfig {
                level: "info".to_string(),
            },
            views: views::Views::default(),
            sources: sources::Sources::default(),
        }
    }
}

impl MountOptions {
    /// Whether other users may use the mount: as configured, or (auto) when running as root.
    /// With `default_permissions` the kernel still enforces file_mode, uid and gid.
    pub fn allow_other(&self) -> bool {
        self.allow_other
            .unwrap_or_else(|| nix::unistd::geteuid().is_root())
    }
}

impl DurabilityMode {
    pub const ALL: [DurabilityMode; 3] = [Self::Always, Self::Batch, Self::Periodic];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Batch => "batch",
            Self::Periodic => "periodic",
        }
    }
}

impl OnInvalid {
    pub const ALL: [OnInvalid; 2] = [Self::Reject, Self::Skip];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Skip => "skip",
        }
    }
}

impl fmt::Display for DurabilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for OnInvalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration problem, worded for the admin who has to fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's message: `TOML parse error at line L, column C` plus the line.
    #[error("{message}")]
    Syntax { message: String },
    #[error("unknown key {key:?}: expected one of {expected}{}",
        suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default())]
    UnknownKey {
        key: String,
        /// The valid keys of the enclosing table, comma-separated.
        expected: String,
        suggestion: Option<String>,
    },
    /// `reason` is "expected …" or, for cross-field checks, names the other key.
    #[error("{key} = {value}: {reason}")]
    InvalidValue {
        key: String,
        /// The offending value as written in TOML (strings quoted).
        value: String,
        reason: String,
    },
}

impl ConfigError {
    /// The full dotted key the error is about, if any (not for I/O or syntax errors).
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::UnknownKey { key, .. } | Self::InvalidValue { key, .. } => Some(key),
            Self::Io { .. } | Self::Syntax { .. } => None,
        }
    }

    fn invalid(key: &str, value: String, reason: impl Into<String>) -> Self {
        Self::InvalidValue {
            key: key.to_string(),
            value,
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Parses and validates a config file's text; absent keys keep their defaults.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let root: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                message: e.to_string().trim_end().to_string(),
            })?;
        let mut cfg = Config::default();
        let mut top = Section::new("", &root);
        top.set("data_dir", &mut cfg.data_dir, |v| {
            as_str(v, "expected an absolute path string").map(PathBuf::from)
        })?;
        if let Some(mut s) = top.table("retention")? {
            let r = &mut cfg.retention;
            s.set("live_to_chaud", &mut r.live_to_chaud, duration)?;
            s.set("chaud_to_tiede", &mut r.chaud_to_tiede, duration)?;
            s.set("tiede_to_froid", &mut r.tiede_to_froid, duration)?;
            s.set("froid_retention", &mut r.froid_retention, duration)?;
            s.finish()?;
        }
        if let Some(mut s) = top.table("durability")? {
            let d = &mut cfg.durability;
            s.set("mode", &mut d.mode, |v| {
                choice(v, &DurabilityMode::ALL, &DurabilityMode::as_str)
            })?;
            s.set("batch_window", &mut d.batch_window, duration)?;
            s.set("sync_interval", &mut d.sync_interval, duration)?;
            s.set("commit_interval", &mut d.commit_interval, duration)?;
            s.set("checkpoint_interval", &mut d.checkpoint_interval, duration)?;
            s.set("segment_size", &mut d.segment_size, size)?;
            s.set("checkpoint_records", &mut d.checkpoint_records, |v| {
                integer(v, 1, None)
            })?;
            s.finish()?;
        }
        if let Some(mut s) = top.table("aging")? {
            s.set("interval", &mut cfg.aging.interval, duration)?;
            s.finish()?;
        }
        if let Some(mut s) = top.table("cache")? {
            s.set("size", &mut cfg.cache.size, size)?;
            s.finish()?;
        }
        if let Some(mut s) = top.table("tiers")? {
            s.set("block_size", &mut cfg.tiers.block_size, size)?;
            s.finish()?;
        }
        if let Some(mut s) = top.table("ingest")? {
            let i = &mut cfg.ingest;
            s.set("on_invalid", &mut i.on_invalid, |v| {
                choice(v, &OnInvalid::ALL, &OnInvalid::as_str)
            })?;
            s.set("min_prefix_v4", &mut i.min_prefix_v4, |v| {
                integer(v, 0, Some(MAX_PREFIX_V4.into()))
            })?;
            s.set("min_prefix_v6", &mut i.min_prefix_v6, |v| {
                integer(v, 0, Some(MAX_PREFIX_V6.into()))
            })?;
            s.finish()?;
        }
        if let Some(mut s) = top.table("mount")? {
            let m = &mut cfg.mount;
            s.set("allow_other", &mut m.allow_other, |v| match v {
                toml::Value::String(s) if s.eq_ignore_ascii_case("auto") => Ok(None),
                _ => boolean(v)
                    .map(Some)
                    .map_err(|_| r#"expected true, false or "auto""#.to_string()),
            })?;
            s.set("uid", &mut m.uid, |v| integer(v, 0, Some(u32::MAX.into())))?;
            s.set("gid", &mut m.gid, |v| integer(v, 0, Some(u32::MAX.into())))?;
            s.set("file_mode", &mut m.file_mode, |v| {
                parse_mode(as_str(v, MODE_EXPECTED)?).map_err(|e| format!("{MODE_EXPECTED} ({e})"))
            })?;
            s.set("threads", &mut m.threads, |v| {
                integer(v, 1, Some(MAX_THREADS as i64))
            })?;
            s.set("passthrough", &mut m.passthrough, boolean)?;
            s.finish()?;
        }
        if let Some(mut s) = top.table("log")? {
            s.set("level", &mut cfg.log.level, |v| {
                let level = as_str(v, log_levels_expected())?.to_ascii_lowercase();
                if LOG_LEVELS.contains(&level.as_str()) {
                    Ok(level)
                } else {
                    Err(log_levels_expected())
                }
            })?;
            s.finish()?;
        }
        if let Some(s) = top.table("views")? {
            views::parse(s, &mut cfg.views)?;
        }
        if let Some(s) = top.table("sources")? {
            sources::parse(s, &mut cfg.sources)?;
        }
        top.finish()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses `path`; a file that cannot be read is an error naming it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    /// Range and cross-field checks. Called by [`Config::from_toml_str`]; call
    /// it again on a `Config` built or modified in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, reason: String| {
            Err(ConfigError::invalid(key, value, reason))
        };
        if !self.data_dir.is_absolute() {
            let shown = quote(&self.data_dir.display().to_string());
            return bad("data_dir", shown, "expected an absolute path".into());
        }

        let (r, d) = (&self.retention, &self.durability);
        let dur = |d: Duration| quote(&format_duration(d));
        let stages = [
            ("retention.live_to_chaud", r.live_to_chaud),
            ("retention.chaud_to_tiede", r.chaud_to_tiede),
            ("retention.tiede_to_froid", r.tiede_to_froid),
            ("retention.froid_retention", r.froid_retention),
        ];
        for pair in stages.windows(2) {
            if let [(prev_key, prev), (key, cur)] = pair {
                if cur <= prev {
                    let order = "buckets age in order live, chaud, tiede, froid";
                    let reason =
                        format!("must be longer than {prev_key} = {} ({order})", dur(*prev));
                    return bad(key, dur(*cur), reason);
                }
            }
        }
        if d.batch_window > MAX_BATCH_WINDOW {
            let max = format_duration(MAX_BATCH_WINDOW);
            let reason = format!("expected a duration from 0 (no wait) to {max}");
            return bad("durability.batch_window", dur(d.batch_window), reason);
        }
        for (key, value) in [
            ("retention.live_to_chaud", r.live_to_chaud),
            ("durability.sync_interval", d.sync_interval),
            ("durability.commit_interval", d.commit_interval),
            ("durability.checkpoint_interval", d.checkpoint_interval),
            ("aging.interval", self.aging.interval),
        ] {
            if value.is_zero() {
                return bad(key, dur(value), "expected a duration above zero".into());
            }
        }

        // (key, bytes, inclusive bounds; None = unbounded)
        let block = self.tiers.block_size;
        for (key, value, min, max) in [
            (
                "durability.segment_size",
                d.segment_size,
                MIN_SEGMENT_SIZE,
                None,
            ),
            (
                "tiers.block_size",
                block,
                MIN_BLOCK_SIZE,
                Some(MAX_BLOCK_SIZE),
            ),
            ("cache.size", self.cache.size, MIN_CACHE_SIZE, None),
        ] {
            if value < min || max.is_some_and(|max| value > max) {
                let reason = range_reason("a size", format_size(min), max.map(format_size));
                return bad(key, quote(&format_size(value)), reason);
            }
        }
        if self.cache.size < block {
            let reason = format!(
                "must be at least tiers.block_size = {}",
                quote(&format_size(block))
            );
            return bad("cache.size", quote(&format_size(self.cache.size)), reason);
        }

        // (key, value, inclusive bounds) for integers, mirroring the parse-time ranges.
        let m = &self.mount;
        for (key, value, min, max) in [
            (
                "durability.checkpoint_records",
                d.checkpoint_records,
                1,
                None,
            ),
            (
                "ingest.min_prefix_v4",
                self.ingest.min_prefix_v4.into(),
                0,
                Some(MAX_PREFIX_V4.into()),
            ),
            (
                "ingest.min_prefix_v6",
                self.ingest.min_prefix_v6.into(),
                0,
                Some(MAX_PREFIX_V6.into()),
            ),
            (
                "mount.threads",
                m.threads as u64,
                1,
                Some(MAX_THREADS as u64),
            ),
        ] {
            if value < min || max.is_some_and(|max| value > max) {
                let reason = range_reason("an integer", min, max);
                return bad(key, value.to_string(), reason);
            }
        }
        if m.file_mode > MAX_FILE_MODE {
            let shown = quote(&format!("{:04o}", m.file_mode));
            return bad("mount.file_mode", shown, MODE_EXPECTED.into());
        }
        if !LOG_LEVELS.contains(&self.log.level.as_str()) {
            return bad("log.level", quote(&self.log.level), log_levels_expected());
        }
        Ok(())
    }

    /// Keys that differ between `self` (running) and `new` (re-read on SIGHUP)
    /// but only take effect after a restart: the daemon keeps its running
    /// values for these and should log them. Everything else is reloadable.
    pub fn restart_required(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (self, new);
        [
            ("data_dir", a.data_dir != b.data_dir),
            ("durability.mode", a.durability.mode != b.durability.mode),
            (
                "durability.segment_size",
                a.durability.segment_size != b.durability.segment_size,
            ),
            ("tiers.block_size", a.tiers.block_size != b.tiers.block_size),
            (
                "mount.allow_other",
                a.mount.allow_other != b.mount.allow_other,
            ),
            ("mount.uid", a.mount.uid != b.mount.uid),
            ("mount.gid", a.mount.gid != b.mount.gid),
            ("mount.file_mode", a.mount.file_mode != b.mount.file_mode),
            ("mount.threads", a.mount.threads != b.mount.threads),
            (
                "mount.passthrough",
                a.mount.passthrough != b.mount.passthrough,
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

fn log_levels_expected() -> String {
    format!("expected one of {}", LOG_LEVELS.join(", "))
}

#[cfg(test)]
mod tests;
