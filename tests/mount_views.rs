//! Mounted tests of views/: the built-in `all` view, configured views, read-only files,
//! stable versions across restarts, the shrink guard through health and ctl, SIGHUP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{errno_of, poll_until, Daemon, READY_TIMEOUT, TYPE_FILES};
use nix::sys::signal::Signal;

/// The sorted names in a directory of the mount.
fn listing(d: &Daemon, rel: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d.path(rel))
        .map(|it| {
            it.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

const FAST: &str = "[views]\nrefresh = \"0s\"\n";

#[test]
fn the_all_view_lists_every_type_in_canonical_order_and_is_read_only() {
    let Some(d) = Daemon::builder().config(FAST).start() else {
        return;
    };
    let mut want: Vec<String> = TYPE_FILES.iter().map(|s| s.to_string()).collect();
    want.sort();
    // The first build runs in the background right after the mount.
    poll_until(READY_TIMEOUT, || {
        (listing(&d, "views/all") == want).then_some(())
    })
    .expect("views/all lists the nine files");
    assert_eq!(d.read("views/all/ipv4.txt"), "");
    d.sh_ok("printf '11.0.0.10\\n11.0.0.2\\n9.9.9.9\\n' >> live/ipv4.txt");
    d.eventually("views/all/ipv4.txt", "9.9.9.9\n11.0.0.2\n11.0.0.10\n");
    // Read-only, whatever the tool.
    for cmd in [
        "echo 1.1.1.1 >> views/all/ipv4.txt",
        "rm views/all/ipv4.txt",
        "mkdir views/new",
        "touch views/all/x.txt",
        "mv views/all/ipv4.txt views/all/y.txt",
    ] {
        let out = d.sh(cmd);
        assert!(!out.status.success(), "{cmd} succeeded");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let f = std::fs::metadata(d.path("views/all/ipv4.txt")).unwrap();
    assert_eq!(f.mode() & 0o777, 0o444, "file_mode without write bits");
    assert_eq!(f.len(), "9.9.9.9\n11.0.0.2\n11.0.0.10\n".len() as u64);
}

#[test]
fn a_configured_view_selects_caps_aggregates_and_formats() {
    let cfg = format!(
        "{FAST}[views.fw]\ntypes = [\"ipv4\", \"url\"]\nbuckets = [\"live\"]\naggregate = true\nformat = \"panos\"\nmax_entries = 3\n"
    );
    let Some(d) = Daemon::builder().config(&cfg).start() else {
        return;
    };
    poll_until(READY_TIMEOUT, || {
        (listing(&d, "views/fw") == ["ipv4.txt", "url.txt"]).then_some(())
    })
    .expect("views/fw lists its two files");
    d.sh_ok("printf '11.0.0.0/25\\n11.0.0.128/25\\n' >> live/ipv4.txt");
    d.eventually("views/fw/ipv4.txt", "11.0.0.0/24\n");
    d.sh_ok(
        "printf 'https://evil.example.com:443/x\\nhttp://bad.example.net/y\\n' >> live/url.txt",
    );
    d.eventually(
        "views/fw/url.txt",
        "bad.example.net/y\nevil.example.com/x\n",
    );
    assert_eq!(
        errno_of(std::fs::metadata(d.path("views/fw/domain.txt"))),
        libc::ENOENT
    );
    let stats: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
    assert_eq!(
        stats["views"]["fw"]["url"]["last_build"]["format_rewritten"],
        2
    );
}

/// A daemon on the manual clock at 1,700,000,000 whose `views/all/ipv4.txt` lists one address.
fn one_address_at_t0() -> Option<Daemon> {
    let d = Daemon::builder()
        .config(FAST)
        .manual_clock(1_700_000_000)
        .start()?;
    d.sh_ok("echo 6.51.100.7 >> live/ipv4.txt");
    d.eventually("views/all/ipv4.txt", "6.51.100.7\n");
    Some(d)
}

#[test]
fn an_unchanged_list_keeps_its_version_across_a_restart_and_changes_with_the_list() {
    let Some(mut d) = one_address_at_t0() else {
        return;
    };
    let before = std::fs::metadata(d.path("views/all/ipv4.txt")).unwrap();
    d.ctl("clock +1h").unwrap();
    d.ctl("refresh-views").unwrap();
    d.stop();
    d.set_args(["--manual-clock", "1700007200"]);
    d.restart();
    let after = std::fs::metadata(d.path("views/all/ipv4.txt")).unwrap();
    assert_eq!(
        (after.ino(), after.mtime(), after.len()),
        (before.ino(), before.mtime(), before.len())
    );
    d.sh_ok("echo 6.51.100.8 >> live/ipv4.txt");
    d.eventually("views/all/ipv4.txt", "6.51.100.7\n6.51.100.8\n");
    let changed = std::fs::metadata(d.path("views/all/ipv4.txt")).unwrap();
    assert_ne!(changed.ino(), before.ino());
    assert_eq!(
        changed.mtime(),
        1_700_007_200,
        "mtime is when the content changed"
    );
}

#[test]
fn a_held_rebuild_shows_in_health_until_released() {
    let cfg = format!("{FAST}[views.guarded]\ntypes = [\"domain\"]\nmax_shrink = 0.5\n");
    let Some(d) = Daemon::builder().config(&cfg).start() else {
        return;
    };
    let ten: String = (0..10).map(|i| format!("d{i}.example.com\n")).collect();
    std::fs::write(d.path("live/domain.txt"), &ten).unwrap();
    d.eventually("views/guarded/domain.txt", &ten);
    d.sh_ok(": > live/domain.txt");
    let health = poll_until(READY_TIMEOUT, || {
        let h = d.read(".iocfs/health");
        h.contains("held").then_some(h)
    })
    .expect("health reports the held view");
    assert!(
        health.starts_with("view guarded/domain: held") && health.contains("remove 10 of 10"),
        "{health}"
    );
    assert_eq!(
        d.read("views/guarded/domain.txt"),
        ten,
        "the last version is served"
    );
    assert_eq!(
        d.read("views/all/domain.txt"),
        "",
        "views without the guard follow"
    );
    d.ctl("release-view guarded").unwrap();
    assert_eq!(d.read("views/guarded/domain.txt"), "");
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    assert_eq!(errno_of(d.ctl("release-view nope")), libc::EINVAL);
}

#[test]
fn sighup_adds_changes_and_removes_views() {
    let Some(d) = Daemon::builder().config(FAST).start() else {
        return;
    };
    d.sh_ok("echo a.example.org >> live/domain.txt");
    let reload = |toml: &str| {
        std::fs::write(d.config_path(), toml).unwrap();
        d.signal(Signal::SIGHUP);
    };
    reload(&format!("{FAST}[views.dns]\ntypes = [\"domain\"]\n"));
    d.eventually("views/dns/domain.txt", "a.example.org\n");
    reload(&format!("{FAST}[views.dns]\ntypes = [\"domain\"]\nplaceholder = \"# none\"\nbuckets = [\"froid\"]\n"));
    d.eventually("views/dns/domain.txt", "# none\n");
    reload(FAST);
    let gone = poll_until(READY_TIMEOUT, || {
        (!d.path("views/dns").exists()).then_some(())
    });
    assert!(gone.is_some(), "views/dns still there");
    assert!(
        !d.data().join("views/dns").exists(),
        "its files left the data dir"
    );
    // A config that does not validate is ignored whole.
    reload("[views.BAD]\n");
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.log().contains("not reloaded"));
    assert!(d.path("views/all/domain.txt").exists());
}

/// Before a view file's first build (a fresh mount, a view just added), a reader waits for
/// it, and so does a listing of its directory: a web server fetching the list right after the daemon starts gets the list, never
/// ENOENT (a 404) or an empty list. The build is held at the `views::build` pause.
#[cfg(feature = "testing")]
#[test]
fn a_reader_of_a_view_file_not_built_yet_waits_for_its_first_build() {
    let pause = tempfile::tempdir().unwrap();
    let gate = pause.path().join("views::build");
    std::fs::write(&gate, b"").unwrap();
    let Some(d) = Daemon::builder()
        .config(FAST)
        .env("IOCFS_PAUSE_DIR", pause.path())
        .start()
    else {
        return;
    };
    let reached = pause.path().join("views::build.reached");
    poll_until(READY_TIMEOUT, || reached.exists().then_some(()))
        .expect("the first build pass reached its pause");
    d.sh_ok("echo 6.51.100.9 >> live/ipv4.txt");
    let path = d.path("views/all/ipv4.txt");
    let reader = std::thread::spawn(move || std::fs::read_to_string(path));
    // A listing waits too: never a partial one.
    let dir = d.path("views/all");
    let lister = std::thread::spawn(move || {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    });
    // Types the view does not serve, and names that are no type, are not waited for.
    assert_eq!(
        errno_of(std::fs::metadata(d.path("views/all/nope.txt"))),
        libc::ENOENT
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !reader.is_finished(),
        "the reader did not wait for the build"
    );
    assert!(
        !lister.is_finished(),
        "the listing did not wait for the build"
    );
    std::fs::remove_file(&gate).unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), "6.51.100.9\n");
    let mut want: Vec<String> = TYPE_FILES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(lister.join().unwrap(), want);
}

/// When a file of `views/all` was last built, as stats.json says (None before its first).
fn built_at(d: &Daemon, ty: &str) -> Option<String> {
    let stats: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
    stats["views"]["all"][ty]["last_build"]["at"]
        .as_str()
        .map(String::from)
}

/// A clean stop records which view files are current, so the next start rebuilds only
/// what changed; an offline import or a SIGKILL makes the next start rebuild everything.
#[test]
fn a_clean_restart_rebuilds_only_what_changed() {
    let Some(mut d) = one_address_at_t0() else {
        return;
    };
    let first = Some("2023-11-14T22:13:20Z".to_string());
    assert_eq!(built_at(&d, "domain"), first);
    d.stop();
    d.set_args(["--manual-clock", "1700003600"]);
    d.restart();
    assert!(
        d.log()
            .contains("views: 9 files current since the clean stop"),
        "{}",
        d.log()
    );
    // Once a build pass has run (the md5 file shows the new line), only md5 was rebuilt.
    d.sh_ok("echo 0123456789abcdef0123456789abcdef >> live/md5.txt");
    d.eventually("views/all/md5.txt", "0123456789abcdef0123456789abcdef\n");
    let hour_on = Some("2023-11-14T23:13:20Z".to_string());
    assert_eq!(built_at(&d, "md5"), hour_on);
    assert_eq!(built_at(&d, "domain"), first);
    assert_eq!(built_at(&d, "ipv4"), first);
    assert_eq!(d.read("views/all/ipv4.txt"), "6.51.100.7\n");

    // Imported while stopped: the next start sees the store changed and rebuilds.
    d.stop();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("live")).unwrap();
    std::fs::write(src.path().join("live/ipv4.txt"), "6.51.100.8\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("import")
        .arg("--data")
        .arg(d.data())
        .arg(src.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    d.restart();
    d.eventually("views/all/ipv4.txt", "6.51.100.7\n6.51.100.8\n");

    // Killed: the record was taken at the start, so the next start rebuilds everything.
    d.kill9();
    d.set_args(["--manual-clock", "1700007200"]);
    d.restart();
    let two_hours_on = Some("2023-11-15T00:13:20Z".to_string());
    poll_until(READY_TIMEOUT, || {
        (built_at(&d, "domain") == two_hours_on).then_some(())
    })
    .expect("the domain file was rebuilt after the SIGKILL");
}
