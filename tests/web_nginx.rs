//! A real web server in front of the mount, as firewalls use it: Debian's nginx with the
//! shipped site (examples/nginx/iocfs.conf) and its worker as the unprivileged www-data,
//! on the default config. Bodies equal the files, ETags give 304 until the list changes
//! and survive a restart that changed nothing, and under appends, replaces and aging
//! every response is whole lines of one version. `/metrics` serves `.iocfs/metrics` as
//! Prometheus scrapes it.
//!
//! Needs nginx (`.ci/run` installs it); without it the test is skipped, unless
//! `IOCFS_REQUIRE_FUSE=1`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{poll_until, Daemon, READY_TIMEOUT};

const NGINX: &str = "/usr/sbin/nginx";

/// nginx serving `mnt` with the shipped site on `port`; killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(mnt: &Path) -> Option<Nginx> {
        if !Path::new(NGINX).exists() {
            if std::env::var_os("IOCFS_REQUIRE_FUSE").is_some_and(|v| v == "1") {
                panic!("IOCFS_REQUIRE_FUSE=1 but {NGINX} is missing (apt-get install nginx)");
            }
            eprintln!("SKIP: {NGINX} not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let site = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx/iocfs.conf"),
        )
        .unwrap()
        .replace("root /srv/iocfs;", &format!("root {};", mnt.display()))
        .replace("alias /srv/iocfs/", &format!("alias {}/", mnt.display()))
        .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
        .replace("listen [::]:8080;", "")
        .replace(
            "access_log /var/log/nginx/iocfs.access.log;",
            "access_log off;",
        );
        let d = dir.path().display();
        let conf = format!(
            "user www-data;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             {site}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let n = Nginx {
            child,
            port,
            _dir: dir,
        };
        poll_until(READY_TIMEOUT, || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("nginx listens");
        Some(n)
    }

    /// GET `path` with extra headers: (status, headers, body).
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, HashMap<String, String>, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("headers");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let body = raw[split + 4..].to_vec();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        (status, headers, body)
    }

    /// The pids of the worker processes.
    fn workers(&self) -> Vec<u32> {
        let master = self.child.id();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit(')')
                            .next()?
                            .split_whitespace()
                            .nth(1)?
                            .parse()
                            .ok()
                    })
                    == Some(master)
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would orphan them).
        let workers = self.workers();
        let master = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGTERM);
        if common::wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for w in workers {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(w as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Sets the flag when dropped, also when the test panics, so helper threads end.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn uid_of(pid: u32) -> u32 {
    // A process that is gone (a worker replaced meanwhile) counts as privileged: look again.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(0)
}

/// A mount on the default config (plus `extra`), reachable by other users.
fn mount(extra: &str) -> Option<Daemon> {
    let d = Daemon::builder()
        .config(extra)
        .manual_clock(1_700_000_000)
        .start()?;
    // The harness's temp dir is private to root: let www-data reach the mount point.
    std::fs::set_permissions(d.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(d)
}

fn wait_for_body(n: &Nginx, path: &str, want: &[u8]) -> HashMap<String, String> {
    poll_until(READY_TIMEOUT, || {
        let (status, headers, body) = n.get(path, &[]);
        (status == 200 && body == want).then_some(headers)
    })
    .unwrap_or_else(|| panic!("{path} never served {:?}", String::from_utf8_lossy(want)))
}

#[test]
fn nginx_serves_views_with_etags_that_change_exactly_when_the_list_does() {
    let Some(mut d) =
        mount("[views]\nrefresh = \"0s\"\n[views.fw]\ntypes = [\"ipv4\"]\nbuckets = [\"live\"]\n")
    else {
        return;
    };
    let Some(n) = Nginx::start(&d.mnt()) else {
        return;
    };
    // A worker drops to www-data right after it forks.
    let unprivileged = poll_until(READY_TIMEOUT, || {
        let w = n.workers();
        (!w.is_empty() && w.iter().all(|&p| uid_of(p) != 0)).then_some(w)
    });
    assert!(
        unprivileged.is_some(),
        "nginx workers must run as an unprivileged user"
    );
    d.sh_ok("printf '7.0.113.9\\n6.51.100.1\\n' >> live/ipv4.txt");
    let want = b"6.51.100.1\n7.0.113.9\n";
    let headers = wait_for_body(&n, "/views/all/ipv4.txt", want);
    assert_eq!(std::fs::read(d.path("views/all/ipv4.txt")).unwrap(), want);
    let etag = headers["etag"].clone();
    let (status, _, _) = n.get("/views/all/ipv4.txt", &[("If-None-Match", &etag)]);
    assert_eq!(status, 304, "unchanged list: 304");
    let modified = headers["last-modified"].clone();
    let (status, _, _) = n.get("/views/all/ipv4.txt", &[("If-Modified-Since", &modified)]);
    assert_eq!(status, 304);
    // A re-sighting changes nothing a firewall fetches.
    d.sh_ok("echo 7.0.113.9 >> live/ipv4.txt");
    d.ctl("refresh-views").unwrap();
    assert_eq!(
        n.get("/views/all/ipv4.txt", &[("If-None-Match", &etag)]).0,
        304
    );
    // A restart that changed nothing keeps the ETag.
    d.stop();
    d.restart();
    std::fs::set_permissions(d.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (status, after, body) = n.get("/views/all/ipv4.txt", &[]);
    assert_eq!((status, body.as_slice()), (200, &want[..]));
    assert_eq!(after["etag"], etag, "same list, same ETag after a restart");
    // The list changes: 200 with a new ETag.
    d.sh_ok("echo 4.0.2.44 >> live/ipv4.txt");
    let changed = wait_for_body(
        &n,
        "/views/all/ipv4.txt",
        b"4.0.2.44\n6.51.100.1\n7.0.113.9\n",
    );
    assert_ne!(changed["etag"], etag);
    let (status, _, _) = n.get("/views/all/ipv4.txt", &[("If-None-Match", &etag)]);
    assert_eq!(status, 200, "old ETag: the new list");
    // The configured view, and the buckets read-only; nothing else.
    wait_for_body(
        &n,
        "/views/fw/ipv4.txt",
        b"4.0.2.44\n6.51.100.1\n7.0.113.9\n",
    );
    let (status, live, _) = n.get("/live/ipv4.txt", &[]);
    assert_eq!(status, 200);
    // Buckets give no 304: two same-size versions can share a second.
    assert!(!live.contains_key("etag"), "{live:?}");
    let since = live.get("last-modified").cloned().unwrap_or_default();
    assert_eq!(
        n.get("/live/ipv4.txt", &[("If-Modified-Since", &since)]).0,
        200
    );
    assert_eq!(n.get("/.iocfs/stats.json", &[]).0, 404);
    assert_eq!(n.get("/views/", &[]).0, 404);
}

#[test]
fn under_appends_replaces_and_aging_every_response_is_one_whole_version() {
    let Some(d) =
        mount("[views]\nrefresh = \"0s\"\n[views.fw]\ntypes = [\"ipv4\"]\nbuckets = [\"live\"]\n")
    else {
        return;
    };
    let Some(n) = Nginx::start(&d.mnt()) else {
        return;
    };
    // The views' first builds run in the background right after the mount.
    for path in ["/views/fw/ipv4.txt", "/views/all/ipv4.txt"] {
        poll_until(READY_TIMEOUT, || (n.get(path, &[]).0 == 200).then_some(()))
            .unwrap_or_else(|| panic!("{path} never served"));
    }
    let stop = AtomicBool::new(false);
    let (mut fetched, mut versions) = (0, 0);
    std::thread::scope(|scope| {
        // Joined before the mount goes away, even if an assertion below fails.
        let _stop = StopOnDrop(&stop);
        scope.spawn(|| {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let ip = format!("11.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
                d.sh_ok(&format!("echo {ip} >> live/ipv4.txt"));
            }
        });
        scope.spawn(|| {
            let mut round = 0u32;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let lines: String = (0..50)
                    .map(|k| format!("172.16.{}.{k}\n", round % 250))
                    .collect();
                std::fs::write(d.path("live/ipv4.txt"), lines).unwrap();
                if round % 5 == 0 {
                    d.ctl("clock +25h").unwrap();
                    d.ctl("age").unwrap();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut by_etag: HashMap<String, Vec<u8>> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            for path in [
                "/views/fw/ipv4.txt",
                "/views/all/ipv4.txt",
                "/live/ipv4.txt",
            ] {
                let (status, headers, body) = n.get(path, &[]);
                assert_eq!(status, 200, "{path}");
                fetched += 1;
                if let Some(len) = headers.get("content-length") {
                    assert_eq!(
                        len.parse::<usize>().unwrap(),
                        body.len(),
                        "{path}: {headers:?}"
                    );
                }
                assert!(
                    body.is_empty() || body.ends_with(b"\n"),
                    "{path}: a partial line"
                );
                let text = String::from_utf8(body.clone()).unwrap();
                for line in text.lines() {
                    assert!(
                        line.parse::<std::net::Ipv4Addr>().is_ok(),
                        "{path}: {line:?}"
                    );
                }
                if path.starts_with("/views/") {
                    // Canonical order, and one body per version: never a mix of two.
                    let ips: Vec<std::net::Ipv4Addr> =
                        text.lines().map(|l| l.parse().unwrap()).collect();
                    assert!(ips.windows(2).all(|w| w[0] < w[1]), "{path}: not sorted");
                    let key = format!("{path} {}", headers["etag"]);
                    if let Some(seen) = by_etag.insert(key.clone(), body.clone()) {
                        assert_eq!(seen, body, "{key}: two bodies under one ETag");
                    }
                }
            }
        }
        versions = by_etag.len();
    });
    assert!(fetched > 30, "only {fetched} fetches");
    assert!(
        versions > 3,
        "the lists changed while fetched ({versions} versions)"
    );
}

#[test]
fn nginx_serves_the_metrics_to_prometheus() {
    // Nothing in the background changes the figures while they are compared (no aging step
    // or checkpoint is due; the view is rebuilt at once).
    let Some(d) = mount(
        "[views]\nrefresh = \"0s\"\n[aging]\ninterval = \"1h\"\n\
         [durability]\ncheckpoint_interval = \"1h\"\n",
    ) else {
        return;
    };
    let Some(n) = Nginx::start(&d.mnt()) else {
        return;
    };
    d.sh_ok("printf '5.1.2.3\\n45.67.89.10\\n' >> live/ipv4.txt");
    d.ctl("commit").unwrap();
    let view_built = "iocfs_view_entries{view=\"all\",type=\"ipv4\"} 2";
    poll_until(READY_TIMEOUT, || {
        d.read(".iocfs/metrics")
            .lines()
            .any(|l| l == view_built)
            .then_some(())
    })
    .expect("the view is built");
    let on_mount = d.read(".iocfs/metrics");
    let (status, headers, body) = n.get("/metrics", &[]);
    assert_eq!(
        status,
        200,
        "{headers:?} {}",
        String::from_utf8_lossy(&body)
    );
    // The exposition format's content type, as Prometheus expects it.
    assert_eq!(headers["content-type"], "text/plain; version=0.0.4");
    assert_eq!(
        headers["content-length"].parse::<usize>().unwrap(),
        body.len()
    );
    let text = String::from_utf8(body).unwrap();
    assert_eq!(
        text, on_mount,
        "nginx serves the file as the mount reads it"
    );
    assert!(
        text.lines()
            .any(|l| l == "iocfs_indicators{bucket=\"live\",type=\"ipv4\"} 2"),
        "{text}"
    );
    // Never a 304: the figures change often at the same size within a second.
    assert!(!headers.contains_key("etag"), "{headers:?}");
    let since = headers["last-modified"].clone();
    assert_eq!(n.get("/metrics", &[("If-Modified-Since", &since)]).0, 200);
    // Only that file: the other control files stay unreachable.
    assert_eq!(n.get("/.iocfs/metrics", &[]).0, 404);
    assert_eq!(n.get("/metrics/", &[]).0, 404);
}
