//! Mounted tests of sources/ (DESIGN §9, README "Sources"): mkdir declares a feed, its
//! files are written like live ones with the feed as provenance, a replace is the feed's
//! whole list (withdrawing what it no longer lists), and all of it survives SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::{as_nobody, errno_of, Daemon};

fn start() -> Option<Daemon> {
    Daemon::builder()
        .config("[views]\nrefresh = \"0s\"\n")
        .manual_clock(1_700_000_000)
        .start()
}

fn lookup(d: &Daemon, value: &str) -> Option<serde_json::Value> {
    std::fs::read_to_string(d.path(&format!(".iocfs/lookup/{value}")))
        .ok()
        .map(|s| serde_json::from_str(&s).unwrap())
}

fn sources_of(d: &Daemon, value: &str) -> Vec<String> {
    lookup(d, value)
        .map(|j| serde_json::from_value(j["sources"].clone()).unwrap())
        .unwrap_or_default()
}

#[test]
fn mkdir_declares_a_source_whose_files_are_written_like_live_ones() {
    let Some(d) = start() else { return };
    assert!(std::fs::read_dir(d.path("sources"))
        .unwrap()
        .next()
        .is_none());
    std::fs::create_dir(d.path("sources/abuse_ch")).unwrap();
    assert_eq!(
        errno_of(std::fs::create_dir(d.path("sources/abuse_ch"))),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(std::fs::create_dir(d.path("sources/Bad.Name"))),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(std::fs::create_dir(d.path("sources/local"))),
        libc::EINVAL
    );
    assert_eq!(errno_of(std::fs::create_dir(d.path("live/x"))), libc::EPERM);
    assert_eq!(
        common::names_in(&d.path("sources/abuse_ch")),
        common::type_files_sorted()
    );

    // Append: sightings by the source, normalized and validated like live.
    d.sh_ok("printf '5.0.0.9\\n5.0.0.1\\n' >> sources/abuse_ch/ipv4.txt");
    assert!(!d
        .sh("echo nope >> sources/abuse_ch/ipv4.txt")
        .status
        .success());
    assert_eq!(
        d.read("sources/abuse_ch/ipv4.txt"),
        "5.0.0.1\n5.0.0.9\n",
        "sorted"
    );
    assert_eq!(
        d.read("live/ipv4.txt"),
        "5.0.0.9\n5.0.0.1\n",
        "sightings live"
    );
    assert_eq!(sources_of(&d, "5.0.0.1"), ["abuse_ch"]);
    d.sh_ok("echo 5.0.0.1 >> live/ipv4.txt");
    assert_eq!(sources_of(&d, "5.0.0.1"), ["local", "abuse_ch"]);

    // Replace by `>`, `cp`, `sed -i` and a renamed scratch file: the source's whole list.
    d.sh_ok("printf '5.0.0.2\\n5.0.0.1\\n' > sources/abuse_ch/ipv4.txt");
    assert_eq!(d.read("sources/abuse_ch/ipv4.txt"), "5.0.0.1\n5.0.0.2\n");
    assert!(
        lookup(&d, "5.0.0.9").is_none(),
        "withdrawn by its only source"
    );
    let src = d.root().join("feed.txt");
    std::fs::write(&src, "5.0.0.3\n5.0.0.2\n").unwrap();
    d.sh_ok(&format!("cp {} sources/abuse_ch/ipv4.txt", src.display()));
    assert_eq!(d.read("sources/abuse_ch/ipv4.txt"), "5.0.0.2\n5.0.0.3\n");
    assert_eq!(sources_of(&d, "5.0.0.1"), ["local"], "local keeps it");
    d.sh_ok("sed -i '/5.0.0.2/d' sources/abuse_ch/ipv4.txt");
    assert_eq!(d.read("sources/abuse_ch/ipv4.txt"), "5.0.0.3\n");
    d.sh_ok("echo 5.0.0.4 > sources/abuse_ch/new.txt && mv sources/abuse_ch/new.txt sources/abuse_ch/ipv4.txt");
    assert_eq!(d.read("sources/abuse_ch/ipv4.txt"), "5.0.0.4\n");
    assert_eq!(d.read("live/ipv4.txt"), "5.0.0.1\n5.0.0.4\n");
    d.eventually("views/all/ipv4.txt", "5.0.0.1\n5.0.0.4\n");

    // rmdir: only once it lists nothing; the nine names can't be removed.
    assert_eq!(
        errno_of(std::fs::remove_file(d.path("sources/abuse_ch/ipv4.txt"))),
        libc::EPERM
    );
    assert_eq!(
        errno_of(std::fs::remove_dir(d.path("sources/abuse_ch"))),
        libc::ENOTEMPTY
    );
    d.sh_ok(": > sources/abuse_ch/ipv4.txt");
    assert_eq!(d.read("live/ipv4.txt"), "5.0.0.1\n");
    std::fs::remove_dir(d.path("sources/abuse_ch")).unwrap();
    assert_eq!(
        errno_of(std::fs::metadata(d.path("sources/abuse_ch"))),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(std::fs::remove_dir(d.path("sources/abuse_ch"))),
        libc::ENOENT
    );
}

#[test]
fn an_unprivileged_user_can_neither_declare_nor_remove_a_source() {
    let Some(d) = start() else { return };
    std::fs::create_dir(d.path("sources/feed")).unwrap();
    let mnt = d.mnt().display().to_string();
    assert!(!as_nobody(&format!("mkdir {mnt}/sources/other")).0);
    assert!(!as_nobody(&format!("rmdir {mnt}/sources/feed")).0);
    assert!(d.path("sources/feed").is_dir());
    assert!(!d.path("sources/other").exists());
}

#[test]
fn sources_and_their_lists_survive_sigkill_with_and_without_a_commit() {
    let Some(mut d) = start() else { return };
    std::fs::create_dir(d.path("sources/a")).unwrap();
    std::fs::create_dir(d.path("sources/b")).unwrap();
    d.append_lines("sources/a/domain.txt", &["x.example", "y.example"]);
    d.append_lines("sources/b/domain.txt", &["y.example", "z.example"]);
    d.kill9();
    d.restart();
    assert_eq!(d.read("sources/a/domain.txt"), "x.example\ny.example\n");
    assert_eq!(sources_of(&d, "y.example"), ["a", "b"]);
    d.ctl("commit").unwrap();
    d.sh_ok("echo z.example > sources/a/domain.txt");
    d.kill9();
    d.restart();
    assert_eq!(d.read("sources/a/domain.txt"), "z.example\n");
    assert_eq!(
        sources_of(&d, "x.example"),
        Vec::<String>::new(),
        "withdrawn"
    );
    assert_eq!(sources_of(&d, "y.example"), ["b"]);
    assert_eq!(sources_of(&d, "z.example"), ["a", "b"]);
    d.ctl("checkpoint").unwrap();
    assert!(d.stop().success());
    d.restart();
    assert_eq!(common::names_in(&d.path("sources")), ["a", "b"]);
    assert_eq!(sources_of(&d, "z.example"), ["a", "b"]);
    assert!(d.stop().success());
}

/// A data directory written by the release before sources (tests/fixtures/README.md) opens
/// with every indicator where it was, with its times, attributed to `local`; the append
/// that was only in its log is replayed.
#[test]
fn a_data_dir_from_before_sources_opens_unchanged_and_all_local() {
    let Some(mut d) = start() else { return };
    assert!(d.stop().success());
    std::fs::remove_dir_all(d.data()).unwrap();
    std::fs::create_dir(d.data()).unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-f7fcd3c");
    common::copy_dir(&fixture, &d.data());
    d.restart();
    assert_eq!(d.read("live/ipv4.txt"), "5.1.0.1\n5.1.0.2\n5.1.0.0/24\n");
    assert_eq!(d.read("live/domain.txt"), "old-live.example\n");
    assert_eq!(d.read("live/email.txt"), "someone@replayed.example\n");
    assert_eq!(
        d.read("chaud/domain.txt"),
        "chaud.example\n*.wild.example\n"
    );
    assert_eq!(d.read("tiede/ipv4.txt"), "5.2.0.1\n");
    assert_eq!(d.read("froid/url.txt"), "http://froid.example/x\n");
    for (value, bucket, seen) in [
        ("5.1.0.2", "live", "2023-11-14T22:13:20Z"),
        ("chaud.example", "chaud", "2023-11-13T18:26:40Z"),
        ("5.2.0.1", "tiede", "2023-11-03T08:26:40Z"),
        (
            "http:%2F%2Ffroid.example%2Fx",
            "froid",
            "2023-10-11T04:53:20Z",
        ),
    ] {
        let j = lookup(&d, value).unwrap_or_else(|| panic!("{value} is not stored"));
        assert_eq!(j["bucket"], bucket, "{value}");
        assert_eq!(j["first_seen"], seen, "{value}");
        assert_eq!(j["last_seen"], seen, "{value}");
        assert_eq!(j["sources"], serde_json::json!(["local"]), "{value}");
    }
    assert_eq!(sources_of(&d, "someone@replayed.example"), ["local"]);
    let stats: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
    assert_eq!(
        stats["sources"]["local"]["listed"], 9,
        "8 imported, 1 replayed"
    );
    // Nothing about sources was written until a source is used.
    d.ctl("commit").unwrap();
    assert!(common::files_with_ext(&d.data().join("sources"), "sources").is_empty());
    std::fs::create_dir(d.path("sources/feed")).unwrap();
    // A snapshot (replace) that lists a stored indicator attributes it without sighting it.
    d.sh_ok("echo chaud.example > sources/feed/domain.txt");
    assert_eq!(sources_of(&d, "chaud.example"), ["local", "feed"]);
    d.ctl("commit").unwrap();
    assert!(!common::files_with_ext(&d.data().join("sources"), "sources").is_empty());
    assert!(d.stop().success());
    d.restart();
    assert_eq!(sources_of(&d, "chaud.example"), ["local", "feed"]);
    assert_eq!(
        lookup(&d, "chaud.example").unwrap()["bucket"],
        "chaud",
        "not a sighting of its time"
    );
}

/// `iocfs import --source NAME` attributes what it imports to NAME (declared if needed).
#[test]
fn import_with_a_source_attributes_the_imported_indicators() {
    let Some(mut d) = start() else { return };
    assert!(d.stop().success());
    let src = d.root().join("feed");
    std::fs::create_dir_all(src.join("chaud")).unwrap();
    std::fs::write(src.join("chaud/domain.txt"), "fed.example\nboth.example\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iocfs"))
        .args(["import", "--source", "partner_misp", "--config"])
        .arg(d.config_path())
        .arg("--data")
        .arg(d.data())
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.restart();
    d.append_lines("live/domain.txt", &["both.example"]);
    assert_eq!(sources_of(&d, "fed.example"), ["partner_misp"]);
    assert_eq!(sources_of(&d, "both.example"), ["local", "partner_misp"]);
    assert_eq!(
        d.read("sources/partner_misp/domain.txt"),
        "both.example\nfed.example\n"
    );
}

/// A source list's mtime is when its content last changed, and backup tools that compare
/// inodes and nanoseconds (borg, restic) see an unchanged list as unchanged, also across
/// restarts.
#[test]
fn a_source_list_keeps_its_inode_and_mtime_while_its_content_stays() {
    use std::os::unix::fs::MetadataExt;
    let Some(mut d) = start() else { return };
    let stat = |d: &Daemon| {
        let m = std::fs::metadata(d.path("sources/a/ipv4.txt")).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    std::fs::create_dir(d.path("sources/a")).unwrap();
    std::fs::create_dir(d.path("sources/b")).unwrap();
    d.append_lines("sources/a/ipv4.txt", &["5.6.7.8"]);
    let written = stat(&d);
    // Another feed writing the type changes nothing of a's list.
    d.ctl("clock +1h").unwrap();
    d.append_lines("sources/b/ipv4.txt", &["9.9.9.9"]);
    assert_eq!(stat(&d), written);
    assert!(d.stop().success());
    d.restart();
    let restarted = stat(&d);
    assert_eq!(
        restarted.1, written.1,
        "dated by a's write, not by the start"
    );
    assert!(d.stop().success());
    d.restart();
    assert_eq!(stat(&d), restarted, "a second restart changes nothing");
    // A write of a's changes it, dated by that write.
    d.ctl("clock +1h").unwrap();
    d.append_lines("sources/a/ipv4.txt", &["5.6.7.9"]);
    let changed = stat(&d);
    assert_eq!(changed.1, written.1 + 3600);
    assert_ne!(changed.0, restarted.0);
}
