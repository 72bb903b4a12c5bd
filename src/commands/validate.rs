//! `berth validate`: the pipeline file alone, checked. Every problem names
//! its file, line, column and key; the same problems are what any command
//! prints for a file it cannot use ([`print_problems`]), as compiler-style
//! lines, as `--json`, and under GitHub Actions as workflow annotations on
//! the file's lines.

use std::path::Path;
use std::time::SystemTime;

use crate::commands::{Context, json_document};
use crate::config::{Config, ConfigError};
use crate::exit;
use crate::settings::Settings;
use crate::ui::Printer;

/// `berth validate` takes no arguments of its own.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Checks the pipeline file: every problem, or `ok` with its counts.
#[expect(clippy::unused_async, reason = "every verb's entry has the one shape")]
pub async fn run(context: &Context<'_>, _args: Args) -> anyhow::Result<u8> {
    Ok(match context.declared() {
        Ok(declared) => command(context.settings, declared, context.printer, context.started),
        Err(error) => refused(context.settings, &error, context.printer, context.started),
    })
}

/// One problem of the pipeline file, as `--json` and annotations give it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub file: String,
    /// 1-based; absent when the problem is the whole file (it cannot be read).
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The key, as a path (`site[2].path`), when the problem is one key's.
    pub key: Option<String>,
    pub message: String,
}

/// The problems of a file berth cannot use, in file order.
pub fn problems(error: &ConfigError) -> Vec<Problem> {
    match error {
        ConfigError::Invalid { path, diagnostics } => diagnostics
            .iter()
            .map(|diagnostic| Problem {
                file: path.display().to_string(),
                line: Some(diagnostic.line),
                column: Some(diagnostic.column),
                key: diagnostic.key.clone(),
                message: diagnostic.message.clone(),
            })
            .collect(),
        ConfigError::Read { path, .. } => vec![whole_file(path, error)],
        ConfigError::NotFound { start } => vec![whole_file(start, error)],
    }
}

fn whole_file(path: &Path, error: &ConfigError) -> Problem {
    Problem {
        file: path.display().to_string(),
        line: None,
        column: None,
        key: None,
        message: error.to_string(),
    }
}

/// Prints why berth cannot use the pipeline file: `FILE:LINE:COLUMN: error:`
/// lines (or the error), and each problem as an annotation where the CI
/// shows them.
pub fn print_problems(error: &ConfigError, printer: &Printer) {
    match error {
        ConfigError::Invalid { .. } => printer.diagnostics(&error.to_string()),
        _ => printer.error(&anyhow::anyhow!("{error}")),
    }
    annotate(&problems(error), printer);
}

/// Each problem as an annotation on its file's line, where the CI shows them.
fn annotate(problems: &[Problem], printer: &Printer) {
    for problem in problems {
        let message = match &problem.key {
            Some(key) => format!("{key}: {}", problem.message),
            None => problem.message.clone(),
        };
        printer.annotation(&problem.file, problem.line, problem.column, &message);
    }
}

/// `berth validate` of a file that loaded: OK when the environment it is
/// seen in (`--env`, or its default one) exists; USAGE otherwise.
fn command(settings: &Settings, declared: &Config, printer: &Printer, started: SystemTime) -> u8 {
    match declared.in_environment(settings.environment.as_deref()) {
        Ok(_) => {
            if settings.json {
                printer.result(&document(Some(declared), &[], started));
            } else {
                let environments = if declared.environments.is_empty() {
                    String::new()
                } else {
                    format!(", {} environments", declared.environments.len())
                };
                printer.note(&format!(
                    "{}: ok ({} repos, {} sites{environments})",
                    declared.path.display(),
                    declared.repos.len(),
                    declared.declared_sites.len()
                ));
            }
            exit::OK
        }
        Err(error) => {
            let problems = [Problem {
                file: error.config().to_string(),
                line: None,
                column: None,
                key: None,
                message: error.to_string(),
            }];
            if settings.json {
                printer.result(&document(Some(declared), &problems, started));
            } else {
                printer.error(&anyhow::Error::new(error));
            }
            annotate(&problems, printer);
            exit::USAGE
        }
    }
}

/// `berth validate` of a file that did not load: its problems, USAGE.
fn refused(settings: &Settings, error: &ConfigError, printer: &Printer, started: SystemTime) -> u8 {
    if settings.json {
        printer.result(&document(None, &problems(error), started));
        annotate(&problems(error), printer);
    } else {
        print_problems(error, printer);
    }
    exit::USAGE
}

/// `validate --json`: the file's counts when it loaded, and its problems.
fn document(declared: Option<&Config>, problems: &[Problem], started: SystemTime) -> String {
    let body = serde_json::json!({
        "valid": problems.is_empty(),
        "file": declared
            .map(|c| c.path.display().to_string())
            .or_else(|| problems.first().map(|p| p.file.clone())),
        "repos": declared.map(|c| c.repos.len()),
        "sites": declared.map(|c| c.declared_sites.len()),
        "environments": declared.map(Config::environment_names),
        "problems": problems,
    });
    json_document("berth.validate/v1", "validate", started, &body).expect("an object")
}
