//! Buckets: where an indicator lives by the time since it was last seen (live, then the
//! gzip-backed tiers chaud, tiede, froid).

use crate::ioc::IocType;

/// Where an indicator lives. Ordered by priority: a younger bucket wins over an older one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    Live,
    Chaud,
    Tiede,
    Froid,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [Bucket::Live, Bucket::Chaud, Bucket::Tiede, Bucket::Froid];

    pub fn name(self) -> &'static str {
        match self {
            Bucket::Live => "live",
            Bucket::Chaud => "chaud",
            Bucket::Tiede => "tiede",
            Bucket::Froid => "froid",
        }
    }

    pub fn from_name(name: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Bucket> {
        Bucket::ALL.get(usize::from(code)).copied()
    }

    /// The tier this bucket is, if it is one (every bucket but live).
    pub fn tier(self) -> Option<Tier> {
        match self {
            Bucket::Live => None,
            Bucket::Chaud => Some(Tier::Chaud),
            Bucket::Tiede => Some(Tier::Tiede),
            Bucket::Froid => Some(Tier::Froid),
        }
    }

    /// Name of the backing file of `ty` in this bucket, relative to the data dir.
    pub fn backing_name(self, ty: IocType) -> String {
        match self {
            Bucket::Live => ty.file_name().to_string(),
            _ => format!("{}.gz", ty.file_name()),
        }
    }
}

/// The gzip-backed, read-only buckets. Kept apart from [`Bucket`] so code that only makes
/// sense for a tier (blocks, the block directory) cannot be handed `live`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Chaud,
    Tiede,
    Froid,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Chaud, Tier::Tiede, Tier::Froid];

    pub fn bucket(self) -> Bucket {
        match self {
            Tier::Chaud => Bucket::Chaud,
            Tier::Tiede => Bucket::Tiede,
            Tier::Froid => Bucket::Froid,
        }
    }

    pub fn name(self) -> &'static str {
        self.bucket().name()
    }
}

impl From<Tier> for Bucket {
    fn from(t: Tier) -> Bucket {
        t.bucket()
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
