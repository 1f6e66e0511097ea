//! `.iocfs/metrics`: the statistics of stats.json in the Prometheus text exposition format
//! (version 0.0.4), for node_exporter's textfile collector or a scrape through a web server.
//!
//! Names carry the `iocfs_` prefix and base units (`_seconds`, `_bytes`); counters end in
//! `_total`; partitions are labels (`bucket`, `type`, `view`, `reason`). Everything is
//! rendered from one stats snapshot, so a scrape is consistent with itself.

use std::fmt::Write;

use serde_json::Value;

/// Renders metric families; each family's HELP and TYPE once, then its samples.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family with one unlabelled sample, if the value is there.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.family(name, kind, help);
            self.sample(name, &[], v);
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// An RFC 3339 time as Unix seconds.
fn timestamp(v: &Value) -> Option<f64> {
    let t = humantime::parse_rfc3339_weak(v.as_str()?).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

fn objects(v: &Value) -> impl Iterator<Item = (&String, &Value)> {
    v.as_object().into_iter().flatten()
}

/// The exposition of a stats.json value.
pub fn render(stats: &Value) -> String {
    let mut e = Exposition::default();
    e.family(
        "iocfs_info",
        "gauge",
        "Always 1; the version label says which iocfs serves.",
    );
    e.sample(
        "iocfs_info",
        &[("version", stats["version"].as_str().unwrap_or("?"))],
        1.0,
    );
    // A start time rather than an uptime (which Prometheus derives as time() minus it): the
    // text then changes only when something it counts does.
    e.single(
        "iocfs_start_time_seconds",
        "gauge",
        "When the daemon started, in Unix seconds.",
        timestamp(&stats["started"]),
    );
    buckets(&mut e, &stats["buckets"]);
    cache(&mut e, &stats["cache"]);
    wal(&mut e, &stats["wal"]);
    flushes(&mut e, stats);
    aging(&mut e, &stats["aging"]);
    rejections(&mut e, stats);
    views(&mut e, &stats["views"]);
    sources(&mut e, &stats["sources"]);
    e.single(
        "iocfs_health_problems",
        "gauge",
        "Problems .iocfs/health reports (0: ok).",
        stats["problems"].as_array().map(|p| p.len() as f64),
    );
    e.out
}

fn buckets(e: &mut Exposition, b: &Value) {
    for (name, field, help) in [
        (
            "iocfs_indicators",
            "lines",
            "Indicators stored, by bucket and type.",
        ),
        (
            "iocfs_served_bytes",
            "bytes",
            "Bytes a read of the file returns, by bucket and type.",
        ),
        (
            "iocfs_stored_bytes",
            "stored_bytes",
            "Bytes on disk (compressed for tiers), by bucket and type.",
        ),
    ] {
        e.family(name, "gauge", help);
        for (bucket, types) in objects(b) {
            for (ty, v) in objects(types).filter(|(t, _)| *t != "total") {
                if let Some(x) = num(&v[field]) {
                    e.sample(name, &[("bucket", bucket), ("type", ty)], x);
                }
            }
        }
    }
}

fn cache(e: &mut Exposition, c: &Value) {
    e.single(
        "iocfs_cache_hits_total",
        "counter",
        "Tier block reads served from the block cache.",
        num(&c["hits"]),
    );
    e.single(
        "iocfs_cache_misses_total",
        "counter",
        "Tier block reads that inflated the block.",
        num(&c["misses"]),
    );
    e.single(
        "iocfs_cache_bytes",
        "gauge",
        "Bytes of inflated blocks in the cache.",
        num(&c["bytes"]),
    );
    e.single(
        "iocfs_cache_capacity_bytes",
        "gauge",
        "The cache's bound (cache.size).",
        num(&c["capacity"]),
    );
    e.single(
        "iocfs_cache_inflated_bytes",
        "gauge",
        "Bytes of whole tier files inflated on the data filesystem for passthrough readers (up to cache.size).",
        num(&c["inflated_bytes"]),
    );
    let ahead = &c["inflated_ahead"];
    e.single(
        "iocfs_cache_inflated_ahead_total",
        "counter",
        "Whole tier files inflated before their open, for a reader walking the tier files.",
        num(&ahead["made"]),
    );
    e.single(
        "iocfs_cache_inflated_ahead_opened_total",
        "counter",
        "Tier files inflated ahead that an open then found made.",
        num(&ahead["opened"]),
    );
    e.single(
        "iocfs_cache_inflated_ahead_stopped_total",
        "counter",
        "Tier files whose inflate ahead was stopped because another file was opened.",
        num(&ahead["stopped"]),
    );
}

fn wal(e: &mut Exposition, w: &Value) {
    e.single(
        "iocfs_wal_applied_sequence",
        "gauge",
        "Sequence number of the last applied WAL record.",
        num(&w["applied_seq"]),
    );
    e.single(
        "iocfs_wal_next_sequence",
        "gauge",
        "Sequence number the next WAL record gets.",
        num(&w["next_seq"]),
    );
    e.single(
        "iocfs_wal_bytes",
        "gauge",
        "Bytes of WAL segments on disk.",
        num(&w["bytes"]),
    );
    e.single(
        "iocfs_wal_segments",
        "gauge",
        "WAL segment files on disk.",
        num(&w["segments"]),
    );
    let h = &w["fsync_seconds"];
    if let Some(buckets) = h["buckets"].as_array() {
        let name = "iocfs_wal_fsync_seconds";
        e.family(
            name,
            "histogram",
            "Duration of WAL fsyncs (what every acknowledged write waits for).",
        );
        let bucket = format!("{name}_bucket");
        for b in buckets {
            if let (Some(le), Some(n)) = (num(&b[0]), num(&b[1])) {
                e.sample(&bucket, &[("le", &number(le))], n);
            }
        }
        e.sample(&bucket, &[("le", "+Inf")], num(&h["count"]).unwrap_or(0.0));
        e.sample(&format!("{name}_sum"), &[], num(&h["sum"]).unwrap_or(0.0));
        e.sample(
            &format!("{name}_count"),
            &[],
            num(&h["count"]).unwrap_or(0.0),
        );
    }
}

fn flushes(e: &mut Exposition, stats: &Value) {
    let c = &stats["commit"];
    e.single(
        "iocfs_commits_total",
        "counter",
        "Commits of backing files since start.",
        num(&c["count"]),
    );
    e.single(
        "iocfs_commit_lagging_files",
        "gauge",
        "Backing files that lag the state (written by the next commit).",
        num(&c["lagging_files"]),
    );
    let last = &c["last"];
    e.single(
        "iocfs_commit_last_timestamp_seconds",
        "gauge",
        "When the last commit finished.",
        timestamp(&last["at"]),
    );
    e.single(
        "iocfs_commit_last_duration_seconds",
        "gauge",
        "How long the last commit took.",
        num(&last["millis"]).map(|m| m / 1000.0),
    );
    let k = &stats["checkpoint"];
    e.single(
        "iocfs_checkpoints_total",
        "counter",
        "Checkpoints written since start.",
        num(&k["count"]),
    );
    e.single(
        "iocfs_checkpoint_last_timestamp_seconds",
        "gauge",
        "When the last checkpoint was written.",
        timestamp(&k["last"]["at"]),
    );
    e.single(
        "iocfs_checkpoint_last_bytes",
        "gauge",
        "Size of the last checkpoint.",
        num(&k["last"]["bytes"]),
    );
}

fn aging(e: &mut Exposition, a: &Value) {
    e.single(
        "iocfs_aging_last_timestamp_seconds",
        "gauge",
        "When the last aging step ran (a check that found nothing to move counts).",
        timestamp(&a["last"]["at"]),
    );
    let name = "iocfs_aging_moved_total";
    e.family(name, "counter", "Indicators moved by aging since start, by source and destination bucket (to=\"gone\": dropped).");
    for (step, n) in objects(&a["moved_total"]) {
        let (from, to) = step.split_once("->").unwrap_or((step, "?"));
        if let Some(n) = num(n) {
            e.sample(name, &[("from", from), ("to", to)], n);
        }
    }
}

fn rejections(e: &mut Exposition, stats: &Value) {
    let name = "iocfs_rejected_lines_total";
    e.family(
        name,
        "counter",
        "Input lines rejected (or skipped) since start, by type and reason.",
    );
    let by_reason = &stats["rejected_by_reason"];
    if by_reason.is_object() {
        for (ty, reasons) in objects(by_reason) {
            for (reason, n) in objects(reasons) {
                if let Some(n) = num(n) {
                    e.sample(name, &[("type", ty), ("reason", reason)], n);
                }
            }
        }
    } else {
        for (ty, n) in objects(&stats["rejected_lines"]).filter(|(t, _)| *t != "total") {
            if let Some(n) = num(n) {
                e.sample(name, &[("type", ty), ("reason", "any")], n);
            }
        }
    }
}

fn sources(e: &mut Exposition, v: &Value) {
    let name = "iocfs_source_indicators";
    e.family(
        name,
        "gauge",
        "Stored indicators a source lists (local: written to live/).",
    );
    for (source, s) in objects(v) {
        if let Some(x) = num(&s["listed"]) {
            e.sample(name, &[("source", source)], x);
        }
    }
    let name = "iocfs_source_lines_total";
    e.family(
        name,
        "counter",
        "Lines written to a source's files since start, accepted or rejected.",
    );
    for (source, s) in objects(v) {
        for (outcome, field) in [
            ("accepted", "accepted_lines"),
            ("rejected", "rejected_lines"),
        ] {
            if let Some(x) = num(&s[field]) {
                e.sample(name, &[("source", source), ("outcome", outcome)], x);
            }
        }
    }
    let name = "iocfs_source_last_write_timestamp_seconds";
    e.family(
        name,
        "gauge",
        "When a source last appended or replaced a list (absent: never).",
    );
    for (source, s) in objects(v) {
        for (kind, field) in [("append", "last_append"), ("replace", "last_replace")] {
            if let Some(x) = timestamp(&s[field]) {
                e.sample(name, &[("source", source), ("kind", kind)], x);
            }
        }
    }
}

fn views(e: &mut Exposition, v: &Value) {
    let gauges = [
        (
            "iocfs_view_entries",
            "Entries the current version of a view file serves.",
            "entries",
        ),
        (
            "iocfs_view_bytes",
            "Size of the current version of a view file.",
            "bytes",
        ),
    ];
    for (name, help, field) in gauges {
        e.family(name, "gauge", help);
        for (view, types) in objects(v) {
            for (ty, f) in objects(types) {
                if let Some(x) = num(&f[field]) {
                    e.sample(name, &[("view", view), ("type", ty)], x);
                }
            }
        }
    }
    let name = "iocfs_view_held";
    e.family(
        name,
        "gauge",
        "1 while a rebuild of the view file is held back by max_shrink.",
    );
    for (view, types) in objects(v) {
        for (ty, f) in objects(types) {
            let held = f["held"].as_bool().unwrap_or(false);
            e.sample(
                name,
                &[("view", view), ("type", ty)],
                if held { 1.0 } else { 0.0 },
            );
        }
    }
    let last_build = [
        (
            "iocfs_view_last_build_timestamp_seconds",
            "When the view file was last built.",
            "at",
        ),
        (
            "iocfs_view_last_build_duration_seconds",
            "How long the last build of the view file took.",
            "millis",
        ),
        (
            "iocfs_view_last_build_selected",
            "Indicators the last build selected (buckets, max_age).",
            "selected",
        ),
        (
            "iocfs_view_last_build_capped",
            "Indicators the last build left out by max_entries.",
            "capped",
        ),
        (
            "iocfs_view_last_build_format_dropped",
            "Entries the last build's format dropped.",
            "format_dropped",
        ),
        (
            "iocfs_view_last_build_format_rewritten",
            "Entries the last build's format rewrote.",
            "format_rewritten",
        ),
    ];
    for (name, help, field) in last_build {
        e.family(name, "gauge", help);
        for (view, types) in objects(v) {
            for (ty, f) in objects(types) {
                let b = &f["last_build"];
                let x = match field {
                    "at" => timestamp(&b[field]),
                    "millis" => num(&b[field]).map(|m| m / 1000.0),
                    _ => num(&b[field]),
                };
                if let Some(x) = x {
                    e.sample(name, &[("view", view), ("type", ty)], x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "version": "0.1.0", "uptime_secs": 12, "started": "2026-12-03T08:00:00Z",
            "buckets": {"live": {"ipv4": {"lines": 3, "bytes": 30, "stored_bytes": 30},
                                  "total": {"lines": 3, "bytes": 30, "stored_bytes": 30}},
                        "chaud": {"url": {"lines": 1, "bytes": 20, "stored_bytes": 12}}},
            "cache": {"hits": 5, "misses": 2, "bytes": 100, "capacity": 268435456},
            "wal": {"applied_seq": 9, "next_seq": 10, "bytes": 4096, "segments": 1,
                    "fsync_seconds": {"buckets": [[0.0005, 1], [0.001, 3], [0.01, 4]], "sum": 0.004, "count": 5}},
            "commit": {"count": 2, "lagging_files": 0, "last": {"at": "2026-12-03T10:00:00Z", "millis": 12}},
            "checkpoint": {"count": 1, "last": {"at": "2026-12-03T10:00:01Z", "bytes": 300}},
            "aging": {"last": {"at": "2026-12-03T09:00:00Z"}, "moved_total": {"live->chaud": 7, "froid->gone": 1}},
            "rejected_by_reason": {"ipv4": {"wrong_type": 2, "malformed": 1}},
            "views": {"all": {"ipv4": {"entries": 3, "bytes": 30, "held": false,
                      "last_build": {"at": "2026-12-03T10:00:02Z", "millis": 3, "selected": 3, "capped": 0,
                                     "format_dropped": 0, "format_rewritten": 0}}}},
            "problems": []
        })
    }

    #[test]
    fn renders_counters_gauges_and_a_histogram() {
        let text = render(&sample());
        for want in [
            "iocfs_info{version=\"0.1.0\"} 1",
            "iocfs_start_time_seconds 1796284800",
            "iocfs_indicators{bucket=\"live\",type=\"ipv4\"} 3",
            "iocfs_stored_bytes{bucket=\"chaud\",type=\"url\"} 12",
            "# TYPE iocfs_cache_hits_total counter",
            "iocfs_wal_fsync_seconds_bucket{le=\"0.001\"} 3",
            "iocfs_wal_fsync_seconds_bucket{le=\"+Inf\"} 5",
            "iocfs_wal_fsync_seconds_count 5",
            "iocfs_aging_moved_total{from=\"live\",to=\"chaud\"} 7",
            "iocfs_rejected_lines_total{type=\"ipv4\",reason=\"wrong_type\"} 2",
            "iocfs_view_entries{view=\"all\",type=\"ipv4\"} 3",
            "iocfs_commit_last_duration_seconds 0.012",
            "iocfs_health_problems 0",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in:\n{text}"
            );
        }
        assert!(
            !text.contains("type=\"total\""),
            "totals are for humans, not series"
        );
    }

    #[test]
    fn promtool_accepts_it() {
        let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            if std::env::var_os("IOCFS_REQUIRE_FUSE").is_some_and(|v| v == "1") {
                panic!("IOCFS_REQUIRE_FUSE=1 but promtool is missing (apt-get install prometheus)");
            }
            eprintln!("SKIP: promtool not installed (apt-get install prometheus)");
            return;
        };
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(render(&sample()).as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
