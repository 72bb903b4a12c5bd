//! Settings: the command line and the pipeline file resolved into what the
//! stages need. Nothing below this module sees clap types.

use std::path::PathBuf;

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError};
use crate::output::Verbosity;

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    Validate,
    Run { sites: Vec<String>, jobs: usize },
    Ship { site: String, commit: String },
}

/// Everything a command needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: PathBuf,
    pub state_dir_override: Option<PathBuf>,
    pub verbosity: Verbosity,
    pub debug_logs: bool,
    pub action: Action,
}

impl Settings {
    pub fn from_cli(cli: Cli) -> Self {
        let verbosity = if cli.global.quiet {
            Verbosity::Quiet
        } else if cli.global.verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        let action = match cli.command {
            Command::Validate => Action::Validate,
            Command::Run(args) => Action::Run {
                sites: args.sites,
                jobs: args.jobs.max(1),
            },
            Command::Ship(args) => Action::Ship {
                site: args.site,
                commit: args.commit,
            },
        };
        Self {
            config_path: cli.global.config,
            state_dir_override: cli.global.state_dir,
            verbosity,
            debug_logs: cli.global.verbose > 1,
            action,
        }
    }

    /// Loads the pipeline file, applying the state-dir override.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.config_path)?;
        if let Some(state_dir) = &self.state_dir_override {
            config.state_dir.clone_from(state_dir);
        }
        Ok(config)
    }
}
