//! Command-line interface: clap types only. They are resolved into
//! [`crate::settings`] before any stage runs; stage code never sees them.

use std::path::PathBuf;

use clap::builder::FalseyValueParser;
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

/// The options every command takes. Each has a `BERTH_*` variable too; the
/// command line wins over it.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The pipeline file (default: `pipeline.toml` in this folder or the nearest parent).
    #[arg(long, short = 'c', global = true, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where mirrors and the run log live (default: `state_dir` in the pipeline file).
    #[arg(long, global = true, env = "BERTH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Say less: only warnings, errors and results (`-v` wins over it, so a
    /// `BERTH_QUIET` set for a job does not refuse a `-v` on the command line).
    #[arg(
        long,
        short = 'q',
        global = true,
        env = "BERTH_QUIET",
        value_parser = FalseyValueParser::new()
    )]
    pub quiet: bool,
    /// Say more: generator and Engine output, rollout progress. Twice: debug logs.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count, env = "BERTH_VERBOSE")]
    pub verbose: u8,
    /// Print one JSON document on stdout instead of tables or text (every
    /// command that prints a result; schemas in docs/schema/).
    #[arg(long, global = true, env = "BERTH_JSON", value_parser = FalseyValueParser::new())]
    pub json: bool,
    /// When to colour output: `auto` (a terminal, or a CI that shows colour;
    /// `NO_COLOR` turns it off, `CLICOLOR_FORCE` on), `always` or `never`.
    #[arg(long, global = true, env = "BERTH_COLOR", value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// The environment to work in (default: the pipeline file's default one;
    /// plan, status and history show every environment without it).
    #[arg(long = "env", global = true, env = "BERTH_ENV", value_name = "NAME")]
    pub environment: Option<String>,
    /// The kubeconfig context to use, instead of the environment's `context`.
    #[arg(long, global = true, env = "BERTH_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace of Deployments whose site names none, instead of the
    /// environment's `namespace`.
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "BERTH_NAMESPACE",
        value_name = "NAME"
    )]
    pub namespace: Option<String>,
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`).
    #[arg(long, global = true, env = "BERTH_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// How long to wait for one rollout, for example `5m`, instead of the
    /// environment's `rollout_timeout`.
    #[arg(long, global = true, env = "BERTH_TIMEOUT", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the pipeline file and report every problem with <file:line:column>.
    Validate,
    /// Mirror, build, push and deploy every site (or the named ones), skipping unchanged ones.
    Run(RunArgs),
    /// Ship exactly one commit of one site (per-commit CI).
    Ship(ShipArgs),
    /// Roll a site's Deployment back to its newest earlier revision not known to have failed,
    /// or to a commit it ran before.
    Rollback(RollbackArgs),
    /// Deploy the exact image a site runs (or ran) in one environment to another, by digest.
    Promote(PromoteArgs),
    /// Show what `run` would do for each site, changing nothing.
    Plan(PlanArgs),
    /// Show each site's branch head, deployed commit and image, rollout state;
    /// exit 1 when a site's last rollout failed.
    Status(StatusArgs),
    /// Show a site's past deployments (ReplicaSet revisions and berth's run log).
    History(HistoryArgs),
    /// Delete old images of the named sites (default: all) from their registries, keeping
    /// every one still needed; a dry run without --delete.
    Gc(GcArgs),
    /// Fetch the mirrors of the named repos (default: all) and print each branch head.
    Mirror(MirrorArgs),
    /// Write a site's folder at a commit, from its repo's mirror, into an empty folder.
    Export(ExportArgs),
    /// Build a site from a working tree (uncommitted changes included) into the local Engine.
    Build(BuildArgs),
    /// Build a site from a working tree and serve it on a loopback port until Ctrl-C.
    Preview(PreviewArgs),
    /// Print a completion script for a shell, for example
    /// `berth completions bash > /etc/bash_completion.d/berth`.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// The completion script of `berth` for `shell`: every command, option and
/// value list, as clap knows them.
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "berth", &mut script);
    script
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
pub struct GcArgs {
    /// Sites whose images to clean (default: all).
    pub sites: Vec<String>,
    /// Delete the images the keep policy lets go (without it: only say which).
    #[arg(long)]
    pub delete: bool,
    /// How long to wait for another caller's lock on a Deployment, for example `2m`.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub lock_wait: std::time::Duration,
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
    /// A commit (or its prefix) the Deployment ran before, failed or not; default: the newest
    /// earlier revision not known to have failed.
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_global_option_has_a_berth_variable() {
        let command = Cli::command();
        let globals: Vec<_> = command
            .get_arguments()
            .filter(|arg| arg.is_global_set())
            .collect();
        assert!(globals.len() >= 11, "{}", globals.len());
        for arg in globals {
            let variable = arg.get_env().and_then(|name| name.to_str());
            assert!(
                variable.is_some_and(|name| name.starts_with("BERTH_")),
                "--{} has no BERTH_* variable",
                arg.get_long().unwrap_or_default()
            );
        }
    }

    #[test]
    fn the_cluster_options_are_spelt_as_kubectl_spells_them() {
        let cli = Cli::try_parse_from([
            "berth",
            "status",
            "--context",
            "prod",
            "-n",
            "web",
            "--kubeconfig",
            "/k",
            "--timeout",
            "90s",
            "--color",
            "never",
        ])
        .unwrap();
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
        assert_eq!(cli.global.namespace.as_deref(), Some("web"));
        assert_eq!(cli.global.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
        assert_eq!(cli.global.timeout, Some(std::time::Duration::from_secs(90)));
        assert_eq!(cli.global.color, ColorChoice::Never);
        assert!(Cli::try_parse_from(["berth", "status", "--timeout", "soon"]).is_err());
        // -q and -v together parse (settings lets -v win).
        let both = Cli::try_parse_from(["berth", "-q", "-v", "status"]).unwrap();
        assert!(both.global.quiet && both.global.verbose == 1);
        assert!(Cli::try_parse_from(["berth", "status", "--color", "sometimes"]).is_err());
    }

    #[test]
    fn completion_scripts_name_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = String::from_utf8(completion_script(shell)).unwrap();
            for command in Cli::command().get_subcommands() {
                assert!(
                    script.contains(command.get_name()),
                    "{shell}: {}",
                    command.get_name()
                );
            }
            assert!(script.contains("kubeconfig"), "{shell}");
        }
    }
}
