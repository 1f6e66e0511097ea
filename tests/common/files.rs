//! What tests do through the mount: shell commands, reads, appends, control commands.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::{poll_until, Daemon, READY_TIMEOUT};

impl Daemon {
    /// Run `sh -c cmd` with the mount point as working directory.
    pub fn sh(&self, cmd: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(self.mnt())
            .stdin(Stdio::null())
            .output()
            .expect("run sh")
    }

    /// Like [`Daemon::sh`], panicking (with stderr and the daemon log) unless it succeeds.
    pub fn sh_ok(&self, cmd: &str) -> Output {
        let out = self.sh(cmd);
        assert!(
            out.status.success(),
            "`{cmd}` failed ({}): {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }

    /// The whole content of `rel` (under the mount point) as text.
    pub fn read(&self, rel: &str) -> String {
        let path = self.path(rel);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("read {}: {e}\ndaemon log:\n{}", path.display(), self.log())
        });
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()))
    }

    /// The lines of `rel` (under the mount point), checking the content is `\n`-terminated.
    pub fn lines(&self, rel: &str) -> Vec<String> {
        split_lines(&self.read(rel), rel)
    }

    /// Poll until `rel` reads `want` (views are rebuilt in the background).
    pub fn eventually(&self, rel: &str, want: &str) {
        let got = poll_until(READY_TIMEOUT, || {
            let got = std::fs::read_to_string(self.path(rel)).unwrap_or_default();
            (got == want).then_some(got)
        });
        assert_eq!(
            got.as_deref(),
            Some(want),
            "{rel} never became {want:?}; it is {:?}",
            std::fs::read_to_string(self.path(rel))
        );
    }

    /// Poll until the default view's nine files have had their first build (they run in
    /// the background after the mount, opening and closing files and changing stats.json).
    pub fn wait_first_view_builds(&self) {
        poll_until(READY_TIMEOUT, || {
            let stats: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(self.path(".iocfs/stats.json")).ok()?,
            )
            .ok()?;
            let types = stats["views"]["all"].as_object()?.clone();
            (types.len() == 9 && types.values().all(|f| f["last_build"].is_object())).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "the default view's first builds did not finish; log:\n{}",
                self.log()
            )
        });
    }

    /// Write `command` to `.iocfs/ctl` in one write().
    pub fn ctl(&self, command: &str) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .open(self.path(".iocfs/ctl"))?;
        f.write_all(format!("{command}\n").as_bytes())
    }

    /// Append `lines` to `rel` with one write() each (each one a durable WAL record),
    /// panicking on any error.
    pub fn append_lines<S: AsRef<str>>(&self, rel: &str, lines: &[S]) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.path(rel))
            .unwrap_or_else(|e| panic!("open {rel} for append: {e}"));
        for l in lines {
            f.write_all(format!("{}\n", l.as_ref()).as_bytes())
                .unwrap_or_else(|e| panic!("append {:?} to {rel}: {e}", l.as_ref()));
        }
    }

    /// Append many lines in as few write()s as possible (up to 1 MiB each).
    pub fn append_bulk<S: AsRef<str>>(&self, rel: &str, lines: &[S]) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.path(rel))
            .unwrap_or_else(|e| panic!("open {rel} for append: {e}"));
        let mut buf = String::new();
        for l in lines {
            buf.push_str(l.as_ref());
            buf.push('\n');
        }
        for chunk in buf.as_bytes().chunks(1 << 20) {
            // Chunks may split a line: the daemon carries the partial line to the next write.
            f.write_all(chunk)
                .unwrap_or_else(|e| panic!("append to {rel}: {e}"));
        }
    }
}

/// `text` split into lines; panics if it is not empty or `\n`-terminated.
pub fn split_lines(text: &str, what: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    assert!(
        text.ends_with('\n'),
        "{what} does not end with a newline: ...{:?}",
        &text[text.len().saturating_sub(40)..]
    );
    text[..text.len() - 1]
        .split('\n')
        .map(String::from)
        .collect()
}

/// Open `path` read-only (for tests that hold a descriptor).
pub fn open_ro(path: &Path) -> File {
    File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}
