//! Large inputs against ipnet, and timing.

use super::props::assert_minimal;
use super::*;
use crate::splitmix::Rng;

// ---- Timing (release): cargo test --release --lib cidr::tests::perf -- --ignored --nocapture

/// 80% single addresses, 20% networks /16 to /31.
fn v4_net(rng: &mut Rng) -> Net {
    let r = rng.next_u64();
    let len = if r % 5 == 0 { 16 + (r >> 8) % 16 } else { 32 };
    Net::new(false, u128::from(r >> 32), len as u8).unwrap_or_else(|| panic!("{r}"))
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (std::time::Duration, T) {
    let mut best = None;
    let mut out = None;
    for _ in 0..runs {
        let t = std::time::Instant::now();
        let r = f();
        let d = t.elapsed();
        best = Some(best.map_or(d, |b: std::time::Duration| b.min(d)));
        out = Some(r);
    }
    (
        best.unwrap_or_default(),
        out.unwrap_or_else(|| panic!("no run")),
    )
}

fn to_ipnet(x: &Net) -> ipnet::IpNet {
    let addr = if x.v6 {
        IpAddr::V6(Ipv6Addr::from(x.addr))
    } else {
        IpAddr::V4(Ipv4Addr::from(x.addr as u32))
    };
    ipnet::IpNet::new(addr, x.len).unwrap_or_else(|e| panic!("{x}: {e}"))
}

fn from_ipnet(x: &ipnet::IpNet) -> Net {
    Net::from(x.network()).with_len(x.prefix_len())
}

impl Net {
    fn with_len(self, len: u8) -> Net {
        Net::new(self.v6, self.addr, len).unwrap_or_else(|| panic!("{self}/{len}"))
    }
}

#[test]
fn radix_sort_orders_by_start() {
    let mut rng = Rng(3);
    for n in [0usize, 1, 4095, 4096, 50_000] {
        // Few distinct starts, so equal starts with different ends are common.
        let mut v: Vec<u64> = (0..n)
            .map(|_| rng.next_u64() & 0xf00f_0f0f_ffff_ffff)
            .collect();
        let mut want = v.clone();
        super::super::sort::radix_sort_from(&mut v, 32);
        assert!(v.windows(2).all(|w| w[0] >> 32 <= w[1] >> 32), "n = {n}");
        v.sort_unstable();
        want.sort_unstable();
        assert_eq!(v, want);
    }
}

/// Networks with duplicates, shared addresses of different lengths and both families.
fn mixed_nets(rng: &mut Rng, count: usize) -> Vec<Net> {
    let mut v: Vec<Net> = (0..count)
        .map(|_| {
            let r = rng.next_u64();
            let len = (r % 33) as u8;
            match r >> 60 {
                0 => Net::new(true, u128::from(rng.next_u64()) << 64, (r % 129) as u8),
                1 => Net::new(false, 0xFFFF_FFFF, len),
                2 => Net::new(false, u128::from(rng.next_u64() as u32 & 0xFF00_0000), len),
                _ => Net::new(false, u128::from(rng.next_u64() as u32), len),
            }
            .unwrap_or_else(|| panic!("{r}"))
        })
        .collect();
    let copies: Vec<Net> = v.iter().step_by(7).copied().collect();
    v.extend(copies);
    v
}

#[test]
fn sort_dedup_v4_gives_the_canonical_order_without_duplicates() {
    let mut rng = Rng(5);
    for count in [0, 1, 100, 5_000, 50_000] {
        let nets = mixed_nets(&mut rng, count);
        let mut want: Vec<Net> = nets.iter().filter(|n| !n.is_v6()).copied().collect();
        want.sort_unstable();
        want.dedup();
        let mut keys: Vec<u64> = nets.iter().filter_map(Net::v4_key).collect();
        sort_dedup_v4(&mut keys);
        let got: Vec<Net> = keys.into_iter().map(Net::from_v4_key).collect();
        assert_eq!(got, want, "{count} networks");
    }
}

/// Inputs large enough for the radix path, checked against `ipnet::IpNet::aggregate`.
#[test]
fn large_inputs_agree_with_ipnet() {
    let mut rng = Rng(11);
    let mut nets = Vec::new();
    for _ in 0..30_000 {
        let r = rng.next_u64();
        let len = (r % 13) as u8;
        // Dense: inside 10.0.0.0/12 and 2001:db8::/108, so most of them merge.
        nets.push(Net::new(false, 0x0a00_0000 | u128::from(r >> 44), 20 + len));
        nets.push(Net::new(
            true,
            (0x2001_0db8 << 96) | u128::from(r >> 44),
            116 + len,
        ));
    }
    for _ in 0..5_000 {
        let (a, b) = (rng.next_u64(), rng.next_u64());
        nets.push(Net::new(false, u128::from(a >> 32), 8 + (b % 25) as u8));
        nets.push(Net::new(
            true,
            u128::from(a) << 64 | u128::from(b),
            16 + (b % 113) as u8,
        ));
    }
    let nets: Vec<Net> = nets.into_iter().flatten().collect();
    let ours = aggregate(nets.iter().copied());
    assert_minimal(&ours);
    let ipnets: Vec<ipnet::IpNet> = nets.iter().map(to_ipnet).collect();
    let mut theirs: Vec<Net> = ipnet::IpNet::aggregate(&ipnets)
        .iter()
        .map(from_ipnet)
        .collect();
    theirs.sort();
    assert_eq!(ours, theirs);
    let set = IntervalSet::build(nets.iter().copied());
    assert!(nets.iter().all(|x| set.contains_net(x)));
}

#[test]
#[ignore = "timing; run with --release"]
fn perf() {
    use ipnet::IpNet;
    let mut rng = Rng(42);
    let nets: Vec<Net> = (0..1_000_000).map(|_| v4_net(&mut rng)).collect();

    let (ours_t, ours) = best_of(5, || aggregate(nets.iter().copied()));
    let ipnets: Vec<IpNet> = nets.iter().map(to_ipnet).collect();
    let (theirs_t, theirs) = best_of(5, || IpNet::aggregate(&ipnets));
    let mut theirs: Vec<Net> = theirs.iter().map(from_ipnet).collect();
    theirs.sort();
    assert_eq!(ours, theirs, "ipnet disagrees");
    println!(
        "aggregate 1M mixed IPv4 -> {} nets: ours {ours_t:?}, ipnet {theirs_t:?} ({:.1}x)",
        ours.len(),
        theirs_t.as_secs_f64() / ours_t.as_secs_f64()
    );

    let singles: Vec<Net> = (0..1_000_000)
        .map(|_| Net::new(false, u128::from(rng.next_u64() >> 32), 32).unwrap_or_else(|| panic!()))
        .collect();
    let (t, out) = best_of(5, || aggregate(singles.iter().copied()));
    println!(
        "aggregate 1M random IPv4 addresses -> {} nets: {t:?}",
        out.len()
    );

    let (copy_t, _) = best_of(5, || nets.clone());
    let (radix_t, radix) = best_of(5, || {
        let mut keys: Vec<u64> = nets.iter().filter_map(Net::v4_key).collect();
        sort_dedup_v4(&mut keys);
        keys
    });
    let (cmp_t, compared) = best_of(5, || {
        let mut v = nets.clone();
        v.sort_unstable();
        v.dedup();
        v
    });
    let radix: Vec<Net> = radix.into_iter().map(Net::from_v4_key).collect();
    assert_eq!(radix, compared);
    println!("sort_dedup_v4 of 1M IPv4 networks (packing them included): {radix_t:?}; sort_unstable + dedup of the Nets {cmp_t:?}, including a copy of them, {copy_t:?}");

    let lines: Vec<String> = nets.iter().map(Net::to_string).collect();
    let (t, text) = best_of(3, || {
        let parsed = lines.iter().filter_map(|l| l.parse::<Net>().ok());
        let mut text = String::new();
        for x in aggregate(parsed) {
            use std::fmt::Write as _;
            let _ = writeln!(text, "{x}");
        }
        text
    });
    println!(
        "parse 1M lines + aggregate + render {} bytes: {t:?}",
        text.len()
    );

    let allowed: Vec<Net> = (0..100_000).map(|_| v4_net(&mut rng)).collect();
    let (t, set) = best_of(5, || IntervalSet::build(allowed.iter().copied()));
    println!(
        "build IntervalSet of 100k nets -> {} intervals: {t:?}",
        set.interval_count()
    );
    let queries: Vec<Net> = (0..1_000_000).map(|_| v4_net(&mut rng)).collect();
    let (t, hits) = best_of(5, || queries.iter().filter(|q| set.contains_net(q)).count());
    println!("1M contains_net queries: {hits} hits, {t:?}");
    let (t, hits) = best_of(5, || queries.iter().filter(|q| set.intersects(q)).count());
    println!("1M intersects queries: {hits} hits, {t:?}");
    let (t, out) = best_of(3, || difference(nets.iter().copied(), &set));
    println!(
        "difference(1M listed, 100k allowed) -> {} nets: {t:?}",
        out.len()
    );
}
