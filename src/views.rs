//! Read-only views: `plan`, `status`, `history`; shards; the run log.
//!
//! 1. `plan`: what `run` would do per site (head commit, image present or not,
//!    deployed commit, action), changing nothing in the cluster or registry.
//! 2. `status`: per site, branch head, deployed commit and image, rollout state,
//!    when deployed.
//! 3. `history`: a site's past deployments from its ReplicaSet revisions and from
//!    berth's own run log (`<state_dir>/runs.jsonl`).
//! 4. Shards: `--shard I/N` splits sites deterministically, keeping sites built
//!    by one generator run together.

use std::io::Write as _;

use sha2::{Digest, Sha256};

use crate::config::{Config, Site};
use crate::deploy::rollout::{RolloutState, rollout_state};
use crate::deploy::{self, Deployer};
use crate::output::{Printer, table};
use crate::pipeline::{self, Revision, RunReport, SetupError, Synced};
use crate::push;
use crate::reference;

/// One of N shards, 1-based: `2/4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not I/N (for example 2/4)"))?;
        let index: u32 = index.parse().map_err(|_| format!("`{index}` is not a number"))?;
        let count: u32 = count.parse().map_err(|_| format!("`{count}` is not a number"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!(
                "shard {index}/{count} does not exist: I must be between 1 and N"
            ));
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// Whether `site` belongs to this shard. Sites that share a generator run
    /// (repo, folder, command) always fall in the same shard.
    pub fn contains(self, site: &Site) -> bool {
        let key = format!(
            "{}\0{}\0{}",
            site.repo,
            site.path,
            site.build.as_deref().unwrap_or("")
        );
        let digest = Sha256::digest(key.as_bytes());
        let value = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        value % self.count == self.index - 1
    }
}

/// The sites named (all when none), narrowed to a shard.
pub fn select<'c>(
    config: &'c Config,
    names: &[String],
    shard: Option<Shard>,
) -> Result<Vec<&'c Site>, SetupError> {
    let mut sites = pipeline::select(config, names)?;
    if let Some(shard) = shard {
        sites.retain(|site| shard.contains(site));
    }
    Ok(sites)
}

/// What `run` would do for a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanAction {
    /// The Deployment runs this source: nothing to do.
    Unchanged,
    /// The Deployment's image serves this commit's files: `run` records the
    /// commit, without a build or a rollout; `reason` says which image.
    UpToDate,
    /// The image exists in the registry: deploy it without building.
    Deploy,
    /// Build, push and deploy.
    BuildAndDeploy,
    /// The head is older than the deployed commit; `run` would refuse.
    RefuseOlder,
    /// Something could not be read; `error` says what.
    Error,
}

/// One site of a plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanEntry {
    pub site: String,
    pub repo: String,
    pub branch: String,
    pub head_commit: Option<String>,
    pub source_digest: Option<String>,
    /// `<registry>/<image>:<commit>`.
    pub image: Option<String>,
    /// Whether the registry holds that tag; `null` when it could not be asked.
    pub image_present: Option<bool>,
    pub deployed_commit: Option<String>,
    pub deployed_image: Option<String>,
    pub action: PlanAction,
    /// Why the site is up to date, as `run` would say it.
    pub reason: Option<String>,
    pub error: Option<String>,
}

/// What `run` would do for `sites`, without changing anything.
pub async fn plan(config: &Config, sites: &[&Site], printer: &Printer) -> anyhow::Result<Vec<PlanEntry>> {
    let deployer = pipeline::connect_cluster(config).await?;
    let docker = match pipeline::connect_docker().await {
        Ok(docker) => Some(docker),
        Err(error) => {
            printer.warning(&format!("{error}; registry presence is unknown"));
            None
        }
    };
    let auth = match pipeline::registry_auth(config).await {
        Ok(auth) => Some(auth),
        Err(error) => {
            printer.warning(&format!("{error:#}; registry presence is unknown"));
            None
        }
    };
    let mirrored = pipeline::mirror_all(config, sites, &Revision::BranchHead, 2, printer).await;
    // Whether a site's files changed is known only from them: generators run.
    let generator = pipeline::Generator::new(config, printer)?;
    let mut entries = Vec::new();
    for site in sites {
        let repo = config.repo(&site.repo).expect("validated");
        let mut entry = PlanEntry {
            site: site.name.clone(),
            repo: repo.name.clone(),
            branch: repo.branch.clone(),
            head_commit: None,
            source_digest: None,
            image: None,
            image_present: None,
            deployed_commit: None,
            deployed_image: None,
            action: PlanAction::Error,
            reason: None,
            error: None,
        };
        let sources = Sources {
            deployer: &deployer,
            generator: &generator,
            docker: docker.as_ref(),
            auth: auth.as_ref(),
        };
        if let Err(error) = plan_site(config, site, &mirrored[&site.repo], &sources, &mut entry).await {
            entry.error = Some(format!("{error:#}"));
            entry.action = PlanAction::Error;
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// What `plan` reads a site's state from: the cluster, the site's files (its
/// generator run), and the registry when the Engine and credentials are there.
struct Sources<'a> {
    deployer: &'a Deployer,
    generator: &'a pipeline::Generator<'a>,
    docker: Option<&'a bollard::Docker>,
    auth: Option<&'a push::RegistryAuth>,
}

async fn plan_site(
    config: &Config,
    site: &Site,
    synced: &Result<Synced, String>,
    sources: &Sources<'_>,
    entry: &mut PlanEntry,
) -> anyhow::Result<()> {
    let Sources {
        deployer,
        generator,
        docker,
        auth,
    } = *sources;
    let synced = synced.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    let commit = synced.commit.id.clone();
    let tree = synced.trees[&site.path].clone().map_err(|e| anyhow::anyhow!(e))?;
    let digest = pipeline::source_digest(config, site, &tree)?;
    let image = format!(
        "{}:{}",
        config.image_repository(site),
        reference::commit_tag(&commit)
    );
    entry.head_commit = Some(commit.clone());
    entry.source_digest = Some(digest.clone());
    entry.image = Some(image.clone());
    let deployed = deployer.deployed(&site.deployment).await?;
    entry.deployed_commit.clone_from(&deployed.commit);
    entry.deployed_image.clone_from(&deployed.image);
    if let (Some(docker), Some(auth)) = (docker, auth) {
        entry.image_present = push::registry_digest(docker, &image, auth)
            .await
            .ok()
            .map(|d| d.is_some());
    }
    entry.action = if deployed.runs_source(&config.image_repository(site), &digest) {
        PlanAction::Unchanged
    } else if synced.older_than(&commit, &deployed).await.is_some() {
        PlanAction::RefuseOlder
    } else if serves_files(generator, site, synced, &deployed).await? {
        entry.reason = Some(pipeline::same_files_reason(&deployed));
        PlanAction::UpToDate
    } else if entry.image_present == Some(true) {
        PlanAction::Deploy
    } else {
        PlanAction::BuildAndDeploy
    };
    Ok(())
}

/// Whether the Deployment's image serves the files `site` has at `synced`,
/// as `run` decides it ([`Deployed::serves_files`]); the generator runs only
/// when the Deployment records what its image serves.
async fn serves_files(
    generator: &pipeline::Generator<'_>,
    site: &Site,
    synced: &Synced,
    deployed: &crate::deploy::Deployed,
) -> anyhow::Result<bool> {
    let Some(recorded) = deployed.content_digest.as_deref() else {
        return Ok(false);
    };
    if !deployed.serves_files(recorded) {
        return Ok(false);
    }
    Ok(deployed.serves_files(&generator.content(site, synced).await?.digest))
}

pub fn plan_table(entries: &[PlanEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.site.clone(),
                e.head_commit.as_deref().map_or("-", reference::short).to_string(),
                match e.image_present {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "?".into(),
                },
                e.deployed_commit
                    .as_deref()
                    .map_or("-", reference::short)
                    .to_string(),
                action_word(e.action).to_string(),
                e.error
                    .clone()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ]
        })
        .collect();
    table(&["SITE", "HEAD", "IMAGE", "DEPLOYED", "ACTION", "ERROR"], &rows)
}

fn action_word(action: PlanAction) -> &'static str {
    match action {
        PlanAction::Unchanged => "unchanged",
        PlanAction::UpToDate => "up to date",
        PlanAction::Deploy => "deploy",
        PlanAction::BuildAndDeploy => "build+deploy",
        PlanAction::RefuseOlder => "refuse (older)",
        PlanAction::Error => "error",
    }
}

/// One site's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusEntry {
    pub site: String,
    pub branch: String,
    pub branch_head: Option<String>,
    pub deployed_commit: Option<String>,
    pub deployed_image: Option<String>,
    /// `complete`, `progressing` or `failed`.
    pub rollout: Option<String>,
    pub rollout_message: Option<String>,
    /// When the running revision was created (RFC 3339).
    pub deployed_at: Option<String>,
    /// The deployed commit is the branch head.
    pub up_to_date: Option<bool>,
    pub error: Option<String>,
}

/// Per site: branch head, what the Deployment runs, its rollout state.
pub async fn status(config: &Config, sites: &[&Site], printer: &Printer) -> anyhow::Result<Vec<StatusEntry>> {
    let deployer = pipeline::connect_cluster(config).await?;
    let mirrored = pipeline::mirror_all(config, sites, &Revision::BranchHead, 2, printer).await;
    let mut entries = Vec::new();
    for site in sites {
        let repo = config.repo(&site.repo).expect("validated");
        let mut entry = StatusEntry {
            site: site.name.clone(),
            branch: repo.branch.clone(),
            branch_head: mirrored[&site.repo].as_ref().ok().map(|s| s.commit.id.clone()),
            deployed_commit: None,
            deployed_image: None,
            rollout: None,
            rollout_message: None,
            deployed_at: None,
            up_to_date: None,
            error: mirrored[&site.repo].as_ref().err().cloned(),
        };
        match deployer.read(&site.deployment).await {
            Ok(deployment) => {
                if let Ok(deployed) = deployer.deployed_of(&deployment, &site.deployment).await {
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
                if let Ok(history) = deployer.history(&site.deployment).await {
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

pub fn status_table(entries: &[StatusEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.site.clone(),
                e.branch_head.as_deref().map_or("-", reference::short).to_string(),
                e.deployed_commit
                    .as_deref()
                    .map_or("-", reference::short)
                    .to_string(),
                e.rollout.clone().unwrap_or_else(|| "-".into()),
                e.deployed_at.clone().unwrap_or_else(|| "-".into()),
                e.deployed_image
                    .clone()
                    .unwrap_or_else(|| e.error.clone().unwrap_or_else(|| "-".into())),
            ]
        })
        .collect();
    table(&["SITE", "HEAD", "DEPLOYED", "ROLLOUT", "SINCE", "IMAGE"], &rows)
}

/// A line of berth's run log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LogEntry {
    pub time: String,
    pub command: String,
    pub site: String,
    pub commit: Option<String>,
    pub image: Option<String>,
    pub action: String,
    pub error: Option<String>,
}

/// Appends one line per site of `report` to `<state_dir>/runs.jsonl`.
pub fn append_log(config: &Config, command: &str, report: &RunReport) -> std::io::Result<()> {
    std::fs::create_dir_all(&config.state_dir)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.state_dir.join("runs.jsonl"))?;
    let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut text = String::new();
    for site in &report.sites {
        let entry = LogEntry {
            time: time.clone(),
            command: command.to_string(),
            site: site.site.clone(),
            commit: site.commit.clone(),
            image: site.image.clone(),
            action: serde_json::to_value(site.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            error: site
                .error
                .as_ref()
                .map(|e| e.lines().next().unwrap_or_default().to_string()),
        };
        text.push_str(&serde_json::to_string(&entry).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    file.write_all(text.as_bytes())
}

fn read_log(config: &Config, site: &str) -> Vec<LogEntry> {
    let Ok(text) = std::fs::read_to_string(config.state_dir.join("runs.jsonl")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<LogEntry>(line).ok())
        .filter(|entry| entry.site == site)
        .collect()
}

/// A site's history: the Deployment's revisions and berth's run log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct History {
    pub site: String,
    pub revisions: Vec<deploy::Revision>,
    pub runs: Vec<LogEntry>,
}

pub async fn history(config: &Config, site: &Site) -> anyhow::Result<History> {
    let deployer = pipeline::connect_cluster(config).await?;
    let revisions = deployer.history(&site.deployment).await?;
    Ok(History {
        site: site.name.clone(),
        revisions,
        runs: read_log(config, &site.name),
    })
}

pub fn history_text(history: &History) -> String {
    let rows: Vec<Vec<String>> = history
        .revisions
        .iter()
        .map(|r| {
            vec![
                format!("{}{}", r.revision, if r.current { " *" } else { "" }),
                r.commit.as_deref().map_or("-", reference::short).to_string(),
                r.created.clone().unwrap_or_else(|| "-".into()),
                r.change_cause.clone().unwrap_or_else(|| "-".into()),
                r.image.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut text = table(&["REVISION", "COMMIT", "CREATED", "CAUSE", "IMAGE"], &rows);
    if !history.runs.is_empty() {
        text.push('\n');
        let rows: Vec<Vec<String>> = history
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.time.clone(),
                    r.command.clone(),
                    r.commit.as_deref().map_or("-", reference::short).to_string(),
                    r.action.clone(),
                    r.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        text.push_str(&table(&["RUN", "COMMAND", "COMMIT", "RESULT", "ERROR"], &rows));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_reject_nonsense() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert!("0/4".parse::<Shard>().is_err());
        assert!("5/4".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }
}
