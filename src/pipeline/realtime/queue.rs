//! Which runs `berth serve` starts, per site: one run at a time, and while it
//! runs any number of further hints leave one pending run, which starts when
//! the running one ends and ships the branch head as it is then. A pure
//! state machine, tested below; [`super`] drives it.

use std::collections::HashMap;
use std::time::Instant;

/// What a run is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Ship the site's branch head.
    Ship,
    /// Build and deploy pull request `number`'s preview at the hint's commit.
    Preview { number: u64 },
    /// Close pull request `number`'s preview.
    ClosePreview { number: u64, merged: bool },
}

/// Why a run was asked for: a delivery's hint (a commit of a repo, perhaps),
/// or berth's own poll or start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub wanted: Wanted,
    /// The `[[repo]]` the hint is about.
    pub repo: String,
    /// The commit the delivery named (for its commit status); none from a poll.
    pub commit: Option<String>,
    /// When the delivery arrived (or the poll saw the change).
    pub arrived: Instant,
}

/// What to do with a hint for a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// The site was idle: start a run for these hints.
    Start(Vec<Hint>),
    /// A run is going: the hint waits in the site's one pending run.
    Pending,
}

#[derive(Debug, Default)]
struct Slot {
    running: bool,
    /// The hints the next run answers; empty when none is pending.
    pending: Vec<Hint>,
    /// Whether a run is pending (a poll's hint may carry no commit, but
    /// still asks for a run).
    wanted: bool,
}

/// The runs of every site: running, pending, or neither.
#[derive(Debug, Default)]
pub struct Queue {
    slots: HashMap<String, Slot>,
}

impl Queue {
    /// A hint for `site`.
    pub fn offer(&mut self, site: &str, hint: Hint) -> Offer {
        let slot = self.slots.entry(site.to_string()).or_default();
        if slot.running {
            slot.pending.push(hint);
            slot.wanted = true;
            Offer::Pending
        } else {
            slot.running = true;
            Offer::Start(vec![hint])
        }
    }

    /// `site`'s run ended: the hints of the pending run to start now, or
    /// `None` when none is pending (the site is idle again).
    pub fn finished(&mut self, site: &str) -> Option<Vec<Hint>> {
        let slot = self.slots.get_mut(site)?;
        if slot.wanted {
            slot.wanted = false;
            Some(std::mem::take(&mut slot.pending))
        } else {
            slot.running = false;
            None
        }
    }

    /// Whether a run of `site` is going.
    pub fn running(&self, site: &str) -> bool {
        self.slots.get(site).is_some_and(|slot| slot.running)
    }

    /// Whether a run of `site` is pending.
    pub fn pending(&self, site: &str) -> bool {
        self.slots.get(site).is_some_and(|slot| slot.wanted)
    }

    /// How many runs are pending, over every site.
    pub fn depth(&self) -> usize {
        self.slots.values().filter(|slot| slot.wanted).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(commit: &str) -> Hint {
        Hint {
            wanted: Wanted::Ship,
            repo: "website".into(),
            commit: Some(commit.into()),
            arrived: Instant::now(),
        }
    }

    #[test]
    fn an_idle_site_starts_at_once_and_a_burst_leaves_one_pending_run() {
        let mut queue = Queue::default();
        let first = hint("a");
        assert_eq!(queue.offer("www", first.clone()), Offer::Start(vec![first]));
        for commit in ["b", "c", "d", "e"] {
            assert_eq!(queue.offer("www", hint(commit)), Offer::Pending);
        }
        assert!(queue.running("www"));
        assert_eq!(queue.depth(), 1, "four hints, one pending run");
        let next = queue.finished("www").expect("the pending run starts");
        let commits: Vec<_> = next.iter().filter_map(|h| h.commit.as_deref()).collect();
        assert_eq!(commits, ["b", "c", "d", "e"], "it answers every hint it took");
        assert_eq!(queue.depth(), 0);
        assert!(queue.running("www"), "the pending run is the running one now");
        assert_eq!(queue.finished("www"), None);
        assert!(!queue.running("www"));
        assert!(matches!(queue.offer("www", hint("f")), Offer::Start(_)));
    }

    #[test]
    fn sites_queue_apart_and_a_poll_hint_without_a_commit_still_asks_for_a_run() {
        let mut queue = Queue::default();
        assert!(matches!(queue.offer("www", hint("a")), Offer::Start(_)));
        assert!(matches!(queue.offer("docs", hint("a")), Offer::Start(_)));
        let poll = Hint {
            wanted: Wanted::Ship,
            repo: "website".into(),
            commit: None,
            arrived: Instant::now(),
        };
        assert_eq!(queue.offer("www", poll), Offer::Pending);
        assert!(queue.pending("www") && !queue.pending("docs"));
        assert_eq!(queue.finished("docs"), None);
        let next = queue.finished("www").unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].commit, None);
        assert_eq!(queue.finished("unknown"), None);
    }
}
