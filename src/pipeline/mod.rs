//! The pipeline: runs the stages for each site and reports what happened.
//!
//! 1. Select the sites ([`select`](mod@select)); connect to the Docker Engine, the cluster
//!    and the registry ([`connect`]); an unreachable part is an environment
//!    error, exit 3.
//! 2. Mirror each repo once, off the runtime, and resolve the commit to ship
//!    ([`sync`]).
//! 3. Per site, with a bound on parallel sites, the stages of [`site`]: check
//!    what the Deployment runs ([`decide`]), export and generate ([`generator`],
//!    one run shared between sites built alike), build, push, deploy.
//! 4. One line per stage per site while it runs; a [`report`] at the end.
//!
//! This module fans the sites out; it is the only part of the pipeline that
//! knows about more than one site at a time.

pub mod connect;
pub mod decide;
pub mod export;
pub mod failure;
pub mod gc;
pub mod generator_runs;
pub mod history;
pub mod interrupt;
pub mod local;
pub mod notify;
pub mod plan;
pub mod preview;
pub mod promote;
pub mod realtime;
pub mod report;
pub mod retention;
pub mod rollback;
pub mod run_log;
pub mod select;
pub mod site;
pub mod status;
pub mod sync;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures_util::StreamExt;

use crate::config::{Config, Site};
use crate::ui::Printer;

pub use connect::{connect_cluster, connect_docker, registry_auth};
pub use generator_runs::Generator;
pub use report::{Promotion, RunReport, SiteAction, SiteReport};
pub use select::{Shard, select};
pub use sync::{CommitChoice, Synced, mirror_all};

/// How a run deploys: the `run`, `ship` and `rollback` flags that shape it.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Preflight findings stop the site (`--strict`).
    pub strict: bool,
    /// Deploy a commit older than the deployed one (`--allow-older`).
    pub allow_older: bool,
    /// How long to wait for another caller's Deployment lease.
    pub lock_wait: Duration,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            strict: false,
            allow_older: false,
            lock_wait: Duration::from_secs(120),
        }
    }
}

/// An error before any site ran: usage (exit 2) or environment (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A site named on the command line is not in the pipeline file.
    #[error("no site named `{name}` in {config} (sites: {known})")]
    UnknownSite {
        name: String,
        config: String,
        known: String,
    },
    /// A repo named on the command line is not in the pipeline file.
    #[error("no repo named `{name}` in {config} (repos: {known})")]
    UnknownRepo {
        name: String,
        config: String,
        known: String,
    },
    /// A site named on the command line does not ship to the environment.
    #[error("site `{site}` does not ship to environment `{environment}` (it ships to: {ships_to})")]
    NotInEnvironment {
        site: String,
        environment: String,
        ships_to: String,
    },
    /// `berth promote` was asked to promote from an environment to itself.
    #[error("cannot promote from `{0}` to itself; name another environment with --from")]
    SameEnvironment(String),
    /// The Docker Engine cannot be reached at `host`.
    #[error("cannot reach the Docker Engine ({host})")]
    Engine {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The cluster cannot be reached (no kubeconfig, no context, no answer).
    #[error(transparent)]
    Cluster(crate::deploy::DeployError),
    /// `berth export` was given a folder that holds something (or is no folder).
    #[error("{path} is not an empty folder; export writes only into a new or empty one")]
    NotEmpty { path: String },
}

impl SetupError {
    /// An unreachable part is an environment error; the rest are usage errors:
    /// the command line asks for what the file does not have.
    pub fn kind(&self) -> crate::exit::Kind {
        match self {
            Self::Engine { .. } | Self::Cluster(_) => crate::exit::Kind::Environment,
            Self::UnknownSite { .. }
            | Self::UnknownRepo { .. }
            | Self::NotInEnvironment { .. }
            | Self::SameEnvironment(_)
            | Self::NotEmpty { .. } => crate::exit::Kind::Usage,
        }
    }
}

/// Runs the pipeline for `sites`: each at the commit `choice` names, at most
/// `jobs` at a time. Once `interrupted` is set, no site starts a new stage.
pub async fn run(
    config: &Config,
    sites: &[&Site],
    choice: CommitChoice,
    jobs: usize,
    options: &DeployOptions,
    interrupted: Arc<AtomicBool>,
    printer: &Printer,
) -> anyhow::Result<RunReport> {
    let connections = Connections::open(config).await?;
    let mirrored = mirror_all(config, sites, &choice, jobs, printer).await;
    connections
        .ship(config, sites, &mirrored, jobs, options, interrupted, printer)
        .await
}

/// What a run talks to, connected once: the Docker Engine, the cluster, the
/// registry's credentials (and whether it speaks plain HTTP). `berth serve`
/// keeps one for all its runs.
pub struct Connections {
    docker: bollard::Docker,
    deployer: crate::deploy::Deployer,
    auth: crate::registry::RegistryAuth,
    plain_http: bool,
}

impl Connections {
    /// Connects to each part `config` names; an unreachable one is an
    /// environment error (exit 3).
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let docker = connect_docker().await?;
        let deployer = connect_cluster(config).await?;
        let auth = registry_auth(config).await?;
        let plain_http = crate::registry::plain_http(&docker, &auth.registry).await;
        Ok(Self {
            docker,
            deployer,
            auth,
            plain_http,
        })
    }

    /// The cluster.
    pub fn deployer(&self) -> &crate::deploy::Deployer {
        &self.deployer
    }

    /// Ships `sites` from their repos as `mirrored`, at most `jobs` at a time.
    #[expect(clippy::too_many_arguments, reason = "a run's inputs, each its own")]
    pub async fn ship(
        &self,
        config: &Config,
        sites: &[&Site],
        mirrored: &sync::Mirrored,
        jobs: usize,
        options: &DeployOptions,
        interrupted: Arc<AtomicBool>,
        printer: &Printer,
    ) -> anyhow::Result<RunReport> {
        let generator = Generator::new(config, printer)?;
        let context = site::RunContext {
            config,
            docker: &self.docker,
            deployer: &self.deployer,
            auth: &self.auth,
            plain_http: self.plain_http,
            printer,
            generator,
            options,
            interrupted: interrupted.clone(),
        };
        // The futures made first, each holding its own references, so that a
        // caller may spawn the whole run.
        let context = &context;
        let futures: Vec<_> = sites
            .iter()
            .copied()
            .map(|site| {
                let synced = mirrored.get(&site.repo).expect("every repo was mirrored");
                async move { context.site(site, synced).await }
            })
            .collect();
        let reports: Vec<SiteReport> = futures_util::stream::iter(futures)
            .buffered(jobs.max(1))
            .collect()
            .await;
        Ok(RunReport {
            environment: config.environment.clone(),
            sites: reports,
            interrupted: interrupted.load(std::sync::atomic::Ordering::SeqCst),
        })
    }
}
