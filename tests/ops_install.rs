//! Operations: `scripts/install` and `scripts/uninstall` (staged with --destdir), the systemd
//! unit (`systemd-analyze verify`, no option that would hide the mount), and the daemon's side
//! of the systemd protocol: READY=1/STATUS=, WATCHDOG=1, STOPPING=1, and running with only the
//! unit's capability bounding set.
//!
//! The mounted tests need root and /dev/fuse; without them they print a skip line unless
//! IOCFS_REQUIRE_FUSE=1, where they fail. The only other skip: `systemd-analyze` not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_iocfs");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn temp_root() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().canonicalize().expect("canonical temp dir");
    (tmp, path)
}

// ---------------------------------------------------------------------------------------------
// scripts/install, scripts/uninstall

/// Run scripts/NAME with no DESTDIR/PREFIX/CARGO_TARGET_DIR leaking in from the environment.
fn script(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(repo().join("scripts").join(name));
    cmd.args(args)
        .env_remove("DESTDIR")
        .env_remove("PREFIX")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("run scripts/{name}: {e}"))
}

fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "script failed:\n{}", show(&out));
    out
}

fn install(dest: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--binary", BIN, "--destdir", dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    script("install", &args, &[])
}

fn uninstall(dest: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--destdir", dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    script("uninstall", &args, &[])
}

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

// ---------------------------------------------------------------------------------------------
// The unit file

/// `[Section] -> [(Key, value)]`, comments and blank lines dropped.
fn unit_directives(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a directive: {line:?}"));
        out.entry(section.clone())
            .or_default()
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    out
}

fn service_values(unit: &BTreeMap<String, Vec<(String, String)>>, key: &str) -> Vec<String> {
    unit.get("Service")
        .into_iter()
        .flatten()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

fn shipped_unit() -> BTreeMap<String, Vec<(String, String)>> {
    unit_directives(&fs::read_to_string(repo().join("systemd/iocfs.service")).unwrap())
}

/// Every option that gives the service its own mount namespace (systemd.exec(5)), which would
/// make the FUSE mount invisible to everyone but the daemon.
const MOUNT_NAMESPACE_OPTIONS: &[&str] = &[
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateNetwork",
    "PrivateIPC",
    "PrivateUsers",
    "PrivatePIDs",
    "DynamicUser",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "MountFlags",
    "MountAPIVFS",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "LogNamespace",
    "RootDirectory",
    "RootImage",
    "MountImages",
    "ExtensionImages",
    "ExtensionDirectories",
    "NetworkNamespacePath",
    "IPCNamespacePath",
    "JoinsNamespaceOf",
];

#[test]
fn unit_keeps_the_mount_visible_and_matches_the_daemon() {
    let unit = shipped_unit();
    for (section, directives) in &unit {
        for (k, v) in directives {
            assert!(
                !MOUNT_NAMESPACE_OPTIONS.contains(&k.as_str()),
                "[{section}] {k}={v} would give iocfs its own mount namespace and hide the mount"
            );
        }
    }
    let one = |key: &str| -> String {
        let v = service_values(&unit, key);
        assert_eq!(v.len(), 1, "exactly one {key}= expected, got {v:?}");
        v[0].clone()
    };
    // The daemon sends READY=1/STOPPING=1/WATCHDOG=1 from its own process.
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert!(one("WatchdogSec").ends_with('s'));
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/iocfs mount --config /etc/iocfs/iocfs.toml /srv/iocfs"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("KillMode"), "mixed");
    assert_eq!(one("Restart"), "on-failure");
    // What the daemon needs through the sandbox: /dev/fuse, mount(2), a unix socket.
    assert!(service_values(&unit, "DeviceAllow").contains(&"/dev/fuse rw".to_string()));
    assert!(one("CapabilityBoundingSet")
        .split_whitespace()
        .any(|c| c == "CAP_SYS_ADMIN"));
    // An allow-list that has mount(2), then what is taken out of it again.
    let filters = service_values(&unit, "SystemCallFilter");
    assert_eq!(filters.len(), 2, "{filters:?}");
    assert!(filters[0].split_whitespace().any(|s| s == "@mount"));
    assert_eq!(filters[1], "~@privileged @resources");
    assert_eq!(one("IPAddressDeny"), "any");
    assert_eq!(one("LimitCORE"), "0");
    // Room for the most FUSE workers the config allows, plus the daemon's own threads.
    assert!(one("TasksMax").parse::<u32>().unwrap() >= 256 + 32);
    let bytes = |v: String| -> u64 {
        let (n, unit) = v.split_at(v.len() - 1);
        n.parse::<u64>().unwrap()
            << match unit {
                "M" => 20,
                "G" => 30,
                other => panic!("unit {other}"),
            }
    };
    let (high, max) = (bytes(one("MemoryHigh")), bytes(one("MemoryMax")));
    // At least twice the 740 MiB measured with 10 million indicators (README).
    assert!(high >= 2 * (740 << 20) && high < max, "{high} {max}");
    assert!(one("RestrictAddressFamilies")
        .split_whitespace()
        .any(|s| s == "AF_UNIX"));
    assert_eq!(
        unit["Install"],
        [("WantedBy".to_string(), "multi-user.target".to_string())]
    );
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("SKIP unit_passes_systemd_analyze_verify: systemd-analyze is not installed");
        return;
    }
    // Verify the unit as scripts/install writes it. verify insists that ExecStart's program
    // exists on this machine, so the verified copy points at the staged binary instead of
    // /usr/local/bin/iocfs (the only change; everything else is checked as installed).
    let (_tmp, base) = temp_root();
    let dest = base.join("root");
    ok(install(&dest, &[]));
    let installed = fs::read_to_string(dest.join("etc/systemd/system/iocfs.service")).unwrap();
    let staged_bin = dest.join("usr/local/bin/iocfs");
    let from = "\nExecStart=/usr/local/bin/iocfs ";
    assert_eq!(installed.matches(from).count(), 1);
    let copy = installed.replace(from, &format!("\nExecStart={} ", staged_bin.display()));
    let dir = base.join("verify");
    fs::create_dir(&dir).unwrap();
    let unit = dir.join("iocfs.service");
    fs::write(&unit, copy).unwrap();

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .current_dir(&dir)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    // verify exits 0 on some problems (unknown keys, bad values) and only prints them.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify is not clean:\n{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// The daemon as systemd sees it

fn fuse_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".into());
    }
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open /dev/fuse: {e}")),
    }
}

/// True if the mounted test can run; prints why not, or panics under IOCFS_REQUIRE_FUSE=1.
fn fuse_or_skip(test: &str) -> bool {
    let Some(why) = fuse_unavailable() else {
        return true;
    };
    if std::env::var("IOCFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("{test}: IOCFS_REQUIRE_FUSE=1 but {why}");
    }
    eprintln!("SKIP {test}: {why} (set IOCFS_REQUIRE_FUSE=1 to fail instead)");
    false
}

/// `(source, fstype)` of the mount at `path` in /proc/mounts (octal escapes such as \040 for a
/// space decoded).
fn mounted_at(path: &Path) -> Option<(String, String)> {
    let want = path.to_str().unwrap();
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (unescape_mount(f[1]) == want).then(|| (f[0].to_string(), f[2].to_string()))
    })
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = std::str::from_utf8(&b[i + 1..i + 4]).unwrap();
            out.push(u8::from_str_radix(v, 8).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A daemon under test. Dropping it (also when a test panics) SIGKILLs the process if it is
/// still running and lazily unmounts whatever is left at the mount point.
struct Daemon {
    child: Child,
    exit: Option<ExitStatus>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the process has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().unwrap();
        }
        self.exit
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon still running {limit:?} after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if mounted_at(&self.mnt).is_some() {
            let _ = umount2(&self.mnt, MntFlags::MNT_DETACH);
        }
    }
}

/// The service manager's end of NOTIFY_SOCKET: every datagram received, in order.
struct NotifySocket {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> Self {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        NotifySocket {
            sock,
            seen: Vec::new(),
        }
    }

    fn recv(&mut self) -> Option<String> {
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8(buf[..n].to_vec()).expect("notification is UTF-8");
                self.seen.push(msg.clone());
                Some(msg)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }

    /// The first message holding the line `line`, waiting up to `limit`.
    /// Fails at once if the daemon exits without sending it.
    fn wait_for(&mut self, line: &str, limit: Duration, daemon: &mut Daemon) -> String {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.recv() {
                Some(msg) if msg.lines().any(|l| l == line) => return msg,
                Some(_) => {}
                None => {
                    if let Some(status) = daemon.exited() {
                        // Whatever it sent before exiting is queued already.
                        while let Some(msg) = self.recv() {
                            if msg.lines().any(|l| l == line) {
                                return msg;
                            }
                        }
                        panic!(
                            "daemon exited ({status}) without sending {line:?}; received {:?}; \
                             log:\n{}",
                            self.seen,
                            daemon.log()
                        );
                    }
                }
            }
        }
        panic!(
            "no {line:?} within {limit:?}; received {:?}; daemon log:\n{}",
            self.seen,
            daemon.log()
        )
    }

    /// How many messages holding `line` arrive during `window`.
    fn count_during(&mut self, line: &str, window: Duration) -> usize {
        let end = Instant::now() + window;
        let mut n = 0;
        while Instant::now() < end {
            if let Some(msg) = self.recv() {
                n += msg.lines().filter(|l| *l == line).count();
            }
        }
        n
    }
}

/// Start `[wrapper...] iocfs mount --config <shipped config> --data BASE/data BASE/mnt` with
/// NOTIFY_SOCKET bound by the test (BASE/RUN.sock; stderr in BASE/RUN.log).
fn start_daemon(
    base: &Path,
    run: &str,
    wrapper: &[String],
    env: &[(&str, &str)],
) -> (Daemon, NotifySocket) {
    let mnt = base.join("mnt");
    if !mnt.exists() {
        fs::create_dir(&mnt).unwrap();
    }
    let notify_path = base.join(format!("{run}.sock"));
    let notify = NotifySocket::bind(&notify_path);
    let log = base.join(format!("{run}.log"));

    let iocfs_args = [
        BIN.to_string(),
        "mount".into(),
        "--config".into(),
        repo().join("systemd/iocfs.toml").display().to_string(),
        "--data".into(),
        base.join("data").display().to_string(),
        mnt.display().to_string(),
    ];
    let argv: Vec<String> = wrapper.iter().cloned().chain(iocfs_args).collect();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    (
        Daemon {
            child,
            exit: None,
            mnt,
            log,
        },
        notify,
    )
}

const EMPTY_STATUS: &str = "STATUS=live 0, chaud 0, tiede 0, froid 0";

#[test]
fn daemon_notifies_ready_watchdog_and_stopping() {
    if !fuse_or_skip("daemon_notifies_ready_watchdog_and_stopping") {
        return;
    }
    let (_tmp, base) = temp_root();
    // 200 ms: the daemon pings every 100 ms (no WATCHDOG_PID, as sd_notify allows).
    let (mut daemon, mut notify) =
        start_daemon(&base, "daemon", &[], &[("WATCHDOG_USEC", "200000")]);

    let ready = notify.wait_for("READY=1", Duration::from_secs(20), &mut daemon);
    // READY=1 means mounted and serving: the mount is in place when the message arrives.
    // (fuser's direct mount(2) records the type as plain "fuse", the source as "iocfs".)
    let (source, fstype) = mounted_at(&daemon.mnt)
        .unwrap_or_else(|| panic!("READY=1 arrived before the mount; log:\n{}", daemon.log()));
    assert_eq!(source, "iocfs");
    assert!(fstype == "fuse" || fstype == "fuse.iocfs", "{fstype}");
    assert!(
        ready.lines().any(|l| l == EMPTY_STATUS),
        "READY=1 must come with a STATUS= line, got {ready:?}"
    );
    assert_eq!(
        fs::read_to_string(daemon.mnt.join("live/ipv4.txt")).unwrap(),
        ""
    );

    let pings = notify.count_during("WATCHDOG=1", Duration::from_secs(1));
    assert!(
        pings >= 2,
        "{pings} WATCHDOG=1 in 1 s with WATCHDOG_USEC=200000; received {:?}",
        notify.seen
    );

    // The mount takes writes, and STATUS= follows the counts.
    fs::OpenOptions::new()
        .append(true)
        .open(daemon.mnt.join("live/ipv4.txt"))
        .unwrap()
        .write_all(b"203.0.113.7\n")
        .unwrap();
    assert_eq!(
        fs::read_to_string(daemon.mnt.join("live/ipv4.txt")).unwrap(),
        "203.0.113.7\n"
    );
    notify.wait_for(
        "STATUS=live 1, chaud 0, tiede 0, froid 0",
        Duration::from_secs(5),
        &mut daemon,
    );

    kill(daemon.pid(), Signal::SIGTERM).unwrap();
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &mut daemon);
    let status = daemon.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert_eq!(
        mounted_at(&daemon.mnt),
        None,
        "the mount outlived the daemon"
    );
    assert_eq!(
        notify
            .seen
            .iter()
            .filter(|m| m.lines().any(|l| l == "READY=1"))
            .count(),
        1,
        "READY=1 is sent once: {:?}",
        notify.seen
    );
}

#[test]
fn daemon_sends_no_watchdog_for_another_watchdog_pid() {
    if !fuse_or_skip("daemon_sends_no_watchdog_for_another_watchdog_pid") {
        return;
    }
    let (_tmp, base) = temp_root();
    // systemd names the process the watchdog is for; pings meant for another process (say, a
    // parent that exec'd iocfs with its environment) must not be sent.
    let (mut daemon, mut notify) = start_daemon(
        &base,
        "daemon",
        &[],
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    notify.wait_for("READY=1", Duration::from_secs(20), &mut daemon);
    let pings = notify.count_during("WATCHDOG=1", Duration::from_millis(700));
    assert_eq!(
        pings, 0,
        "WATCHDOG_PID names another process: {:?}",
        notify.seen
    );
    kill(daemon.pid(), Signal::SIGTERM).unwrap();
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &mut daemon);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_eq!(mounted_at(&daemon.mnt), None);
}

#[test]
fn daemon_restarts_over_the_stale_mount_of_a_killed_one() {
    if !fuse_or_skip("daemon_restarts_over_the_stale_mount_of_a_killed_one") {
        return;
    }
    // What Restart=on-failure does after a crash or a watchdog kill: start again at once on
    // the same mount point, where the dead daemon's mount is still attached.
    let (_tmp, base) = temp_root();
    let (mut first, mut notify) = start_daemon(&base, "first", &[], &[]);
    notify.wait_for("READY=1", Duration::from_secs(20), &mut first);
    let mnt = first.mnt.clone();
    fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("live/ipv4.txt"))
        .unwrap()
        .write_all(b"203.0.113.7\n")
        .unwrap();
    // `ls -la`: the kernel now answers stat() of the mount root from its attribute cache,
    // even after the daemon is gone.
    for entry in fs::read_dir(mnt.join("live")).unwrap() {
        entry.unwrap().metadata().unwrap();
    }
    fs::metadata(&mnt).unwrap();
    kill(first.pid(), Signal::SIGKILL).unwrap();
    assert!(first.wait_exit(Duration::from_secs(10)).code().is_none());
    assert!(
        mounted_at(&mnt).is_some(),
        "the killed daemon's mount stays behind"
    );

    let (mut second, mut notify) = start_daemon(&base, "second", &[], &[]);
    notify.wait_for("READY=1", Duration::from_secs(20), &mut second);
    // The acknowledged append survived the kill.
    assert_eq!(
        fs::read_to_string(mnt.join("live/ipv4.txt")).unwrap(),
        "203.0.113.7\n"
    );
    assert!(
        second.log().contains("stale mount"),
        "log:\n{}",
        second.log()
    );
    kill(second.pid(), Signal::SIGTERM).unwrap();
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &mut second);
    assert_eq!(second.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_eq!(mounted_at(&mnt), None, "neither mount may remain");
}

#[test]
fn daemon_fails_before_ready_on_a_bad_config() {
    // No mount happens, so no root or FUSE needed: Type=notify sees a plain exit 1.
    let (_tmp, base) = temp_root();
    let conf = base.join("bad.toml");
    fs::write(&conf, "[durability]\nmode = \"sometimes\"\n").unwrap();
    fs::create_dir(base.join("mnt")).unwrap();
    let notify_path = base.join("notify.sock");
    let mut notify = NotifySocket::bind(&notify_path);
    let out = Command::new(BIN)
        .args(["mount", "--config"])
        .arg(&conf)
        .arg("--data")
        .arg(base.join("data"))
        .arg(base.join("mnt"))
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("durability.mode"),
        "{}",
        show(&out)
    );
    while notify.recv().is_some() {}
    assert!(
        notify.seen.iter().all(|m| !m.contains("READY=1")),
        "{:?}",
        notify.seen
    );
}

/// CapEff/CapBnd/NoNewPrivs/Umask from /proc/PID/status.
fn proc_status(pid: Pid, key: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn cap_number(name: &str) -> u32 {
    // The capabilities this unit may plausibly list (linux/capability.h).
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_FOWNER" => 3,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_SYS_ADMIN" => 21,
        other => panic!("add {other} to cap_number"),
    }
}

#[test]
fn daemon_works_with_only_the_units_capabilities() {
    if !fuse_or_skip("daemon_works_with_only_the_units_capabilities") {
        return;
    }
    // systemd applies CapabilityBoundingSet=, NoNewPrivileges= and UMask= before exec; setpriv
    // and the shell's umask do the same here, read from the shipped unit.
    let unit = shipped_unit();
    let caps: Vec<String> = service_values(&unit, "CapabilityBoundingSet")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert!(
        !caps.is_empty() && caps.iter().all(|c| c.starts_with("CAP_")),
        "{caps:?}"
    );
    let bounding = std::iter::once("-all".to_string())
        .chain(
            caps.iter()
                .map(|c| format!("+{}", c["CAP_".len()..].to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    let nnp = service_values(&unit, "NoNewPrivileges") == ["yes"];
    let umask = service_values(&unit, "UMask");
    assert_eq!(umask.len(), 1);

    let mut wrapper: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        "umask \"$1\"; shift; exec \"$@\"".into(),
        "sh".into(),
        umask[0].clone(),
        "setpriv".into(),
        "--bounding-set".into(),
        bounding,
    ];
    if nnp {
        wrapper.push("--no-new-privs".into());
    }
    wrapper.push("--".into());

    let (_tmp, base) = temp_root();
    let (mut daemon, mut notify) = start_daemon(&base, "daemon", &wrapper, &[]);
    notify.wait_for("READY=1", Duration::from_secs(20), &mut daemon);
    let pid = daemon.pid();

    let want: u64 = caps.iter().map(|c| 1u64 << cap_number(c)).sum();
    let have = |key: &str| u64::from_str_radix(&proc_status(pid, key), 16).unwrap();
    assert_eq!(have("CapBnd"), want, "bounding set not applied");
    assert_eq!(
        have("CapEff"),
        want,
        "effective set must be the bounding set"
    );
    assert_eq!(proc_status(pid, "NoNewPrivs"), if nnp { "1" } else { "0" });
    assert_eq!(
        u32::from_str_radix(&proc_status(pid, "Umask"), 8).unwrap(),
        u32::from_str_radix(&umask[0], 8).unwrap()
    );

    // Writes, commits, checkpoints and stats work with nothing but those capabilities.
    let mnt = daemon.mnt.clone();
    fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("live/domain.txt"))
        .unwrap()
        .write_all(b"evil.example.com\n")
        .unwrap();
    for cmd in ["commit\n", "checkpoint\n"] {
        fs::write(mnt.join(".iocfs/ctl"), cmd).unwrap();
    }
    assert_eq!(
        fs::read_to_string(base.join("data/live/domain.txt")).unwrap(),
        "evil.example.com\n",
        "commit must reach the backing file"
    );
    assert_eq!(
        fs::read_to_string(mnt.join(".iocfs/health"))
            .unwrap()
            .trim(),
        "ok"
    );

    kill(pid, Signal::SIGTERM).unwrap();
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &mut daemon);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)).code(),
        Some(0),
        "log:\n{}",
        daemon.log()
    );
    assert_eq!(mounted_at(&daemon.mnt), None);
    assert!(
        !daemon.log().contains("ERROR"),
        "errors under the unit's capabilities:\n{}",
        daemon.log()
    );
}
