use super::*;

pub(super) fn err(text: &str) -> ConfigError {
    match Config::from_toml_str(text) {
        Ok(cfg) => panic!("expected an error for {text:?}, got {cfg:?}"),
        Err(e) => e,
    }
}

#[test]
fn empty_file_is_the_default() {
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    assert_eq!(
        Config::from_toml_str("# only a comment\n\n").unwrap(),
        Config::default()
    );
}

#[test]
fn example_file_equals_the_embedded_defaults() {
    let example = include_str!("../../systemd/iocfs.toml");
    assert_eq!(Config::from_toml_str(example).unwrap(), Config::default());
}

#[test]
fn example_file_sets_every_key() {
    // Guards the other direction: a key added to the parser must be documented.
    let example: Table = include_str!("../../systemd/iocfs.toml").parse().unwrap();
    let sections = [
        "retention",
        "durability",
        "aging",
        "cache",
        "tiers",
        "ingest",
        "mount",
        "log",
        "views",
    ];
    let mut count = usize::from(example.contains_key("data_dir"));
    for name in sections {
        count += example[name].as_table().unwrap().len();
    }
    assert_eq!(count, 1 + 4 + 7 + 1 + 1 + 1 + 3 + 6 + 1 + 1);
}

#[test]
fn defaults_match_the_design() {
    let c = Config::default();
    assert_eq!(c.data_dir, Path::new("/var/lib/iocfs"));
    assert_eq!(c.retention.live_to_chaud, Duration::from_secs(24 * 3600));
    assert_eq!(c.retention.chaud_to_tiede, Duration::from_secs(7 * 86400));
    assert_eq!(c.retention.tiede_to_froid, Duration::from_secs(30 * 86400));
    assert_eq!(
        c.retention.froid_retention,
        Duration::from_secs(365 * 86400)
    );
    assert_eq!(c.durability.mode, DurabilityMode::Always);
    assert_eq!(c.durability.batch_window, Duration::from_millis(2));
    assert_eq!(c.durability.sync_interval, Duration::from_millis(100));
    assert_eq!(c.durability.commit_interval, Duration::from_secs(1));
    assert_eq!(c.durability.checkpoint_interval, Duration::from_secs(300));
    assert_eq!(c.durability.segment_size, 64 << 20);
    assert_eq!(c.durability.checkpoint_records, 1_000_000);
    assert_eq!(c.aging.interval, Duration::from_secs(60));
    assert_eq!(c.cache.size, 256 << 20);
    assert_eq!(c.tiers.block_size, 64 << 10);
    assert_eq!(c.ingest.on_invalid, OnInvalid::Reject);
    assert_eq!((c.ingest.min_prefix_v4, c.ingest.min_prefix_v6), (8, 16));
    let m = &c.mount;
    assert_eq!(
        (
            m.allow_other,
            m.uid,
            m.gid,
            m.file_mode,
            m.threads,
            m.passthrough
        ),
        (None, 0, 0, 0o644, 16, true)
    );
    assert_eq!(c.log.level, "info");
    c.validate().unwrap();
}

#[test]
fn partial_file_overrides_only_what_it_sets() {
    let text = r#"
        data_dir = "/srv/iocfs"
        [durability]
        mode = "batch"
        [cache]
        size = 1073741824
        [ingest]
        on_invalid = "skip"
        [mount]
        file_mode = "640"
        threads = 4
        allow_other = true
        uid = 998
        [log]
        level = "DEBUG"
    "#;
    let c = Config::from_toml_str(text).unwrap();
    let mut want = Config {
        data_dir: PathBuf::from("/srv/iocfs"),
        ..Config::default()
    };
    want.durability.mode = DurabilityMode::Batch;
    want.cache.size = 1 << 30;
    want.ingest.on_invalid = OnInvalid::Skip;
    want.mount.file_mode = 0o640;
    want.mount.threads = 4;
    want.mount.allow_other = Some(true);
    want.mount.uid = 998;
    want.log.level = "debug".into();
    assert_eq!(c, want);

    let c = Config::from_toml_str("[retention]\nfroid_retention = \"2y\"\n").unwrap();
    assert_eq!(
        c.retention.froid_retention,
        Duration::from_secs(2 * 31_557_600)
    );
    assert_eq!(
        c.retention.live_to_chaud,
        Config::default().retention.live_to_chaud
    );
}

#[test]
fn bad_values_name_their_key_and_what_is_expected() {
    let cases: &[(&str, &str, &str)] = &[
        // (toml, key, fragment of the message)
        (
            "data_dir = 5",
            "data_dir",
            "data_dir = 5: expected an absolute path",
        ),
        ("data_dir = \"\"", "data_dir", "expected an absolute path"),
        (
            "data_dir = \"var/lib\"",
            "data_dir",
            "expected an absolute path",
        ),
        (
            "retention = 3",
            "retention",
            "retention = 3: expected a table",
        ),
        (
            "[retention]\nlive_to_chaud = \"24 hours please\"",
            "retention.live_to_chaud",
            r#"retention.live_to_chaud = "24 hours please": expected a duration like "24h", "7d" or "90s""#,
        ),
        (
            "[retention]\nlive_to_chaud = 24",
            "retention.live_to_chaud",
            "expected a duration",
        ),
        (
            "[retention]\nlive_to_chaud = \"0s\"",
            "retention.live_to_chaud",
            "above zero",
        ),
        (
            "[retention]\nchaud_to_tiede = \"-1d\"",
            "retention.chaud_to_tiede",
            "expected a duration",
        ),
        (
            "[retention]\ntiede_to_froid = \"\"",
            "retention.tiede_to_froid",
            "expected a duration",
        ),
        (
            "[retention]\nfroid_retention = \"1x\"",
            "retention.froid_retention",
            "unknown unit \"x\"",
        ),
        (
            "[durability]\nmode = \"sometimes\"",
            "durability.mode",
            r#"durability.mode = "sometimes": expected one of always, batch, periodic"#,
        ),
        (
            "[durability]\nmode = 1",
            "durability.mode",
            "expected one of always, batch, periodic",
        ),
        (
            "[durability]\nbatch_window = \"2s\"",
            "durability.batch_window",
            "from 0 (no wait) to 1s",
        ),
        (
            "[durability]\nbatch_window = \"x\"",
            "durability.batch_window",
            "expected a duration",
        ),
        (
            "[durability]\nsync_interval = \"0ms\"",
            "durability.sync_interval",
            "above zero",
        ),
        (
            "[durability]\ncommit_interval = \"0\"",
            "durability.commit_interval",
            "above zero",
        ),
        (
            "[durability]\ncheckpoint_interval = \"0s\"",
            "durability.checkpoint_interval",
            "above zero",
        ),
        (
            "[durability]\nsegment_size = \"512KiB\"",
            "durability.segment_size",
            "at least 1MiB",
        ),
        (
            "[durability]\nsegment_size = -1",
            "durability.segment_size",
            "expected a size",
        ),
        (
            "[durability]\ncheckpoint_records = 0",
            "durability.checkpoint_records",
            "at least 1",
        ),
        (
            "[durability]\ncheckpoint_records = \"1000\"",
            "durability.checkpoint_records",
            "expected an integer",
        ),
        (
            "[aging]\ninterval = \"0s\"",
            "aging.interval",
            "aging.interval = \"0s\": expected a duration above zero",
        ),
        (
            "[aging]\ninterval = true",
            "aging.interval",
            "expected a duration",
        ),
        (
            "[cache]\nsize = \"lots\"",
            "cache.size",
            r#"cache.size = "lots": expected a size like "256MiB""#,
        ),
        ("[cache]\nsize = 1.5", "cache.size", "expected a size"),
        (
            "[cache]\nsize = \"1.5GiB\"",
            "cache.size",
            "expected a size",
        ),
        ("[cache]\nsize = \"512KiB\"", "cache.size", "at least 1MiB"),
        (
            "[cache]\nsize = \"99999999999TiB\"",
            "cache.size",
            "too large",
        ),
        (
            "[cache]\nsize = \"2MiB\"\n[tiers]\nblock_size = \"16MiB\"",
            "cache.size",
            "must be at least tiers.block_size = \"16MiB\"",
        ),
        (
            "[tiers]\nblock_size = \"2KiB\"",
            "tiers.block_size",
            "expected a size from 4KiB to 16MiB",
        ),
        (
            "[tiers]\nblock_size = \"32MiB\"",
            "tiers.block_size",
            "expected a size from 4KiB to 16MiB",
        ),
        (
            "[ingest]\non_invalid = \"ignore\"",
            "ingest.on_invalid",
            "expected one of reject, skip",
        ),
        (
            "[ingest]\nmin_prefix_v4 = \"8\"",
            "ingest.min_prefix_v4",
            "ingest.min_prefix_v4 = \"8\": expected an integer",
        ),
        (
            "[ingest]\nmin_prefix_v4 = 33",
            "ingest.min_prefix_v4",
            "expected an integer from 0 to 32",
        ),
        (
            "[ingest]\nmin_prefix_v4 = -1",
            "ingest.min_prefix_v4",
            "expected an integer from 0 to 32",
        ),
        (
            "[ingest]\nmin_prefix_v6 = 129",
            "ingest.min_prefix_v6",
            "expected an integer from 0 to 128",
        ),
        (
            "[ingest]\nmin_prefix_v6 = 1000",
            "ingest.min_prefix_v6",
            "from 0 to 128",
        ),
        (
            "[mount]\nallow_other = \"yes\"",
            "mount.allow_other",
            "expected true, false or \"auto\"",
        ),
        (
            "[mount]\nuid = -1",
            "mount.uid",
            "expected an integer from 0 to 4294967295",
        ),
        (
            "[mount]\ngid = 4294967296",
            "mount.gid",
            "expected an integer from 0 to 4294967295",
        ),
        (
            "[mount]\ngid = \"root\"",
            "mount.gid",
            "expected an integer",
        ),
        (
            "[mount]\nfile_mode = \"0999\"",
            "mount.file_mode",
            r#"mount.file_mode = "0999": expected octal permission bits like "0644""#,
        ),
        (
            "[mount]\nfile_mode = 644",
            "mount.file_mode",
            "expected octal permission bits",
        ),
        (
            "[mount]\nfile_mode = \"17777\"",
            "mount.file_mode",
            "at most 7777",
        ),
        (
            "[mount]\nthreads = 0",
            "mount.threads",
            "expected an integer from 1 to 256",
        ),
        (
            "[mount]\nthreads = 257",
            "mount.threads",
            "expected an integer from 1 to 256",
        ),
        (
            "[log]\nlevel = \"verbose\"",
            "log.level",
            "expected one of error, warn, info, debug, trace, off",
        ),
        ("[log]\nlevel = 3", "log.level", "expected one of error"),
        (
            "[log]\nlevel = [\"info\"]",
            "log.level",
            "log.level = [...]: expected one of",
        ),
    ];
    for (text, key, fragment) in cases {
        let e = err(text);
        assert_eq!(e.key(), Some(*key), "{text:?} gave {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(fragment),
            "{text:?}: {msg:?} lacks {fragment:?}"
        );
    }
}

#[test]
fn syntax_errors_carry_the_line_and_column() {
    let e = err("[cache]\nsize = \"256MiB\n");
    assert_eq!(e.key(), None);
    assert!(matches!(e, ConfigError::Syntax { .. }));
    assert!(e.to_string().contains("line 2, column"), "{e}");

    let e = err("[log]\nlevel = \"info\"\nlevel = \"debug\"\n");
    assert!(e.to_string().contains("line 3"), "{e}");
}

#[test]
fn retention_must_increase_and_names_both_keys() {
    let e = err("[retention]\nlive_to_chaud = \"10d\"");
    assert_eq!(e.key(), Some("retention.chaud_to_tiede"));
    assert_eq!(
        e.to_string(),
        "retention.chaud_to_tiede = \"7d\": must be longer than retention.live_to_chaud = \"10d\" \
         (buckets age in order live, chaud, tiede, froid)"
    );
    let e = err("[retention]\ntiede_to_froid = \"7d\"");
    assert_eq!(e.key(), Some("retention.tiede_to_froid"));
    assert!(e.to_string().contains("retention.chaud_to_tiede"), "{e}");
    let e = err("[retention]\nfroid_retention = \"30d\"");
    assert_eq!(e.key(), Some("retention.froid_retention"));
    assert!(
        e.to_string().contains("retention.tiede_to_froid = \"30d\""),
        "{e}"
    );

    let ok = "[retention]\nlive_to_chaud = \"1h\"\nchaud_to_tiede = \"2h\"\ntiede_to_froid = \"3h\"\nfroid_retention = \"4h\"";
    assert_eq!(
        Config::from_toml_str(ok).unwrap().retention.froid_retention,
        Duration::from_secs(4 * 3600)
    );
}

#[test]
fn batch_window_zero_means_no_wait() {
    let c = Config::from_toml_str("[durability]\nbatch_window = \"0s\"").unwrap();
    assert_eq!(c.durability.batch_window, Duration::ZERO);
    let c = Config::from_toml_str("[durability]\nbatch_window = \"1s\"").unwrap();
    assert_eq!(c.durability.batch_window, Duration::from_secs(1));
}

#[test]
fn validate_checks_configs_built_in_code() {
    let mut c = Config::default();
    c.log.level = "loud".into();
    assert_eq!(c.validate().unwrap_err().key(), Some("log.level"));
    let mut c = Config::default();
    c.ingest.min_prefix_v6 = 200;
    assert_eq!(
        c.validate().unwrap_err().key(),
        Some("ingest.min_prefix_v6")
    );
    let mut c = Config::default();
    c.mount.file_mode = 0o10000;
    assert_eq!(c.validate().unwrap_err().key(), Some("mount.file_mode"));
    let mut c = Config::default();
    c.mount.threads = 0;
    assert_eq!(c.validate().unwrap_err().key(), Some("mount.threads"));
    let mut c = Config::default();
    c.durability.checkpoint_records = 0;
    assert_eq!(
        c.validate().unwrap_err().key(),
        Some("durability.checkpoint_records")
    );
    let c = Config {
        data_dir: PathBuf::new(),
        ..Config::default()
    };
    let e = c.validate().unwrap_err();
    assert_eq!(e.to_string(), "data_dir = \"\": expected an absolute path");
}

#[test]
fn enums_display_their_config_names() {
    let names: Vec<String> = DurabilityMode::ALL
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, ["always", "batch", "periodic"]);
    assert_eq!(OnInvalid::Skip.to_string(), "skip");
    let c = Config::from_toml_str("[durability]\nmode = \"Periodic\"").unwrap();
    assert_eq!(c.durability.mode, DurabilityMode::Periodic);
}

#[test]
fn load_reads_a_file_and_names_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iocfs.toml");
    std::fs::write(&path, "[aging]\ninterval = \"30s\"\n").unwrap();
    assert_eq!(
        Config::load(&path).unwrap().aging.interval,
        Duration::from_secs(30)
    );

    let missing = dir.path().join("nope.toml");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert_eq!(e.key(), None);
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );

    std::fs::write(&path, [0xff, 0xfe]).unwrap();
    let e = Config::load(&path).unwrap_err();
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

#[test]
fn restart_required_lists_only_non_reloadable_changes() {
    let old = Config::default();
    let mut new = old.clone();
    new.retention.live_to_chaud = Duration::from_secs(3600);
    new.cache.size = 1 << 30;
    new.log.level = "debug".into();
    new.ingest.on_invalid = OnInvalid::Skip;
    assert!(old.restart_required(&new).is_empty());
    new.data_dir = PathBuf::from("/srv");
    new.mount.threads = 2;
    new.durability.mode = DurabilityMode::Periodic;
    assert_eq!(
        old.restart_required(&new),
        ["data_dir", "durability.mode", "mount.threads"]
    );
}
