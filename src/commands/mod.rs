//! The CLI verbs, one file each. A verb's file holds its clap arguments
//! (`Args`) and its one entry, `pub async fn run(context: &Context<'_>, args:
//! Args) -> anyhow::Result<u8>`: it reads the pipeline file through its
//! [`Context`], has the [`crate::pipeline`] do the work, prints the result
//! (a table or `--json`) and returns the exit code. A verb's steps live in
//! the pipeline; a verb never reaches a stage (`git`, `image`, `registry`,
//! `deploy`) itself.
//!
//! - `run`, `ship`, `rollback`, `promote`: change the cluster.
//! - `plan`, `status`, `history`: read only.
//! - `gc`: the registries.
//! - `mirror`, `export`: the mirrors.
//! - `build`, `preview`: a developer's working tree.
//! - `serve`: every push shipped as it comes, from the forge's webhooks.
//! - `validate`: the pipeline file alone.
//!
//! Adding a verb: its file, and its variant of [`Command`].

pub mod build;
pub mod export;
pub mod gc;
pub mod history;
pub mod mirror;
pub mod plan;
pub mod pr;
pub mod preview;
pub mod promote;
pub mod rollback;
pub mod run;
pub mod serve;
pub mod ship;
pub mod status;
pub mod validate;

use std::cell::OnceCell;
use std::time::{Duration, SystemTime};

use crate::config::{Config, ConfigError, EnvironmentError, OverrideError};
use crate::exit;
use crate::pipeline::{self, DeployOptions, RunReport};
use crate::settings::{Settings, parse_duration};
use crate::ui::Printer;

/// berth's verbs, each with its own arguments.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the pipeline file and report every problem with <file:line:column>.
    Validate(validate::Args),
    /// Mirror, build, push and deploy every site (or the named ones), skipping unchanged ones.
    Run(run::Args),
    /// Ship exactly one commit of one site (per-commit CI).
    Ship(ship::Args),
    /// Roll a site's Deployment back to its newest earlier revision not known to have failed,
    /// or to a commit it ran before.
    Rollback(rollback::Args),
    /// Deploy the exact image a site runs (or ran) in one environment to another, by digest.
    Promote(promote::Args),
    /// Show what `run` would do for each site, changing nothing.
    Plan(plan::Args),
    /// Show each site's branch head, deployed commit and image, rollout state;
    /// exit 1 when a site's last rollout failed.
    Status(status::Args),
    /// Show a site's past deployments (ReplicaSet revisions and berth's run log).
    History(history::Args),
    /// Delete old images of the named sites (default: all) from their registries, keeping
    /// every one still needed; a dry run without --delete.
    Gc(gc::Args),
    /// Fetch the mirrors of the named repos (default: all) and print each branch head.
    Mirror(mirror::Args),
    /// Write a site's folder at a commit, from its repo's mirror, into an empty folder.
    Export(export::Args),
    /// Build a site from a working tree (uncommitted changes included) into the local Engine.
    Build(build::Args),
    /// Build a site from a working tree and serve it on a loopback port until Ctrl-C.
    Preview(preview::Args),
    /// Pull requests' previews: deploy, close, list, gc.
    Pr(pr::Args),
    /// Ship every push within seconds: a server for the forge's webhooks, with a poll,
    /// commit statuses, a status page, JSON and metrics.
    Serve(serve::Args),
}

impl Command {
    /// Runs the verb; its exit code, or the error it stopped with.
    pub async fn run(self, context: &Context<'_>) -> anyhow::Result<u8> {
        match self {
            Self::Validate(args) => validate::run(context, args).await,
            Self::Run(args) => run::run(context, args).await,
            Self::Ship(args) => ship::run(context, args).await,
            Self::Rollback(args) => rollback::run(context, args).await,
            Self::Promote(args) => promote::run(context, args).await,
            Self::Plan(args) => plan::run(context, args).await,
            Self::Status(args) => status::run(context, args).await,
            Self::History(args) => history::run(context, args).await,
            Self::Gc(args) => gc::run(context, args).await,
            Self::Mirror(args) => mirror::run(context, args).await,
            Self::Export(args) => export::run(context, args).await,
            Self::Build(args) => build::run(context, args).await,
            Self::Preview(args) => preview::run(context, args).await,
            Self::Pr(args) => pr::run(context, args).await,
            Self::Serve(args) => serve::run(context, args).await,
        }
    }
}

/// What every verb is given: the settings, the printer, when the command
/// started, and the pipeline file, read once when a verb first asks.
pub struct Context<'a> {
    pub settings: &'a Settings,
    pub printer: &'a Printer,
    pub started: SystemTime,
    declared: OnceCell<Config>,
}

impl<'a> Context<'a> {
    pub fn new(settings: &'a Settings, printer: &'a Printer) -> Self {
        Self {
            settings,
            printer,
            started: SystemTime::now(),
            declared: OnceCell::new(),
        }
    }

    /// The pipeline file as declared: every environment, none applied.
    pub fn declared(&self) -> Result<&Config, ConfigError> {
        if let Some(declared) = self.declared.get() {
            return Ok(declared);
        }
        let loaded = self.settings.load_config()?;
        Ok(self.declared.get_or_init(|| loaded))
    }

    /// The one environment a command that changes things works in (`--env`,
    /// or the default one), with the cluster options applied.
    pub fn view(&self) -> anyhow::Result<Config> {
        Ok(self
            .declared()?
            .in_environment(self.settings.environment.as_deref())?
            .with_cluster(&self.settings.cluster)?)
    }

    /// The environments `command` shows side by side (`plan`, `status`,
    /// `history`, `gc`): the one `--env` names, or every environment (the file
    /// itself when it declares none), with the cluster options applied;
    /// options that name one cluster need one environment.
    pub fn views(&self, command: &'static str) -> anyhow::Result<Vec<Config>> {
        self.views_in(self.settings.environment.as_deref(), command)
    }

    /// Every environment of the file (the file itself when it declares none),
    /// whatever `--env` says, with the cluster options applied (`gc`: every
    /// environment's Deployments say which images are needed).
    pub fn every_view(&self, command: &'static str) -> anyhow::Result<Vec<Config>> {
        self.views_in(None, command)
    }

    fn views_in(&self, environment: Option<&str>, command: &'static str) -> anyhow::Result<Vec<Config>> {
        let declared = self.declared()?;
        let views: Vec<Config> = if environment.is_some() || declared.environments.is_empty() {
            vec![declared.in_environment(environment)?]
        } else {
            declared
                .environment_names()
                .into_iter()
                .map(|name| declared.in_environment(Some(name)))
                .collect::<Result<_, EnvironmentError>>()?
        };
        let given = self.settings.cluster.given();
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
            .map(|view| view.with_cluster(&self.settings.cluster))
            .collect::<Result<_, OverrideError>>()?)
    }

    /// A command's `--json` document: `body`'s fields (an object), after the
    /// schema, command and start time every document begins with.
    pub fn document<T: serde::Serialize>(
        &self,
        schema: &str,
        command: &str,
        body: &T,
    ) -> anyhow::Result<String> {
        json_document(schema, command, self.started, body)
    }

    /// Prints a run's result (table or JSON), logs it in the run log, sends
    /// it to the `[notify]` webhooks, and gives its exit code: how `run`,
    /// `ship`, `rollback` and `promote` end.
    pub async fn finish_run(&self, config: &Config, command: &str, report: &RunReport) -> anyhow::Result<u8> {
        let code = report.exit_code();
        let document = report.document(command, self.started, code);
        pipeline::notify::tell(config, command, report, &document, self.started, self.printer).await;
        if self.settings.json {
            self.printer.result(&serde_json::to_string_pretty(&document)?);
        } else {
            self.printer.result(&report.summary());
        }
        if let Err(error) = pipeline::run_log::append(config, command, report) {
            self.printer.warning(&format!(
                "cannot write the run log in {}: {error}",
                config.state_dir.display()
            ));
        }
        Ok(code)
    }
}

/// The options of the verbs that deploy (`run`, `ship`, `rollback`, `promote`).
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Turn preflight warnings (a rollout that could drop the site) into errors.
    #[arg(long)]
    pub strict: bool,
    /// Deploy a commit that is older than (an ancestor of) the deployed one.
    #[arg(long)]
    pub allow_older: bool,
    /// How long to wait for another caller's lock on a Deployment, for example `2m`.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub lock_wait: Duration,
}

impl DeployArgs {
    /// The pipeline's deploy options these flags ask for.
    pub fn options(&self) -> DeployOptions {
        DeployOptions {
            strict: self.strict,
            allow_older: self.allow_older,
            lock_wait: self.lock_wait,
        }
    }
}

/// The exit code of a command that stopped with `error`.
pub fn error_code(error: &anyhow::Error) -> u8 {
    exit::code([pipeline::failure::kind_of(error)])
}

/// A `--json` document: `body`'s fields (an object), after the schema,
/// command and start time every document begins with.
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
