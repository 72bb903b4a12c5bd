//! `status`'s data: per site and environment, the branch head, what the
//! Deployment runs (as berth sees it, its lease's record applied), where the
//! site ships next when that differs, its rollout state and since when, and
//! what `berth promote` would change.

use crate::config::{Config, Site};
use crate::deploy::rollout::{RolloutState, rollout_state};
use crate::pipeline::decide::PromoteChange;
use crate::pipeline::promote::{Row, SideBySide, fill_promote_column};
use crate::pipeline::select::{Shard, every_site, in_views};
use crate::pipeline::sync::Mirrored;
use crate::pipeline::{CommitChoice, connect_cluster, mirror_all};
use crate::ui::Printer;

/// One site's state in one environment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusEntry {
    pub site: String,
    /// The environment (absent in a file without environments).
    pub environment: Option<String>,
    pub branch: String,
    pub branch_head: Option<String>,
    pub deployed_commit: Option<String>,
    pub deployed_image: Option<String>,
    /// The repository the site ships to next (`<registry>/<image>`), when the
    /// running image is from another one: the site's `image` or registry
    /// changed, or berth has not shipped it yet.
    pub ships_to: Option<String>,
    /// `complete`, `progressing` or `failed`.
    pub rollout: Option<String>,
    pub rollout_message: Option<String>,
    /// When the running revision was created (RFC 3339).
    pub deployed_at: Option<String>,
    /// The deployed commit is the branch head.
    pub up_to_date: Option<bool>,
    /// What `berth promote` would change here, from the environment it
    /// promotes from (when that one is shown too).
    pub promote: Option<PromoteChange>,
    pub error: Option<String>,
}

impl StatusEntry {
    /// What makes `status` exit 1, as `kubectl rollout status` does: the
    /// site's last rollout failed (its progress deadline passed), or berth
    /// could not read its state.
    pub fn failed(&self) -> bool {
        self.rollout.as_deref() == Some("failed") || self.error.is_some()
    }
}

impl SideBySide for StatusEntry {
    fn row(&self) -> Row<'_> {
        Row {
            site: &self.site,
            environment: self.environment.as_deref(),
            image: self.deployed_image.as_deref(),
            commit: self.deployed_commit.as_deref(),
        }
    }

    fn set_promote(&mut self, change: Option<PromoteChange>) {
        self.promote = change;
    }
}

/// The named sites' state (all when none) in each of `views` (one per
/// environment shown), side by side; each repo is fetched once for all.
pub async fn statuses(
    views: &[Config],
    names: &[String],
    shard: Option<Shard>,
    printer: &Printer,
) -> anyhow::Result<Vec<StatusEntry>> {
    let selected = in_views(views, names, shard)?;
    let mirrored = mirror_all(
        &views[0],
        &every_site(&selected),
        &CommitChoice::BranchHead,
        2,
        printer,
    )
    .await;
    let mut entries = Vec::new();
    for (config, sites) in &selected {
        entries.extend(status(config, sites, &mirrored).await?);
    }
    fill_promote_column(&views[0], &mut entries);
    Ok(entries)
}

/// Per site: branch head (from `mirrored`), what the Deployment runs, its
/// rollout state.
pub async fn status(
    config: &Config,
    sites: &[&Site],
    mirrored: &Mirrored,
) -> anyhow::Result<Vec<StatusEntry>> {
    let deployer = connect_cluster(config).await?;
    let mut entries = Vec::new();
    for site in sites {
        let repo = config.repo(&site.repo).expect("validated");
        let mut entry = StatusEntry {
            site: site.name.clone(),
            environment: config.environment.clone(),
            branch: repo.branch.clone(),
            branch_head: mirrored[&site.repo].as_ref().ok().map(|s| s.commit.id.clone()),
            deployed_commit: None,
            deployed_image: None,
            ships_to: None,
            rollout: None,
            rollout_message: None,
            deployed_at: None,
            up_to_date: None,
            promote: None,
            error: mirrored[&site.repo].as_ref().err().map(ToString::to_string),
        };
        match deployer.read(&site.deployment).await {
            Ok(deployment) => {
                if let Ok(deployed) = deployer.deployed_of(&deployment, &site.deployment).await {
                    let repository = config.image_repository(site);
                    if deployed.image.is_some() && !deployed.in_repository(&repository) {
                        entry.ships_to = Some(repository);
                    }
                    entry.deployed_commit.clone_from(&deployed.commit);
                    entry.deployed_image = deployed.image;
                }
                let (state, message) = match rollout_state(&deployment) {
                    RolloutState::Complete => ("complete", None),
                    RolloutState::Progressing(message) => ("progressing", Some(message)),
                    RolloutState::Failed(message) => ("failed", Some(message)),
                };
                entry.rollout = Some(state.into());
                entry.rollout_message = message;
                if let Ok(history) = deployer.history_of(&deployment, &site.deployment).await {
                    entry.deployed_at = history.iter().find(|r| r.current).and_then(|r| r.created.clone());
                }
                if let (Some(head), Some(deployed)) = (&entry.branch_head, &entry.deployed_commit) {
                    entry.up_to_date = Some(head == deployed);
                }
            }
            Err(error) => entry.error = Some(error.to_string()),
        }
        entries.push(entry);
    }
    Ok(entries)
}
