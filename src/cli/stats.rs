//! `iocfs stats MOUNT`: the mounted filesystem's `.iocfs/stats.json` as a table.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::ioc::IocType;
use crate::store::model::Bucket;

/// `iocfs stats`: indicators per bucket and type (and allowlist lines), then the engine's
/// vital signs.
pub fn stats_table(v: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!("{:<8}", "type"));
    for b in Bucket::ALL {
        out.push_str(&format!("{:>12}", b.name()));
    }
    out.push_str(&format!("{:>12}\n", "allow"));
    let allowed = |row: &str| v["allow"][row]["lines"].as_u64().unwrap_or(0);
    let rows = IocType::ALL.iter().map(|t| t.name()).chain(["total"]);
    for row in rows {
        out.push_str(&format!("{row:<8}"));
        for b in Bucket::ALL {
            let n = v["buckets"][b.name()][row]["lines"].as_u64().unwrap_or(0);
            out.push_str(&format!("{n:>12}"));
        }
        let allow = match row {
            "total" => IocType::ALL.iter().map(|t| allowed(t.name())).sum(),
            _ => allowed(row),
        };
        out.push_str(&format!("{allow:>12}\n"));
    }
    let cache = &v["cache"];
    out.push_str(&format!(
        "\ncache     {} hits, {} misses ({:.1}% hit rate), {} of {} bytes; {} bytes of tier files inflated\n",
        cache["hits"],
        cache["misses"],
        cache["hit_rate"].as_f64().unwrap_or(0.0) * 100.0,
        cache["bytes"],
        cache["capacity"],
        cache["inflated_bytes"]
    ));
    let wal = &v["wal"];
    out.push_str(&format!(
        "wal       sequence {}, {} bytes in {} segments, mode {}\n",
        wal["applied_seq"],
        wal["bytes"],
        wal["segments"],
        wal["mode"].as_str().unwrap_or("?")
    ));
    let commit = &v["commit"]["last"];
    if commit.is_object() {
        out.push_str(&format!(
            "commit    last at {} (sequence {}, {} files, {} ms)\n",
            commit["at"].as_str().unwrap_or("?"),
            commit["upto"],
            commit["files"],
            commit["millis"]
        ));
    }
    let aging = &v["aging"]["last"];
    if aging.is_object() {
        out.push_str(&format!(
            "aging     last at {}: {}\n",
            aging["at"].as_str().unwrap_or("?"),
            aging["moved"]
        ));
    }
    out.push_str(&format!(
        "rejected  {} lines\n",
        v["rejected_lines"]["total"]
    ));
    out.push_str(&format!(
        "uptime    {} s, version {}\n",
        v["uptime_secs"],
        v["version"].as_str().unwrap_or("?")
    ));
    if let Some(problems) = v["problems"].as_array().filter(|p| !p.is_empty()) {
        for p in problems {
            out.push_str(&format!("PROBLEM   {}\n", p.as_str().unwrap_or("?")));
        }
    }
    out
}

/// Print the stats of the iocfs mounted at `mountpoint`: a table, or the raw JSON.
pub fn run(mountpoint: &Path, json: bool) -> ExitCode {
    let path = mountpoint.join(".iocfs/stats.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "iocfs: read {}: {e} (is iocfs mounted there?)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if json {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => {
            print!("{}", stats_table(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iocfs: {}: not valid JSON: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
