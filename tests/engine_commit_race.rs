//! Engine-level race between the group commit and mutations of tier partitions (found by
//! `scripts/torture`): while one thread commits over and over, another removes tier
//! indicators one at a time. Every remove must succeed and the served tier must always be
//! exactly the indicators not removed yet.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iocfs::clock::{Clock, ManualClock};
use iocfs::config::Config;
use iocfs::ioc::IocType;
use iocfs::store::model::Tier;
use iocfs::store::Store;

const T0: u64 = 1_700_000_000;

fn served_tier(store: &Store, tier: Tier, ty: IocType) -> Result<String, String> {
    let v = store.tier(tier, ty);
    let bytes = v
        .read(0, v.size() as usize, &store.cache)
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

#[test]
fn commits_racing_tier_removals_never_serve_or_apply_a_wrong_block() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.tiers.block_size = 4096;
    let store = Store::open(Arc::new(config), clock.clone() as Arc<dyn Clock>).unwrap();
    let values: Vec<String> = (0..20_000)
        .map(|i| format!("r{i:05}.race.example"))
        .collect();
    for chunk in values.chunks(2000) {
        let text: String = chunk.iter().map(|v| format!("{v}\n")).collect();
        store.append(IocType::Domain, text.into_bytes()).unwrap();
    }
    clock.advance(25 * 3600);
    store.age().unwrap();
    store.commit().unwrap();
    let mut left: BTreeSet<String> = values.iter().cloned().collect();
    assert_eq!(
        served_tier(&store, Tier::Chaud, IocType::Domain).unwrap(),
        left.iter().map(|v| format!("{v}\n")).collect::<String>()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let committer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = store.commit() {
                    return Err(format!("commit {n}: {e}"));
                }
                n += 1;
            }
            Ok(n)
        })
    };
    // Remove indicators spread over the blocks (each remove rewrites one block in memory).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failure = None;
    for (i, v) in values.iter().enumerate().step_by(7) {
        if Instant::now() > deadline {
            break;
        }
        if let Err(e) = store.remove(vec![(IocType::Domain, v.clone().into_bytes())]) {
            failure = Some(format!("remove #{i} ({v}): {e}"));
            break;
        }
        left.remove(v);
        if i % 70 == 0 {
            let want: String = left.iter().map(|v| format!("{v}\n")).collect();
            match served_tier(&store, Tier::Chaud, IocType::Domain) {
                Ok(got) if got == want => {}
                Ok(got) => {
                    failure = Some(format!(
                        "after remove #{i}: chaud/domain.txt serves {} bytes, {} expected",
                        got.len(),
                        want.len()
                    ));
                    break;
                }
                Err(e) => {
                    failure = Some(format!("after remove #{i}: read chaud/domain.txt: {e}"));
                    break;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let commits = committer.join().unwrap();
    assert!(failure.is_none(), "{}", failure.unwrap());
    let commits = commits.unwrap();
    eprintln!(
        "{commits} commits raced {} removals",
        values.len() - left.len()
    );
}
