//! Real programs the tests drive, installed by `.ci/run`.

use std::process::Command;

/// Is `tool` on PATH? Skips (false) when not, or panics under `IOCFS_REQUIRE_FUSE=1`.
pub fn have(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("IOCFS_REQUIRE_FUSE").is_some_and(|v| v == "1") {
            panic!("IOCFS_REQUIRE_FUSE=1 but {tool} is missing (apt-get install {package})");
        }
        eprintln!("SKIP: {tool} not installed (apt-get install {package})");
    }
    found
}
