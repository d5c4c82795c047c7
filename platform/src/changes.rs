//! Which revisions changed: a version that wakes whoever follows it, with a short journal of
//! the revision each version was about, so a follower with 10,000 revisions looks at the one
//! that changed instead of all of them.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::routing::RevisionKey;

/// How many changes are remembered; a follower further behind looks at everything.
const JOURNAL_LEN: usize = 4096;

/// A change signal naming the revisions that changed.
#[derive(Debug)]
pub struct RevisionChanges {
    version: watch::Sender<u64>,
    journal: Mutex<Journal>,
}

#[derive(Debug, Default)]
struct Journal {
    entries: VecDeque<(u64, RevisionKey)>,
    /// Versions at or below this are not in `entries`.
    floor: u64,
}

impl Default for RevisionChanges {
    fn default() -> Self {
        Self {
            version: watch::channel(0).0,
            journal: Mutex::default(),
        }
    }
}

impl RevisionChanges {
    /// Nothing changed yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `key` changed and wakes followers.
    pub fn touch(&self, key: &RevisionKey) {
        let mut journal = self.journal();
        let version = *self.version.borrow() + 1;
        journal.entries.push_back((version, key.clone()));
        while journal.entries.len() > JOURNAL_LEN {
            if let Some((v, _)) = journal.entries.pop_front() {
                journal.floor = v;
            }
        }
        self.version.send_replace(version);
    }

    /// Wakes on every change; its value is the version to pass to [`RevisionChanges::since`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// The revisions that changed after version `seen` (each once), or `None` when the
    /// journal no longer reaches back that far.
    pub fn since(&self, seen: u64) -> Option<Vec<RevisionKey>> {
        let journal = self.journal();
        if seen < journal.floor {
            return None;
        }
        let mut keys: Vec<RevisionKey> = journal
            .entries
            .iter()
            .filter(|(v, _)| *v > seen)
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        keys.dedup();
        Some(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_learn_each_changed_revision_once_or_to_look_at_all() {
        let changes = RevisionChanges::new();
        let (a, b) = (RevisionKey::new("d", "a"), RevisionKey::new("d", "b"));
        assert_eq!(changes.since(0), Some(vec![]));
        changes.touch(&a);
        let seen = changes.version();
        changes.touch(&b);
        changes.touch(&a);
        assert_eq!(changes.since(0), Some(vec![a.clone(), b.clone()]));
        assert_eq!(changes.since(seen), Some(vec![a.clone(), b.clone()]));
        assert_eq!(changes.since(changes.version()), Some(vec![]));
        for _ in 0..JOURNAL_LEN {
            changes.touch(&b);
        }
        assert_eq!(
            changes.since(seen),
            None,
            "a forgotten change must mean: look at all"
        );
        assert_eq!(changes.since(changes.version() - 1), Some(vec![b]));
    }
}
