//! A task's description or metadata: its text in memory, or only its length
//! when the text is large and left in storage.

use std::sync::Arc;

/// The text of a task's description or of its metadata.
///
/// The [`Queue`](crate::Queue) keeps a text longer than
/// [`QueueConfig::max_inline_payload_bytes`](crate::QueueConfig) out of memory:
/// the record it holds says only how long the stored text is, so a queued task
/// costs about the same whatever it carries. The records it emits carry the
/// text whenever it has it (at submit, and at a retry from the dead letter); a
/// [`Payload::Stored`] in an emitted record means "unchanged: keep the text
/// already stored". Whoever must send the text (a `task_assign`) reads it back
/// from storage.
///
/// With the `serde` feature, a text is a JSON string and a stored one
/// `{"stored_bytes": N}`.
///
/// Exhaustive on purpose: a reader must handle both the text and its absence.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(untagged)
)]
pub enum Payload {
    /// The text.
    Inline(Arc<str>),
    /// Only in storage.
    Stored {
        /// Length of the stored text in bytes.
        #[cfg_attr(feature = "serde", serde(rename = "stored_bytes"))]
        len: usize,
    },
}

impl Payload {
    /// Length of the text in bytes, whether it is in memory or not.
    pub fn len(&self) -> usize {
        match self {
            Payload::Inline(text) => text.len(),
            Payload::Stored { len } => *len,
        }
    }

    /// True for an empty text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text, if it is in memory.
    pub fn as_inline(&self) -> Option<&str> {
        match self {
            Payload::Inline(text) => Some(text),
            Payload::Stored { .. } => None,
        }
    }

    /// True when only storage holds the text.
    pub fn is_stored(&self) -> bool {
        matches!(self, Payload::Stored { .. })
    }

    /// Drops the text from memory if it is longer than `max_inline_bytes`.
    pub(crate) fn elide(&mut self, max_inline_bytes: usize) {
        if let Payload::Inline(text) = self {
            if text.len() > max_inline_bytes {
                *self = Payload::Stored { len: text.len() };
            }
        }
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Payload {
        Payload::Inline(Arc::from(text))
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Payload {
        Payload::Inline(Arc::from(text))
    }
}
