//! Settings: the command line and the pipeline file resolved into what the
//! stages need. Nothing below this module sees clap types.

use std::path::PathBuf;

use crate::cli::{Cli, ColorChoice, Command, DeployArgs};
use crate::config::{self, ClusterOverrides, Config, ConfigError};
use crate::pipeline::{DeployOptions, Shard};
use crate::ui::{Colour, Verbosity};

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    Validate,
    Run {
        sites: Vec<String>,
        jobs: usize,
        shard: Option<Shard>,
        deploy: DeployOptions,
    },
    Ship {
        site: String,
        commit: String,
        deploy: DeployOptions,
    },
    Rollback {
        site: String,
        to: Option<String>,
        deploy: DeployOptions,
    },
    Promote {
        site: String,
        /// `None`: the target's `promote_from`, else the default environment.
        from: Option<String>,
        to: String,
        /// `None`: what runs in the source environment.
        commit: Option<String>,
        deploy: DeployOptions,
    },
    Plan {
        sites: Vec<String>,
        shard: Option<Shard>,
    },
    Status {
        sites: Vec<String>,
    },
    History {
        site: String,
    },
    Gc {
        sites: Vec<String>,
        delete: bool,
        lock_wait: std::time::Duration,
    },
    Mirror {
        repos: Vec<String>,
    },
    Export {
        site: String,
        directory: PathBuf,
        /// `None`: the head of the site's branch.
        commit: Option<String>,
        /// Use the mirror without fetching.
        offline: bool,
    },
    Build {
        site: String,
        source: PathBuf,
    },
    Preview {
        site: String,
        source: PathBuf,
        port: u16,
    },
}

fn deploy_options(args: &DeployArgs) -> DeployOptions {
    DeployOptions {
        strict: args.strict,
        allow_older: args.allow_older,
        lock_wait: args.lock_wait,
    }
}

/// Everything a command needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--config`; `None`: [`config::find`] from the current folder.
    pub config_path: Option<PathBuf>,
    pub state_dir_override: Option<PathBuf>,
    pub verbosity: Verbosity,
    pub debug_logs: bool,
    /// Results as one JSON document on stdout.
    pub json: bool,
    /// `--color`.
    pub colour: Colour,
    /// `--env`: the environment to work in; `None` is the file's default
    /// (every environment, for plan, status and history).
    pub environment: Option<String>,
    /// `--context`, `--namespace`, `--kubeconfig`, `--timeout`.
    pub cluster: ClusterOverrides,
    pub action: Action,
}

impl Settings {
    /// The settings of a command line; `None` for a command about the
    /// command line itself (`completions`), which [`crate::main`] answers.
    pub fn from_cli(cli: Cli) -> Option<Self> {
        // -v wins over -q: more output never hides a problem.
        let verbosity = if cli.global.verbose > 0 {
            Verbosity::Verbose
        } else if cli.global.quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        };
        let action = match cli.command {
            Command::Validate => Action::Validate,
            Command::Run(args) => Action::Run {
                sites: args.sites,
                jobs: args.jobs.max(1),
                shard: args.shard,
                deploy: deploy_options(&args.deploy),
            },
            Command::Ship(args) => Action::Ship {
                site: args.site,
                commit: args.commit,
                deploy: deploy_options(&args.deploy),
            },
            Command::Rollback(args) => Action::Rollback {
                site: args.site,
                to: args.to,
                deploy: deploy_options(&args.deploy),
            },
            Command::Promote(args) => Action::Promote {
                site: args.site,
                from: args.from,
                to: args.to,
                commit: args.commit,
                deploy: deploy_options(&args.deploy),
            },
            Command::Plan(args) => Action::Plan {
                sites: args.sites,
                shard: args.shard,
            },
            Command::Status(args) => Action::Status { sites: args.sites },
            Command::History(args) => Action::History { site: args.site },
            Command::Gc(args) => Action::Gc {
                sites: args.sites,
                delete: args.delete,
                lock_wait: args.lock_wait,
            },
            Command::Mirror(args) => Action::Mirror { repos: args.repos },
            Command::Export(args) => Action::Export {
                site: args.site,
                directory: args.directory,
                commit: args.commit,
                offline: args.offline,
            },
            Command::Build(args) => Action::Build {
                site: args.site,
                source: args.source,
            },
            Command::Preview(args) => Action::Preview {
                site: args.site,
                source: args.source,
                port: args.port,
            },
            Command::Completions(_) => return None,
        };
        let global = cli.global;
        Some(Self {
            config_path: global.config,
            state_dir_override: global.state_dir,
            verbosity,
            debug_logs: global.verbose > 1,
            json: global.json,
            colour: match global.color {
                ColorChoice::Auto => Colour::Auto,
                ColorChoice::Always => Colour::Always,
                ColorChoice::Never => Colour::Never,
            },
            environment: global.environment,
            cluster: ClusterOverrides {
                context: global.context,
                namespace: global.namespace,
                kubeconfig: global.kubeconfig,
                rollout_timeout: global.timeout,
            },
            action,
        })
    }

    /// Loads the pipeline file (`--config`, else the one [`config::find`]
    /// finds), applying the state-dir override: the file as its default
    /// environment sees it, every environment still declared.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let path = if let Some(path) = &self.config_path {
            path.clone()
        } else {
            let start = std::env::current_dir().map_err(|source| ConfigError::Read {
                path: PathBuf::from("."),
                source,
            })?;
            config::find(&start).ok_or(ConfigError::NotFound { start })?
        };
        let mut config = Config::load(&path)?;
        if let Some(state_dir) = &self.state_dir_override {
            config.state_dir.clone_from(state_dir);
        }
        Ok(config)
    }
}
