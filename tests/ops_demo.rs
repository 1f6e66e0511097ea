//! scripts/demo: by default it imports its generated corpus, so every bucket, a view and
//! the lookups it prints show real content; `--empty` mounts empty buckets. Ctrl-C (SIGINT)
//! unmounts. (tests/hostile_paths.rs checks the private directory it makes.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    fuse_available, is_mounted, poll_until, wait_timeout, MountGuard, BIN, BUCKETS, READY_TIMEOUT,
};

/// A running scripts/demo: killed and its mount detached on drop.
struct Demo {
    child: Child,
    /// What it printed before mounting, line by line.
    message: Vec<String>,
    mnt: PathBuf,
    // Dropped after `Drop::drop`: the mount goes before its directory.
    _guard: MountGuard,
    _tmp: tempfile::TempDir,
}

impl Demo {
    fn start(args: &[&str]) -> Option<Demo> {
        if !fuse_available() {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let mut child = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo"))
            .args(args)
            .env("IOCFS_BIN", BIN)
            .env("TMPDIR", &base)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(base.join("demo.log")).unwrap())
            .spawn()
            .unwrap();
        let mut message = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let last = line.starts_with("Press Ctrl-C");
            message.push(line);
            if last {
                break;
            }
        }
        let first = message.first().cloned().unwrap_or_default();
        let Some(mnt) = first
            .strip_prefix("iocfs demo: mounting ")
            .and_then(|r| r.split(" (data").next())
        else {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(base.join("demo.log")).unwrap_or_default();
            panic!("unexpected demo output: {message:?}\n{log}");
        };
        let mnt = PathBuf::from(mnt);
        assert!(mnt.starts_with(&base), "{}", mnt.display());
        let demo = Demo {
            child,
            message,
            mnt: mnt.clone(),
            _guard: MountGuard(mnt.clone()),
            _tmp: tmp,
        };
        let up = poll_until(READY_TIMEOUT, || fs::read(mnt.join(".iocfs/health")).ok());
        assert!(up.is_some(), "the demo did not mount {}", mnt.display());
        Some(demo)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn lines(&self, rel: &str) -> Vec<String> {
        fs::read_to_string(self.path(rel))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Ctrl-C: it commits, unmounts and exits 0.
    fn interrupt(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = wait_timeout(&mut self.child, Duration::from_secs(15));
        assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
        assert!(
            !is_mounted(&self.mnt),
            "{} still mounted",
            self.mnt.display()
        );
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_demo_imports_data_into_every_bucket_and_its_lookups_find_it() {
    let Some(mut demo) = Demo::start(&[]) else {
        return;
    };
    let mut ipv4_lines = 0;
    for bucket in BUCKETS {
        let mut types = 0;
        let mut lines = 0;
        for entry in fs::read_dir(demo.path(bucket)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let n = demo.lines(&format!("{bucket}/{name}")).len();
            types += usize::from(n > 0);
            lines += n;
            if name == "ipv4.txt" {
                ipv4_lines += n;
            }
        }
        assert!(types >= 5, "{bucket}: {types} non-empty files");
        assert!(lines >= 2000, "{bucket}: {lines} indicators");
    }
    // The default view serves every address: none of the corpus is a reserved range.
    // Until its first build the view's file does not exist yet.
    let view = poll_until(READY_TIMEOUT, || {
        let n = fs::read_to_string(demo.path("views/all/ipv4.txt"))
            .ok()?
            .lines()
            .count();
        (n == ipv4_lines).then_some(n)
    });
    assert_eq!(
        view,
        Some(ipv4_lines),
        "views/all/ipv4.txt: {} lines",
        demo.lines("views/all/ipv4.txt").len()
    );
    // The lookups it prints answer, each from the bucket whose file holds the value.
    let lookups: Vec<PathBuf> = demo
        .message
        .iter()
        .filter_map(|l| l.trim().strip_prefix("cat "))
        .filter(|p| p.contains("/.iocfs/lookup/"))
        .map(PathBuf::from)
        .collect();
    let mut buckets = Vec::new();
    for path in &lookups {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let value = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(v["value"], value, "{text}");
        let bucket = v["bucket"].as_str().unwrap_or_else(|| panic!("{text}"));
        let file = format!("{bucket}/{}.txt", v["type"].as_str().unwrap());
        assert!(
            demo.lines(&file).iter().any(|l| l == value),
            "{value} not in {file}"
        );
        buckets.push(bucket.to_string());
    }
    assert_eq!(buckets, ["chaud", "tiede"], "{:?}", demo.message);
    demo.interrupt();
}

#[test]
fn the_demo_with_empty_mounts_empty_buckets() {
    let Some(mut demo) = Demo::start(&["--empty"]) else {
        return;
    };
    for bucket in BUCKETS {
        for entry in fs::read_dir(demo.path(bucket)).unwrap() {
            let entry = entry.unwrap();
            assert_eq!(
                entry.metadata().unwrap().len(),
                0,
                "{bucket}/{:?}",
                entry.file_name()
            );
        }
    }
    assert!(!demo.mnt.parent().unwrap().join("corpus").exists());
    assert!(
        !demo.message.iter().any(|l| l.contains("corpus")),
        "{:?}",
        demo.message
    );
    demo.interrupt();
}
