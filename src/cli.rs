//! Command-line interface: the global options and the top of the command
//! tree, as clap types. Each verb's own arguments are clap types in the
//! verb's file (`commands::<verb>::Args`, gathered in [`commands::Command`]);
//! the global options become [`Settings`] here, before any command runs.
//! Nothing below the commands sees a clap type.

use std::path::PathBuf;

use clap::builder::FalseyValueParser;
use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::config::ClusterOverrides;
use crate::settings::{Settings, parse_duration};
use crate::ui::{Colour, Verbosity};

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

/// The command: one of berth's verbs, or a completion script.
#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Verb(commands::Command),
    /// Print a completion script for a shell, for example
    /// `berth completions bash > /etc/bash_completion.d/berth`.
    Completions(CompletionsArgs),
}

impl GlobalArgs {
    /// The settings every command is given.
    pub fn settings(self) -> Settings {
        // -v wins over -q: more output never hides a problem.
        let verbosity = if self.verbose > 0 {
            Verbosity::Verbose
        } else if self.quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        };
        Settings {
            config_path: self.config,
            state_dir_override: self.state_dir,
            verbosity,
            debug_logs: self.verbose > 1,
            json: self.json,
            colour: match self.color {
                ColorChoice::Auto => Colour::Auto,
                ColorChoice::Always => Colour::Always,
                ColorChoice::Never => Colour::Never,
            },
            environment: self.environment,
            cluster: ClusterOverrides {
                context: self.context,
                namespace: self.namespace,
                kubeconfig: self.kubeconfig,
                rollout_timeout: self.timeout,
            },
        }
    }
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
        // -q and -v together parse, and -v wins.
        let both = Cli::try_parse_from(["berth", "-q", "-v", "status"]).unwrap();
        assert!(both.global.quiet && both.global.verbose == 1);
        assert_eq!(both.global.settings().verbosity, Verbosity::Verbose);
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
