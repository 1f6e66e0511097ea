//! `scripts/install` and `scripts/uninstall`, staged with --destdir: exactly the expected
//! tree, idempotent, an existing config kept, prefixes honoured, bad arguments refused before
//! anything is created, `--purge` the only way config and data go.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::ops::{install, ok, repo, script, show, temp_root, uninstall};
use common::BIN;

/// One entry of a directory tree: kind, permission bits, and what would change if the entry
/// were rewritten, re-created or chmod'ed (inode, size, mtime, ctime).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    mode: u32,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    link: Option<PathBuf>,
}

fn tree(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let md = fs::symlink_metadata(&path).unwrap();
            let kind = if md.file_type().is_symlink() {
                'l'
            } else if md.is_dir() {
                'd'
            } else {
                'f'
            };
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: md.permissions().mode() & 0o7777,
                    ino: md.ino(),
                    size: md.size(),
                    mtime: (md.mtime(), md.mtime_nsec()),
                    ctime: (md.ctime(), md.ctime_nsec()),
                    link: (kind == 'l').then(|| fs::read_link(&path).unwrap()),
                },
            );
            if kind == 'd' {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Just paths, kinds and modes: `[("etc", 'd', 0o755), ...]`.
fn shape(t: &BTreeMap<String, Entry>) -> Vec<(String, char, u32)> {
    t.iter().map(|(p, e)| (p.clone(), e.kind, e.mode)).collect()
}

fn expect_shape(list: &[(&str, char, u32)]) -> Vec<(String, char, u32)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(p, k, m)| (p.to_string(), *k, *m))
        .collect();
    v.sort();
    v
}

const PARENTS: &[(&str, char, u32)] = &[
    ("etc", 'd', 0o755),
    ("etc/systemd", 'd', 0o755),
    ("etc/systemd/system", 'd', 0o755),
    ("srv", 'd', 0o755),
    ("usr", 'd', 0o755),
    ("usr/local", 'd', 0o755),
    ("usr/local/bin", 'd', 0o755),
    ("var", 'd', 0o755),
    ("var/lib", 'd', 0o755),
];

const INSTALLED: &[(&str, char, u32)] = &[
    ("etc/iocfs", 'd', 0o755),
    ("etc/iocfs/iocfs.toml", 'f', 0o644),
    ("etc/systemd/system/iocfs.service", 'f', 0o644),
    ("srv/iocfs", 'd', 0o755),
    ("usr/local/bin/iocfs", 'f', 0o755),
    ("var/lib/iocfs", 'd', 0o750),
];

fn installed_shape() -> Vec<(String, char, u32)> {
    expect_shape(&[PARENTS, INSTALLED].concat())
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    fs::read(a).unwrap() == fs::read(b).unwrap()
}

#[test]
fn install_stages_exactly_the_expected_tree_and_is_idempotent() {
    let (_tmp, base) = temp_root();
    let dest = base.join("root");

    let out = ok(install(&dest, &[]));
    assert!(
        out.stderr.is_empty(),
        "a clean install warns about nothing:\n{}",
        show(&out)
    );
    let first = tree(&dest);
    assert_eq!(shape(&first), installed_shape());
    assert!(same_bytes(
        &dest.join("usr/local/bin/iocfs"),
        Path::new(BIN)
    ));
    // Default prefix: the unit is installed exactly as shipped.
    assert!(same_bytes(
        &dest.join("etc/systemd/system/iocfs.service"),
        &repo().join("systemd/iocfs.service")
    ));
    assert!(same_bytes(
        &dest.join("etc/iocfs/iocfs.toml"),
        &repo().join("systemd/iocfs.toml")
    ));

    // Same inputs again: nothing is rewritten, re-created or even chmod'ed.
    let out = ok(install(&dest, &[]));
    assert_eq!(
        tree(&dest),
        first,
        "second run changed the tree:\n{}",
        show(&out)
    );

    // A new binary: only the binary changes (atomically: a new inode, never written in place).
    let other = base.join("iocfs-new");
    fs::copy(BIN, &other).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&other)
        .unwrap()
        .write_all(b"\0new build\0")
        .unwrap();
    let mut args = vec!["--binary", other.to_str().unwrap()];
    args.extend(["--destdir", dest.to_str().unwrap()]);
    ok(script("install", &args, &[]));
    let third = tree(&dest);
    assert_eq!(shape(&third), installed_shape());
    assert!(same_bytes(&dest.join("usr/local/bin/iocfs"), &other));
    assert_ne!(
        third["usr/local/bin/iocfs"].ino, first["usr/local/bin/iocfs"].ino,
        "the binary must be replaced by rename (a running daemon keeps its old file)"
    );
    let mut rest = third.clone();
    let mut rest_first = first.clone();
    for t in [&mut rest, &mut rest_first] {
        t.remove("usr/local/bin/iocfs");
        // The rename into usr/local/bin changes that directory's mtime, and nothing else.
        t.remove("usr/local/bin");
    }
    assert_eq!(rest, rest_first, "only the binary may change");
}

#[test]
fn install_keeps_an_existing_config_even_an_invalid_one() {
    let (_tmp, base) = temp_root();
    let dest = base.join("root");
    let conf = dest.join("etc/iocfs/iocfs.toml");
    fs::create_dir_all(conf.parent().unwrap()).unwrap();

    let mine = "# the admin's own\ndata_dir = \"/data/iocfs\"\n";
    fs::write(&conf, mine).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o600)).unwrap();
    let out = ok(install(&dest, &[]));
    assert_eq!(fs::read_to_string(&conf).unwrap(), mine);
    assert_eq!(
        fs::metadata(&conf).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kept existing"),
        "{}",
        show(&out)
    );
    assert!(out.stderr.is_empty(), "{}", show(&out));

    // A config the new binary rejects is kept too, with a warning naming the problem.
    let broken = "[durability]\nmode = \"sometimes\"\n";
    fs::write(&conf, broken).unwrap();
    let out = ok(install(&dest, &[]));
    assert_eq!(fs::read_to_string(&conf).unwrap(), broken);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARNING") && err.contains("durability.mode"),
        "{}",
        show(&out)
    );
}

#[test]
fn install_honors_prefix_from_flags_and_environment() {
    let (_tmp, base) = temp_root();

    let dest = base.join("flags");
    ok(install(&dest, &["--prefix", "/opt/iocfs"]));
    assert!(dest.join("opt/iocfs/bin/iocfs").is_file());
    assert!(!dest.join("usr").exists(), "nothing goes to /usr/local");
    let unit = fs::read_to_string(dest.join("etc/systemd/system/iocfs.service")).unwrap();
    let exec: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        exec,
        ["ExecStart=/opt/iocfs/bin/iocfs mount --config /etc/iocfs/iocfs.toml /srv/iocfs"]
    );
    assert!(!unit.contains("/usr/local/bin/iocfs"), "{unit}");

    let dest = base.join("env");
    let out = script(
        "install",
        &["--binary", BIN],
        &[("DESTDIR", dest.to_str().unwrap()), ("PREFIX", "/opt/x")],
    );
    ok(out);
    assert!(dest.join("opt/x/bin/iocfs").is_file());
    assert!(dest.join("etc/systemd/system/iocfs.service").is_file());
    assert!(dest.join("var/lib/iocfs").is_dir());
}

#[test]
fn install_rejects_bad_arguments_and_creates_nothing() {
    let (_tmp, base) = temp_root();
    let dest = base.join("root");
    let d = dest.to_str().unwrap();

    let cases: &[(&[&str], &str)] = &[
        (
            &["--binary", BIN, "--destdir", d, "--prefix", "opt/iocfs"],
            "absolute",
        ),
        (
            &["--binary", BIN, "--destdir", d, "--prefix", "/opt/my iocfs"],
            "may only hold",
        ),
        (
            &["--binary", BIN, "--destdir", d, "--prefix", "/opt/%n"],
            "may only hold",
        ),
        (
            &["--binary", BIN, "--destdir", d, "--frobnicate"],
            "unknown argument",
        ),
        (&["--destdir", d, "--prefix"], "needs a directory"),
    ];
    for (args, msg) in cases {
        let out = script("install", args, &[]);
        assert!(!out.status.success(), "{args:?} must fail:\n{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(msg),
            "{args:?}: expected {msg:?}:\n{}",
            show(&out)
        );
    }

    // --no-build with no release binary in the target dir.
    let empty_target = base.join("target");
    fs::create_dir(&empty_target).unwrap();
    let out = script(
        "install",
        &["--no-build", "--destdir", d],
        &[("CARGO_TARGET_DIR", empty_target.to_str().unwrap())],
    );
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no executable at"),
        "{}",
        show(&out)
    );
    assert!(!dest.exists(), "a failed install must create nothing");

    for name in ["install", "uninstall"] {
        let out = ok(script(name, &["--help"], &[]));
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in ["--prefix", "--destdir"] {
            assert!(text.contains(flag), "{name} --help lacks {flag}:\n{text}");
        }
        assert!(!text.contains("--binary"), "--binary is a hidden test flag");
    }
    let help = ok(script("install", &["--help"], &[]));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--no-build"));
    let help = ok(script("uninstall", &["--help"], &[]));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--purge"));
}

#[test]
fn uninstall_keeps_config_and_data_then_purge_removes_them() {
    let (_tmp, base) = temp_root();
    let dest = base.join("root");
    ok(install(&dest, &[]));

    // What an admin and `systemctl enable` add on top of an install (explicit modes: the
    // expected trees below must not depend on the umask the tests run under).
    let mkdir = |p: PathBuf| {
        fs::create_dir(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    };
    let write = |p: PathBuf, data: &[u8]| {
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    };
    let sys = dest.join("etc/systemd/system");
    mkdir(sys.join("multi-user.target.wants"));
    std::os::unix::fs::symlink(
        "/etc/systemd/system/iocfs.service",
        sys.join("multi-user.target.wants/iocfs.service"),
    )
    .unwrap();
    mkdir(sys.join("iocfs.service.d"));
    write(
        sys.join("iocfs.service.d/override.conf"),
        b"[Service]\nLimitNOFILE=4096\n",
    );
    mkdir(dest.join("var/lib/iocfs/wal"));
    write(dest.join("var/lib/iocfs/wal/00000001.wal"), b"records");

    let out = ok(uninstall(&dest, &[]));
    let kept: Vec<(&str, char, u32)> = vec![
        ("etc/iocfs", 'd', 0o755),
        ("etc/iocfs/iocfs.toml", 'f', 0o644),
        ("etc/systemd/system/iocfs.service.d", 'd', 0o755),
        (
            "etc/systemd/system/iocfs.service.d/override.conf",
            'f',
            0o644,
        ),
        ("etc/systemd/system/multi-user.target.wants", 'd', 0o755),
        ("srv/iocfs", 'd', 0o755),
        ("var/lib/iocfs", 'd', 0o750),
        ("var/lib/iocfs/wal", 'd', 0o755),
        ("var/lib/iocfs/wal/00000001.wal", 'f', 0o644),
    ];
    let after = tree(&dest);
    assert_eq!(
        shape(&after),
        expect_shape(&[PARENTS, &kept].concat()),
        "{}",
        show(&out)
    );
    assert_eq!(
        fs::read(dest.join("var/lib/iocfs/wal/00000001.wal")).unwrap(),
        b"records"
    );

    // Again: nothing left to remove, nothing changes, still success.
    ok(uninstall(&dest, &[]));
    assert_eq!(tree(&dest), after);

    // --purge refuses while an iocfs holds the data directory's lock...
    let lock = fs::File::create(dest.join("var/lib/iocfs/LOCK")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    let out = uninstall(&dest, &["--purge"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        show(&out)
    );
    assert!(dest.join("var/lib/iocfs/wal/00000001.wal").is_file());
    assert!(dest.join("etc/iocfs/iocfs.toml").is_file());
    drop(held);

    // ...and once it is free removes config, drop-ins, data and the mount point.
    let out = ok(uninstall(&dest, &["--purge"]));
    let left = [
        PARENTS,
        &[("etc/systemd/system/multi-user.target.wants", 'd', 0o755)],
    ]
    .concat();
    assert_eq!(shape(&tree(&dest)), expect_shape(&left), "{}", show(&out));
}

#[test]
fn uninstall_with_a_prefix_removes_that_binary_only() {
    let (_tmp, base) = temp_root();
    let dest = base.join("root");
    ok(install(&dest, &["--prefix", "/opt/iocfs"]));
    fs::create_dir_all(dest.join("usr/local/bin")).unwrap();
    fs::write(dest.join("usr/local/bin/iocfs"), b"someone else's").unwrap();

    ok(uninstall(&dest, &["--prefix", "/opt/iocfs"]));
    assert!(!dest.join("opt/iocfs/bin/iocfs").exists());
    assert!(!dest.join("etc/systemd/system/iocfs.service").exists());
    assert_eq!(
        fs::read(dest.join("usr/local/bin/iocfs")).unwrap(),
        b"someone else's"
    );
}
