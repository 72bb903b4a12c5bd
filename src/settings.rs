//! Settings: what every command is given, resolved from the global options
//! ([`crate::cli`] fills it in) and from the environment: where the pipeline
//! file is, how much to say, JSON or tables, colour, the environment to work
//! in and the cluster options. It holds no clap type; the commands below it
//! read the pipeline file through it ([`Settings::load_config`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, ClusterOverrides, Config, ConfigError};
use crate::ui::{Colour, Verbosity};

/// Everything a command needs besides its own arguments, resolved.
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
}

impl Settings {
    /// Loads the pipeline file (`--config`, else the one [`config::find`]
    /// finds), applying the state-dir override: the file as its default
    /// environment sees it, every environment still declared.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let path = if let Some(path) = &self.config_path {
            path.clone()
        } else {
            let start = std::env::current_dir().map_err(|source| ConfigError::Read {
                path: PathBuf::from("."),
                error: source,
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

/// A duration on the command line that is not one.
#[derive(Debug, thiserror::Error)]
#[error("`{text}` is not a duration ({source}); write for example 90s or 5m")]
pub struct DurationError {
    text: String,
    source: humantime::DurationError,
}

/// A duration as people write it on the command line (`90s`, `5m`, `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text).map_err(|source| DurationError {
        text: text.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_people_write_them_and_a_bad_one_says_how() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        let error = parse_duration("soon").unwrap_err().to_string();
        assert!(error.starts_with("`soon` is not a duration ("), "{error}");
        assert!(error.ends_with("write for example 90s or 5m"), "{error}");
    }
}
