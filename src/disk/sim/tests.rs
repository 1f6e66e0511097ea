use super::*;
use crate::disk::Disk;

fn disk() -> (SimDisk, Disk) {
    let sim = SimDisk::new();
    let disk = sim.disk();
    disk.create_dir(Path::new("/d"), 0o750).unwrap();
    disk.sync_dir(Path::new("/")).unwrap();
    (sim, disk)
}

/// Every image a crash could leave now: the two extremes and a few seeded ones.
fn images(sim: &SimDisk) -> Vec<SimDisk> {
    let mut out = vec![
        sim.crash_image(Choices::Nothing),
        sim.crash_image(Choices::Everything),
    ];
    out.extend((0..64).map(|s| sim.crash_image(Choices::Random(s))));
    out
}

fn read(sim: &SimDisk, path: &str) -> Option<Vec<u8>> {
    sim.read(Path::new(path)).ok()
}

#[test]
fn a_synced_file_in_a_synced_directory_survives_every_crash() {
    let (sim, disk) = disk();
    let f = disk.create_new(Path::new("/d/f"), 0o644).unwrap();
    f.write_all_at(&[7u8; 10_000], 0).unwrap();
    f.sync_all().unwrap();
    disk.sync_dir(Path::new("/d")).unwrap();
    for image in images(&sim) {
        assert_eq!(read(&image, "/d/f"), Some(vec![7u8; 10_000]));
    }
}

#[test]
fn unsynced_writes_come_back_new_old_or_zero_per_page_at_any_size_they_had() {
    let (sim, disk) = disk();
    let f = disk.create_new(Path::new("/d/f"), 0o644).unwrap();
    f.write_all_at(&[1u8; 8192], 0).unwrap();
    f.sync_data().unwrap();
    disk.sync_dir(Path::new("/d")).unwrap();
    f.write_all_at(&[2u8; 8192], 4096).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for image in images(&sim) {
        let bytes = read(&image, "/d/f").unwrap();
        assert!([8192, 12288].contains(&bytes.len()), "{}", bytes.len());
        assert!(
            bytes[..4096].iter().all(|&b| b == 1),
            "a synced page never changes"
        );
        for page in bytes[4096..].chunks(4096) {
            assert!(page.iter().all(|&b| b == page[0]), "pages come back whole");
            seen.insert(page[0]);
        }
    }
    assert_eq!(
        seen,
        [0, 1, 2].into(),
        "new and old pages occur, and zeros past the synced size"
    );
}

#[test]
fn a_synced_file_whose_directory_was_not_synced_may_vanish() {
    let (sim, disk) = disk();
    let f = disk.create_new(Path::new("/d/f"), 0o644).unwrap();
    f.write_all_at(b"x", 0).unwrap();
    f.sync_all().unwrap();
    assert_eq!(read(&sim.crash_image(Choices::Nothing), "/d/f"), None);
    assert_eq!(
        read(&sim.crash_image(Choices::Everything), "/d/f"),
        Some(b"x".to_vec())
    );
    disk.sync_dir(Path::new("/d")).unwrap();
    assert_eq!(
        read(&sim.crash_image(Choices::Nothing), "/d/f"),
        Some(b"x".to_vec())
    );
}

#[test]
fn metadata_operations_survive_as_a_prefix_in_the_order_made() {
    let (sim, disk) = disk();
    for name in ["a", "b", "c"] {
        disk.create_new(&Path::new("/d").join(name), 0o644).unwrap();
    }
    disk.rename(Path::new("/d/a"), Path::new("/d/z")).unwrap();
    let order = ["/d/a", "/d/b", "/d/c", "/d/z"];
    let mut prefixes = std::collections::BTreeSet::new();
    for image in images(&sim) {
        let present: Vec<bool> = order.iter().map(|p| read(&image, p).is_some()).collect();
        // a created, then b, then c, then a renamed to z.
        let ops_kept = match present[..] {
            [false, false, false, false] => 0,
            [true, false, false, false] => 1,
            [true, true, false, false] => 2,
            [true, true, true, false] => 3,
            [false, true, true, true] => 4,
            _ => panic!("not a prefix: {present:?}"),
        };
        prefixes.insert(ops_kept);
    }
    assert_eq!(prefixes.len(), 5, "every prefix occurs: {prefixes:?}");
    // An fsync of the directory makes all of them (and everything before) durable.
    disk.sync_dir(Path::new("/d")).unwrap();
    for image in images(&sim) {
        assert!(read(&image, "/d/z").is_some() && read(&image, "/d/a").is_none());
    }
}

#[test]
fn an_unsynced_truncation_may_be_undone() {
    let (sim, disk) = disk();
    let f = disk.create_new(Path::new("/d/f"), 0o644).unwrap();
    f.write_all_at(&[5u8; 100], 0).unwrap();
    f.sync_all().unwrap();
    disk.sync_dir(Path::new("/d")).unwrap();
    f.set_len(10).unwrap();
    let lens: std::collections::BTreeSet<usize> = images(&sim)
        .iter()
        .map(|i| read(i, "/d/f").unwrap().len())
        .collect();
    assert_eq!(lens, [10, 100].into());
    f.sync_data().unwrap();
    assert!(images(&sim)
        .iter()
        .all(|i| read(i, "/d/f").unwrap().len() == 10));
}

#[test]
fn a_failed_step_changes_nothing_and_makes_nothing_durable() {
    let (sim, disk) = disk();
    let f = disk.create_new(Path::new("/d/f"), 0o644).unwrap();
    disk.sync_dir(Path::new("/d")).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    sim.set_observer(Some(Box::new(|_, _, step, _| {
        step.is_sync()
            .then(|| io::Error::from_raw_os_error(libc::EIO))
    })));
    assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(
        disk.rename(Path::new("/d/f"), Path::new("/d/g")).ok(),
        Some(()),
        "only syncs fail here"
    );
    assert_eq!(
        disk.sync_dir(Path::new("/d")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    let nothing = sim.crash_image(Choices::Nothing);
    assert_eq!(
        read(&nothing, "/d/f"),
        Some(Vec::new()),
        "neither data nor rename"
    );
    sim.set_observer(None);
    f.sync_data().unwrap();
    disk.sync_dir(Path::new("/d")).unwrap();
    assert_eq!(
        read(&sim.crash_image(Choices::Nothing), "/d/g"),
        Some(b"data".to_vec())
    );
}

#[test]
fn unnamed_files_never_survive_and_unlinked_open_files_stay_readable() {
    let (sim, disk) = disk();
    let u = disk.create_unnamed(Path::new("/d")).unwrap();
    u.write_all_at(b"tmp", 0).unwrap();
    u.sync_all().unwrap();
    disk.sync_dir(Path::new("/d")).unwrap();
    assert!(image_names(&sim.crash_image(Choices::Everything)).is_empty());
    let f = disk.create_new(Path::new("/d/f"), 0o644).unwrap();
    f.write_all_at(b"kept", 0).unwrap();
    disk.remove_file(Path::new("/d/f")).unwrap();
    let mut buf = [0u8; 4];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"kept");
    assert_eq!(
        sim.steps(),
        8,
        "mkdir, 3 syncs, write, create, write, unlink"
    );
}

fn image_names(sim: &SimDisk) -> Vec<OsString> {
    names(&sim.read_dir(Path::new("/d")).unwrap())
}
