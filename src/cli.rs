//! Command-line interface: clap types only. They are resolved into
//! [`crate::settings`] before any stage runs; stage code never sees them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Ship static websites to Kubernetes without downtime.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The pipeline file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "BERTH_CONFIG",
        default_value = "pipeline.toml"
    )]
    pub config: PathBuf,
    /// Where mirrors and the run log live (default: `state_dir` in the pipeline file).
    #[arg(long, global = true, env = "BERTH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Say less: only warnings, errors and results.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Say more: generator and Engine output, rollout progress. Twice: debug logs.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print one JSON document on stdout instead of tables (run, ship, rollback, promote, plan, status, history).
    #[arg(long, global = true)]
    pub json: bool,
    /// The environment to work in (default: the pipeline file's default one;
    /// plan, status and history show every environment without it).
    #[arg(long = "env", global = true, env = "BERTH_ENV", value_name = "NAME")]
    pub environment: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the pipeline file and report every problem with <file:line:column>.
    Validate,
    /// Mirror, build, push and deploy every site (or the named ones), skipping unchanged ones.
    Run(RunArgs),
    /// Ship exactly one commit of one site (per-commit CI).
    Ship(ShipArgs),
    /// Roll a site's Deployment back to its previous revision, or to a commit it ran before.
    Rollback(RollbackArgs),
    /// Deploy the exact image a site runs (or ran) in one environment to another, by digest.
    Promote(PromoteArgs),
    /// Show what `run` would do for each site, changing nothing.
    Plan(PlanArgs),
    /// Show each site's branch head, deployed commit and image, rollout state.
    Status(StatusArgs),
    /// Show a site's past deployments (ReplicaSet revisions and berth's run log).
    History(HistoryArgs),
    /// Fetch the mirrors of the named repos (default: all) and print each branch head.
    Mirror(MirrorArgs),
    /// Write a site's folder at a commit, from its repo's mirror, into an empty folder.
    Export(ExportArgs),
    /// Build a site from a working tree (uncommitted changes included) into the local Engine.
    Build(BuildArgs),
    /// Build a site from a working tree and serve it on a loopback port until Ctrl-C.
    Preview(PreviewArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Sites to plan (default: all).
    pub sites: Vec<String>,
    /// Only this shard of the sites, `I/N` (1-based).
    #[arg(long)]
    pub shard: Option<crate::pipeline::Shard>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Sites to show (default: all).
    pub sites: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Repos to fetch (default: all).
    pub repos: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The site whose folder to export.
    pub site: String,
    /// Where to write the files: a new or empty folder.
    pub directory: PathBuf,
    /// A commit (full or at least 7 hex digits) or tag (default: the head of the site's branch).
    #[arg(long)]
    pub commit: Option<String>,
    /// Read the mirror as it is, without fetching (it must exist).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The site.
    pub site: String,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The site to build.
    pub site: String,
    /// A working tree of the site's repo (default: the current folder).
    #[arg(long, default_value = ".")]
    pub source: PathBuf,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The site to preview.
    pub site: String,
    /// A working tree of the site's repo (default: the current folder).
    #[arg(long, default_value = ".")]
    pub source: PathBuf,
    /// Loopback port to serve on (default: a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Turn preflight warnings (a rollout that could drop the site) into errors.
    #[arg(long)]
    pub strict: bool,
    /// Deploy a commit that is older than (an ancestor of) the deployed one.
    #[arg(long)]
    pub allow_older: bool,
    /// How long to wait for another caller's lock on a Deployment, for example `2m`.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub lock_wait: std::time::Duration,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is not a duration ({error}); write for example 90s or 5m"))
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The site whose Deployment to roll back.
    pub site: String,
    /// A commit (or its prefix) the Deployment ran before; default: the previous revision.
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The site to promote.
    pub site: String,
    /// The environment whose image to take (default: the target's `promote_from`, else the default environment).
    #[arg(long)]
    pub from: Option<String>,
    /// The environment to deploy it to.
    #[arg(long)]
    pub to: String,
    /// A commit (or its prefix) that runs, or ran and passed, in the source environment (default: what runs there).
    #[arg(long)]
    pub commit: Option<String>,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Sites to run (default: all).
    pub sites: Vec<String>,
    /// How many sites to work on at once.
    #[arg(long, short = 'j', default_value_t = 2)]
    pub jobs: usize,
    /// Only this shard of the sites, `I/N` (1-based); shards split sites deterministically.
    #[arg(long)]
    pub shard: Option<crate::pipeline::Shard>,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

#[derive(Debug, Args)]
pub struct ShipArgs {
    /// The site to ship.
    pub site: String,
    /// The commit (full or at least 7 hex digits) or tag to ship.
    #[arg(long)]
    pub commit: String,
    #[command(flatten)]
    pub deploy: DeployArgs,
}
