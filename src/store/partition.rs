//! Typed partitions. The engine keeps one thing per indicator type, per bucket or per tier
//! (a live set, a tier version, a change counter, a manifest entry); [`Per`] is that table,
//! indexed by the key type itself, so a tier can never index a bucket table and no code
//! does `usize::from(ty.code())` arithmetic by hand.

use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

use crate::ioc::IocType;
use crate::store::model::{Bucket, Tier};

/// A closed set of keys, each with a fixed position.
pub trait PartKey: Copy + 'static {
    /// Every key, in position order.
    const ALL: &'static [Self];
    fn position(self) -> usize;
}

impl PartKey for IocType {
    const ALL: &'static [Self] = &IocType::ALL;
    fn position(self) -> usize {
        usize::from(self.code())
    }
}

impl PartKey for Bucket {
    const ALL: &'static [Self] = &Bucket::ALL;
    fn position(self) -> usize {
        usize::from(self.code())
    }
}

impl PartKey for Tier {
    const ALL: &'static [Self] = &Tier::ALL;
    fn position(self) -> usize {
        self as usize
    }
}

/// One `T` per key of `K` (`N` is the number of keys, checked at compile time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Per<K, T, const N: usize> {
    items: [T; N],
    keys: PhantomData<K>,
}

pub type ByType<T> = Per<IocType, T, 9>;
pub type ByBucket<T> = Per<Bucket, T, 4>;
pub type ByTier<T> = Per<Tier, T, 3>;

impl<K: PartKey, T, const N: usize> Per<K, T, N> {
    const KEYS_MATCH: () = assert!(K::ALL.len() == N, "one slot per key");

    /// The table with `f(key)` for every key.
    pub fn from_fn(mut f: impl FnMut(K) -> T) -> Self {
        let () = Self::KEYS_MATCH;
        Per {
            items: std::array::from_fn(|i| f(K::ALL[i])),
            keys: PhantomData,
        }
    }

    /// As [`Per::from_fn`], stopping at the first error.
    pub fn try_from_fn<E>(mut f: impl FnMut(K) -> Result<T, E>) -> Result<Self, E> {
        let mut items = Vec::with_capacity(N);
        for &k in K::ALL {
            items.push(f(k)?);
        }
        let Ok(items) = <[T; N]>::try_from(items) else {
            unreachable!("K::ALL has N keys (KEYS_MATCH)")
        };
        Ok(Per {
            items,
            keys: PhantomData,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        K::ALL.iter().copied().zip(self.items.iter())
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut T)> {
        K::ALL.iter().copied().zip(self.items.iter_mut())
    }

    pub fn values(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    pub fn values_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.items.iter_mut()
    }

    pub fn map<U>(&self, mut f: impl FnMut(K, &T) -> U) -> Per<K, U, N> {
        Per::from_fn(|k| f(k, &self[k]))
    }
}

impl<K: PartKey, T: Default, const N: usize> Default for Per<K, T, N> {
    fn default() -> Self {
        Per::from_fn(|_| T::default())
    }
}

impl<K: PartKey, T, const N: usize> Index<K> for Per<K, T, N> {
    type Output = T;
    fn index(&self, key: K) -> &T {
        &self.items[key.position()]
    }
}

impl<K: PartKey, T, const N: usize> IndexMut<K> for Per<K, T, N> {
    fn index_mut(&mut self, key: K) -> &mut T {
        &mut self.items[key.position()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_its_own_slot() {
        let t: ByType<u8> = Per::from_fn(|ty: IocType| ty.code());
        for ty in IocType::ALL {
            assert_eq!(t[ty], ty.code());
        }
        let mut b: ByBucket<Vec<Bucket>> = Per::default();
        for bucket in Bucket::ALL {
            b[bucket].push(bucket);
        }
        assert!(b.iter().all(|(k, v)| v == &vec![k]));
        let tiers: ByTier<Bucket> = Per::from_fn(Tier::bucket);
        assert_eq!(
            tiers.values().copied().collect::<Vec<_>>(),
            vec![Bucket::Chaud, Bucket::Tiede, Bucket::Froid]
        );
        let r: Result<ByTier<u8>, &str> = Per::try_from_fn(|t| {
            if t == Tier::Froid {
                Err("froid")
            } else {
                Ok(1)
            }
        });
        assert_eq!(r, Err("froid"));
    }
}
