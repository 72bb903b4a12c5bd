//! `berth rollback`'s steps: the site's Deployment back to the newest
//! earlier revision that passed berth's verification (or that berth has no record
//! of), passing over the ones berth knows failed and saying why
//! ([`crate::deploy::revisions::choose`]), or to the newest earlier one that ran
//! a given commit, failed or not; under its lease, waited for and verified
//! like a rollout.

use std::time::Instant;

use crate::config::Config;
use crate::deploy::{Change, Outcome};
use crate::pipeline::{self, DeployOptions, RunReport, SiteAction, SiteReport, connect_cluster, run_log};
use crate::reference;
use crate::ui::{Printer, Status};

/// Rolls `site`'s Deployment back to the newest earlier revision that is not
/// known to have failed, or to the newest earlier revision that ran `to` (a
/// commit or its prefix), and waits for it.
pub async fn rollback(
    config: &Config,
    name: &str,
    to: Option<&str>,
    options: &DeployOptions,
    printer: &Printer,
) -> anyhow::Result<RunReport> {
    let site = pipeline::select(config, &[name.to_string()], None)?.remove(0);
    let deployer = connect_cluster(config).await?;
    let started = Instant::now();
    let mut report = SiteReport::new(&site.name);
    let result = async {
        let lock = deployer
            .lock_site(site, "rolling back", options.lock_wait, printer)
            .await?;
        let outcome = async {
            let failed = run_log::failed_runs(config, &site.name);
            let choice = deployer.rollback_choice(&site.deployment, to, &failed).await?;
            if let Some(warning) = &choice.warning {
                printer.stage(
                    &site.name,
                    "rollback",
                    Status::Warning,
                    &format!("{warning}; trying it, as --to asks"),
                );
            }
            printer.stage(&site.name, "rollback", Status::Done, &choice.summary());
            let revision = choice.target.clone();
            report.rollback = Some(choice);
            let image = revision.image.clone().unwrap_or_default();
            let commit = revision.commit.clone().unwrap_or_default();
            let change = Change {
                image: image.clone(),
                commit: commit.clone(),
                source_digest: revision.source_digest.unwrap_or_default(),
                content_digest: revision.content_digest,
                change_cause: format!(
                    "berth rollback: {} to {}",
                    site.name,
                    if commit.is_empty() {
                        image.clone()
                    } else {
                        reference::short(&commit).to_string()
                    }
                ),
                helm: site.helm.clone(),
            };
            // Said before the rollout, so a failed one logs the image it tried.
            report.commit = Some(change.commit.clone()).filter(|c| !c.is_empty());
            report.source_digest = Some(change.source_digest.clone()).filter(|d| !d.is_empty());
            report.digest = reference::digest(&change.image).map(str::to_string);
            report.image = Some(change.image.clone());
            deployer
                .apply(&site.name, &site.deployment, &change, None, &lock, printer)
                .await
                .inspect_err(|error| report.verification = error.verification())
        }
        .await;
        lock.release().await;
        outcome
    }
    .await;
    report
        .durations
        .insert("deploy".into(), started.elapsed().as_secs_f64());
    match result {
        Ok(outcome) => {
            report.action = match outcome {
                Outcome::UpToDate => SiteAction::UpToDate,
                Outcome::RolledOut(verification) => {
                    report.verification = Some(verification);
                    SiteAction::Deployed
                }
            };
            let target = format!("{}/{}", site.deployment.namespace, site.deployment.name);
            printer.stage(
                &site.name,
                "deploy",
                Status::Done,
                &format!("{target} rolled back ({:.1}s)", started.elapsed().as_secs_f64()),
            );
        }
        Err(error) => report.fail(error.kind(), &anyhow::Error::new(error), printer),
    }
    Ok(RunReport {
        environment: config.environment.clone(),
        sites: vec![report],
        interrupted: false,
    })
}
