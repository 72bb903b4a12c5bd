//! The CLI verbs. Each takes resolved [`Settings`], works through the
//! pipeline or its stages, prints its result through the [`Printer`] and
//! returns its exit code ([`crate::exit`]); none sees a clap type.
//!
//! - `run`, `ship`, `rollback`, `promote`: change the cluster ([`run`],
//!   [`rollback`], [`promote`]).
//! - `plan`, `status`, `history`: read only ([`plan`], [`status`], [`history`]).
//! - `gc`: the registries ([`gc`]).
//! - `mirror`, `export`: the mirrors ([`mirror`], [`export`]).
//! - `build`, `preview`: a developer's working tree ([`build`], [`preview`]).
//! - `validate`: the pipeline file alone.

pub mod build;
pub mod export;
pub mod gc;
pub mod history;
pub mod mirror;
pub mod notify;
pub mod plan;
pub mod preview;
pub mod promote;
pub mod rollback;
pub mod run;
pub mod status;
pub mod validate;

use std::time::SystemTime;

use crate::config::{Config, EnvironmentError, OverrideError};
use crate::exit;
use crate::pipeline::decide::{self, PromoteChange};
use crate::settings::{Action, Settings};
use crate::ui::Printer;

/// Runs the command `settings` names; its exit code, or the error it stopped with.
#[expect(clippy::too_many_lines, reason = "one arm per command, each a few lines")]
pub async fn execute(settings: &Settings, printer: &Printer) -> anyhow::Result<u8> {
    let started = SystemTime::now();
    let declared = match settings.load_config() {
        Ok(declared) => declared,
        Err(error) if matches!(settings.action, Action::Validate) => {
            return Ok(validate::refused(settings, &error, printer, started));
        }
        Err(error) => return Err(error.into()),
    };
    let environment = settings.environment.as_deref();
    // The one environment a command works in, with the cluster options applied.
    let view = || -> anyhow::Result<Config> {
        Ok(declared
            .in_environment(environment)?
            .with_cluster(&settings.cluster)?)
    };
    match &settings.action {
        Action::Validate => Ok(validate::command(settings, &declared, printer, started)),
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
                cluster: &settings.cluster,
            };
            promote::command(settings, &declared, &request, printer, started).await
        }
        Action::Plan { sites, shard } => {
            let views = views(&declared, environment, settings, "plan")?;
            plan::command(settings, &views, sites, *shard, printer, started).await
        }
        Action::Status { sites } => {
            let views = views(&declared, environment, settings, "status")?;
            status::command(settings, &views, sites, printer, started).await
        }
        Action::History { site } => {
            let views = views(&declared, environment, settings, "history")?;
            history::command(settings, &views, site, printer, started).await
        }
        // The rest work in one environment: `--env`, or the default one.
        Action::Run {
            sites,
            jobs,
            shard,
            deploy,
        } => {
            let config = view()?;
            run::run(settings, &config, sites, *jobs, *shard, deploy, printer, started).await
        }
        Action::Ship { site, commit, deploy } => {
            let config = view()?;
            run::ship(settings, &config, site, commit, deploy, printer, started).await
        }
        Action::Rollback { site, to, deploy } => {
            let config = view()?;
            let report = rollback::rollback(&config, site, to.as_deref(), deploy, printer).await?;
            run::finish(settings, &config, "rollback", &report, printer, started).await
        }
        Action::Gc {
            sites,
            delete,
            lock_wait,
        } => {
            // Every environment's Deployments say what is needed; `--env` narrows the registries.
            declared.in_environment(environment)?;
            let given = settings.cluster.given();
            if declared.environments.len() > 1 && !given.is_empty() {
                return Err(OverrideError::Gc {
                    options: given.join(", "),
                }
                .into());
            }
            let views = views(&declared, None, settings, "gc")?;
            let request = crate::pipeline::gc::Request {
                sites,
                environment,
                delete: *delete,
                lock_wait: *lock_wait,
            };
            gc::command(settings, &views, &request, printer, started).await
        }
        Action::Mirror { repos } => mirror::command(&view()?, repos, settings.json, printer, started).await,
        Action::Export {
            site,
            directory,
            commit,
            offline,
        } => {
            let request = export::Request {
                site,
                directory,
                commit: commit.clone(),
                offline: *offline,
            };
            export::command(&view()?, request, settings.json, printer, started).await
        }
        Action::Build { site, source } => {
            let built = build::command(&view()?, site, source, printer).await?;
            build::print(&built, settings.json, printer, started)?;
            Ok(exit::OK)
        }
        Action::Preview { site, source, port } => {
            let built = build::command(&view()?, site, source, printer).await?;
            preview::preview(&built, *port, settings.json, printer, started).await?;
            Ok(exit::OK)
        }
    }
}

/// The views `plan`, `status` and `history` show: the one `--env` names, or
/// every environment (the file itself when it declares none), with the
/// cluster options applied; those naming one cluster need one view.
fn views(
    declared: &Config,
    environment: Option<&str>,
    settings: &Settings,
    command: &'static str,
) -> anyhow::Result<Vec<Config>> {
    let views: Vec<Config> = if environment.is_some() || declared.environments.is_empty() {
        vec![declared.in_environment(environment)?]
    } else {
        declared
            .environment_names()
            .into_iter()
            .map(|name| declared.in_environment(Some(name)))
            .collect::<Result<_, EnvironmentError>>()?
    };
    let given = settings.cluster.given();
    if views.len() > 1 && !given.is_empty() {
        return Err(OverrideError::SeveralEnvironments {
            options: given.join(", "),
            command,
            environments: declared.environment_names().join(", "),
        }
        .into());
    }
    Ok(views
        .into_iter()
        .map(|view| view.with_cluster(&settings.cluster))
        .collect::<Result<_, OverrideError>>()?)
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

/// A command's `--json` document: `body`'s fields (an object), after the
/// schema, command and start time every document begins with.
fn json_document<T: serde::Serialize>(
    schema: &str,
    command: &str,
    started: SystemTime,
    body: &T,
) -> anyhow::Result<String> {
    let mut document = serde_json::json!({
        "schema": schema,
        "command": command,
        "started_at": humantime::format_rfc3339_seconds(started).to_string(),
    });
    match (serde_json::to_value(body)?, document.as_object_mut()) {
        (serde_json::Value::Object(fields), Some(head)) => head.extend(fields),
        (other, _) => anyhow::bail!("a {command} document is an object, not {other}"),
    }
    Ok(serde_json::to_string_pretty(&document)?)
}
