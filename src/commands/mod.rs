//! The CLI verbs. Each takes resolved [`Settings`], works through the
//! pipeline or its stages, prints its result through the [`Printer`] and
//! returns its exit code ([`crate::exit`]); none sees a clap type.
//!
//! - `run`, `ship`, `rollback`, `promote`: change the cluster ([`run`],
//!   [`rollback`], [`promote`]).
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
pub mod promote;
pub mod rollback;
pub mod run;
pub mod status;

use std::time::SystemTime;

use crate::config::{Config, EnvironmentError};
use crate::exit;
use crate::pipeline::decide::{self, PromoteChange};
use crate::settings::{Action, Settings};
use crate::ui::Printer;

/// Runs the command `settings` names; its exit code, or the error it stopped with.
pub async fn execute(settings: &Settings, printer: &Printer) -> anyhow::Result<u8> {
    let started = SystemTime::now();
    let declared = settings.load_config()?;
    let environment = settings.environment.as_deref();
    match &settings.action {
        Action::Validate => {
            declared.in_environment(environment)?;
            let environments = if declared.environments.is_empty() {
                String::new()
            } else {
                format!(", {} environments", declared.environments.len())
            };
            printer.note(&format!(
                "{}: ok ({} repos, {} sites{environments})",
                settings.config_path.display(),
                declared.repos.len(),
                declared.declared_sites.len()
            ));
            Ok(exit::OK)
        }
        Action::Promote {
            site,
            from,
            to,
            commit,
            deploy,
        } => {
            let request = crate::pipeline::promote::Request {
                site,
                from: from.as_deref(),
                to,
                commit: commit.as_deref(),
                options: deploy,
            };
            promote::command(settings, &declared, &request, printer, started).await
        }
        Action::Plan { sites, shard } => {
            let views = views(&declared, environment)?;
            plan::command(settings, &views, sites, *shard, printer, started).await
        }
        Action::Status { sites } => {
            let views = views(&declared, environment)?;
            status::command(settings, &views, sites, printer, started).await
        }
        Action::History { site } => {
            let views = views(&declared, environment)?;
            history::command(settings, &views, site, printer).await
        }
        // The rest work in one environment: `--env`, or the default one.
        Action::Run {
            sites,
            jobs,
            shard,
            deploy,
        } => {
            let config = declared.in_environment(environment)?;
            run::run(settings, &config, sites, *jobs, *shard, deploy, printer, started).await
        }
        Action::Ship { site, commit, deploy } => {
            let config = declared.in_environment(environment)?;
            run::ship(settings, &config, site, commit, deploy, printer, started).await
        }
        Action::Rollback { site, to, deploy } => {
            let config = declared.in_environment(environment)?;
            let report = rollback::rollback(&config, site, to.as_deref(), deploy, printer).await?;
            run::finish(settings, &config, "rollback", &report, printer, started).await
        }
        Action::Mirror { repos } => {
            mirror::command(&declared.in_environment(environment)?, repos, printer).await
        }
        Action::Export {
            site,
            directory,
            commit,
            offline,
        } => {
            let config = declared.in_environment(environment)?;
            export::command(&config, site, directory, commit.clone(), *offline, printer).await
        }
        Action::Build { site, source } => {
            let built = build::command(&declared.in_environment(environment)?, site, source, printer).await?;
            printer.result(&built.tag);
            Ok(exit::OK)
        }
        Action::Preview { site, source, port } => {
            let built = build::command(&declared.in_environment(environment)?, site, source, printer).await?;
            preview::preview(&built, *port, printer).await?;
            Ok(exit::OK)
        }
    }
}

/// The views `plan`, `status` and `history` show: the one `--env` names, or
/// every environment (the file itself when it declares none).
fn views(declared: &Config, environment: Option<&str>) -> Result<Vec<Config>, EnvironmentError> {
    if environment.is_some() || declared.environments.is_empty() {
        return Ok(vec![declared.in_environment(environment)?]);
    }
    declared
        .environment_names()
        .into_iter()
        .map(|name| declared.in_environment(Some(name)))
        .collect()
}

/// The sites named (all when none) in each of `views`: with several views
/// (every environment), a site is left out of those it does not ship to; a
/// name no environment knows is a usage error.
fn selected_in<'c>(
    views: &'c [Config],
    names: &[String],
    shard: Option<crate::pipeline::Shard>,
) -> Result<Vec<(&'c Config, Vec<&'c crate::config::Site>)>, crate::pipeline::SetupError> {
    views
        .iter()
        .map(|config| {
            let here: Vec<String> = if views.len() > 1 {
                names
                    .iter()
                    .filter(|name| config.site(name).is_some() || config.declared_site(name).is_none())
                    .cloned()
                    .collect()
            } else {
                names.to_vec()
            };
            if !names.is_empty() && here.is_empty() {
                return Ok((config, Vec::new()));
            }
            Ok((config, crate::pipeline::select(config, &here, shard)?))
        })
        .collect()
}

/// Every site of `selected` once (a site shipping to several environments
/// is mirrored, and its generator run, once for all of them).
fn every_site<'c>(selected: &[(&Config, Vec<&'c crate::config::Site>)]) -> Vec<&'c crate::config::Site> {
    let mut sites: Vec<&crate::config::Site> = selected
        .iter()
        .flat_map(|(_, sites)| sites.iter().copied())
        .collect();
    sites.sort_by(|a, b| a.name.cmp(&b.name));
    sites.dedup_by(|a, b| a.name == b.name);
    sites
}

/// One row of `plan` or `status`, as the promote column reads it.
struct Row<'a> {
    site: &'a str,
    environment: Option<&'a str>,
    image: Option<&'a str>,
    commit: Option<&'a str>,
}

/// An entry of `plan` or `status`: one site in one environment, with a
/// promote column.
trait SideBySide {
    fn row(&self) -> Row<'_>;
    fn set_promote(&mut self, change: Option<PromoteChange>);
}

/// Fills each entry's promote column ([`promote_column`]).
fn fill_promote_column<E: SideBySide>(declared: &Config, entries: &mut [E]) {
    let rows: Vec<Row<'_>> = entries.iter().map(SideBySide::row).collect();
    let column = promote_column(declared, &rows);
    for (entry, change) in entries.iter_mut().zip(column) {
        entry.set_promote(change);
    }
}

/// Per row, what `berth promote` would change in its environment, when its
/// source environment's row for the same site is shown too
/// ([`decide::promote_change`]).
fn promote_column(declared: &Config, rows: &[Row<'_>]) -> Vec<Option<PromoteChange>> {
    rows.iter()
        .map(|row| {
            let from = declared.promote_source(row.environment?)?;
            let source = rows
                .iter()
                .find(|other| other.site == row.site && other.environment == Some(from))?;
            Some(decide::promote_change(
                from,
                (source.image, source.commit),
                (row.image, row.commit),
            ))
        })
        .collect()
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
