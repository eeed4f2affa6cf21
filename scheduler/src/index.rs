//! Ordered entries grouped by capability set: the matching index.

use std::collections::{BTreeMap, HashMap};

use agent_fsm::Capabilities;

/// Entries (queued tasks, or idle agents) grouped by their capability set and
/// ordered by key inside each group, so that the best entry whose set passes a
/// test is found by looking at the head of each group only.
#[derive(Debug)]
pub(crate) struct GroupedIndex<K, V> {
    groups: HashMap<Capabilities, BTreeMap<K, V>>,
    len: usize,
}

impl<K, V> Default for GroupedIndex<K, V> {
    fn default() -> Self {
        GroupedIndex {
            groups: HashMap::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Clone, V> GroupedIndex<K, V> {
    pub(crate) fn insert(&mut self, capabilities: &Capabilities, key: K, value: V) {
        let group = self.groups.entry(capabilities.clone()).or_default();
        if group.insert(key, value).is_none() {
            self.len += 1;
        }
    }

    pub(crate) fn remove(&mut self, capabilities: &Capabilities, key: &K) -> Option<V> {
        let group = self.groups.get_mut(capabilities)?;
        let removed = group.remove(key);
        if group.is_empty() {
            self.groups.remove(capabilities);
        }
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The smallest key among the groups whose capability set passes `fits`.
    pub(crate) fn best(
        &self,
        fits: impl Fn(&Capabilities) -> bool,
    ) -> Option<(&Capabilities, &K, &V)> {
        self.groups
            .iter()
            .filter(|(caps, _)| fits(caps))
            .filter_map(|(caps, group)| group.first_key_value().map(|(k, v)| (caps, k, v)))
            .min_by(|a, b| a.1.cmp(b.1))
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every entry, group by group.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Capabilities, &K, &V)> + '_ {
        self.groups
            .iter()
            .flat_map(|(caps, group)| group.iter().map(move |(k, v)| (caps, k, v)))
    }
}
