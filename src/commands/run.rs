//! `berth run` (the nightly job: every site at its branch head) and `berth
//! ship` (one site at one commit, from CI): the pipeline, then its result
//! printed, logged and sent to the `[notify]` webhook. `rollback` ends the
//! same way ([`finish`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::commands::{history, notify};
use crate::config::Config;
use crate::exit;
use crate::pipeline::{self, CommitChoice, DeployOptions, RunReport, Shard};
use crate::settings::Settings;
use crate::ui::Printer;

/// `berth run`: the named sites (all when none), narrowed to `shard`, at their branch heads.
#[expect(
    clippy::too_many_arguments,
    reason = "one per flag of `berth run`, and the printer and start"
)]
pub async fn run(
    settings: &Settings,
    config: &Config,
    sites: &[String],
    jobs: usize,
    shard: Option<Shard>,
    options: &DeployOptions,
    printer: &Printer,
    started: SystemTime,
) -> anyhow::Result<u8> {
    let selected = pipeline::select(config, sites, shard)?;
    let interrupted = watching_signals(printer);
    let choice = CommitChoice::BranchHead;
    let report = pipeline::run(config, &selected, choice, jobs, options, interrupted, printer).await?;
    finish(settings, config, "run", &report, printer, started).await
}

/// `berth ship`: one site at exactly `commit`.
pub async fn ship(
    settings: &Settings,
    config: &Config,
    site: &str,
    commit: &str,
    options: &DeployOptions,
    printer: &Printer,
    started: SystemTime,
) -> anyhow::Result<u8> {
    let selected = pipeline::select(config, &[site.to_string()], None)?;
    let choice = CommitChoice::Exact(commit.to_string());
    let interrupted = watching_signals(printer);
    let report = pipeline::run(config, &selected, choice, 1, options, interrupted, printer).await?;
    finish(settings, config, "ship", &report, printer, started).await
}

/// Prints a run's result (table or JSON), logs it, notifies, and gives the exit code.
pub async fn finish(
    settings: &Settings,
    config: &Config,
    command: &str,
    report: &RunReport,
    printer: &Printer,
    started: SystemTime,
) -> anyhow::Result<u8> {
    let code = exit::of_run(report);
    let document = report.document(command, started, code);
    if let Some(webhook) = &config.notify {
        notify::send(webhook, command, report, document.clone(), printer).await;
    }
    // A site's own webhook in this environment hears of that site only.
    for site in &report.sites {
        if let Some(webhook) = config.site(&site.site).and_then(|s| s.notify.as_ref()) {
            let own = RunReport {
                environment: report.environment.clone(),
                sites: vec![site.clone()],
                interrupted: report.interrupted,
            };
            let document = own.document(command, started, exit::of_run(&own));
            notify::send(webhook, command, &own, document, printer).await;
        }
    }
    if settings.json {
        printer.result(&serde_json::to_string_pretty(&document)?);
    } else {
        printer.result(&report.summary());
    }
    if let Err(error) = history::append_log(config, command, report) {
        printer.warning(&format!(
            "cannot write the run log in {}: {error}",
            config.state_dir.display()
        ));
    }
    Ok(code)
}

/// The flag a run stops starting stages at, set by the first Ctrl-C (or
/// SIGTERM); the watch ends with the process.
fn watching_signals(printer: &Printer) -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    tokio::spawn(watch_signals(interrupted.clone(), printer.clone()));
    interrupted
}

/// First Ctrl-C (or SIGTERM): no new stage starts; in-flight rollouts finish or
/// roll back and release their locks. Second: exit at once (leases then expire).
async fn watch_signals(interrupted: Arc<AtomicBool>, printer: Printer) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return;
    };
    for count in 0.. {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if count == 0 {
            interrupted.store(true, Ordering::SeqCst);
            printer.warning("interrupted: no new work starts; rollouts in flight finish or roll back, then berth stops (again to abort now)");
        } else {
            printer.warning("aborted: Deployment leases held now expire within 30s");
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    }
}
