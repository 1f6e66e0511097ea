//! Crash images: what the simulated disk could hold after a power cut now (the model is in
//! the parent module's doc). An image is a new [`SimDisk`] on which everything is durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Inner, Node, Shared, SimDisk, Tree, PAGE};
use crate::sync::lock;

/// Which of the unsynced state an image keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choices {
    /// Nothing that was not synced.
    Nothing,
    /// Everything (what a killed process leaves: the page cache survives).
    Everything,
    /// Every byte written, but none of the unsynced metadata operations: the data reached
    /// the disk, the journal did not.
    DataNotNames,
    /// Seeded: a prefix of the unsynced metadata operations, and for each file one of its
    /// possible sizes and, per unsynced page, its new bytes or its synced ones (zeros past
    /// the synced size).
    Random(u64),
}

/// xorshift64*: seeded choices without a dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Never zero, and nearby seeds far apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

impl SimDisk {
    /// What the disk could hold if power were cut now.
    pub fn crash_image(&self, choices: Choices) -> SimDisk {
        let inner = lock(&self.0.inner);
        let mut rng = match choices {
            Choices::Random(seed) => Some(Rng::new(seed)),
            _ => None,
        };
        let keep = match (&choices, rng.as_mut()) {
            (Choices::Nothing | Choices::DataNotNames, _) => 0,
            (Choices::Random(_), Some(rng)) => rng.below(inner.pending.len() as u64 + 1) as usize,
            _ => inner.pending.len(),
        };
        let mut tree: Tree = inner.base.clone();
        for op in &inner.pending[..keep] {
            tree.apply(op);
        }
        let mut out = Inner::default();
        out.current.dirs = tree.dirs.clone();
        let mut inodes: HashMap<u64, u64> = HashMap::new();
        for (path, ino) in &tree.files {
            let new = match inodes.get(ino) {
                Some(&n) => n,
                None => {
                    let bytes = inner
                        .nodes
                        .get(ino)
                        .map(|node| survivor(node, choices, rng.as_mut()))
                        .unwrap_or_default();
                    let n = out.new_node(Node::durable(bytes));
                    inodes.insert(*ino, n);
                    n
                }
            };
            out.current.files.insert(path.clone(), new);
        }
        out.base = out.current.clone();
        SimDisk(Arc::new(Shared {
            inner: Mutex::new(out),
            observer: Mutex::new(None),
        }))
    }

    /// Metadata operations and files with unsynced state (0 and 0: an image can only be
    /// what the disk holds now).
    pub fn unsynced(&self) -> (usize, usize) {
        let inner = lock(&self.0.inner);
        let files = inner
            .nodes
            .values()
            .filter(|n| !n.dirty.is_empty() || !n.sizes.is_empty())
            .count();
        (inner.pending.len(), files)
    }
}

/// The bytes of one file after the crash.
fn survivor(node: &Node, choices: Choices, rng: Option<&mut Rng>) -> Vec<u8> {
    let Some(rng) = rng else {
        return match choices {
            Choices::Nothing => node.synced.clone(),
            _ => node.data.clone(),
        };
    };
    let mut sizes = vec![node.synced.len() as u64, node.data.len() as u64];
    sizes.extend(&node.sizes);
    let len = sizes[rng.below(sizes.len() as u64) as usize] as usize;
    let mut out = vec![0u8; len];
    let page_of = |src: &[u8], p: usize, dst: &mut [u8]| {
        let at = p * PAGE as usize;
        if at < src.len() {
            let n = dst.len().min(src.len() - at);
            dst[..n].copy_from_slice(&src[at..at + n]);
        }
    };
    for (p, chunk) in out.chunks_mut(PAGE as usize).enumerate() {
        if !node.dirty.contains(&(p as u64)) {
            page_of(&node.synced, p, chunk);
            continue;
        }
        // Past the synced size the synced bytes are zeros: an extension whose data was lost.
        if rng.below(2) == 0 {
            page_of(&node.data, p, chunk);
        } else {
            page_of(&node.synced, p, chunk);
        }
    }
    out
}
