//! A sorted, de-duplicated set of capability names.

use std::sync::Arc;

/// What an agent can do, or what a task needs: a set of names compared by exact
/// string match. Cloning is cheap.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Capabilities(Arc<[String]>);

impl Capabilities {
    /// The set of the given names (sorted, duplicates and empty names dropped).
    pub fn new<I, S>(names: I) -> Capabilities
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = names
            .into_iter()
            .map(Into::into)
            .filter(|n| !n.is_empty())
            .collect();
        names.sort_unstable();
        names.dedup();
        Capabilities(names.into())
    }

    /// Wraps a list that is already sorted and free of duplicates (as
    /// [`coordinator_queue::Task::needed_capabilities`] is) without copying it.
    pub fn from_sorted(names: Arc<[String]>) -> Capabilities {
        debug_assert!(names.windows(2).all(|w| w[0] < w[1]));
        Capabilities(names)
    }

    /// The names, sorted.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// True when the set is empty (any agent qualifies for such a task).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when every name of `self` is in `other` (the one subset rule of the
    /// workspace, [`coordinator_queue::is_subset`], over these sorted lists).
    pub fn is_subset_of(&self, other: &Capabilities) -> bool {
        coordinator_queue::is_subset(&self.0, &other.0)
    }
}

/// A list of names, sorted.
#[cfg(feature = "serde")]
impl serde::Serialize for Capabilities {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.names())
    }
}

/// Any list of names, read as the set [`Capabilities::new`] makes of it.
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Capabilities {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = <Vec<String> as serde::Deserialize>::deserialize(deserializer)?;
        Ok(Capabilities::new(names))
    }
}
