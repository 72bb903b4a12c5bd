//! berth ships static websites to Kubernetes without downtime.
//!
//! Layers, top to bottom: [`cli`] (clap types) is resolved into [`settings`];
//! [`pipeline`] runs the stages [`mirror`], [`build`], [`push`] and [`deploy`] for
//! each site of a [`config`]; [`output`] prints everything the user sees.
//! [`run`] is the one place that maps errors to exit codes.

pub mod build;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod mirror;
pub mod output;
pub mod pipeline;
pub mod push;
pub mod reference;
pub mod settings;

use std::process::ExitCode;

use clap::Parser;

use crate::config::ConfigError;
use crate::output::Printer;
use crate::pipeline::{Revision, SetupError};
use crate::settings::{Action, Settings};

/// Exit codes, documented in the README.
pub mod exit {
    /// Everything went well.
    pub const OK: u8 = 0;
    /// At least one site failed (rolled back or not).
    pub const SITE_FAILED: u8 = 1;
    /// Usage or configuration error.
    pub const USAGE: u8 = 2;
    /// Environment error: Docker Engine, registry or cluster unreachable.
    pub const ENVIRONMENT: u8 = 3;
}

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    let settings = Settings::from_cli(cli);
    init_logging(settings.debug_logs);
    let printer = Printer::from_environment(settings.verbosity);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            printer.error(&anyhow::Error::new(error).context("cannot start the async runtime"));
            return ExitCode::from(exit::ENVIRONMENT);
        }
    };
    let code = runtime.block_on(run(&settings, &printer));
    ExitCode::from(code)
}

fn init_logging(debug: bool) {
    let filter = std::env::var("BERTH_LOG")
        .unwrap_or_else(|_| if debug { "berth=debug".into() } else { "off".into() });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one command and maps its outcome to an exit code.
pub async fn run(settings: &Settings, printer: &Printer) -> u8 {
    match execute(settings, printer).await {
        Ok(code) => code,
        Err(error) => {
            match error.downcast_ref::<ConfigError>() {
                Some(invalid @ ConfigError::Invalid { .. }) => printer.diagnostics(&invalid.to_string()),
                _ => printer.error(&error),
            }
            exit_code_of(&error)
        }
    }
}

fn exit_code_of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.downcast_ref::<ConfigError>().is_some() {
            return exit::USAGE;
        }
        if let Some(setup) = cause.downcast_ref::<SetupError>() {
            return match setup {
                SetupError::UnknownSite { .. } => exit::USAGE,
                SetupError::Environment(_) => exit::ENVIRONMENT,
            };
        }
    }
    exit::SITE_FAILED
}

async fn execute(settings: &Settings, printer: &Printer) -> anyhow::Result<u8> {
    match &settings.action {
        Action::Validate => match settings.load_config() {
            Ok(config) => {
                printer.note(&format!(
                    "{}: ok ({} repos, {} sites)",
                    settings.config_path.display(),
                    config.repos.len(),
                    config.sites.len()
                ));
                Ok(exit::OK)
            }
            Err(error) => Err(error.into()),
        },
        Action::Run { sites, jobs, deploy } => {
            let config = settings.load_config()?;
            let report = pipeline::run(&config, sites, Revision::BranchHead, *jobs, deploy, printer).await?;
            printer.result(&report.summary());
            Ok(report.exit_code())
        }
        Action::Ship { site, commit, deploy } => {
            let config = settings.load_config()?;
            let report = pipeline::run(
                &config,
                std::slice::from_ref(site),
                Revision::Exact(commit.clone()),
                1,
                deploy,
                printer,
            )
            .await?;
            printer.result(&report.summary());
            Ok(report.exit_code())
        }
        Action::Rollback { site, to, deploy } => {
            let config = settings.load_config()?;
            let report = pipeline::rollback(&config, site, to.as_deref(), deploy, printer).await?;
            printer.result(&report.summary());
            Ok(report.exit_code())
        }
    }
}
