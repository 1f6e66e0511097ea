//! Mounted tests of allow/ (DESIGN §9, README "Allowlist"): written like live files, durable,
//! never aged; suppressing from every view and never from the buckets; the reserved ranges.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::{errno_of, Daemon};

const FAST: &str = "[views]\nrefresh = \"0s\"\n";

fn start() -> Option<Daemon> {
    Daemon::builder()
        .config(FAST)
        .manual_clock(1_700_000_000)
        .start()
}

#[test]
fn allow_files_are_written_like_live_files_and_validated() {
    let Some(d) = start() else { return };
    assert_eq!(
        common::names_in(&d.path("allow")),
        common::type_files_sorted()
    );
    // Append, normalized like live (host bits zeroed, case folded, comments dropped).
    d.sh_ok("echo 8.8.8.77/24 >> allow/ipv4.txt");
    d.sh_ok("printf 'Good.Example.COM.\\n# a comment\\n' >> allow/domain.txt");
    assert_eq!(d.read("allow/ipv4.txt"), "8.8.8.0/24\n");
    assert_eq!(d.read("allow/domain.txt"), "good.example.com\n");
    // Invalid lines are refused as in live (`on_invalid = "reject"`), the file unchanged.
    let out = d.sh("echo 'not a domain' >> allow/domain.txt");
    assert!(!out.status.success());
    assert_eq!(d.read("allow/domain.txt"), "good.example.com\n");
    // Replace by `>`, `cp`, `sed -i`, and a scratch file renamed onto the name.
    d.sh_ok("printf '1.1.1.1\\n1.0.0.1\\n' > allow/ipv4.txt");
    assert_eq!(d.read("allow/ipv4.txt"), "1.1.1.1\n1.0.0.1\n");
    let src = d.root().join("list.txt");
    std::fs::write(&src, "9.9.9.9\n149.112.112.112\n").unwrap();
    d.sh_ok(&format!("cp {} allow/ipv4.txt", src.display()));
    assert_eq!(d.read("allow/ipv4.txt"), "9.9.9.9\n149.112.112.112\n");
    d.sh_ok("sed -i '/^9\\.9/d' allow/ipv4.txt");
    assert_eq!(d.read("allow/ipv4.txt"), "149.112.112.112\n");
    d.sh_ok("printf 'www.example.org\\n' > allow/new.txt && mv allow/new.txt allow/domain.txt");
    assert_eq!(d.read("allow/domain.txt"), "www.example.org\n");
    assert_eq!(
        errno_of(std::fs::metadata(d.path("allow/new.txt"))),
        libc::ENOENT
    );
    // The nine names always exist.
    assert_eq!(
        errno_of(std::fs::remove_file(d.path("allow/ipv4.txt"))),
        libc::EPERM
    );
    // Apart from live: nothing written to allow/ shows there.
    assert_eq!(d.read("live/ipv4.txt"), "");
    assert_eq!(d.read("live/domain.txt"), "");
}

#[test]
fn allow_lines_survive_sigkill_are_never_aged_and_remove_leaves_them() {
    let Some(mut d) = start() else { return };
    d.append_lines("allow/url.txt", &["http://ok.example/path"]);
    d.append_lines("live/url.txt", &["http://ok.example/path"]);
    d.kill9();
    d.restart();
    assert_eq!(d.read("allow/url.txt"), "http://ok.example/path\n");
    // `remove` is about stored indicators: the allowlist keeps its line.
    d.ctl("remove http://ok.example/path").unwrap();
    assert_eq!(d.read("live/url.txt"), "");
    assert_eq!(d.read("allow/url.txt"), "http://ok.example/path\n");
    // Two years pass: the allowlist is not aged.
    d.ctl("clock +730d").unwrap();
    d.ctl("age").unwrap();
    d.ctl("commit").unwrap();
    assert_eq!(d.read("allow/url.txt"), "http://ok.example/path\n");
    d.kill9();
    d.restart();
    assert_eq!(d.read("allow/url.txt"), "http://ok.example/path\n");
}

#[test]
fn an_allowed_network_inside_a_listed_one_is_served_minus_it() {
    let Some(d) = start() else { return };
    d.sh_ok("printf '8.0.0.0/16\\n9.9.9.9\\n' >> live/ipv4.txt");
    d.eventually("views/all/ipv4.txt", "8.0.0.0/16\n9.9.9.9\n");
    d.sh_ok("echo 8.0.128.0/24 >> allow/ipv4.txt");
    d.eventually(
        "views/all/ipv4.txt",
        "8.0.0.0/17\n8.0.129.0/24\n8.0.130.0/23\n8.0.132.0/22\n8.0.136.0/21\n\
         8.0.144.0/20\n8.0.160.0/19\n8.0.192.0/18\n9.9.9.9\n",
    );
    assert_eq!(d.read("live/ipv4.txt"), "8.0.0.0/16\n9.9.9.9\n");
    let stats: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
    let b = &stats["views"]["all"]["ipv4"]["last_build"];
    assert_eq!(
        (b["trimmed"].as_u64(), b["selected"].as_u64()),
        (Some(1), Some(2)),
        "{b}"
    );
    // Emptying the allowlist brings the whole network back.
    d.sh_ok(": > allow/ipv4.txt");
    d.eventually("views/all/ipv4.txt", "8.0.0.0/16\n9.9.9.9\n");
}

#[test]
fn an_allowed_domain_leaves_every_view_and_stays_in_live() {
    let config =
        format!("{FAST}[views.fw]\ntypes = [\"domain\", \"url\", \"email\"]\nformat = \"panos\"\n");
    let Some(d) = Daemon::builder().config(&config).start() else {
        return;
    };
    d.sh_ok(
        "printf 'good.example.com\\nx.good.example.com\\nbad.example.com\\n' >> live/domain.txt",
    );
    d.sh_ok("printf 'https://x.good.example.com/a\\nhttp://bad.example.com/b\\n' >> live/url.txt");
    d.sh_ok("printf 'a@good.example.com\\nb@bad.example.com\\n' >> live/email.txt");
    d.eventually(
        "views/all/domain.txt",
        "bad.example.com\ngood.example.com\nx.good.example.com\n",
    );
    d.sh_ok("echo good.example.com >> allow/domain.txt");
    d.eventually("views/all/domain.txt", "bad.example.com\n");
    d.eventually("views/all/url.txt", "http://bad.example.com/b\n");
    d.eventually("views/all/email.txt", "b@bad.example.com\n");
    d.eventually("views/fw/domain.txt", "bad.example.com\n");
    d.eventually("views/fw/url.txt", "bad.example.com/b\n");
    d.eventually("views/fw/email.txt", "b@bad.example.com\n");
    // The history keeps them all.
    assert_eq!(
        d.read("live/domain.txt"),
        "good.example.com\nx.good.example.com\nbad.example.com\n"
    );
    let out = d.sh_ok("grep -c good live/url.txt");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
}

#[test]
fn reserved_addresses_appended_to_live_are_in_no_view() {
    let config = format!("{FAST}[views.fw]\ntypes = [\"ipv4\", \"ipv6\"]\naggregate = true\n");
    let Some(d) = Daemon::builder().config(&config).start() else {
        return;
    };
    d.sh_ok("printf '127.0.0.1\\n10.1.2.3\\n192.168.1.0/24\\n8.8.4.4\\n' >> live/ipv4.txt");
    d.sh_ok("printf '::1\\nfe80::1\\n2606:4700:4700::1111\\n' >> live/ipv6.txt");
    for view in ["all", "fw"] {
        d.eventually(&format!("views/{view}/ipv4.txt"), "8.8.4.4\n");
        d.eventually(&format!("views/{view}/ipv6.txt"), "2606:4700:4700::1111\n");
    }
    assert_eq!(d.lines("live/ipv4.txt").len(), 4);
    let stats: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
    assert_eq!(
        stats["views"]["all"]["ipv4"]["last_build"]["suppressed_reserved"],
        3
    );
}

#[test]
fn lookup_finds_covered_values_and_says_what_keeps_them_out_of_views() {
    let Some(d) = start() else { return };
    d.sh_ok("printf '8.8.0.0/16\\n10.0.0.0/8\\n' >> live/ipv4.txt");
    d.sh_ok("echo '*.evil.example' >> live/domain.txt");
    d.sh_ok("echo 8.8.8.0/24 >> allow/ipv4.txt");
    d.eventually("views/all/ipv4.txt", "8.8.0.0/21\n8.8.9.0/24\n8.8.10.0/23\n8.8.12.0/22\n8.8.16.0/20\n8.8.32.0/19\n8.8.64.0/18\n8.8.128.0/17\n");
    let lookup = |v: &str| -> serde_json::Value {
        serde_json::from_str(&d.read(&format!(".iocfs/lookup/{v}"))).unwrap()
    };
    let a = lookup("8.8.4.4");
    assert_eq!(a["bucket"], serde_json::Value::Null, "{a}");
    assert_eq!(a["covered_by"][0]["value"], "8.8.0.0/16");
    assert_eq!(a["covered_by"][0]["bucket"], "live");
    assert_eq!(a["views"], serde_json::json!(["all"]));
    let a = lookup("8.8.8.8");
    assert_eq!(a["allowed_by"]["entry"], "8.8.8.0/24", "{a}");
    assert_eq!(a["views"], serde_json::json!([]));
    let a = lookup("10.1.2.3");
    assert_eq!(a["allowed_by"]["list"], "reserved", "{a}");
    // A URL whose host is an allowed address: the allowed network that covers the host.
    d.sh_ok("echo http://8.8.8.9/x >> live/url.txt");
    let a = lookup("http:%2F%2F8.8.8.9%2Fx");
    assert_eq!(a["allowed_by"]["entry"], "8.8.8.0/24", "{a}");
    assert_eq!(a["allowed_by"]["file"], "allow/ipv4.txt", "{a}");
    let a = lookup("www.evil.example");
    assert_eq!(a["covered_by"][0]["value"], "*.evil.example", "{a}");
    assert_eq!(a["views"], serde_json::json!(["all"]));
    // Neither stored nor covered.
    for absent in ["9.9.9.9", "good.example", "8.8.0.0%2F15"] {
        assert_eq!(
            errno_of(std::fs::metadata(
                d.path(&format!(".iocfs/lookup/{absent}"))
            )),
            libc::ENOENT,
            "{absent}"
        );
    }
    // A listed network, by its `%2F` name: served minus the allowed /24, which it says.
    let a = lookup("8.8.0.0%2F16");
    assert_eq!(a["bucket"], "live");
    assert_eq!(a["allowed_by"], serde_json::Value::Null, "{a}");
    assert_eq!(a["trimmed"], serde_json::json!(["8.8.8.0/24"]), "{a}");
    assert_eq!(a["views"], serde_json::json!([]), "not all of it is served");
    assert_eq!(lookup("8.8.16.0%2F20")["trimmed"], serde_json::json!([]));
    // Many parts: the first 256, and how many more.
    let scattered: String = (0..300)
        .map(|i| format!("8.8.{}.{}\n", 64 + i / 100, i * 2 % 200))
        .collect();
    std::fs::write(d.root().join("scattered.txt"), scattered).unwrap();
    d.sh_ok(&format!(
        "cat {}/scattered.txt >> allow/ipv4.txt",
        d.root().display()
    ));
    let a = lookup("8.8.64.0%2F18");
    assert_eq!(a["trimmed"].as_array().map(Vec::len), Some(256), "{a}");
    assert_eq!(a["trimmed"][0], "8.8.64.0");
    assert_eq!(a["trimmed_more"], 300 - 256, "{a}");
    // And the reserved ranges inside one (10/8 is reserved whole: allowed_by says so).
    d.sh_ok("echo 192.168.0.0/15 >> live/ipv4.txt");
    let a = lookup("192.168.0.0%2F15");
    assert_eq!(a["trimmed"], serde_json::json!(["192.168.0.0/16"]), "{a}");
    assert_eq!(lookup("10.0.0.0%2F8")["trimmed"], serde_json::Value::Null);
    // A name under a wildcard kept out whole for an allowed name under it: the covering
    // entry says why.
    d.sh_ok("echo www.evil.example >> allow/domain.txt");
    d.eventually("views/all/domain.txt", "");
    let a = lookup("mail.evil.example");
    assert_eq!(a["allowed_by"], serde_json::Value::Null, "{a}");
    assert_eq!(a["covered_by"][0]["value"], "*.evil.example", "{a}");
    assert_eq!(a["covered_by"][0]["allowed_by"]["conflict"], true, "{a}");
    assert_eq!(
        a["covered_by"][0]["allowed_by"]["entry"], "www.evil.example",
        "{a}"
    );
    assert_eq!(a["views"], serde_json::json!([]));
}
