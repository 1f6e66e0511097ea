//! Paths iocfs trusts (README "Hostile local users and files"): the data directory, its
//! subdirectories and the mount point must be out of reach of other local users, or one of
//! them could plant a symlink where iocfs (usually root) creates, truncates or mounts.
//!
//! A trusted directory is owned by the user running iocfs and writable by nobody else. Every
//! directory above it is owned by root or that user and writable by nobody else, except
//! sticky ones (`/tmp`), where only an entry's owner can rename or delete it. A symlink on
//! the way is followed only inside a directory that passes, since nobody else can swap it.
//! Every refusal names the path and the command that fixes it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Symlinks followed while resolving one path (as the kernel's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn describe(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// Why `dir` (a directory) can't be trusted as `what`; `last`: it is the directory itself,
/// not one above it.
fn refusal(dir: &Path, md: &Metadata, last: bool) -> Option<String> {
    let me = euid();
    let mode = md.permissions().mode();
    let owner_ok = md.uid() == me || (!last && md.uid() == 0);
    if !owner_ok {
        let fix = format!("chown {me} {}", dir.display());
        return Some(format!(
            "{} is owned by {}, not by {} who runs iocfs{}; fix: {fix}",
            dir.display(),
            describe(md.uid()),
            describe(me),
            if last { "" } else { " (or root)" },
        ));
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && (last || !sticky) {
        return Some(format!(
            "{} is writable by {} (mode {:04o}): they could plant symlinks or files in it; \
             fix: chmod go-w {}",
            dir.display(),
            if mode & 0o002 != 0 {
                "every local user"
            } else {
                "its group"
            },
            mode & 0o7777,
            dir.display()
        ));
    }
    None
}

/// Resolve `path` (absolute or relative) to the directory it names, checking every directory
/// on the way, and that directory itself, as described above. Returns the resolved path
/// (no symlinks left in it). `what` names it in errors ("data directory").
pub fn trusted_dir(path: &Path, what: &str) -> Result<PathBuf> {
    resolve(path, what, true)
}

/// Check only the directories above `path` (it may not exist yet, or be a dead mount).
pub fn trusted_parent(path: &Path, what: &str) -> Result<()> {
    let Some(parent) = absolute(path)?.parent().map(Path::to_path_buf) else {
        return Ok(());
    };
    resolve(&parent, what, false).map(drop)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .ctx(|| "current directory")?
        .join(path))
}

fn resolve(path: &Path, what: &str, check_last: bool) -> Result<PathBuf> {
    let unsafe_path =
        |why: String| Error::Unsafe(format!("refusing {what} {}: {why}", path.display()));
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_front(&mut pending, &absolute(path)?);
    let mut cur = PathBuf::from("/");
    let root = fs::symlink_metadata(&cur).ctx(|| "stat /")?;
    if let Some(why) = refusal(&cur, &root, pending.is_empty() && check_last) {
        return Err(unsafe_path(why));
    }
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == "/" {
            cur = PathBuf::from("/");
            continue;
        }
        if name == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&name);
        let md = fs::symlink_metadata(&next).ctx(|| format!("stat {}", next.display()))?;
        if md.file_type().is_symlink() {
            // `cur` passed: nobody else can replace the link, except in a sticky directory,
            // where the link's owner can.
            let owner = md.uid();
            if owner != 0 && owner != euid() {
                return Err(unsafe_path(format!(
                    "{} is a symlink owned by {}; fix: replace it by the directory it points to",
                    next.display(),
                    describe(owner)
                )));
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(unsafe_path("too many symlinks".into()));
            }
            let target = fs::read_link(&next).ctx(|| format!("read link {}", next.display()))?;
            push_front(&mut pending, &target);
            continue;
        }
        if !md.is_dir() {
            return Err(unsafe_path(format!(
                "{} is not a directory",
                next.display()
            )));
        }
        let last = pending.is_empty() && check_last;
        if let Some(why) = refusal(&next, &md, last) {
            return Err(unsafe_path(why));
        }
        cur = next;
    }
    Ok(cur)
}

/// Put the components of `p` in front of `pending` (an absolute `p` restarts at "/").
fn push_front(pending: &mut VecDeque<OsString>, p: &Path) {
    for c in p.components().rev() {
        match c {
            Component::RootDir => pending.push_front("/".into()),
            Component::ParentDir => pending.push_front("..".into()),
            Component::Normal(n) => pending.push_front(n.to_os_string()),
            Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// The directory `path` as a trusted `what`, created (mode 0750, one level only) when
/// missing inside a trusted parent.
pub fn ensure_trusted_dir(path: &Path, what: &str) -> Result<PathBuf> {
    trusted_parent(path, what)?;
    match fs::DirBuilder::new().mode(0o750).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("create {what} {}", path.display()), e)),
    }
    trusted_dir(path, what)
}

/// A subdirectory of a trusted directory (`wal`, `live`, `lost+found`…): created when missing
/// (mkdir never follows a symlink), then it must be a real directory of ours, writable by
/// nobody else. `create`: false only checks one that exists (`iocfs check`).
pub fn subdir(parent: &Path, name: &str, create: bool) -> Result<PathBuf> {
    let path = parent.join(name);
    if create {
        match fs::DirBuilder::new().mode(0o750).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
        }
    }
    let md = match fs::symlink_metadata(&path) {
        Ok(md) => md,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(path),
        Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
    };
    if !md.is_dir() {
        let kind = if md.file_type().is_symlink() {
            "a symlink"
        } else {
            "not a directory"
        };
        return Err(Error::Unsafe(format!(
            "refusing {}: it is {kind}, where iocfs keeps a directory of its own; fix: move \
             it away (iocfs recreates the directory)",
            path.display()
        )));
    }
    match refusal(&path, &md, true) {
        Some(why) => Err(Error::Unsafe(format!("refusing {why}"))),
        None => Ok(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn private_dirs_pass_and_open_ones_are_refused_naming_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let data = dir.join("data");
        fs::create_dir(&data).unwrap();
        assert_eq!(trusted_dir(&data, "data directory").unwrap(), data);
        chmod(&data, 0o777);
        let err = trusted_dir(&data, "data directory")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("chmod go-w {}", data.display())),
            "{err}"
        );
        chmod(&data, 0o770);
        assert!(trusted_dir(&data, "data directory").is_err());
        chmod(&data, 0o750);
        // A directory above it open to others (and not sticky) is refused too.
        chmod(&dir, 0o777);
        let err = trusted_dir(&data, "data directory")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("chmod go-w {}", dir.display())),
            "{err}"
        );
        chmod(&dir, 0o1777);
        trusted_dir(&data, "data directory").unwrap();
        chmod(&dir, 0o700);
    }

    #[test]
    fn symlinks_resolve_inside_trusted_dirs_and_subdirs_must_be_real() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        fs::create_dir(dir.join("real")).unwrap();
        symlink(dir.join("real"), dir.join("link")).unwrap();
        assert_eq!(
            trusted_dir(&dir.join("link"), "x").unwrap(),
            dir.join("real")
        );
        subdir(&dir, "wal", true).unwrap();
        symlink("/etc", dir.join("lost+found")).unwrap();
        let err = subdir(&dir, "lost+found", true).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(subdir(&dir, "missing", false).is_ok());
        let made = ensure_trusted_dir(&dir.join("new"), "data directory").unwrap();
        assert_eq!(
            fs::metadata(made).unwrap().permissions().mode() & 0o777 & !0o750,
            0
        );
    }
}
