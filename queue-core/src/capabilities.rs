//! A sorted, de-duplicated set of capability names: what an agent offers and
//! what a task needs.

use std::borrow::Borrow;
use std::sync::Arc;

/// What an agent can do, or what a task needs: a set of names compared by exact
/// string match. Cloning is cheap (a reference-count increment).
///
/// The one capability type of the crate family: [`Task::needed_capabilities`]
/// returns it, agents declare one, and the scheduler matches them with
/// [`Capabilities::is_subset_of`].
///
/// [`Task::needed_capabilities`]: crate::Task::needed_capabilities
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

    /// The names, sorted.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// The names, sorted.
    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the set is empty (any agent qualifies for such a task).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True if `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
    }

    /// True when every name of `self` is in `other`: a task needing `self` may go
    /// to an agent offering `other`. The one subset rule of the crate family.
    pub fn is_subset_of(&self, other: &Capabilities) -> bool {
        is_subset(&self.0, &other.0)
    }
}

/// The names, sorted, as a slice.
impl std::ops::Deref for Capabilities {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

/// Lets a set of interned capability sets be searched by a sorted name list.
impl Borrow<[String]> for Capabilities {
    fn borrow(&self) -> &[String] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Capabilities {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// True when every name of the sorted list `needed` is in the sorted list `offered`.
fn is_subset(needed: &[String], offered: &[String]) -> bool {
    let mut theirs = offered.iter();
    needed.iter().all(|mine| theirs.by_ref().any(|t| t == mine))
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
