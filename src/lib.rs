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
pub mod local;
pub mod mirror;
pub mod notify;
pub mod output;
mod pack_index;
pub mod pipeline;
pub mod previous;
pub mod push;
pub mod reference;
pub mod settings;
pub mod ssh;
pub mod views;
pub mod wildcard;

use std::process::ExitCode;

use clap::Parser;

use crate::config::ConfigError;
use crate::output::Printer;
use crate::pipeline::Revision;
use crate::settings::{Action, Settings};

/// Exit codes, documented in the README, and the one place that decides them.
pub mod exit {
    use crate::config::ConfigError;
    use crate::pipeline::{FailureKind, RunReport, SetupError, SiteAction};

    /// Everything went well.
    pub const OK: u8 = 0;
    /// At least one site failed (rolled back or not).
    pub const SITE_FAILED: u8 = 1;
    /// Usage or configuration error.
    pub const USAGE: u8 = 2;
    /// Environment error: Docker Engine, registry or cluster unreachable.
    pub const ENVIRONMENT: u8 = 3;

    /// A run's code: ENVIRONMENT when a site failed on an unreachable part,
    /// else SITE_FAILED when a site failed or was interrupted, else OK.
    pub fn of_run(report: &RunReport) -> u8 {
        if report
            .sites
            .iter()
            .any(|s| s.failure == Some(FailureKind::Environment))
        {
            ENVIRONMENT
        } else if report
            .sites
            .iter()
            .any(|s| matches!(s.action, SiteAction::Failed | SiteAction::Interrupted))
        {
            SITE_FAILED
        } else {
            OK
        }
    }

    /// The code of a command that stopped with `error`, by its kind.
    pub fn of_error(error: &anyhow::Error) -> u8 {
        for cause in error.chain() {
            if cause.downcast_ref::<ConfigError>().is_some() {
                return USAGE;
            }
            if let Some(setup) = cause.downcast_ref::<SetupError>() {
                return match setup {
                    SetupError::UnknownSite { .. }
                    | SetupError::UnknownRepo { .. }
                    | SetupError::NotEmpty { .. } => USAGE,
                    SetupError::Environment(_) => ENVIRONMENT,
                };
            }
        }
        SITE_FAILED
    }

    /// SITE_FAILED when any of `failed` is true, else OK (plan, mirror).
    pub fn of_failures(mut failed: impl Iterator<Item = bool>) -> u8 {
        if failed.any(|f| f) { SITE_FAILED } else { OK }
    }
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
    start_git();
    // libgit2 re-hashes every object it reads (SHA-1 with collision detection,
    // not SHA-NI): for a site read from the mirror that was 37 % of berth's CPU in
    // a 50 MB build. git itself does not; zlib's checksum still guards each
    // object, the pack's index its place, and objects received by a fetch are
    // hashed by the indexer as before.
    git2::opts::strict_hash_verification(false);
    bound_git_memory();
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

/// Starts libgit2 without OpenSSL's CA bundle: libgit2 loads the whole bundle
/// as it starts (30–40 ms, more than the rest of a no-change `berth mirror`),
/// though only https remotes need it. [`mirror`] loads it before the first
/// https fetch.
#[expect(
    unsafe_code,
    reason = "the environment is changed while berth has a single thread"
)]
fn start_git() {
    let configured = std::env::var_os("SSL_CERT_FILE");
    // SAFETY: at start, before any other thread exists.
    unsafe { std::env::set_var("SSL_CERT_FILE", "/dev/null") };
    // Starts libgit2. Its object cache helps nothing berth does (each object is
    // read once); the field notes measured fetches into a large mirror faster
    // without it. On docs/benchmarks.md's generated repo it made no difference.
    git2::opts::enable_caching(false);
    // SAFETY: as above; berth's children see the variable as it was.
    unsafe {
        match configured {
            Some(file) => std::env::set_var("SSL_CERT_FILE", file),
            None => std::env::remove_var("SSL_CERT_FILE"),
        }
    }
}

/// libgit2 maps pack files in windows of up to 1 GiB and keeps up to 8 GiB mapped;
/// reading a large site's blobs then counts the whole pack as resident memory.
/// Small windows and a small mapped limit keep berth's memory flat in site size.
#[expect(
    unsafe_code,
    reason = "libgit2's global options are set through unsafe functions"
)]
fn bound_git_memory() {
    // SAFETY: called once at start, before any thread uses libgit2.
    unsafe {
        let _ = git2::opts::set_mwindow_size(8 << 20);
        let _ = git2::opts::set_mwindow_mapped_limit(32 << 20);
    }
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
            exit::of_error(&error)
        }
    }
}

async fn execute(settings: &Settings, printer: &Printer) -> anyhow::Result<u8> {
    let started = std::time::SystemTime::now();
    match &settings.action {
        Action::Validate => {
            let config = settings.load_config()?;
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
        } => {
            let config = settings.load_config()?;
            let selected = views::select(&config, sites, *shard)?;
            let report =
                pipeline::run(&config, &selected, Revision::BranchHead, *jobs, deploy, printer).await?;
            notify(&config, "run", &report, started, printer).await;
            finish(settings, printer, &config, "run", &report, started)
        }
        Action::Ship { site, commit, deploy } => {
            let config = settings.load_config()?;
            let selected = views::select(&config, std::slice::from_ref(site), None)?;
            let report = pipeline::run(
                &config,
                &selected,
                Revision::Exact(commit.clone()),
                1,
                deploy,
                printer,
            )
            .await?;
            notify(&config, "ship", &report, started, printer).await;
            finish(settings, printer, &config, "ship", &report, started)
        }
        Action::Rollback { site, to, deploy } => {
            let config = settings.load_config()?;
            let report = pipeline::rollback(&config, site, to.as_deref(), deploy, printer).await?;
            notify(&config, "rollback", &report, started, printer).await;
            finish(settings, printer, &config, "rollback", &report, started)
        }
        Action::Plan { sites, shard } => {
            let config = settings.load_config()?;
            let selected = views::select(&config, sites, *shard)?;
            let entries = views::plan(&config, &selected, printer).await?;
            if settings.json {
                printer.result(&json_document("berth.plan/v1", "plan", started, &entries)?);
            } else {
                printer.result(&views::plan_table(&entries));
            }
            Ok(exit::of_failures(
                entries.iter().map(|e| e.action == views::PlanAction::Error),
            ))
        }
        Action::Status { sites } => {
            let config = settings.load_config()?;
            let selected = views::select(&config, sites, None)?;
            let entries = views::status(&config, &selected, printer).await?;
            if settings.json {
                printer.result(&json_document("berth.status/v1", "status", started, &entries)?);
            } else {
                printer.result(&views::status_table(&entries));
            }
            Ok(exit::OK)
        }
        Action::History { site } => {
            let config = settings.load_config()?;
            let selected = views::select(&config, std::slice::from_ref(site), None)?;
            let history = views::history(&config, selected[0]).await?;
            if settings.json {
                printer.result(&serde_json::to_string_pretty(&history)?);
            } else {
                printer.result(&views::history_text(&history));
            }
            Ok(exit::OK)
        }
        Action::Mirror { repos } => {
            let config = settings.load_config()?;
            let report = pipeline::mirror_repos(&config, repos, printer).await?;
            if !report.rows.is_empty() {
                printer.result(&output::table(&["REPO", "BRANCH", "HEAD"], &report.rows));
            }
            Ok(exit::of_failures(std::iter::once(report.failed > 0)))
        }
        Action::Export {
            site,
            directory,
            commit,
            offline,
        } => {
            let config = settings.load_config()?;
            let selected = views::select(&config, std::slice::from_ref(site), None)?;
            let revision = commit.clone().map_or(Revision::BranchHead, Revision::Exact);
            let exported =
                pipeline::export_site(&config, selected[0], revision, *offline, directory, printer).await?;
            printer.result(&exported.commit.id);
            Ok(exit::OK)
        }
        Action::Build { site, source } => {
            let config = settings.load_config()?;
            let selected = views::select(&config, std::slice::from_ref(site), None)?;
            let built = local::build(&config, selected[0], source, printer).await?;
            printer.result(&built.tag);
            Ok(exit::OK)
        }
        Action::Preview { site, source, port } => {
            let config = settings.load_config()?;
            let selected = views::select(&config, std::slice::from_ref(site), None)?;
            let built = local::build(&config, selected[0], source, printer).await?;
            local::preview(&built, *port, printer).await?;
            Ok(exit::OK)
        }
    }
}

/// Prints a run's result (table or JSON), logs it, notifies, and gives the exit code.
fn finish(
    settings: &Settings,
    printer: &Printer,
    config: &config::Config,
    command: &str,
    report: &pipeline::RunReport,
    started: std::time::SystemTime,
) -> anyhow::Result<u8> {
    let code = exit::of_run(report);
    if settings.json {
        printer.result(&serde_json::to_string_pretty(
            &report.document(command, started, code),
        )?);
    } else {
        printer.result(&report.summary());
    }
    if let Err(error) = views::append_log(config, command, report) {
        printer.warning(&format!(
            "cannot write the run log in {}: {error}",
            config.state_dir.display()
        ));
    }
    Ok(code)
}

/// Sends the `[notify]` webhook, if configured; never fails the command.
async fn notify(
    config: &config::Config,
    command: &str,
    report: &pipeline::RunReport,
    started: std::time::SystemTime,
    printer: &Printer,
) {
    if let Some(settings) = &config.notify {
        let document = report.document(command, started, exit::of_run(report));
        notify::send(settings, command, report, document, printer).await;
    }
}

fn json_document<T: serde::Serialize>(
    schema: &str,
    command: &str,
    started: std::time::SystemTime,
    sites: &T,
) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "schema": schema,
        "command": command,
        "started_at": humantime::format_rfc3339_seconds(started).to_string(),
        "sites": sites,
    }))?)
}
