use super::*;
use crate::cache::BlockCache;
use crate::ioc::IocType;
use crate::store::live::Storage;
use crate::store::mutation::Mutation;
use crate::store::{apply, SUBDIRS};
use std::sync::atomic::AtomicU64;
use std::sync::RwLock;

/// The engine a flush needs, without a WAL or a pipeline: journaled records are
/// applied directly.
struct Bare {
    disk: Disk,
    dir: tempfile::TempDir,
    state: RwLock<State>,
    cache: BlockCache,
    seq: AtomicU64,
    retired: Mutex<Vec<u64>>,
}

impl Bare {
    fn new() -> Bare {
        let dir = tempfile::tempdir().unwrap();
        for sub in SUBDIRS {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let state = State::new(7, Arc::new(AtomicU64::new(1 << 32)), 4096, &Storage::Memfd);
        Bare {
            disk: Disk::real(),
            dir,
            state: RwLock::new(state.unwrap()),
            cache: BlockCache::new(1 << 20),
            seq: AtomicU64::new(1),
            retired: Mutex::new(Vec::new()),
        }
    }

    fn apply(&self, op: Op) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let m = Mutation {
            ts: 1_700_000_000,
            op,
        };
        apply::apply(&mut self.state.write().unwrap(), seq, &m, &self.cache).unwrap();
        seq
    }
}

impl Engine for Bare {
    fn disk(&self) -> &Disk {
        &self.disk
    }
    fn data_dir(&self) -> &Path {
        self.dir.path()
    }
    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap()
    }
    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap()
    }
    fn journal(&self, op: Op) -> Result<u64> {
        Ok(self.apply(op))
    }
    fn retire_wal(&self, upto: u64) -> Result<()> {
        lock(&self.retired).push(upto);
        Ok(())
    }
    fn fail(&self, why: &str) {
        panic!("unexpected failure: {why}")
    }
    fn now(&self) -> u64 {
        1_700_000_100
    }
}

#[test]
fn a_commit_writes_what_lags_and_only_that() {
    let engine = Bare::new();
    let flusher = Flusher::default();
    assert!(flusher.commit(&engine).unwrap().is_none(), "nothing lags");
    let seq = engine.apply(Op::Append {
        target: crate::store::model::Target::Live,
        ty: IocType::Domain,
        values: b"a.example.com\nb.example.com\n".to_vec(),
    });
    let info = flusher
        .commit(&engine)
        .unwrap()
        .expect("live/domain.txt lagged");
    assert_eq!(
        (info.upto, info.files),
        (seq, 2),
        "the text and its sidecar"
    );
    let text = std::fs::read(engine.data_dir().join("live/domain.txt")).unwrap();
    assert_eq!(text, b"a.example.com\nb.example.com\n");
    assert_eq!(*lock(&engine.retired), vec![seq]);
    assert_eq!(flusher.commits(), 1);
    assert!(flusher.commit(&engine).unwrap().is_none(), "caught up");
    assert!(engine.state().changes().dirty().is_empty());
    let ckpt = flusher.checkpoint(&engine, false).unwrap();
    assert_eq!(
        ckpt.upto, seq,
        "a checkpoint covers what the last commit wrote"
    );
    assert_eq!(flusher.last_checkpoint().map(|c| c.upto), Some(ckpt.upto));
}
