//! The mount point before and after a run: stale and foreign mounts, the lazy unmount,
//! the mount's read-ahead window.

use std::path::Path;

use crate::error::Result;

pub(super) fn detach(mountpoint: &Path) {
    if let Err(e) = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
        log::error!("lazy unmount of {} failed: {e}", mountpoint.display());
    }
}

/// A mount left by a crashed daemon answers ENOTCONN; clear it so we can mount again.
///
/// Asks with statfs(2), which FUSE always forwards to the daemon. stat(2) is no good: the
/// kernel answers it for the mount root from its attribute cache (60 s TTL) once an `ls -l`
/// has run, so a restart right after a crash saw no stale mount and its own mount(2) then
/// failed with ENOTCONN, again and again until systemd's start limit gave up.
pub(super) fn clear_stale_mount(mountpoint: &Path) {
    // Crashes before this fix could stack several dead mounts; detach them all.
    for _ in 0..16 {
        if !matches!(
            nix::sys::statfs::statfs(mountpoint),
            Err(nix::errno::Errno::ENOTCONN)
        ) {
            return;
        }
        log::warn!(
            "{}: stale mount from a previous run; detaching it",
            mountpoint.display()
        );
        if let Err(e) = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
            log::error!("detach stale mount {}: {e}", mountpoint.display());
            return;
        }
    }
}

/// A FUSE filesystem that answers at the mount point (another iocfs, say) would be hidden
/// by ours: every client of it would then see our (other, maybe empty) lists. Refused, as
/// a data directory in use is; a dead one was detached just before.
pub(super) fn refuse_live_fuse_mount(mountpoint: &Path) -> Result<()> {
    let Ok(fs) = nix::sys::statfs::statfs(mountpoint) else {
        return Ok(());
    };
    if fs.filesystem_type() != nix::sys::statfs::FUSE_SUPER_MAGIC {
        return Ok(());
    }
    // Only a mount at this very path: a directory inside a FUSE filesystem is fine.
    let parent = mountpoint.parent().unwrap_or(Path::new("/"));
    let dev = |p: &Path| nix::sys::stat::stat(p).map(|st| st.st_dev);
    match (dev(mountpoint), dev(parent)) {
        (Ok(here), Ok(above)) if here == above => Ok(()),
        _ => Err(crate::error::Error::Invalid(format!(
            "{}: a running FUSE filesystem is mounted there (another iocfs?); \
             stop it or unmount it first",
            mountpoint.display()
        ))),
    }
}

/// Read-ahead window of the mount, in KiB. The kernel gives a FUSE mount 128 KiB (the
/// smaller of its default and what the daemon asks for at init); a sequential reader of a
/// tier file then gets one 128 KiB READ at a time, and the daemon inflates ahead of it on
/// its own. With a wider window the kernel keeps several READs of up to 1 MiB in flight,
/// which the daemon's threads serve at once: inflating on every core.
const READ_AHEAD_KB: u32 = 4096;

/// Set the mount's read-ahead window (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`, root
/// only). Found through /proc/self/mountinfo: a `stat` of the mount point would be a FUSE
/// request, which nobody serves yet. Best effort: reads are only slower without it.
pub(super) fn widen_read_ahead(mountpoint: &Path) {
    let Ok(canonical) = mountpoint.canonicalize() else {
        return;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    // Fields: id parent major:minor root mount-point ...; the last mount there is ours.
    let dev = info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && Path::new(f[4]) == canonical).then(|| f[2].to_string())
    });
    let Some(dev) = dev else { return };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
        Ok(()) => log::debug!("{knob}: {READ_AHEAD_KB}"),
        Err(e) => log::debug!("read-ahead window of the mount left as is ({knob}: {e})"),
    }
}
