//! berth ships static websites to Kubernetes without downtime.
//!
//! Data flows one way, and imports follow it. [`cli`] turns the command line
//! into [`settings`] and a verb of [`commands`]; each verb has the
//! [`pipeline`] do its work, and the pipeline runs the stages for each site:
//! [`git`] (mirror, export), [`image`] (generate, build), [`registry`]
//! (push, copy) and [`deploy`] (roll out, check, roll back). The stages do not
//! know each other, and only the pipeline reaches them. Below them are the
//! pipeline file's model ([`config`]) and the leaves: [`exit`] (the kinds of
//! failure and their codes), [`reference`](mod@reference) (image references
//! and tags), [`files`] (a site's files as the mirror lists them), [`ui`]
//! (the printer) and [`http`]. The one map of these layers is `LAYERS` in
//! `tests/it/layout.rs`, which checks every import against it;
//! [`git::ffi`] is the one module with `unsafe`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod deploy;
pub mod exit;
pub mod files;
pub mod forge;
pub mod git;
pub mod http;
pub mod image;

pub mod pipeline;
pub mod reference;
pub mod registry;
pub mod server;
pub mod settings;

pub mod ui;

use std::process::ExitCode;

use clap::Parser;

use crate::config::ConfigError;
use crate::settings::Settings;
use crate::ui::{Printer, Verbosity};

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
    let settings = cli.global.settings();
    let command = match cli.command {
        cli::Command::Verb(command) => command,
        cli::Command::Completions(args) => {
            let script = cli::completion_script(args.shell);
            Printer::new(Verbosity::Normal, false, false).result(&String::from_utf8_lossy(&script));
            return ExitCode::from(exit::OK);
        }
    };
    git::ffi::start_without_ca_bundle();
    // libgit2 re-hashes every object it reads (SHA-1 with collision detection,
    // not SHA-NI): for a site read from the mirror that was 37 % of berth's CPU in
    // a 50 MB build. git itself does not; zlib's checksum still guards each
    // object, the pack's index its place, and objects received by a fetch are
    // hashed by the indexer as before.
    git2::opts::strict_hash_verification(false);
    git::ffi::bound_memory();
    let printer = Printer::from_environment(settings.verbosity, settings.colour);
    init_logging(settings.debug_logs, &printer);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            printer.error(&anyhow::Error::new(error).context("cannot start the async runtime"));
            return ExitCode::from(exit::ENVIRONMENT);
        }
    };
    let code = runtime.block_on(run(&settings, command, &printer));
    ExitCode::from(code)
}

/// Logs go to stderr through the printer, above its live board.
fn init_logging(debug: bool, printer: &Printer) {
    let filter = std::env::var("BERTH_LOG")
        .unwrap_or_else(|_| if debug { "berth=debug".into() } else { "off".into() });
    let printer = printer.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(move || printer.log_writer())
        .try_init();
}

/// Runs one command and maps its outcome to an exit code.
pub async fn run(settings: &Settings, command: commands::Command, printer: &Printer) -> u8 {
    let context = commands::Context::new(settings, printer);
    match command.run(&context).await {
        Ok(code) => code,
        Err(error) => {
            match error.downcast_ref::<ConfigError>() {
                Some(invalid) => commands::validate::print_problems(invalid, printer),
                None => printer.error(&error),
            }
            commands::error_code(&error)
        }
    }
}
