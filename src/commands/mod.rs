//! The CLI verbs. Each takes resolved [`Settings`], works through the
//! pipeline or its stages, prints its result through the [`Printer`] and
//! returns its exit code ([`crate::exit`]); none sees a clap type.
//!
//! - `run`, `ship`, `rollback`: change the cluster ([`run`], [`rollback`]).
//! - `plan`, `status`, `history`: read only ([`plan`], [`status`], [`history`]).
//! - `mirror`, `export`: the mirrors ([`mirror`], [`export`]).
//! - `build`, `preview`: a developer's working tree ([`build`], [`preview`]).
//! - `validate`: the pipeline file alone.

pub mod build;
pub mod export;
pub mod history;
pub mod mirror;
pub mod notify;
pub mod plan;
pub mod preview;
pub mod rollback;
pub mod run;
pub mod status;

use std::time::SystemTime;

use crate::exit;
use crate::settings::{Action, Settings};
use crate::ui::Printer;

/// Runs the command `settings` names; its exit code, or the error it stopped with.
pub async fn execute(settings: &Settings, printer: &Printer) -> anyhow::Result<u8> {
    let started = SystemTime::now();
    let config = settings.load_config()?;
    match &settings.action {
        Action::Validate => {
            printer.note(&format!(
                "{}: ok ({} repos, {} sites)",
                settings.config_path.display(),
                config.repos.len(),
                config.sites.len()
            ));
            Ok(exit::OK)
        }
        Action::Run {
            sites,
            jobs,
            shard,
            deploy,
        } => run::run(settings, &config, sites, *jobs, *shard, deploy, printer, started).await,
        Action::Ship { site, commit, deploy } => {
            run::ship(settings, &config, site, commit, deploy, printer, started).await
        }
        Action::Rollback { site, to, deploy } => {
            let report = rollback::rollback(&config, site, to.as_deref(), deploy, printer).await?;
            run::finish(settings, &config, "rollback", &report, printer, started).await
        }
        Action::Plan { sites, shard } => {
            plan::command(settings, &config, sites, *shard, printer, started).await
        }
        Action::Status { sites } => status::command(settings, &config, sites, printer, started).await,
        Action::History { site } => history::command(settings, &config, site, printer).await,
        Action::Mirror { repos } => mirror::command(&config, repos, printer).await,
        Action::Export {
            site,
            directory,
            commit,
            offline,
        } => export::command(&config, site, directory, commit.clone(), *offline, printer).await,
        Action::Build { site, source } => {
            let built = build::command(&config, site, source, printer).await?;
            printer.result(&built.tag);
            Ok(exit::OK)
        }
        Action::Preview { site, source, port } => {
            let built = build::command(&config, site, source, printer).await?;
            preview::preview(&built, *port, printer).await?;
            Ok(exit::OK)
        }
    }
}

/// The `--json` document of `plan` and `status`: their entries, with the
/// schema, command and start time.
fn json_document<T: serde::Serialize>(
    schema: &str,
    command: &str,
    started: SystemTime,
    sites: &T,
) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "schema": schema,
        "command": command,
        "started_at": humantime::format_rfc3339_seconds(started).to_string(),
        "sites": sites,
    }))?)
}
