//! The check stage, reading only: is the site unchanged (its Deployment runs
//! this source), is its commit older than the deployed one, does preflight
//! let it go on; and a rollout a run before left unfinished, seen through.

use std::time::Instant;

use crate::config::Site;
use crate::deploy::rollout::{RolloutState, rollout_state};
use crate::deploy::{self, Change, DeployError, Deployed, Outcome};
use crate::pipeline::decide::{self, Check};
use crate::pipeline::failure::StageFailure;
use crate::pipeline::report::{SiteAction, SiteReport};
use crate::pipeline::sync::Synced;
use crate::ui::Status;

use super::{Again, Checked, RunContext, Step, digest_of};

impl RunContext<'_> {
    /// Check, reading only: unchanged, older than what runs, preflight.
    pub(super) async fn check<'s>(
        &self,
        site: &Site,
        synced: &'s Synced,
        report: &mut SiteReport,
    ) -> Result<Step<'s>, StageFailure> {
        let tree = synced.tree(&site.path)?;
        let source_digest =
            decide::source_digest(site, self.config.template_dockerfile(site)?.as_deref(), &tree);
        report.source_digest = Some(source_digest.clone());
        let repository = self.config.image_repository(site);
        let started = Instant::now();
        let (deployment, deployed) = self.read_deployed(site).await?;
        let check = decide::check(
            &deployed,
            &repository,
            &source_digest,
            self.options.allow_older,
            async || synced.older_than(&synced.commit.id, &deployed).await,
        )
        .await;
        match check {
            _ if decide::unfinished(&check, &rollout_state(&deployment)) => {
                self.printer.stage(
                    &site.name,
                    "check",
                    Status::Warning,
                    &format!(
                        "{} runs source {} but has not finished rolling it out (a run before stopped mid-rollout?): berth sees it through",
                        site.deployment.name,
                        &source_digest[..12]
                    ),
                );
                return Ok(Step::Unfinished(deployed));
            }
            Check::Unchanged => {
                report
                    .durations
                    .insert("check".into(), started.elapsed().as_secs_f64());
                report.image.clone_from(&deployed.image);
                report.digest = digest_of(&deployed);
                self.printer.stage(
                    &site.name,
                    "check",
                    Status::Skipped,
                    &format!(
                        "unchanged: {} already runs source {}",
                        site.deployment.name,
                        &source_digest[..12]
                    ),
                );
                return Ok(Step::Unchanged);
            }
            Check::Older { deployed_commit } => {
                return Err(DeployError::Older {
                    commit: synced.commit.id.clone(),
                    deployed: deployed_commit,
                }
                .into());
            }
            Check::Proceed => {}
        }
        if let Some(moved) = decide::moved(&deployed, &repository) {
            self.printer.stage(
                &site.name,
                "check",
                Status::Done,
                &format!("{moved}: shipping it there"),
            );
            report.reason = Some(moved);
        }
        self.preflight_findings(
            site,
            deploy::preflight::preflight(&deployment, &site.deployment.container, &site.helm),
        )?;
        report
            .durations
            .insert("check".into(), started.elapsed().as_secs_f64());
        Ok(Step::Ship(Box::new(Checked {
            synced,
            source_digest,
            repository,
            deployment,
            deployed,
        })))
    }

    /// Sees through the rollout of `deployed` that a run before began
    /// ([`Deployer::see_through`]), under the lease: waits and checks it, or
    /// rolls back to the revision before when it fails.
    pub(super) async fn resume(
        &self,
        site: &Site,
        deployed: &Deployed,
        report: &mut SiteReport,
    ) -> Result<SiteAction, StageFailure> {
        let started = Instant::now();
        report.image.clone_from(&deployed.image);
        report.digest = digest_of(deployed);
        // `Unfinished` means the Deployment runs this source: it has an image.
        let image = deployed.image.clone().unwrap_or_default();
        let lock = self.lock(site).await?;
        let outcome = async {
            // Under the lease: still this image, still not rolled out?
            let (deployment, now) = self.read_deployed(site).await?;
            if now.image != deployed.image || rollout_state(&deployment) == RolloutState::Complete {
                return Ok(None);
            }
            let history = self
                .deployer
                .history_of(&deployment, &site.deployment)
                .await
                .map_err(StageFailure::from)?;
            let previous = history
                .iter()
                .find(|revision| {
                    !revision.current && revision.image.is_some() && revision.image != deployed.image
                })
                .map(deploy::Revision::deployed);
            let change = Change {
                image: image.clone(),
                commit: deployed.commit.clone().unwrap_or_default(),
                source_digest: deployed.source_digest.clone().unwrap_or_default(),
                content_digest: deployed.content_digest.clone(),
                change_cause: String::new(),
                helm: site.helm.clone(),
            };
            self.deployer
                .see_through(
                    &site.name,
                    &site.deployment,
                    &change,
                    previous.as_ref(),
                    &lock,
                    self.printer,
                )
                .await
                .map(Some)
                .map_err(|error| {
                    report.verification = error.verification();
                    StageFailure::from(error)
                })
        }
        .await;
        lock.release().await;
        report
            .durations
            .insert("deploy".into(), started.elapsed().as_secs_f64());
        let target = format!("{}/{}", site.deployment.namespace, site.deployment.name);
        let (status, text, action) = match outcome? {
            Some(Outcome::RolledOut(verification)) => {
                report.verification = Some(verification);
                (
                    Status::Done,
                    format!("{target} rolled out ({:.1}s)", started.elapsed().as_secs_f64()),
                    SiteAction::Deployed,
                )
            }
            _ => (
                Status::Skipped,
                format!("unchanged: another caller saw {target} through, or changed it, meanwhile"),
                SiteAction::Unchanged,
            ),
        };
        self.printer.stage(&site.name, "deploy", status, &text);
        Ok(action)
    }

    /// Under the lease: the Deployment read again, and the check made again
    /// on it; `unchanged` when another caller has shipped this source meanwhile.
    pub(super) async fn check_again(
        &self,
        site: &Site,
        checked: &Checked<'_>,
    ) -> Result<Again, StageFailure> {
        let (deployment, deployed) = self.read_deployed(site).await?;
        let commit = &checked.synced.commit.id;
        match decide::check(
            &deployed,
            &checked.repository,
            &checked.source_digest,
            self.options.allow_older,
            async || checked.synced.older_than(commit, &deployed).await,
        )
        .await
        {
            Check::Older { deployed_commit } => Err(DeployError::Older {
                commit: commit.clone(),
                deployed: deployed_commit,
            }
            .into()),
            check => Ok(Again {
                unchanged: check == Check::Unchanged,
                deployment,
                deployed,
            }),
        }
    }

    /// Preflight findings are warnings, or with `--strict` an error that stops
    /// the site before anything is pushed or deployed.
    pub(super) fn preflight_findings(
        &self,
        site: &Site,
        findings: Vec<deploy::preflight::Finding>,
    ) -> Result<(), StageFailure> {
        Ok(deploy::preflight::verdict(
            site,
            findings,
            self.options.strict,
            self.printer,
        )?)
    }
}
