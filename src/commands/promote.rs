//! `berth promote SITE --to ENV [--from ENV] [--commit C]`: the image a site
//! runs (or ran, and passed) in one environment, deployed to another by
//! digest ([`crate::pipeline::promote`]); its result printed, logged in the
//! target environment and sent to the target's webhook, as `run`'s is.

use std::time::SystemTime;

use crate::commands::run;
use crate::config::{Config, OverrideError};
use crate::pipeline::promote::{self, Request};
use crate::settings::Settings;
use crate::ui::Printer;

/// Promotes, then ends as `run` does ([`run::finish`]) in the target
/// environment. `--context`, `--namespace` and `--kubeconfig` are refused
/// (each environment names its own cluster); `--timeout` is the target's.
pub async fn command(
    settings: &Settings,
    declared: &Config,
    request: &Request<'_>,
    printer: &Printer,
    started: SystemTime,
) -> anyhow::Result<u8> {
    let given = settings.cluster.given();
    if !given.is_empty() {
        return Err(OverrideError::Promote {
            options: given.join(", "),
        }
        .into());
    }
    let (target, report) = promote::promote(declared, request, printer).await?;
    run::finish(settings, &target, "promote", &report, printer, started).await
}
