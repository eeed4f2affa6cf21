//! Ordered entries grouped by a set of capability names: the matching index.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Entries (queued tasks, idle agents) grouped by their capability set `G` and
/// ordered by key `K` inside each group, so that the best entry whose set passes a
/// test is found by looking at the head of each group only: one lookup costs
/// O(number of groups + log n).
#[derive(Debug)]
pub(crate) struct GroupedIndex<G, K, V> {
    groups: HashMap<G, BTreeMap<K, V>>,
    len: usize,
}

impl<G, K, V> Default for GroupedIndex<G, K, V> {
    fn default() -> Self {
        GroupedIndex {
            groups: HashMap::new(),
            len: 0,
        }
    }
}

impl<G: Hash + Eq + Clone, K: Ord + Clone, V> GroupedIndex<G, K, V> {
    /// Adds an entry to the group `group`.
    pub(crate) fn insert(&mut self, group: &G, key: K, value: V) {
        let entries = self.groups.entry(group.clone()).or_default();
        if entries.insert(key, value).is_none() {
            self.len += 1;
        }
    }

    /// Removes an entry; empty groups disappear.
    pub(crate) fn remove(&mut self, group: &G, key: &K) -> Option<V> {
        let entries = self.groups.get_mut(group)?;
        let removed = entries.remove(key);
        if entries.is_empty() {
            self.groups.remove(group);
        }
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The entry with the smallest key among the groups that pass `fits`.
    pub(crate) fn best(&self, fits: impl Fn(&G) -> bool) -> Option<(&G, &K, &V)> {
        self.groups
            .iter()
            .filter(|(group, _)| fits(group))
            .filter_map(|(group, entries)| entries.first_key_value().map(|(k, v)| (group, k, v)))
            .min_by(|a, b| a.1.cmp(b.1))
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every group with its number of entries (unordered).
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&G, usize)> + '_ {
        self.groups
            .iter()
            .map(|(group, entries)| (group, entries.len()))
    }

    /// Every entry, group by group (unordered across groups).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&G, &K, &V)> + '_ {
        self.groups
            .iter()
            .flat_map(|(group, entries)| entries.iter().map(move |(k, v)| (group, k, v)))
    }
}
