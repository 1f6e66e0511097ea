//! `iocfs import --data DIR SRC` (README "Checking, repairing, importing"): adopt an existing TinyCTI-style bucket folder
//! (`SRC/{live,chaud,tiede,froid}/*.txt` and `*.txt.gz`) into a data directory.
//!
//! Offline, like `check`: it takes the data directory's lock, so it refuses while mounted.
//! File names map to types (the nine names and common aliases; unknown files are reported,
//! never guessed). Every line is validated and normalized; invalid lines are reported with
//! file:line and skipped. An indicator's first and last seen are the file's mtime. An
//! indicator found in several buckets keeps the youngest (live > chaud > tiede > froid).
//! Indicators land in the bucket of their folder; the next aging step moves any that are
//! older than the folder allows. Files are streamed and journaled in chunks, so millions of
//! lines need little memory.
//!
//! The source tree is usually writable by a collector, so it is read as hostile: symlinks
//! (bucket folders or files) are not followed and anything but a regular file is skipped
//! (reported, and opened with O_NOFOLLOW|O_NONBLOCK so a swap after the scan or a FIFO can't
//! redirect or hang it); a line longer than the limit costs no more memory than the limit;
//! names are printed escaped.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::ioc::{self, IocType, MAX_LINE_LEN};
use crate::store::model::Bucket;
use crate::store::mutation::Op;
use crate::store::recovery::IMPORT_CHUNK_LINES;
use crate::store::Store;

/// File names TinyCTI-style collectors use, besides the nine canonical ones.
const ALIASES: &[(&str, IocType)] = &[
    ("malicious-ips", IocType::Ipv4),
    ("malicious-ipv4", IocType::Ipv4),
    ("ips", IocType::Ipv4),
    ("ipv4s", IocType::Ipv4),
    ("malicious-ipv6", IocType::Ipv6),
    ("ipv6s", IocType::Ipv6),
    ("malicious-domains", IocType::Domain),
    ("domains", IocType::Domain),
    ("malicious-urls", IocType::Url),
    ("urls", IocType::Url),
    ("malicious-emails", IocType::Email),
    ("emails", IocType::Email),
    ("malicious-md5", IocType::Md5),
    ("malicious-sha1", IocType::Sha1),
    ("malicious-sha256", IocType::Sha256),
    ("malicious-sha512", IocType::Sha512),
];

/// The type a source file holds, from its name (`.txt` or `.txt.gz`), if it is a known one.
pub fn type_of(name: &str) -> Option<IocType> {
    let stem = name
        .strip_suffix(".gz")
        .unwrap_or(name)
        .strip_suffix(".txt")?;
    IocType::from_name(stem).or_else(|| ALIASES.iter().find(|(a, _)| *a == stem).map(|(_, t)| *t))
}

#[derive(Debug, Default)]
pub struct FileReport {
    pub path: PathBuf,
    pub bucket: Option<Bucket>,
    pub ty: Option<IocType>,
    pub lines: u64,
    pub imported: u64,
    pub invalid: u64,
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub files: Vec<FileReport>,
    /// Files whose name maps to no type.
    pub unknown: Vec<PathBuf>,
    /// Entries that are not regular files (symlinks, FIFOs…), with why: never read.
    pub skipped: Vec<(PathBuf, &'static str)>,
    /// Invalid lines, "file:line: why: excerpt" (the first ones; `invalid` counts all).
    pub rejections: Vec<String>,
    pub indicators_after: u64,
}

const SHOWN_REJECTIONS: usize = 1000;

/// What a source folder holds.
pub struct Source {
    /// Files whose name maps to a type, with their bucket.
    pub files: Vec<(Bucket, PathBuf)>,
    pub unknown: Vec<PathBuf>,
    pub skipped: Vec<(PathBuf, &'static str)>,
    /// Bytes to read in all (for progress).
    pub bytes: u64,
}

/// Why an entry of the source tree is not read, if it is not a plain regular file.
fn not_regular(ft: std::fs::FileType) -> Option<&'static str> {
    if ft.is_symlink() {
        Some("a symlink (not followed)")
    } else if ft.is_file() {
        None
    } else {
        Some("not a regular file")
    }
}

/// Open a source file without following a symlink and without blocking on a FIFO swapped in
/// after the scan; anything but a regular file is refused.
fn open_source(path: &Path) -> Result<File> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("open {}", ioc::escape_path(path)))?;
    let file = File::from(fd);
    let md = file
        .metadata()
        .ctx(|| format!("stat {}", ioc::escape_path(path)))?;
    if !md.is_file() {
        return Err(Error::Unsafe(format!(
            "{} is not a regular file",
            ioc::escape_path(path)
        )));
    }
    Ok(file)
}

pub fn scan_source(src: &Path) -> Result<Source> {
    let mut files = Vec::new();
    let mut unknown = Vec::new();
    let mut skipped = Vec::new();
    let mut bytes = 0;
    let mut any_bucket = false;
    for bucket in Bucket::ALL {
        let dir = src.join(bucket.name());
        let Ok(md) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if let Some(why) = not_regular(md.file_type()).filter(|_| !md.is_dir()) {
            skipped.push((dir, why));
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        any_bucket = true;
        let mut names: Vec<(PathBuf, std::fs::FileType)> = entries
            .flatten()
            .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, ft) in names {
            if ft.is_dir() {
                continue;
            }
            if let Some(why) = not_regular(ft) {
                skipped.push((path, why));
                continue;
            }
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if type_of(&name).is_some() {
                bytes += std::fs::symlink_metadata(&path).map_or(0, |m| m.len());
                files.push((bucket, path));
            } else {
                unknown.push(path);
            }
        }
    }
    if !any_bucket {
        return Err(Error::Invalid(format!(
            "{} has none of live/, chaud/, tiede/, froid/: not a bucket folder",
            src.display()
        )));
    }
    Ok(Source {
        files,
        unknown,
        skipped,
        bytes,
    })
}

/// Import `src` into `config.data_dir`, attributed to `source` (declared if it is not;
/// None: `local`). `progress` is told how many source bytes were read.
pub fn run(
    config: &Config,
    src: &Path,
    source: Option<&str>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ImportReport> {
    let Source {
        files,
        unknown,
        skipped,
        ..
    } = scan_source(src)?;
    let store = Store::open(Arc::new(config.clone()), Arc::new(SystemClock))?;
    let source = match source {
        None => crate::store::model::LOCAL,
        Some(name) => match store.declared_source(name) {
            Ok(id) => id,
            Err(_) => store.declare_source(name)?,
        },
    };
    let limits = store.limits();
    let mut report = ImportReport {
        unknown,
        skipped,
        ..Default::default()
    };
    let read_total = Arc::new(AtomicU64::new(0));
    for (bucket, path) in files {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some(ty) = type_of(&name) else { continue };
        let file = match open_source(&path) {
            Ok(f) => f,
            Err(Error::Unsafe(_)) => {
                report.skipped.push((path, "not a regular file"));
                continue;
            }
            Err(e) if e.errno() == libc::EIO && is_symlink_now(&path) => {
                report.skipped.push((path, "a symlink (not followed)"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let meta = file
            .metadata()
            .ctx(|| format!("stat {}", ioc::escape_path(&path)))?;
        let mtime = u32::try_from(meta.mtime().max(0)).unwrap_or(u32::MAX);
        let counted = Counted {
            inner: file,
            total: read_total.clone(),
        };
        let reader: Box<dyn Read> = if name.ends_with(".gz") {
            Box::new(flate2::read::MultiGzDecoder::new(counted))
        } else {
            Box::new(counted)
        };
        let mut reader = BufReader::with_capacity(1 << 20, reader);
        let mut fr = FileReport {
            path: path.clone(),
            bucket: Some(bucket),
            ty: Some(ty),
            ..Default::default()
        };
        let mut values = Vec::new();
        let mut count = 0usize;
        let mut line = Vec::new();
        // A longer line keeps one byte too many, so normalizing rejects it as too long.
        while crate::ingest::read_line_bounded(&mut reader, &mut line, MAX_LINE_LEN + 1)
            .ctx(|| format!("read {}", ioc::escape_path(&path)))?
            .is_some()
        {
            fr.lines += 1;
            let raw = &line[..];
            let before = values.len();
            match ioc::normalize_into(ty, raw, &limits, &mut values) {
                Ok(ioc::Line::Value) => {
                    values.push(b'\n');
                    count += 1;
                }
                Ok(ioc::Line::Skip) => {}
                Err(why) => {
                    values.truncate(before);
                    fr.invalid += 1;
                    if report.rejections.len() < SHOWN_REJECTIONS {
                        report.rejections.push(format!(
                            "{}:{}: {why}: \"{}\"",
                            ioc::escape_path(&path),
                            fr.lines,
                            ioc::escape_excerpt(raw, 80)
                        ));
                    }
                }
            }
            if count >= IMPORT_CHUNK_LINES {
                submit(&store, (bucket, source), ty, &mut values, &mut count, mtime)?;
                progress(read_total.load(Ordering::Relaxed));
                fr.imported += IMPORT_CHUNK_LINES as u64;
            }
        }
        fr.imported += count as u64;
        submit(&store, (bucket, source), ty, &mut values, &mut count, mtime)?;
        progress(read_total.load(Ordering::Relaxed));
        report.files.push(fr);
    }
    store.shutdown()?;
    store.checkpoint()?;
    report.indicators_after = crate::store::stats::stats(&store)["indicators"]
        .as_u64()
        .unwrap_or(0);
    Ok(report)
}

/// An open refused with ELOOP (the file became a symlink after the scan).
fn is_symlink_now(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn submit(
    store: &Store,
    (bucket, source): (Bucket, crate::store::model::SourceId),
    ty: IocType,
    values: &mut Vec<u8>,
    count: &mut usize,
    mtime: u32,
) -> Result<()> {
    if *count == 0 {
        return Ok(());
    }
    store.submit(Op::Import {
        bucket,
        ty,
        values: std::mem::take(values),
        times: vec![(mtime, mtime); *count],
        source,
    })?;
    *count = 0;
    Ok(())
}

/// Counts the bytes read from the source file (compressed bytes for .gz), for progress.
struct Counted {
    inner: File,
    total: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_types() {
        assert_eq!(type_of("ipv4.txt"), Some(IocType::Ipv4));
        assert_eq!(type_of("sha256.txt.gz"), Some(IocType::Sha256));
        assert_eq!(type_of("malicious-ips.txt"), Some(IocType::Ipv4));
        assert_eq!(type_of("malicious-domains.txt.gz"), Some(IocType::Domain));
        assert_eq!(type_of("malicious-urls.txt"), Some(IocType::Url));
        assert_eq!(type_of("malicious-ipv6.txt"), Some(IocType::Ipv6));
        assert_eq!(type_of("notes.txt"), None);
        assert_eq!(type_of("ipv4.csv"), None);
        assert_eq!(type_of("ipv4"), None);
    }
}
