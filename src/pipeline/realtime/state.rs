//! What `berth serve` knows of each site, for its page, its JSON and its
//! metrics: what the Deployment runs and since when, the last result, a run
//! in progress, the pending run, and the recent history. Updated from each
//! run's [`SiteReport`] by pure functions, tested below.

use std::collections::{BTreeMap, VecDeque};

use crate::pipeline::{SiteAction, SiteReport};

/// How many past runs each site keeps for the page.
pub const HISTORY: usize = 20;

/// The JSON of `GET /api/v1/sites` (schema: docs/schema/sites.schema.json).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub schema: &'static str,
    /// The environment served (absent in a file without environments).
    pub environment: Option<String>,
    /// When the server started (RFC 3339).
    pub started_at: String,
    /// How many runs are pending, over every site.
    pub queue_depth: usize,
    pub sites: Vec<SiteState>,
    /// The previews this server built, by site and pull request.
    pub previews: Vec<PreviewState>,
}

/// A pull request's preview, as `berth serve` last built it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PreviewState {
    pub site: String,
    pub number: u64,
    pub commit: Option<String>,
    /// Where it is served.
    pub url: Option<String>,
    /// `deployed`, `unchanged`, `no-change`, `refused`, `closed`, `not-found` or `failed`.
    pub result: String,
    pub error: Option<String>,
    /// When its last run ended (RFC 3339).
    pub at: String,
}

/// One site, as `berth serve` last saw it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SiteState {
    pub site: String,
    pub repo: String,
    pub branch: String,
    /// The commit the Deployment serves, and its page on the forge when
    /// berth knows one.
    pub deployed_commit: Option<String>,
    pub deployed_commit_url: Option<String>,
    pub deployed_image: Option<String>,
    /// Since when it serves that commit (RFC 3339).
    pub deployed_since: Option<String>,
    pub last: Option<Run>,
    /// A run in progress: since when, and the commits it answers.
    pub running: Option<Running>,
    /// A run is pending: it starts when the running one ends.
    pub pending: bool,
    /// The commits the pending run answers (deliveries that named one).
    pub pending_commits: Vec<String>,
    /// The last runs, newest first.
    pub history: VecDeque<Run>,
}

/// A run in progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Running {
    pub since: String,
    pub commits: Vec<String>,
}

/// One finished run of a site.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Run {
    /// When it ended (RFC 3339).
    pub at: String,
    /// `deployed`, `unchanged`, `up-to-date`, `failed`, `interrupted`, or
    /// `skipped` (the hinted commits are not in Git: nothing ran).
    pub result: String,
    /// The commit it shipped (or found unchanged).
    pub commit: Option<String>,
    pub image: Option<String>,
    /// Why it failed, or why it was skipped.
    pub error: Option<String>,
    pub seconds: f64,
}

impl SiteState {
    /// The state after a run ended at `at` (RFC 3339) with `report`, having
    /// taken `seconds`.
    pub fn after_run(&mut self, report: &SiteReport, at: &str, seconds: f64) {
        let result = serde_json::to_value(report.action)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        match report.action {
            SiteAction::Deployed => {
                self.deployed_commit.clone_from(&report.commit);
                self.deployed_image.clone_from(&report.image);
                self.deployed_since = Some(at.to_string());
            }
            SiteAction::Unchanged | SiteAction::UpToDate => {
                if report.commit.is_some() && self.deployed_commit != report.commit {
                    self.deployed_commit.clone_from(&report.commit);
                    self.deployed_image.clone_from(&report.image);
                }
            }
            SiteAction::Failed | SiteAction::Interrupted => {}
        }
        self.record(Run {
            at: at.to_string(),
            result,
            commit: report.commit.clone(),
            image: report.image.clone(),
            error: report.error.clone(),
            seconds,
        });
    }

    /// A run that did not start: none of the commits it was asked for is in Git.
    pub fn skipped(&mut self, at: &str, why: &str) {
        self.record(Run {
            at: at.to_string(),
            result: "skipped".into(),
            commit: None,
            image: None,
            error: Some(why.to_string()),
            seconds: 0.0,
        });
    }

    fn record(&mut self, run: Run) {
        self.running = None;
        self.last = Some(run.clone());
        self.history.push_front(run);
        self.history.truncate(HISTORY);
    }
}

/// Every site's state, by name.
pub type States = BTreeMap<String, SiteState>;

#[cfg(test)]
mod tests {
    use super::*;

    fn report(action: SiteAction, commit: &str) -> SiteReport {
        SiteReport {
            action,
            commit: Some(commit.into()),
            image: Some(format!("registry/www:{commit}@sha256:1")),
            ..SiteReport::new("www")
        }
    }

    #[test]
    fn a_deploy_moves_what_is_served_and_a_failure_does_not() {
        let mut state = SiteState::default();
        state.after_run(&report(SiteAction::Deployed, "a"), "2026-12-06T10:00:00Z", 3.0);
        assert_eq!(state.deployed_commit.as_deref(), Some("a"));
        assert_eq!(state.deployed_since.as_deref(), Some("2026-12-06T10:00:00Z"));
        let failed = SiteReport {
            error: Some("rollout of b failed".into()),
            ..report(SiteAction::Failed, "b")
        };
        state.after_run(&failed, "2026-12-06T10:05:00Z", 60.0);
        assert_eq!(
            state.deployed_commit.as_deref(),
            Some("a"),
            "a failed run serves the old"
        );
        let last = state.last.clone().unwrap();
        assert_eq!(last.result, "failed");
        assert_eq!(last.error.as_deref(), Some("rollout of b failed"));
        state.after_run(&report(SiteAction::Unchanged, "a"), "2026-12-06T10:06:00Z", 0.5);
        assert_eq!(
            state.deployed_since.as_deref(),
            Some("2026-12-06T10:00:00Z"),
            "unchanged keeps since"
        );
        assert_eq!(state.history.len(), 3);
        assert_eq!(state.history[0].result, "unchanged", "newest first");
        state.skipped("2026-12-06T10:07:00Z", "commit c is not in Git");
        assert_eq!(state.last.as_ref().unwrap().result, "skipped");
    }

    #[test]
    fn the_history_keeps_the_last_runs_only() {
        let mut state = SiteState::default();
        for n in 0..(HISTORY + 5) {
            state.after_run(&report(SiteAction::Unchanged, "a"), &format!("t{n}"), 0.1);
        }
        assert_eq!(state.history.len(), HISTORY);
        assert_eq!(state.history[0].at, format!("t{}", HISTORY + 4));
    }
}
