//! The small value types the engine is built from: buckets, index keys and their metadata.

use std::collections::BTreeMap;
use std::hash::Hasher;

use serde::Serialize;

use crate::ioc::IocType;

pub use crate::bucket::{Bucket, Tier};

/// Where a write to a writable file goes: the live set of its type (a sighting by `local`),
/// the allowlist, or a declared source's list (`sources/<name>/`, by the source's id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Live,
    Allow,
    Source(SourceId),
}

/// A source's number: 0 is the built-in `local` (writes to live/), 1..=63 declared ones.
pub type SourceId = u8;
/// The built-in source of writes to live/ and of everything stored before sources existed.
pub const LOCAL: SourceId = 0;
/// Declared sources besides `local` (a source set is a 64-bit set).
pub const MAX_SOURCES: usize = 63;
/// Target codes from here up name a source (code - SOURCE_CODE = its id).
const SOURCE_CODE: u8 = 64;

impl Target {
    pub fn code(self) -> u8 {
        match self {
            Target::Live => 0,
            Target::Allow => 1,
            Target::Source(id) => SOURCE_CODE + id,
        }
    }

    pub fn from_code(code: u8) -> Option<Target> {
        match code {
            0 => Some(Target::Live),
            1 => Some(Target::Allow),
            c if c > SOURCE_CODE && usize::from(c - SOURCE_CODE) <= MAX_SOURCES => {
                Some(Target::Source(c - SOURCE_CODE))
            }
            _ => None,
        }
    }

    /// The directory of the mount its files are in (a source's: under `sources/`).
    pub fn dir(self) -> &'static str {
        match self {
            Target::Live => "live",
            Target::Allow => "allow",
            Target::Source(_) => "sources",
        }
    }

    /// The source a write to this target counts for (the allowlist: none).
    pub fn source(self) -> Option<SourceId> {
        match self {
            Target::Live => Some(LOCAL),
            Target::Allow => None,
            Target::Source(id) => Some(id),
        }
    }
}

/// A partition with a backing file: a bucket's file of one type, or an allowlist file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartId {
    Bucket(Bucket, IocType),
    Allow(IocType),
    /// Which sources list each indicator of a type, and the source registry.
    Sources(IocType),
}

impl PartId {
    /// The data directory's subdirectory its files are in.
    pub fn dir(self) -> &'static str {
        match self {
            PartId::Bucket(b, _) => b.name(),
            PartId::Allow(_) => Target::Allow.dir(),
            PartId::Sources(_) => "sources",
        }
    }

    pub fn ty(self) -> IocType {
        match self {
            PartId::Bucket(_, ty) | PartId::Allow(ty) | PartId::Sources(ty) => ty,
        }
    }

    /// Its backing file's name; raw-text partitions (live, allow) also have a sidecar.
    pub fn backing_name(self) -> String {
        match self {
            PartId::Bucket(b, ty) => b.backing_name(ty),
            PartId::Allow(ty) => ty.file_name().to_string(),
            PartId::Sources(ty) => format!("{}.sources", ty.name()),
        }
    }

    /// Every partition, buckets first (provenance last: it names indicators of the buckets).
    pub fn all() -> impl Iterator<Item = PartId> {
        let buckets = Bucket::ALL.into_iter().flat_map(|b| {
            IocType::ALL
                .into_iter()
                .map(move |ty| PartId::Bucket(b, ty))
        });
        buckets
            .chain(IocType::ALL.into_iter().map(PartId::Allow))
            .chain(IocType::ALL.into_iter().map(PartId::Sources))
    }
}

/// Retention thresholds in seconds (README "Buckets and aging"), carried in each aging record so replay
/// reaches the same result even if the config changed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub live_to_chaud: u64,
    pub chaud_to_tiede: u64,
    pub tiede_to_froid: u64,
    pub froid_retention: u64,
}

impl Policy {
    /// The bucket an indicator belongs in at `now`, or None once it is past retention.
    pub fn bucket_for(&self, now: u64, last_seen: u32) -> Option<Bucket> {
        let age = now.saturating_sub(u64::from(last_seen));
        if age < self.live_to_chaud {
            Some(Bucket::Live)
        } else if age < self.chaud_to_tiede {
            Some(Bucket::Chaud)
        } else if age < self.tiede_to_froid {
            Some(Bucket::Tiede)
        } else if age < self.froid_retention {
            Some(Bucket::Froid)
        } else {
            None
        }
    }

    /// Where aging moves an indicator currently in `from`: aging only moves to older buckets.
    pub fn aged_target(&self, now: u64, from: Bucket, last_seen: u32) -> Option<Bucket> {
        self.bucket_for(now, last_seen).map(|b| b.max(from))
    }
}

/// What one aging step moved, for logs and stats.json.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct AgingReport {
    /// "live->chaud" → count, etc.; "froid->gone" for dropped ones.
    pub moved: BTreeMap<String, u64>,
    /// Blocks moved between tiers without being rewritten.
    pub whole_blocks: u64,
}

impl AgingReport {
    pub fn count(&mut self, from: Bucket, to: Option<Bucket>, n: u64) {
        if n > 0 {
            let to = to.map_or("gone", Bucket::name);
            *self
                .moved
                .entry(format!("{}->{to}", from.name()))
                .or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.moved.values().sum()
    }
}

/// 80-bit digest of (type, normalized value). Values of tier indicators are not kept in
/// memory, so the index is keyed by this digest. It is seeded per process (never stored
/// but in the data directory's checkpoint and provenance files), so crafted inputs can't
/// aim at collisions; accidental ones among 10^8 keys have a probability around 4·10^-9.
/// The upper 16 bits of the last word are always zero: the index keeps an indicator's
/// source-set id there, so a slot stays 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key([u32; 3]);

/// The bits of the last word a key uses.
const KEY_HIGH_MASK: u32 = 0xFFFF;

impl Key {
    pub fn of(seed: u64, ty: IocType, value: &[u8]) -> Key {
        let type_seed = seed ^ (u64::from(ty.code()) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let h = xxhash_rust::xxh3::xxh3_128_with_seed(value, type_seed);
        let key = Key([h as u32, (h >> 32) as u32, (h >> 64) as u32 & KEY_HIGH_MASK]);
        // The all-zero key marks an empty index slot.
        if key == Key::EMPTY {
            Key([1, 0, 0])
        } else {
            key
        }
    }

    /// Marks an empty slot in the index; never returned by `Key::of`.
    pub const EMPTY: Key = Key([0, 0, 0]);

    pub fn is_empty(&self) -> bool {
        *self == Key::EMPTY
    }

    /// The low 64 bits, which the index hashes.
    pub fn low64(&self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }

    /// The digest's words, for index snapshots (stored with the seed they were made with).
    pub fn words(&self) -> [u32; 3] {
        self.0
    }

    /// A key from stored words. Snapshots written when keys had 96 bits hold the same
    /// digests with more high bits: masking them gives the keys `Key::of` makes now.
    pub fn from_words(words: [u32; 3]) -> Key {
        Key([words[0], words[1], words[2] & KEY_HIGH_MASK])
    }

    /// The key with a 16-bit tag in its unused bits (an index slot's source-set id).
    pub(crate) fn tagged(self, tag: u16) -> Key {
        Key([self.0[0], self.0[1], self.0[2] | (u32::from(tag) << 16)])
    }

    /// The key without its tag, and the tag.
    pub(crate) fn untag(self) -> (Key, u16) {
        (
            Key([self.0[0], self.0[1], self.0[2] & KEY_HIGH_MASK]),
            (self.0[2] >> 16) as u16,
        )
    }
}

impl std::hash::Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.low64());
    }
}

/// Keys are already uniform hashes, so hashing one is a single multiply. The per-map random
/// `salt` matters: inserting keys in another map's iteration order (as a checkpoint does)
/// into a map with the same hash function makes them collide in long runs.
#[derive(Default)]
pub struct KeyHasher {
    salt: u64,
    hash: u64,
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        (self.hash ^ self.salt).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash = self.hash.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.hash = n;
    }
}

/// Builds [`KeyHasher`]s with a salt chosen when the map is made.
#[derive(Clone)]
pub struct KeyHashBuilder {
    salt: u64,
}

impl Default for KeyHashBuilder {
    fn default() -> Self {
        use std::hash::BuildHasher;
        KeyHashBuilder {
            salt: std::collections::hash_map::RandomState::new().hash_one(0x5a17u64),
        }
    }
}

impl std::hash::BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            salt: self.salt,
            hash: 0,
        }
    }
}

pub type KeyMap<V> = std::collections::HashMap<Key, V, KeyHashBuilder>;

/// Where an indicator is: a live slot, or a tier block (whose bucket the block directory
/// knows, so moving a whole block between tiers touches no key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    Live { ty: IocType, slot: u32 },
    Block { ty: IocType, block: u32 },
}

/// Largest slot or block id a `Loc` can hold.
pub const MAX_LOC_ID: u32 = (1 << 27) - 1;

impl Loc {
    fn pack(self) -> u32 {
        match self {
            Loc::Live { ty, slot } => {
                (1 << 31) | (u32::from(ty.code()) << 27) | (slot & MAX_LOC_ID)
            }
            Loc::Block { ty, block } => (u32::from(ty.code()) << 27) | (block & MAX_LOC_ID),
        }
    }

    fn unpack(bits: u32) -> Loc {
        let ty = IocType::from_code(((bits >> 27) & 0xF) as u8).unwrap_or(IocType::Ipv4);
        let id = bits & MAX_LOC_ID;
        if bits >> 31 == 1 {
            Loc::Live { ty, slot: id }
        } else {
            Loc::Block { ty, block: id }
        }
    }

    pub fn ty(self) -> IocType {
        match self {
            Loc::Live { ty, .. } | Loc::Block { ty, .. } => ty,
        }
    }
}

/// Per-indicator index entry: 12 bytes, so an index slot is 24 bytes with its key.
/// For live indicators the times live in the live set's slot table and these are unused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub first_seen: u32,
    pub last_seen: u32,
    loc: u32,
}

impl Meta {
    pub const ZERO: Meta = Meta {
        first_seen: 0,
        last_seen: 0,
        loc: 0,
    };

    pub fn new(first_seen: u32, last_seen: u32, loc: Loc) -> Meta {
        Meta {
            first_seen,
            last_seen,
            loc: loc.pack(),
        }
    }

    pub fn loc(&self) -> Loc {
        Loc::unpack(self.loc)
    }

    pub fn loc_bits(&self) -> u32 {
        self.loc
    }

    pub fn from_bits(first_seen: u32, last_seen: u32, loc: u32) -> Meta {
        Meta {
            first_seen,
            last_seen,
            loc,
        }
    }

    pub fn set_loc(&mut self, loc: Loc) {
        self.loc = loc.pack();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_round_trips() {
        for ty in IocType::ALL {
            for id in [0, 1, 12345, MAX_LOC_ID] {
                for loc in [Loc::Live { ty, slot: id }, Loc::Block { ty, block: id }] {
                    assert_eq!(Meta::new(1, 2, loc).loc(), loc);
                }
            }
        }
    }

    #[test]
    fn keys_differ_by_type_and_value() {
        let a = Key::of(7, IocType::Domain, b"evil.com");
        assert_eq!(a, Key::of(7, IocType::Domain, b"evil.com"));
        assert_ne!(a, Key::of(7, IocType::Url, b"evil.com"));
        assert_ne!(a, Key::of(7, IocType::Domain, b"evil.org"));
        assert_ne!(a, Key::of(8, IocType::Domain, b"evil.com"));
    }

    #[test]
    fn policy_picks_buckets_by_age() {
        let h = 3600;
        let p = Policy {
            live_to_chaud: 24 * h,
            chaud_to_tiede: 7 * 24 * h,
            tiede_to_froid: 30 * 24 * h,
            froid_retention: 365 * 24 * h,
        };
        let t0 = 1_000_000_000u32;
        let at = |secs: u64| p.bucket_for(u64::from(t0) + secs, t0);
        assert_eq!(at(23 * h), Some(Bucket::Live));
        assert_eq!(at(25 * h), Some(Bucket::Chaud));
        assert_eq!(at(8 * 24 * h), Some(Bucket::Tiede));
        assert_eq!(at(31 * 24 * h), Some(Bucket::Froid));
        assert_eq!(at(366 * 24 * h), None);
        // Aging never moves something back to a younger bucket.
        assert_eq!(
            p.aged_target(u64::from(t0), Bucket::Tiede, t0),
            Some(Bucket::Tiede)
        );
    }

    #[test]
    fn index_entry_is_compact() {
        assert_eq!(std::mem::size_of::<(Key, Meta)>(), 24);
    }
}
