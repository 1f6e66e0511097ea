//! Provenance: which sources (feeds) list each indicator (README "Sources").
//!
//! Each index slot holds a source-set id (`Index::sources`); the sets themselves are
//! interned here, since a store holds few distinct combinations of its ≤ 64 sources. Id 0
//! is `{local}`, the set of everything written to live/ or stored before sources existed,
//! so a store that never uses sources spends nothing on them. Interned sets are never
//! dropped: there are at most as many as distinct combinations ever written.
//!
//! Counts per type and source are kept up to date with every change, so `rmdir` of a
//! source, its stats and the read of its list never scan the index when it lists nothing.

use std::collections::HashMap;

use super::State;
use crate::ioc::IocType;
use crate::store::index::MAX_SOURCE_SETS;
use crate::store::model::{Key, KeyMap, SourceId, LOCAL, MAX_SOURCES};
use crate::store::partition::ByType;

/// Bit `id` of a source set.
pub fn bit(id: SourceId) -> u64 {
    1u64 << id
}

/// The set of a new indicator written to live/, and of every indicator before sources.
pub const LOCAL_SET: u64 = 1;

/// The name of the built-in source.
pub const LOCAL_NAME: &str = "local";

/// A declared source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub name: String,
    /// When it was declared (Unix seconds).
    pub declared: u64,
}

/// When a source last wrote to one type's file (0: never).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceTimes {
    pub last_append: u64,
    pub last_replace: u64,
}

pub struct Provenance {
    /// By id; `local` (0) always.
    names: Vec<Option<SourceInfo>>,
    sets: Vec<u64>,
    ids: HashMap<u64, u32>,
    /// Per type, per source bit b ≥ 1: indicators whose set holds b. At 0: indicators whose
    /// set lacks `local`.
    counts: ByType<[u64; 64]>,
    times: ByType<[SourceTimes; 64]>,
    /// Lines accepted per source since the store opened (appends and replaces).
    accepted: [u64; 64],
}

impl Default for Provenance {
    fn default() -> Self {
        let mut names = vec![None; MAX_SOURCES + 1];
        names[usize::from(LOCAL)] = Some(SourceInfo {
            name: LOCAL_NAME.into(),
            declared: 0,
        });
        Provenance {
            names,
            sets: vec![LOCAL_SET],
            ids: HashMap::from([(LOCAL_SET, 0)]),
            counts: ByType::from_fn(|_| [0; 64]),
            times: ByType::from_fn(|_| [SourceTimes::default(); 64]),
            accepted: [0; 64],
        }
    }
}

/// Whether `name` may name a source: `[a-z0-9_-]{1,64}`, not `local`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name != LOCAL_NAME
}

impl Provenance {
    /// The set an id stands for.
    pub fn set(&self, id: u32) -> u64 {
        self.sets.get(id as usize).copied().unwrap_or(LOCAL_SET)
    }

    /// The id of `set`; None when the table is full (see `State::compact_source_sets`).
    fn intern(&mut self, set: u64) -> Option<u32> {
        if let Some(&id) = self.ids.get(&set) {
            return Some(id);
        }
        if self.sets.len() >= MAX_SOURCE_SETS {
            return None;
        }
        let id = self.sets.len() as u32;
        self.sets.push(set);
        self.ids.insert(set, id);
        Some(id)
    }

    /// Keep the counts right when an indicator of `ty` goes from set `old` to `new` (None:
    /// not stored).
    fn count_change(&mut self, ty: IocType, old: Option<u64>, new: Option<u64>) {
        let counts = &mut self.counts[ty];
        let lacks_local = |s: Option<u64>| s.is_some_and(|s| s & LOCAL_SET == 0);
        match (lacks_local(old), lacks_local(new)) {
            (true, false) => counts[0] = counts[0].saturating_sub(1),
            (false, true) => counts[0] += 1,
            _ => {}
        }
        let (old, new) = (old.unwrap_or(0) & !LOCAL_SET, new.unwrap_or(0) & !LOCAL_SET);
        let (mut gone, mut came) = (old & !new, new & !old);
        while gone != 0 {
            let b = gone.trailing_zeros() as usize;
            counts[b] = counts[b].saturating_sub(1);
            gone &= gone - 1;
        }
        while came != 0 {
            let b = came.trailing_zeros() as usize;
            counts[b] += 1;
            came &= came - 1;
        }
    }

    /// Whether any indicator ever had another set than `{local}` (or a source was
    /// declared) since the store opened.
    pub fn in_use(&self) -> bool {
        self.sets.len() > 1 || self.names.iter().skip(1).any(Option::is_some)
    }

    /// An indicator of `ty` goes from set `old` to `new`: the id of `new`.
    /// (None: the table is full; nothing was counted).
    pub fn changed(&mut self, ty: IocType, old: u64, new: u64) -> Option<u32> {
        let id = self.intern(new)?;
        self.count_change(ty, Some(old), Some(new));
        Some(id)
    }

    /// A new indicator of `ty` has set `set`: its id (None: the table is full).
    pub fn added(&mut self, ty: IocType, set: u64) -> Option<u32> {
        let id = self.intern(set)?;
        self.count_change(ty, None, Some(set));
        Some(id)
    }

    pub fn info(&self, id: SourceId) -> Option<&SourceInfo> {
        self.names.get(usize::from(id)).and_then(Option::as_ref)
    }

    /// The id of a source by name (`local` included).
    pub fn id_of(&self, name: &str) -> Option<SourceId> {
        self.names
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.name == name))
            .map(|i| i as SourceId)
    }

    /// Every source, `local` first: (id, info).
    pub fn sources(&self) -> impl Iterator<Item = (SourceId, &SourceInfo)> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i as SourceId, n)))
    }

    /// The declared sources (not `local`), for the committed files.
    pub fn declared(&self) -> Vec<(SourceId, SourceInfo)> {
        self.sources()
            .filter(|(id, _)| *id != LOCAL)
            .map(|(id, i)| (id, i.clone()))
            .collect()
    }

    /// The lowest id no source has.
    pub fn free_id(&self) -> Option<SourceId> {
        (1..=MAX_SOURCES as SourceId).find(|&id| self.info(id).is_none())
    }

    /// Names of the sources in `set`, `local` first.
    pub fn names_of(&self, set: u64) -> Vec<String> {
        self.sources()
            .filter(|(id, _)| set & bit(*id) != 0)
            .map(|(_, i)| i.name.clone())
            .collect()
    }

    /// Indicators of `ty` listed by `id` (for `local`: every stored one it lists is counted
    /// by the caller, as stored minus those lacking it).
    pub fn listed(&self, ty: IocType, id: SourceId) -> u64 {
        self.counts[ty][usize::from(id)]
    }

    /// Stored indicators of `ty` that `local` does not list.
    pub fn lacking_local(&self, ty: IocType) -> u64 {
        self.counts[ty][0]
    }

    pub fn times(&self, ty: IocType, id: SourceId) -> SourceTimes {
        self.times[ty][usize::from(id)]
    }

    /// The sources that wrote to `ty`'s file, with when (for the committed file).
    pub fn written(&self, ty: IocType) -> Vec<(SourceId, SourceTimes)> {
        self.times[ty]
            .iter()
            .enumerate()
            .filter(|(_, t)| **t != SourceTimes::default())
            .map(|(id, t)| (id as SourceId, *t))
            .collect()
    }

    pub fn set_times(&mut self, ty: IocType, id: SourceId, times: SourceTimes) {
        self.times[ty][usize::from(id)] = times;
    }

    pub fn accepted(&self, id: SourceId) -> u64 {
        self.accepted[usize::from(id)]
    }

    /// Put a declared source back as a commit recorded it (recovery).
    pub fn restore(&mut self, id: SourceId, info: SourceInfo) {
        if let Some(slot) = self.names.get_mut(usize::from(id)) {
            *slot = Some(info);
        }
    }
}

impl State {
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Indicators of `ty` stored in any bucket.
    pub fn stored_lines(&self, ty: IocType) -> u64 {
        let tiers: u64 = crate::store::model::Tier::ALL
            .into_iter()
            .map(|t| self.tiers[t][ty].lines())
            .sum();
        self.live[ty].lines() as u64 + tiers
    }

    /// The source set of a stored indicator.
    pub fn sources_of(&self, key: &Key) -> Option<u64> {
        self.index.sources(key).map(|id| self.provenance.set(id))
    }

    /// Make `set` the sources of a stored indicator of `ty`. An empty set is not stored:
    /// the caller removes such an indicator instead.
    pub fn set_sources(&mut self, ty: IocType, key: &Key, set: u64) {
        if self.assign_sources(ty, key, set) {
            self.changes.mark_sources(ty);
        }
    }

    /// [`Self::set_sources`] without marking the change (for views and commits): whether
    /// the set changed.
    fn assign_sources(&mut self, ty: IocType, key: &Key, set: u64) -> bool {
        let Some(id) = self.intern_set(set) else {
            return false;
        };
        match self.index.set_sources(key, id) {
            Some(old) if old != id => {
                let old = self.provenance.set(old);
                self.provenance.count_change(ty, Some(old), Some(set));
                true
            }
            _ => false,
        }
    }

    /// The id of `set`, compacting the table of sets when it is full. None (logged) only
    /// when more than 65,535 distinct sets are in use at once: the change is not recorded.
    fn intern_set(&mut self, set: u64) -> Option<u32> {
        if let Some(id) = self.provenance.intern(set) {
            return Some(id);
        }
        self.compact_source_sets();
        let id = self.provenance.intern(set);
        if id.is_none() {
            crate::lograte::error(|| {
                format!(
                    "sources: more than {} distinct combinations of sources are in use; \
                     a change of an indicator's sources was not recorded",
                    MAX_SOURCE_SETS - 1
                )
            });
        }
        id
    }

    /// Renumber the interned sets to the ones the index uses.
    fn compact_source_sets(&mut self) {
        let mut used: HashMap<u32, u32> = HashMap::from([(0, 0)]);
        let mut sets = vec![LOCAL_SET];
        for (_, _, id) in self.index.with_sources() {
            used.entry(id).or_insert_with(|| {
                sets.push(self.provenance.set(id));
                (sets.len() - 1) as u32
            });
        }
        self.index
            .remap_sources(|id| used.get(&id).copied().unwrap_or(0));
        self.provenance.ids = sets
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, i as u32))
            .collect();
        self.provenance.sets = sets;
    }

    /// `source` lists a stored indicator of `ty` (an append, a listing in a replace).
    /// False: no indicator with `key` is stored.
    pub fn add_source(&mut self, ty: IocType, key: &Key, source: SourceId) -> bool {
        let Some(set) = self.sources_of(key) else {
            return false;
        };
        if set & bit(source) == 0 {
            self.set_sources(ty, key, set | bit(source));
        }
        true
    }

    /// An indicator of `ty` with source-set id `id` left the store.
    pub(super) fn sources_forgotten(&mut self, ty: IocType, id: u32) {
        if id != 0 {
            let set = self.provenance.set(id);
            self.provenance.count_change(ty, Some(set), None);
            self.changes.mark_sources(ty);
        }
    }

    /// The keys of the stored indicators of `ty` that feed `source` (not `local`, which
    /// every `{local}` slot lists without an entry) lists, with their sets.
    pub fn keys_listed_by(&self, ty: IocType, source: SourceId) -> KeyMap<u64> {
        let mut out = KeyMap::default();
        if self.provenance.listed(ty, source) == 0 {
            return out;
        }
        for (key, meta, id) in self.index.with_sources() {
            let set = self.provenance.set(id);
            if set & bit(source) != 0 && meta.loc().ty() == ty {
                out.insert(key, set);
            }
        }
        out
    }

    /// Every stored indicator of `ty` whose sources are not `{local}`, for the committed
    /// provenance file.
    pub fn non_local(&self, ty: IocType) -> Vec<(Key, u64)> {
        self.index
            .with_sources()
            .filter(|(_, meta, _)| meta.loc().ty() == ty)
            .map(|(key, _, id)| (key, self.provenance.set(id)))
            .collect()
    }

    /// Declare a source. A record naming an id or a name taken already changes nothing
    /// (apply never fails on it: `Store::declare_source` checks, one at a time, before it
    /// journals, and replay must reach the same state).
    pub fn declare_source(&mut self, id: SourceId, name: &str, ts: u64) -> bool {
        if self.provenance.info(id).is_some() || self.provenance.id_of(name).is_some() {
            log::warn!("source {name} (id {id}) is declared already; record ignored");
            return false;
        }
        self.restore_source(
            id,
            SourceInfo {
                name: name.into(),
                declared: ts,
            },
        );
        for ty in IocType::ALL {
            self.changes.mark_sources(ty);
        }
        true
    }

    /// Put back a source as a commit recorded it.
    pub fn restore_source(&mut self, id: SourceId, info: SourceInfo) {
        self.provenance.restore(id, info);
    }

    /// Remove a source that lists nothing; one that lists something (a write raced the
    /// `rmdir`) stays, and the caller reports ENOTEMPTY.
    pub fn remove_source(&mut self, id: SourceId) -> bool {
        if id == LOCAL || self.provenance.info(id).is_none() || self.source_lists_any(id) {
            return false;
        }
        self.provenance.names[usize::from(id)] = None;
        for ty in IocType::ALL {
            self.provenance.times[ty][usize::from(id)] = SourceTimes::default();
            self.changes.mark_sources(ty);
        }
        true
    }

    /// Whether `id` lists any stored indicator.
    pub fn source_lists_any(&self, id: SourceId) -> bool {
        IocType::ALL
            .into_iter()
            .any(|ty| self.provenance.listed(ty, id) > 0)
    }

    /// Whether writes by `target`'s source can apply: live and the allowlist always; a
    /// source's files while it is declared.
    pub fn accepts(&self, source: SourceId) -> bool {
        self.provenance.info(source).is_some()
    }

    /// A write by `source` to its `ty` file was applied at `ts`.
    pub fn source_wrote(
        &mut self,
        ty: IocType,
        source: SourceId,
        ts: u64,
        replace: bool,
        lines: u64,
    ) {
        let t = &mut self.provenance.times[ty][usize::from(source)];
        if replace {
            t.last_replace = ts;
        } else {
            t.last_append = ts;
        }
        self.provenance.accepted[usize::from(source)] += lines;
        if source == LOCAL {
            // Its times are in the provenance file: the next commit writes it.
            self.changes.mark_local_write(ty);
        } else {
            self.changes.mark_sources(ty);
        }
    }

    /// Recovery: the provenance a commit recorded for `ty` (keys no longer stored are
    /// skipped: they can't be, the files are of the same commit, but a repair may drop some).
    /// Committed already: nothing to commit again, nothing for views to rebuild.
    pub fn restore_provenance(
        &mut self,
        ty: IocType,
        entries: &[(Key, u64)],
        times: &[(SourceId, SourceTimes)],
    ) {
        for (key, set) in entries {
            if *set != 0 {
                self.assign_sources(ty, key, *set);
            }
        }
        for (id, t) in times {
            self.provenance.set_times(ty, *id, *t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("abuse_ch"));
        assert!(valid_name("a-1"));
        assert!(!valid_name(""));
        assert!(!valid_name("local"));
        assert!(!valid_name("Abuse"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(valid_name(&"a".repeat(64)));
    }

    #[test]
    fn a_full_table_of_sets_is_compacted_to_the_sets_in_use() {
        use crate::store::live::Storage;
        use crate::store::model::{Loc, Meta};
        let ids = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1 << 32));
        let mut st = State::new(7, ids, 4096, &Storage::Memfd).unwrap();
        let ty = IocType::Domain;
        let keys: Vec<Key> = (0..3u32)
            .map(|i| {
                let key = st.key(ty, format!("d{i}.example").as_bytes());
                st.index
                    .insert(key, Meta::new(1, 1, Loc::Block { ty, block: i }));
                key
            })
            .collect();
        st.set_sources(ty, &keys[0], bit(1));
        st.set_sources(ty, &keys[1], bit(2) | LOCAL_SET);
        // Every other id is taken by sets no indicator has any more.
        let mut filler = 1u64 << 40;
        while st.provenance.sets.len() < MAX_SOURCE_SETS {
            st.provenance.intern(filler);
            filler += 2;
        }
        st.set_sources(ty, &keys[2], bit(3));
        assert_eq!(
            st.provenance.sets.len(),
            4,
            "local, the two in use, the new one"
        );
        assert_eq!(st.sources_of(&keys[0]), Some(bit(1)));
        assert_eq!(st.sources_of(&keys[1]), Some(bit(2) | LOCAL_SET));
        assert_eq!(st.sources_of(&keys[2]), Some(bit(3)));
        assert_eq!(
            (st.provenance.listed(ty, 1), st.provenance.listed(ty, 3)),
            (1, 1)
        );
    }

    #[test]
    fn counts_follow_changes() {
        let mut p = Provenance::default();
        let ty = IocType::Ipv4;
        p.count_change(ty, None, Some(bit(3)));
        assert_eq!((p.listed(ty, 3), p.lacking_local(ty)), (1, 1));
        p.count_change(ty, Some(bit(3)), Some(bit(3) | LOCAL_SET | bit(5)));
        assert_eq!(
            (p.listed(ty, 3), p.listed(ty, 5), p.lacking_local(ty)),
            (1, 1, 0)
        );
        p.count_change(ty, Some(bit(3) | LOCAL_SET | bit(5)), None);
        assert_eq!(
            (p.listed(ty, 3), p.listed(ty, 5), p.lacking_local(ty)),
            (0, 0, 0)
        );
        assert_eq!(p.intern(LOCAL_SET), Some(0));
        let a = p.intern(bit(1)).unwrap();
        assert_eq!(p.intern(bit(1)), Some(a));
        assert_eq!(p.set(a), bit(1));
    }
}
