//! The idle agents that can be offered work, grouped by their capabilities.

use std::collections::{BTreeMap, HashMap};

use coordinator_queue::{AgentId, Capabilities};

/// Ordering of idle agents: responsive before unresponsive, then idle longest first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct IdleKey {
    pub(crate) unresponsive: bool,
    pub(crate) idle_since_ms: u64,
    pub(crate) seq: u64,
}

/// Idle agents grouped by their capability set and ordered by [`IdleKey`]
/// inside each group, so that the best agent able to take a task is found by
/// looking at the head of each group only: O(distinct sets + log n). The queue
/// indexes its queued tasks the same way.
#[derive(Debug, Default)]
pub(crate) struct IdleAgents {
    groups: HashMap<Capabilities, BTreeMap<IdleKey, AgentId>>,
}

impl IdleAgents {
    /// Adds an agent offering `capabilities`.
    pub(crate) fn insert(&mut self, capabilities: &Capabilities, key: IdleKey, agent: AgentId) {
        self.groups
            .entry(capabilities.clone())
            .or_default()
            .insert(key, agent);
    }

    /// Removes an agent; empty groups disappear.
    pub(crate) fn remove(&mut self, capabilities: &Capabilities, key: &IdleKey) {
        if let Some(agents) = self.groups.get_mut(capabilities) {
            agents.remove(key);
            if agents.is_empty() {
                self.groups.remove(capabilities);
            }
        }
    }

    /// The best agent among those whose capabilities pass `fits`.
    pub(crate) fn best(&self, fits: impl Fn(&Capabilities) -> bool) -> Option<&AgentId> {
        self.groups
            .iter()
            .filter(|(capabilities, _)| fits(capabilities))
            .filter_map(|(_, agents)| agents.first_key_value())
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, agent)| agent)
    }

    /// Every idle agent with its key (unordered across groups).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&IdleKey, &AgentId)> + '_ {
        self.groups.values().flat_map(|agents| agents.iter())
    }
}
