//! `plan`'s data: what `run` would do per site (head commit, image present or
//! not, deployed commit, action and why), changing nothing in the cluster or
//! the registry. It decides through [`super::decide`], as `run` does; a
//! site's generator runs only when its Deployment records what it serves.
//! Its preflight is `run`'s ([`crate::deploy::preflight::preflight`]): the
//! same findings, as warnings and in the JSON.

use std::sync::Arc;

use crate::config::{Config, Site};
use crate::deploy::preflight::{Finding, preflight};
use crate::deploy::rollout::rollout_state;
use crate::deploy::{Deployed, Deployer};
use crate::pipeline::decide::{self, Check, PromoteChange};
use crate::pipeline::promote::{Row, SideBySide, fill_promote_column};
use crate::pipeline::select::{Shard, every_site, in_views};
use crate::pipeline::sync::{Mirrored, SyncError};
use crate::pipeline::{self, CommitChoice, Generator, Synced};
use crate::reference;
use crate::registry;
use crate::ui::Printer;

/// The plan of the named sites (all when none, narrowed to `shard`) in each
/// of `views` (one per environment shown), side by side: each repo is
/// fetched, and each generator run, once for all of them.
pub async fn plans(
    views: &[Config],
    names: &[String],
    shard: Option<Shard>,
    printer: &Printer,
) -> anyhow::Result<Vec<PlanEntry>> {
    let selected = in_views(views, names, shard)?;
    let docker = match pipeline::connect_docker().await {
        Ok(docker) => Some(docker),
        Err(error) => {
            printer.warning(&format!("{error}; registry presence is unknown"));
            None
        }
    };
    let shared = Shared {
        docker,
        mirrored: pipeline::mirror_all(
            &views[0],
            &every_site(&selected),
            &CommitChoice::BranchHead,
            2,
            printer,
        )
        .await,
        generator: Generator::new(&views[0], printer)?,
    };
    let mut entries = Vec::new();
    for (config, sites) in &selected {
        entries.extend(plan(config, sites, &shared, printer).await?);
    }
    fill_promote_column(&views[0], &mut entries);
    Ok(entries)
}

/// What `run` would do for a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanAction {
    /// The Deployment runs this source: nothing to do.
    Unchanged,
    /// The Deployment runs this source but has not rolled it out (a run
    /// before stopped mid-rollout): `run` waits for it, or rolls back.
    Resume,
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
    /// The environment (absent in a file without environments).
    pub environment: Option<String>,
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
    /// Why the site is up to date, or ships although its files may be the
    /// same ("image moved from A to B"), as `run` would say it.
    pub reason: Option<String>,
    /// What `berth promote` would change here, from the environment it
    /// promotes from (when that one is shown too).
    pub promote: Option<PromoteChange>,
    /// What `run`'s preflight would warn about (a Helm release that would
    /// undo the image, a shape that loses requests).
    pub preflight: Vec<Finding>,
    pub error: Option<String>,
}

impl SideBySide for PlanEntry {
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

/// What every environment's plan reads alike: the Engine (when it
/// answers), the mirrors at their branch heads, the generator's runs.
pub struct Shared<'a> {
    pub docker: Option<bollard::Docker>,
    pub mirrored: Mirrored,
    pub generator: Generator<'a>,
}

/// What `run` would do for `sites` in `config`'s environment, without
/// changing anything.
pub async fn plan(
    config: &Config,
    sites: &[&Site],
    shared: &Shared<'_>,
    printer: &Printer,
) -> anyhow::Result<Vec<PlanEntry>> {
    let deployer = pipeline::connect_cluster(config).await?;
    let auth = match pipeline::registry_auth(config).await {
        Ok(auth) => Some(auth),
        Err(error) => {
            printer.warning(&format!("{error:#}; registry presence is unknown"));
            None
        }
    };
    let mut entries = Vec::new();
    for site in sites {
        let repo = config.repo(&site.repo).expect("validated");
        let mut entry = PlanEntry {
            site: site.name.clone(),
            environment: config.environment.clone(),
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
            promote: None,
            preflight: Vec::new(),
            error: None,
        };
        let sources = Sources {
            deployer: &deployer,
            generator: &shared.generator,
            docker: shared.docker.as_ref(),
            auth: auth.as_ref(),
        };
        if let Err(error) = plan_site(config, site, &shared.mirrored[&site.repo], &sources, &mut entry).await
        {
            entry.error = Some(format!("{error:#}"));
            entry.action = PlanAction::Error;
        }
        // As `run` prints them, without `--strict`.
        crate::deploy::preflight::verdict(site, entry.preflight.clone(), false, printer)?;
        entries.push(entry);
    }
    Ok(entries)
}

/// What `plan` reads a site's state from: the cluster, the site's files (its
/// generator run), and the registry when the Engine and credentials are there.
struct Sources<'a> {
    deployer: &'a Deployer,
    generator: &'a Generator<'a>,
    docker: Option<&'a bollard::Docker>,
    auth: Option<&'a registry::RegistryAuth>,
}

async fn plan_site(
    config: &Config,
    site: &Site,
    synced: &Result<Synced, Arc<SyncError>>,
    sources: &Sources<'_>,
    entry: &mut PlanEntry,
) -> anyhow::Result<()> {
    let Sources {
        deployer,
        generator,
        docker,
        auth,
    } = *sources;
    let synced = synced
        .as_ref()
        .map_err(|error| anyhow::Error::new(error.clone()))?;
    let commit = synced.commit.id.clone();
    let tree = synced.tree(&site.path)?;
    let digest = decide::source_digest(site, config.template_dockerfile(site)?.as_deref(), &tree);
    let repository = config.image_repository(site);
    let image = format!("{repository}:{}", reference::commit_tag(&commit));
    entry.head_commit = Some(commit.clone());
    entry.source_digest = Some(digest.clone());
    entry.image = Some(image.clone());
    let deployment = deployer.read(&site.deployment).await?;
    let deployed = deployer.deployed_of(&deployment, &site.deployment).await?;
    entry.deployed_commit.clone_from(&deployed.commit);
    entry.deployed_image.clone_from(&deployed.image);
    if let (Some(docker), Some(auth)) = (docker, auth) {
        entry.image_present = registry::registry_digest(docker, &image, auth)
            .await
            .ok()
            .map(|d| d.is_some());
    }
    let older = async || synced.older_than(&commit, &deployed).await;
    let check = decide::check(&deployed, &repository, &digest, false, older).await;
    if check == Check::Proceed {
        // Where `run` checks the Deployment's shape: it would go on.
        entry.preflight = preflight(&deployment, &site.deployment.container, &site.helm);
    }
    entry.action = match check {
        _ if decide::unfinished(&check, &rollout_state(&deployment)) => PlanAction::Resume,
        Check::Unchanged => PlanAction::Unchanged,
        Check::Older { .. } => PlanAction::RefuseOlder,
        Check::Proceed => {
            if let Some(reason) = same_files(generator, site, synced, &repository, &deployed).await? {
                entry.reason = Some(reason);
                PlanAction::UpToDate
            } else {
                entry.reason = decide::moved(&deployed, &repository);
                if entry.image_present == Some(true) {
                    PlanAction::Deploy
                } else {
                    PlanAction::BuildAndDeploy
                }
            }
        }
    };
    Ok(())
}

/// Why the Deployment's image serves the files `site` has at `synced`, as
/// `run` decides it ([`decide::same_files`]); the generator runs only when
/// the Deployment records what its image serves.
async fn same_files(
    generator: &Generator<'_>,
    site: &Site,
    synced: &Synced,
    repository: &str,
    deployed: &Deployed,
) -> anyhow::Result<Option<String>> {
    match deployed.content_digest.as_deref() {
        Some(recorded) if deployed.serves_files(repository, recorded) => Ok(decide::same_files(
            deployed,
            repository,
            &generator.content(site, synced).await?.digest,
        )),
        _ => Ok(None),
    }
}
