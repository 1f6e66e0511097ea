//! The allowlist in the engine: written like live, durable like every mutation, apart from
//! the buckets (never aged, never removed by `remove`, never deduplicated against them).

use super::*;
use crate::store::model::PartId;
use crate::store::staged::StagedReplace;

fn allowed(store: &Store, ty: IocType) -> String {
    String::from_utf8(store.allow_version(ty).read_all().unwrap()).unwrap()
}

#[test]
fn allow_lines_dedup_stay_apart_from_live_and_survive_a_restart_with_or_without_commit() {
    let fx = Fixture::new();
    let store = fx.open();
    store
        .append(IocType::Domain, b"good.example\nbad.example\n".to_vec())
        .unwrap();
    store
        .append_to(Target::Allow, IocType::Domain, b"good.example\n".to_vec())
        .unwrap();
    store
        .append_to(
            Target::Allow,
            IocType::Domain,
            b"good.example\nfine.example\n".to_vec(),
        )
        .unwrap();
    assert_eq!(
        allowed(&store, IocType::Domain),
        "good.example\nfine.example\n"
    );
    // Allowing does not touch the history.
    assert_eq!(
        served(&store, Bucket::Live, IocType::Domain),
        "good.example\nbad.example\n"
    );
    assert!(store.allowed(IocType::Domain, b"fine.example").is_some());
    assert!(store.allowed(IocType::Domain, b"bad.example").is_none());
    drop(store);

    let store = fx.open();
    assert_eq!(
        allowed(&store, IocType::Domain),
        "good.example\nfine.example\n",
        "replayed from the log"
    );
    let info = store.commit().unwrap().expect("the allowlist lagged");
    assert!(info.files >= 2, "{info:?}");
    let on_disk = std::fs::read_to_string(fx.dir.path().join("allow/domain.txt")).unwrap();
    assert_eq!(on_disk, "good.example\nfine.example\n");
    assert!(fx.dir.path().join("allow/.domain.txt.meta").exists());
    store
        .append_to(Target::Allow, IocType::Ipv4, b"10.0.0.0/8\n".to_vec())
        .unwrap();
    drop(store);

    let store = fx.open();
    assert_eq!(store.recovery.replayed, 1, "the committed file was loaded");
    assert_eq!(
        allowed(&store, IocType::Domain),
        "good.example\nfine.example\n"
    );
    assert_eq!(allowed(&store, IocType::Ipv4), "10.0.0.0/8\n");
    let (first, last) = store.allowed(IocType::Ipv4, b"10.0.0.0/8").unwrap();
    assert_eq!((u64::from(first), u64::from(last)), (T0, T0));
}

#[test]
fn a_replace_of_the_allowlist_small_or_staged_is_the_whole_list_and_survives_a_restart() {
    let fx = Fixture::new();
    let store = fx.open();
    store.set_record_limit(64 << 10);
    store
        .append_to(Target::Allow, IocType::Url, b"http://a.example/\n".to_vec())
        .unwrap();
    store
        .replace_to(
            Target::Allow,
            IocType::Url,
            b"http://b.example/\nhttp://b.example/\n".to_vec(),
        )
        .unwrap();
    assert_eq!(allowed(&store, IocType::Url), "http://b.example/\n");

    let lines: Vec<u8> = (0..8000)
        .flat_map(|i| format!("h{i}.example\n").into_bytes())
        .collect();
    let mut staged = StagedReplace::new(Target::Allow, IocType::Domain);
    staged.push(&store, &lines).unwrap();
    assert!(
        staged.pending_len() < 64 << 10,
        "full pieces were journaled"
    );
    assert_eq!(
        allowed(&store, IocType::Domain),
        "",
        "nothing before the end"
    );
    staged.finish(&store).unwrap();
    assert_eq!(allowed(&store, IocType::Domain).as_bytes(), lines);
    assert_eq!(served(&store, Bucket::Live, IocType::Domain), "");
    // An unfinished one is dropped by the next open.
    let mut unfinished = StagedReplace::new(Target::Allow, IocType::Domain);
    unfinished.push(&store, &lines[..lines.len() / 2]).unwrap();
    unfinished.push(&store, &lines[..lines.len() / 2]).unwrap();
    drop(store);

    let store = fx.open();
    assert_eq!(store.recovery.abandoned_replaces, 1);
    assert_eq!(allowed(&store, IocType::Domain).as_bytes(), lines);
    assert_eq!(allowed(&store, IocType::Url), "http://b.example/\n");
}

#[test]
fn a_replace_of_the_allowlist_by_the_list_as_it_stands_changes_nothing() {
    let fx = Fixture::new();
    let store = fx.open();
    let of = (Target::Allow, IocType::Domain);
    let part = PartId::Allow(IocType::Domain);
    let list = b"good.example\nfine.example\n";
    store
        .replace_to(Target::Allow, IocType::Domain, list.to_vec())
        .unwrap();
    let (before, changes) = (store.current(of), store.change_count_of(part));
    fx.clock.advance(HOUR);
    store
        .replace_to(Target::Allow, IocType::Domain, list.to_vec())
        .unwrap();
    let after = store.current(of);
    assert_eq!((after.id, after.mtime()), (before.id, before.mtime()));
    assert_eq!(store.change_count_of(part), changes, "views would rebuild");
    // Another order is another file.
    store
        .replace_to(
            Target::Allow,
            IocType::Domain,
            b"fine.example\ngood.example\n".to_vec(),
        )
        .unwrap();
    assert_ne!(store.current(of).id, before.id);
    assert_ne!(store.change_count_of(part), changes);
    assert_eq!(
        allowed(&store, IocType::Domain),
        "fine.example\ngood.example\n"
    );
}

#[test]
fn aging_and_remove_leave_the_allowlist_alone() {
    let fx = Fixture::new();
    let store = fx.open();
    store.append(IocType::Ipv4, b"1.2.3.4\n".to_vec()).unwrap();
    store
        .append_to(Target::Allow, IocType::Ipv4, b"1.2.3.4\n".to_vec())
        .unwrap();
    assert_eq!(
        store
            .remove(vec![(IocType::Ipv4, b"1.2.3.4".to_vec())])
            .unwrap(),
        1
    );
    assert_eq!(served(&store, Bucket::Live, IocType::Ipv4), "");
    assert_eq!(allowed(&store, IocType::Ipv4), "1.2.3.4\n");
    fx.clock.advance(400 * DAY);
    store.age().unwrap();
    store.commit().unwrap();
    assert_eq!(allowed(&store, IocType::Ipv4), "1.2.3.4\n");
    drop(store);
    let store = fx.open();
    assert_eq!(allowed(&store, IocType::Ipv4), "1.2.3.4\n");
}

#[test]
fn a_backup_holds_the_allowlist() {
    let fx = Fixture::new();
    let store = fx.open();
    store
        .append_to(Target::Allow, IocType::Sha256, vec![b'a'; 64])
        .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let dest = dest.path().join("copy");
    store.backup(&dest).unwrap();
    let mut config = (*fx.config()).clone();
    config.data_dir = dest;
    let copy = Store::open(Arc::new(config), fx.clock.clone() as Arc<dyn Clock>).unwrap();
    assert_eq!(
        allowed(&copy, IocType::Sha256),
        format!("{}\n", "a".repeat(64))
    );
}

#[test]
fn a_text_file_left_in_allow_before_the_first_mount_is_adopted() {
    let fx = Fixture::new();
    let allow = fx.dir.path().join("allow");
    std::fs::create_dir_all(&allow).unwrap();
    std::fs::write(
        allow.join("ipv4.txt"),
        "192.0.2.0/24\nnot an address\n10.1.2.3\n",
    )
    .unwrap();
    let store = fx.open();
    assert_eq!(allowed(&store, IocType::Ipv4), "192.0.2.0/24\n10.1.2.3\n");
    store.commit().unwrap();
    drop(store);
    let store = fx.open();
    assert_eq!(allowed(&store, IocType::Ipv4), "192.0.2.0/24\n10.1.2.3\n");
}
