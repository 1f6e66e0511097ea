//! The shipped systemd unit: no option that would hide the FUSE mount in a namespace of the
//! service's own, values that match the daemon, and a clean `systemd-analyze verify` of the
//! unit as scripts/install writes it (skipped only when systemd-analyze is not installed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs;
use std::process::{Command, Stdio};

use common::ops::{install, ok, service_values, shipped_unit, show, temp_root};

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
