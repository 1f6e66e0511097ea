//! Helpers of the operations tests: running scripts/install and scripts/uninstall staged
//! under a temp dir, and reading the shipped systemd unit.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::BIN;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A temp dir and its canonical path (the scripts print and compare canonical paths).
pub fn temp_root() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().canonicalize().expect("canonical temp dir");
    (tmp, path)
}

/// Run scripts/NAME with no DESTDIR/PREFIX/CARGO_TARGET_DIR leaking in from the environment.
pub fn script(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
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

pub fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn ok(out: Output) -> Output {
    assert!(out.status.success(), "script failed:\n{}", show(&out));
    out
}

pub fn install(dest: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--binary", BIN, "--destdir", dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    script("install", &args, &[])
}

pub fn uninstall(dest: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--destdir", dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    script("uninstall", &args, &[])
}

/// `[Section] -> [(Key, value)]`, comments and blank lines dropped.
pub fn unit_directives(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
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

pub fn service_values(unit: &BTreeMap<String, Vec<(String, String)>>, key: &str) -> Vec<String> {
    unit.get("Service")
        .into_iter()
        .flatten()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

pub fn shipped_unit() -> BTreeMap<String, Vec<(String, String)>> {
    unit_directives(&fs::read_to_string(repo().join("systemd/iocfs.service")).unwrap())
}
