//! Human-readable renderings for the CLI.

use serde_json::Value;

use crate::ioc::IocType;
use crate::store::model::Bucket;

/// `iocfs stats`: indicators per bucket and type, then the engine's vital signs.
pub fn stats_table(v: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!("{:<8}", "type"));
    for b in Bucket::ALL {
        out.push_str(&format!("{:>12}", b.name()));
    }
    out.push('\n');
    let rows = IocType::ALL.iter().map(|t| t.name()).chain(["total"]);
    for row in rows {
        out.push_str(&format!("{row:<8}"));
        for b in Bucket::ALL {
            let n = v["buckets"][b.name()][row]["lines"].as_u64().unwrap_or(0);
            out.push_str(&format!("{n:>12}"));
        }
        out.push('\n');
    }
    let cache = &v["cache"];
    out.push_str(&format!(
        "\ncache     {} hits, {} misses ({:.1}% hit rate), {} of {} bytes\n",
        cache["hits"],
        cache["misses"],
        cache["hit_rate"].as_f64().unwrap_or(0.0) * 100.0,
        cache["bytes"],
        cache["capacity"]
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

/// Progress display for long offline commands: a bar with rate and ETA on a terminal,
/// nothing on a pipe or under systemd (the commands print a summary at the end).
pub mod progress {
    use std::io::IsTerminal;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use indicatif::{ProgressBar, ProgressStyle};

    const BAR: &str = "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}";
    const SPINNER: &str = "{spinner} {elapsed} {msg}";

    fn visible() -> bool {
        std::io::stderr().is_terminal()
    }

    fn styled(bar: &ProgressBar, template: &str) {
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
    }

    /// A bar over a known number of bytes (`iocfs import`).
    pub struct Bar(Option<ProgressBar>);

    impl Bar {
        pub fn new(total_bytes: u64) -> Bar {
            if !visible() {
                return Bar(None);
            }
            let bar = ProgressBar::new(total_bytes);
            styled(&bar, BAR);
            Bar(Some(bar))
        }

        pub fn set(&self, done: u64) {
            if let Some(b) = &self.0 {
                b.set_position(done);
            }
        }

        pub fn finish(&self) {
            if let Some(b) = &self.0 {
                b.finish_and_clear();
            }
        }
    }

    /// Named steps as a spinner, and a bar with rate and ETA while the step that reads
    /// every committed file runs (`iocfs check`).
    pub struct Phases {
        bar: Option<ProgressBar>,
        counting: AtomicBool,
    }

    impl Phases {
        pub fn new() -> Phases {
            let bar = visible().then(|| {
                let s = ProgressBar::new_spinner();
                s.enable_steady_tick(Duration::from_millis(120));
                styled(&s, SPINNER);
                s
            });
            Phases {
                bar,
                counting: AtomicBool::new(false),
            }
        }

        pub fn finish(&self) {
            if let Some(b) = &self.bar {
                b.finish_and_clear();
            }
        }
    }

    impl Default for Phases {
        fn default() -> Self {
            Phases::new()
        }
    }

    impl crate::store::check::Progress for Phases {
        fn phase(&self, what: &str) {
            if let Some(b) = &self.bar {
                if self.counting.swap(false, Ordering::Relaxed) {
                    styled(b, SPINNER);
                }
                b.set_message(what.to_string());
            }
        }

        fn loaded(&self, done: u64, total: u64) {
            if let Some(b) = &self.bar {
                if !self.counting.swap(true, Ordering::Relaxed) {
                    b.reset();
                    b.set_length(total);
                    styled(b, BAR);
                }
                b.set_position(done);
            }
        }
    }
}
