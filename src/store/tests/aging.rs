//! The aging loop journals a step only when one would move something.

use super::*;
use crate::splitmix::Rng;
use crate::store::mutation::Op;

/// 300 indicators of `ty` in `bucket`, last seen at ages spread over the bucket's own span
/// (`from..to` seconds before T0), so that until they leave it nothing else is due.
fn seeded(bucket: Bucket, ty: IocType, from: u64, to: u64, rng: &mut Rng) -> (Fixture, Arc<Store>) {
    let fx = Fixture::new();
    let store = fx.open();
    let n = 300;
    let values: Vec<u8> = (0..n)
        .map(|i| match ty {
            IocType::Ipv4 => format!("11.0.{}.{}\n", i / 256, i % 256),
            _ => format!("d{i}.example\n"),
        })
        .flat_map(String::into_bytes)
        .collect();
    let times = (0..n)
        .map(|_| {
            let t = (T0 - from - rng.below(to - from)) as u32;
            (t, t)
        })
        .collect();
    store
        .submit(Op::Import {
            bucket,
            ty,
            values,
            times,
            source: crate::store::model::LOCAL,
        })
        .unwrap();
    (fx, store)
}

/// For each bucket in turn, step the clock through its span in uneven steps and compare
/// `aging_due` with what an aging step then moved: equal at every step.
#[test]
fn aging_is_due_exactly_when_a_step_moves_something() {
    let mut rng = Rng(7);
    for (bucket, ty, from, to) in [
        (Bucket::Live, IocType::Ipv4, 0, DAY),
        (Bucket::Chaud, IocType::Ipv4, DAY, 7 * DAY),
        (Bucket::Tiede, IocType::Domain, 7 * DAY, 30 * DAY),
        (Bucket::Froid, IocType::Domain, 30 * DAY, 365 * DAY),
    ] {
        let (fx, store) = seeded(bucket, ty, from, to, &mut rng);
        let (mut due_steps, mut idle_steps) = (0, 0);
        // ~300 crossings over the span: steps of up to two gaps between them.
        let span = to - from;
        while fx.clock.now() < T0 + span {
            fx.clock.advance(1 + rng.below(span / 150));
            let now = fx.clock.now();
            let due = crate::store::apply::aging_due(&store.state(), now, &store.policy());
            store.age().unwrap();
            let state = store.state();
            let report = &state.last_aging().expect("a step ran").1;
            let moved = report.total();
            assert_eq!(due, moved > 0, "{bucket} at T0+{}: {report:?}", now - T0);
            let from_here = format!("{}->", bucket.name());
            assert!(
                report.moved.keys().all(|k| k.starts_with(&from_here)),
                "{report:?}"
            );
            match due {
                true => due_steps += 1,
                false => idle_steps += 1,
            }
        }
        assert!(
            due_steps > 30 && idle_steps > 30,
            "{bucket}: {due_steps} due, {idle_steps} idle"
        );
    }
}

#[test]
fn the_aging_loop_journals_nothing_when_nothing_is_due() {
    let fx = Fixture::new();
    let store = fx.open();
    store.append(IocType::Ipv4, ipv4(&["1.2.3.4"])).unwrap();
    fx.clock.advance(HOUR);
    let before = store.next_seq();
    assert!(!store.age_if_due().unwrap());
    assert_eq!(store.next_seq(), before, "no record");
    assert_eq!(
        store.state().last_aging().map(|(at, _)| *at),
        Some(T0 + HOUR)
    );
    fx.clock.advance(DAY);
    assert!(store.age_if_due().unwrap());
    assert_eq!(served(&store, Bucket::Chaud, IocType::Ipv4), "1.2.3.4\n");
    // A check in the same second leaves that step's report as the last aging.
    assert!(!store.age_if_due().unwrap());
    assert_eq!(store.state().last_aging().map(|(_, r)| r.total()), Some(1));
    // A restart replays nothing: the committed step covers the log.
    store.commit().unwrap();
    fx.clock.advance(HOUR);
    assert!(!store.age_if_due().unwrap());
    drop(store);
    assert_eq!(fx.open().recovery.replayed, 0);
}
