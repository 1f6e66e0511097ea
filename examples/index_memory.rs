//! Measures the engine's resident memory per indicator (DESIGN §5 target: ≤ 64 bytes per
//! indicator amortized). Loads N distinct indicators through the engine (no mount), ages
//! them into the tiers, commits, and reports the growth of VmRSS with a 1 MiB block cache.
//! Run by `scripts/index-memory`; prints one line per phase. With `sources`, every
//! indicator is written by a feed (`sources/feed_a`) and a third also by a second one, so
//! each slot holds a source set other than `{local}`.
//!
//!   cargo run --release --features testing --example index_memory -- 10000000 [sources]

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::sync::Arc;

use iocfs::clock::{Clock, ManualClock};
use iocfs::config::Config;
use iocfs::ioc::IocType;
use iocfs::store::Store;

/// Resident memory after handing freed heap pages back to the OS (glibc keeps them
/// otherwise, and RSS would count memory the engine no longer holds).
fn rss_bytes() -> u64 {
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free lists.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.cache.size = 1 << 20;
    config.durability.mode = iocfs::config::DurabilityMode::Periodic;
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let store = Store::open(Arc::new(config), clock.clone() as Arc<dyn Clock>)?;
    let by_sources = std::env::args().nth(2).as_deref() == Some("sources");
    let feeds = if by_sources {
        Some((
            store.declare_source("feed_a")?,
            store.declare_source("feed_b")?,
        ))
    } else {
        None
    };
    let base = rss_bytes();
    // Realistic mix by count: a third each of IPv4 addresses, domains and SHA-256 hashes.
    let chunk = 200_000u64;
    let mut i = 0u64;
    while i < n {
        let end = (i + chunk).min(n);
        let mut ips = Vec::new();
        let mut domains = Vec::new();
        let mut hashes = Vec::new();
        for k in i..end {
            match k % 3 {
                0 => ips.extend_from_slice(
                    format!(
                        "{}.{}.{}.{}\n",
                        1 + (k >> 24) % 223,
                        (k >> 16) & 255,
                        (k >> 8) & 255,
                        k & 255
                    )
                    .as_bytes(),
                ),
                1 => domains
                    .extend_from_slice(format!("host{k}.example{}.com\n", k % 977).as_bytes()),
                _ => hashes.extend_from_slice(
                    format!(
                        "{:064x}\n",
                        u128::from(k).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
                    )
                    .as_bytes(),
                ),
            }
        }
        match feeds {
            None => {
                store.append(IocType::Ipv4, ips)?;
                store.append(IocType::Domain, domains)?;
                store.append(IocType::Sha256, hashes)?;
            }
            Some((a, b)) => {
                use iocfs::store::model::Target;
                store.append_to(Target::Source(a), IocType::Ipv4, ips.clone())?;
                store.append_to(Target::Source(a), IocType::Domain, domains)?;
                store.append_to(Target::Source(a), IocType::Sha256, hashes)?;
                store.append_to(Target::Source(b), IocType::Ipv4, ips)?;
            }
        }
        i = end;
    }
    store.commit()?;
    let live = rss_bytes();
    println!(
        "indicators={n} phase=live{} rss_growth={} bytes_per_indicator={:.1}",
        if by_sources { " sources" } else { "" },
        live.saturating_sub(base),
        live.saturating_sub(base) as f64 / n as f64
    );
    clock.advance(2 * 86_400);
    store.age()?;
    store.commit()?;
    let tiers = rss_bytes();
    println!(
        "indicators={n} phase=tiers{} rss_growth={} bytes_per_indicator={:.1}",
        if by_sources { " sources" } else { "" },
        tiers.saturating_sub(base),
        tiers.saturating_sub(base) as f64 / n as f64
    );
    Ok(())
}
