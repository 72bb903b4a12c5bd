//! A site's past deployments in one environment: its Deployment's ReplicaSet
//! revisions and the lines of berth's run log about it ([`super::run_log`]).

use crate::config::{Config, Site};
use crate::deploy;
use crate::pipeline::connect_cluster;
use crate::pipeline::run_log::{self, LogEntry};

/// A site's history: the Deployment's revisions and berth's run log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct History {
    pub site: String,
    pub environment: Option<String>,
    pub revisions: Vec<deploy::Revision>,
    pub runs: Vec<LogEntry>,
}

/// `site`'s history in `config`'s environment.
pub async fn history(config: &Config, site: &Site) -> anyhow::Result<History> {
    let deployer = connect_cluster(config).await?;
    let revisions = deployer.history(&site.deployment).await?;
    Ok(History {
        site: site.name.clone(),
        environment: config.environment.clone(),
        revisions,
        runs: run_log::read(config, &site.name),
    })
}
