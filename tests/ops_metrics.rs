//! `.iocfs/metrics`: the Prometheus text format of the stats, checked by `promtool check
//! metrics` (Debian's prometheus package) on a mounted daemon, and exported the way the README
//! says through node_exporter's textfile collector (examples/systemd/iocfs-metrics.service).
//!
//! promtool and node_exporter are installed by `.ci/run`; without them the tests are skipped,
//! unless `IOCFS_REQUIRE_FUSE=1`, where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::tools::have;
use common::{errno_of, poll_until, Daemon, READY_TIMEOUT};

const PROMTOOL: &str = "promtool";
const NODE_EXPORTER: &str = "prometheus-node-exporter";

/// `promtool check metrics` on `text`: exit 0 and nothing printed, or panic with its output.
fn promtool_accepts(text: &str) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\nstdout: {}\nstderr: {}\non:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample named exactly `series` (name and labels as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{series}: {v:?}: {e}")))
}

fn must(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

fn mount() -> Option<Daemon> {
    Daemon::builder()
        .config("[views]\nrefresh = \"0s\"\n")
        .manual_clock(1_700_000_000)
        .start()
}

/// Fill every family: indicators in live and chaud (aged there), a rejected line, a
/// checkpoint, a read of a tier file, the default view built.
fn fill(d: &Daemon) {
    d.append_lines("live/domain.txt", &["a.evil.example", "b.evil.example"]);
    d.ctl("clock +2d").unwrap();
    d.ctl("age").unwrap();
    d.append_lines("live/ipv4.txt", &["5.1.2.3", "45.67.89.10", "81.2.69.142"]);
    let wrong = std::fs::OpenOptions::new()
        .append(true)
        .open(d.path("live/ipv4.txt"))
        .unwrap()
        .write_all(b"evil.example.com\n");
    assert_eq!(errno_of(wrong), libc::EINVAL);
    std::fs::create_dir(d.path("sources/feed")).unwrap();
    d.sh_ok("printf '5.1.2.3\\n45.9.9.9\\n' > sources/feed/ipv4.txt");
    assert!(!d.sh("echo nope >> sources/feed/ipv4.txt").status.success());
    d.ctl("checkpoint").unwrap();
    assert_eq!(
        d.lines("chaud/domain.txt"),
        ["a.evil.example", "b.evil.example"]
    );
}

#[test]
fn metrics_hold_the_stats_and_promtool_accepts_them() {
    if !have(PROMTOOL, "prometheus") {
        return;
    }
    let Some(d) = mount() else { return };
    fill(&d);
    // The view is rebuilt in the background: wait for it.
    let text = poll_until(READY_TIMEOUT, || {
        let text = d.read(".iocfs/metrics");
        (sample(&text, "iocfs_view_entries{view=\"all\",type=\"ipv4\"}") == Some(4.0))
            .then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "view all/ipv4 never reached 4 entries:\n{}",
            d.read(".iocfs/metrics")
        )
    });
    promtool_accepts(&text);

    assert_eq!(
        must(&text, "iocfs_indicators{bucket=\"live\",type=\"ipv4\"}"),
        4.0
    );
    // Per source: what it lists, its lines, when it last wrote (the manual clock's time).
    assert_eq!(must(&text, "iocfs_source_indicators{source=\"feed\"}"), 2.0);
    assert_eq!(
        must(&text, "iocfs_source_indicators{source=\"local\"}"),
        5.0
    );
    assert_eq!(
        must(
            &text,
            "iocfs_source_lines_total{source=\"feed\",outcome=\"accepted\"}"
        ),
        2.0
    );
    assert_eq!(
        must(
            &text,
            "iocfs_source_lines_total{source=\"feed\",outcome=\"rejected\"}"
        ),
        1.0
    );
    assert_eq!(
        must(
            &text,
            "iocfs_source_last_write_timestamp_seconds{source=\"feed\",kind=\"replace\"}"
        ),
        1_700_000_000.0 + 2.0 * 86_400.0
    );
    assert_eq!(
        sample(
            &text,
            "iocfs_source_last_write_timestamp_seconds{source=\"feed\",kind=\"append\"}"
        ),
        None,
        "never appended"
    );
    // `local` is what writes to live/.
    assert_eq!(
        must(
            &text,
            "iocfs_source_lines_total{source=\"local\",outcome=\"accepted\"}"
        ),
        5.0
    );
    assert_eq!(
        must(
            &text,
            "iocfs_source_lines_total{source=\"local\",outcome=\"rejected\"}"
        ),
        1.0
    );
    assert_eq!(
        must(
            &text,
            "iocfs_source_last_write_timestamp_seconds{source=\"local\",kind=\"append\"}"
        ),
        1_700_000_000.0 + 2.0 * 86_400.0
    );
    assert_eq!(
        must(&text, "iocfs_indicators{bucket=\"chaud\",type=\"domain\"}"),
        2.0
    );
    assert_eq!(
        must(&text, "iocfs_indicators{bucket=\"live\",type=\"domain\"}"),
        0.0
    );
    assert_eq!(
        must(&text, "iocfs_aging_moved_total{from=\"live\",to=\"chaud\"}"),
        2.0
    );
    assert_eq!(
        must(
            &text,
            "iocfs_rejected_lines_total{type=\"ipv4\",reason=\"wrong_type\"}"
        ),
        1.0
    );
    assert_eq!(must(&text, "iocfs_checkpoints_total"), 1.0);
    assert!(must(&text, "iocfs_commits_total") >= 1.0);
    assert!(must(&text, "iocfs_wal_next_sequence") > 1.0);
    assert!(must(&text, "iocfs_wal_bytes") > 0.0);
    // Under passthrough (the default where it works) a tier file is read from a copy
    // inflated whole; otherwise through the block cache.
    if d.log()
        .contains("read-only opens served by FUSE passthrough")
    {
        assert!(
            must(&text, "iocfs_cache_inflated_bytes") > 0.0,
            "reading chaud/domain.txt inflated it for passthrough:\n{text}"
        );
    } else {
        assert!(
            must(&text, "iocfs_cache_hits_total") + must(&text, "iocfs_cache_misses_total") > 0.0,
            "reading chaud/domain.txt went through the block cache:\n{text}"
        );
    }
    assert_eq!(must(&text, "iocfs_start_time_seconds"), 1_700_000_000.0);
    assert_eq!(must(&text, "iocfs_health_problems"), 0.0);

    // The fsync histogram: every acknowledged write waited for one.
    let count = must(&text, "iocfs_wal_fsync_seconds_count");
    assert!(count >= 3.0, "fsyncs: {count}\n{text}");
    assert_eq!(
        must(&text, "iocfs_wal_fsync_seconds_bucket{le=\"+Inf\"}"),
        count
    );
    assert!(must(&text, "iocfs_wal_fsync_seconds_sum") > 0.0);
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("iocfs_wal_fsync_seconds_bucket{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 14, "13 bounds and +Inf:\n{text}");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {buckets:?}"
    );

    // The same figures as stats.json, which carries the new ones too.
    let stats: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
    for (bucket, types) in stats["buckets"].as_object().unwrap() {
        for (ty, v) in types.as_object().unwrap() {
            if ty != "total" {
                let series = format!("iocfs_indicators{{bucket=\"{bucket}\",type=\"{ty}\"}}");
                assert_eq!(Some(must(&text, &series)), v["lines"].as_f64(), "{series}");
            }
        }
    }
    assert_eq!(stats["checkpoint"]["count"], 1, "{stats}");
    assert_eq!(stats["aging"]["moved_total"]["live->chaud"], 2, "{stats}");
    assert_eq!(
        stats["rejected_by_reason"]["ipv4"]["wrong_type"], 1,
        "{stats}"
    );
    assert_eq!(stats["rejected_lines"]["ipv4"], 2, "{stats}");
    assert!(
        stats["wal"]["fsync_seconds"]["count"]
            .as_u64()
            .is_some_and(|n| n >= 3),
        "{stats}"
    );
}

#[test]
fn the_metrics_file_is_a_read_only_snapshot_like_stats_json() {
    // Nothing in the background changes the figures once the view is built (no aging step
    // or checkpoint is due).
    let Some(d) = Daemon::builder()
        .config(
            "[views]\nrefresh = \"0s\"\n[aging]\ninterval = \"1h\"\n\
             [durability]\ncheckpoint_interval = \"1h\"\n",
        )
        .manual_clock(1_700_000_000)
        .start()
    else {
        return;
    };
    d.append_lines("live/ipv4.txt", &["5.1.2.3"]);
    d.ctl("commit").unwrap();
    poll_until(READY_TIMEOUT, || {
        let text = d.read(".iocfs/metrics");
        (sample(&text, "iocfs_view_entries{view=\"all\",type=\"ipv4\"}") == Some(1.0)).then_some(())
    })
    .expect("the view is built");
    let names: Vec<String> = std::fs::read_dir(d.path(".iocfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().any(|n| n == "metrics"), "{names:?}");
    let meta = std::fs::metadata(d.path(".iocfs/metrics")).unwrap();
    let stats = std::fs::metadata(d.path(".iocfs/stats.json")).unwrap();
    // The default file_mode 0644: readable by everyone (a web server's worker), like stats.json.
    assert_eq!(meta.mode() & 0o7777, 0o444);
    assert_eq!(
        (meta.mode(), meta.uid(), meta.gid()),
        (stats.mode(), stats.uid(), stats.gid())
    );
    // Its size is what a read returns; time alone changes stats.json, not the metrics.
    let text = d.read(".iocfs/metrics");
    assert_eq!(meta.len(), text.len() as u64);
    assert!(text.ends_with('\n'));
    let json = d.read(".iocfs/stats.json");
    d.ctl("clock +1h").unwrap();
    assert_ne!(
        d.read(".iocfs/stats.json"),
        json,
        "stats.json shows the time"
    );
    assert_eq!(d.read(".iocfs/metrics"), text);
    for open in [
        std::fs::OpenOptions::new()
            .write(true)
            .open(d.path(".iocfs/metrics")),
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path(".iocfs/metrics")),
    ] {
        assert_eq!(errno_of(open), libc::EACCES);
    }
    // A change shows at once.
    d.append_lines("live/ipv4.txt", &["5.1.2.4"]);
    assert_eq!(
        must(
            &d.read(".iocfs/metrics"),
            "iocfs_indicators{bucket=\"live\",type=\"ipv4\"}"
        ),
        2.0
    );
}

/// node_exporter serving `dir` with only its textfile collector; killed on drop.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(dir: &Path) -> NodeExporter {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(NODE_EXPORTER)
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let n = NodeExporter { child, port };
        poll_until(READY_TIMEOUT, || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("node_exporter listens");
        n
    }

    fn scrape(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        body.to_string()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped service's command, with the mount and the collector directory of this test.
fn shipped_copy_command(mnt: &Path, collector: &Path) -> String {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd/iocfs-metrics.service"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/bin/sh -c '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("ExecStart=/bin/sh -c '…' in iocfs-metrics.service");
    assert!(!exec.contains('%'), "systemd specifiers: {exec}");
    exec.replace("/srv/iocfs", mnt.to_str().unwrap()).replace(
        "/var/lib/prometheus/node-exporter",
        collector.to_str().unwrap(),
    )
}

/// Run `cmd` (sh, in the mount) 60 times while a thread appends to live/domain.txt without
/// pause, so that the figures change between any two looks; every run must exit 0.
fn succeeds_60_times_under_a_writer(d: &Daemon, cmd: &str) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                d.append_lines("live/domain.txt", &[format!("w{i}.evil.example")]);
                i += 1;
            }
        });
        for round in 0..60 {
            let out = d.sh(cmd);
            if !out.status.success() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            assert!(
                out.status.success(),
                "round {round}: {cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// The shipped service's copy works while the figures change under it: each content of
/// `metrics` is its own inode, and `cp` refused a source whose inode changed between its
/// stat and its open (about half of 200 copies under a writer, by hand).
#[test]
fn the_shipped_copy_succeeds_while_the_figures_change() {
    let Some(d) = mount() else { return };
    let collector = d.root().join("textfile");
    std::fs::create_dir(&collector).unwrap();
    let copy = shipped_copy_command(&d.mnt(), &collector);
    succeeds_60_times_under_a_writer(&d, &copy);
    let copied = std::fs::read_to_string(collector.join("iocfs.prom")).unwrap();
    assert!(copied.contains("iocfs_indicators{"), "{copied}");
}

/// `cp` and `tar` of the control files work while the figures change under them: a
/// thread's lookups give the content it looked up last until it opens it (for up to 10 ms),
/// so the stat and the open of one copy agree (before: "replaced while being copied" for
/// about half of the copies of `metrics` under a writer). A thread that reads again, or
/// writes, sees new figures.
#[test]
fn cp_and_tar_of_the_generated_files_succeed_while_the_figures_change() {
    let Some(d) = mount() else { return };
    let out_dir = d.root().join("copies");
    std::fs::create_dir(&out_dir).unwrap();
    let cp = format!(
        "cp .iocfs/metrics .iocfs/stats.json .iocfs/health {0}/ && tar -cf {0}/c.tar .iocfs/metrics .iocfs/stats.json",
        out_dir.display()
    );
    succeeds_60_times_under_a_writer(&d, &cp);
    let copied = std::fs::read_to_string(out_dir.join("stats.json")).unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&copied).is_ok(),
        "{copied}"
    );
    // Reading again (lookup, open) after a write gives the new figures.
    let lines = |d: &Daemon| {
        let stats: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
        stats["buckets"]["live"]["domain"]["lines"]
            .as_u64()
            .unwrap()
    };
    let before = lines(&d);
    d.append_lines("live/domain.txt", &["one.more.example"]);
    assert_eq!(lines(&d), before + 1);
    // So does a read after a stat and a write of the same thread.
    std::fs::metadata(d.path(".iocfs/stats.json")).unwrap();
    d.append_lines("live/domain.txt", &["two.more.example"]);
    assert_eq!(lines(&d), before + 2);
}

#[test]
fn node_exporters_textfile_collector_serves_the_copy_the_shipped_service_makes() {
    if !have(PROMTOOL, "prometheus") || !have(NODE_EXPORTER, "prometheus-node-exporter") {
        return;
    }
    let Some(d) = mount() else { return };
    fill(&d);
    let collector = d.root().join("textfile");
    std::fs::create_dir(&collector).unwrap();
    let copy = shipped_copy_command(&d.mnt(), &collector);
    let ne = NodeExporter::start(&collector);
    for round in 0..2 {
        let out = Command::new("sh").arg("-c").arg(&copy).output().unwrap();
        assert!(
            out.status.success(),
            "{copy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Only the renamed file is left: a collector never reads a half-written one.
        let mut left: Vec<String> = std::fs::read_dir(&collector)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["iocfs.prom"]);
        let scraped = ne.scrape();
        promtool_accepts(&scraped);
        assert_eq!(
            must(&scraped, "node_textfile_scrape_error"),
            0.0,
            "{scraped}"
        );
        assert_eq!(
            must(&scraped, "iocfs_indicators{bucket=\"live\",type=\"ipv4\"}"),
            4.0 + f64::from(round),
            "round {round}:\n{scraped}"
        );
        assert!(must(&scraped, "iocfs_wal_fsync_seconds_count") > 0.0);
        d.append_lines("live/ipv4.txt", &["5.9.9.9"]);
    }
}

#[test]
fn a_descriptors_fstat_size_is_what_it_reads_while_the_figures_change() {
    // A web server opens, fstats for Content-Length, then sends that many bytes: the size
    // must be the one of the snapshot the descriptor reads, however often the figures move.
    let Some(d) = mount() else {
        return;
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Stops the writer however the checks end (a failed assertion included).
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let ip = format!("5.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
                d.append_lines("live/ipv4.txt", &[ip]);
                d.ctl("commit").unwrap();
            }
        });
        let _stop = StopOnDrop(&stop);
        for _ in 0..300 {
            for name in [".iocfs/metrics", ".iocfs/stats.json", ".iocfs/health"] {
                let mut f = std::fs::File::open(d.path(name)).unwrap();
                let size = f.metadata().unwrap().len();
                let mut body = Vec::new();
                f.read_to_end(&mut body).unwrap();
                assert_eq!(size, body.len() as u64, "{name}: fstat vs bytes read");
            }
        }
    });
}
