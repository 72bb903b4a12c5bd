//! The deploy stage, under the Deployment's lease: decide again there, check
//! the image is still in the registry, set it and see the rollout through
//! (or record a commit whose files the running image already serves).

use std::time::Instant;

use anyhow::anyhow;

use crate::config::Site;
use crate::deploy::{Change, Outcome};
use crate::pipeline::decide::{self};
use crate::pipeline::failure::StageFailure;
use crate::pipeline::report::{SiteAction, SiteReport};
use crate::reference;
use crate::registry::{self};
use crate::ui::Status;

use super::{Again, Checked, RunContext, digest_of};

impl RunContext<'_> {
    /// Deploys `image`, holding the Deployment's lease; decides again under it.
    pub(super) async fn deploy(
        &self,
        site: &Site,
        checked: &Checked<'_>,
        image: String,
        content_digest: Option<String>,
        report: &mut SiteReport,
    ) -> Result<SiteAction, StageFailure> {
        let started = Instant::now();
        let commit = &checked.synced.commit;
        let change = Change {
            image: image.clone(),
            commit: commit.id.clone(),
            source_digest: checked.source_digest.clone(),
            content_digest,
            change_cause: format!(
                "berth: {} {} {}",
                site.name,
                reference::short(&commit.id),
                commit.summary
            ),
            helm: site.helm.clone(),
        };
        let target = format!("{}/{}", site.deployment.namespace, site.deployment.name);
        self.check_interrupted("deploy")?;
        let lock = self.lock(site).await?;
        let outcome = async {
            let again = self.check_again(site, checked).await?;
            if again.unchanged {
                return Ok(None);
            }
            self.still_in_registry(site, &image).await?;
            let outcome = self
                .deployer
                .apply(
                    &site.name,
                    &site.deployment,
                    &change,
                    Some(again.deployment),
                    &lock,
                    self.printer,
                )
                .await
                .map_err(|error| {
                    report.verification = error.verification();
                    StageFailure::from(error)
                })?;
            Ok::<_, StageFailure>(Some(outcome))
        }
        .await;
        lock.release().await;
        report
            .durations
            .insert("deploy".into(), started.elapsed().as_secs_f64());
        let (status, text, action) = match outcome? {
            None => (
                Status::Skipped,
                format!("unchanged: {target} was just deployed by another caller"),
                SiteAction::Unchanged,
            ),
            Some(Outcome::UpToDate) => (
                Status::Skipped,
                format!("up to date: {target} already runs {image}"),
                SiteAction::UpToDate,
            ),
            Some(Outcome::RolledOut(verification)) => {
                report.verification = Some(verification);
                (
                    Status::Done,
                    format!("{target} rolled out ({:.1}s)", started.elapsed().as_secs_f64()),
                    SiteAction::Deployed,
                )
            }
        };
        self.printer.stage(&site.name, "deploy", status, &text);
        Ok(action)
    }

    /// Under the lease: the registry still holds `image` (`berth gc` takes
    /// the same lease, so it cannot delete it from here on); nothing changes
    /// when it was deleted since berth found it there.
    pub(super) async fn still_in_registry(&self, site: &Site, image: &str) -> Result<(), StageFailure> {
        let Some(digest) = reference::digest(image) else {
            return Ok(());
        };
        let endpoint = registry::Endpoint {
            auth: self.auth,
            repository: &site.image,
        };
        let repository = registry::Repository::new(endpoint, self.plain_http).map_err(StageFailure::from)?;
        match repository.digest_of(digest).await.map_err(StageFailure::from)? {
            Some(_) => Ok(()),
            None => Err(anyhow!(
                "{image} is no longer in the registry (deleted since berth found it there, by `berth gc`?); the Deployment was not touched, and the next run builds it again"
            )
            .into()),
        }
    }

    /// A commit whose image would serve the files the Deployment already
    /// serves: under the lease, and deciding again there, berth records the
    /// commit and source digest on the Deployment's lease (so the next run
    /// calls the site unchanged, and the out-of-order guard starts from this
    /// commit) and touches neither the registry nor the Deployment.
    pub(super) async fn record_same_files(
        &self,
        site: &Site,
        checked: &Checked<'_>,
        content_digest: &str,
        report: &mut SiteReport,
    ) -> Result<SiteAction, StageFailure> {
        let started = Instant::now();
        let commit = &checked.synced.commit.id;
        self.check_interrupted("deploy")?;
        let lock = self.lock(site).await?;
        let outcome = async {
            let Again {
                unchanged, deployed, ..
            } = self.check_again(site, checked).await?;
            if unchanged {
                return Ok::<_, StageFailure>((deployed, false));
            }
            if decide::same_files(&deployed, &checked.repository, content_digest).is_none() {
                return Err(anyhow!(
                    "{}/{} changed while berth compared its files; nothing was recorded (run again)",
                    site.deployment.namespace,
                    site.deployment.name
                )
                .into());
            }
            self.deployer
                .record(&lock, &deployed, commit, &checked.source_digest)
                .await
                .map_err(StageFailure::from)?;
            Ok((deployed, true))
        }
        .await;
        lock.release().await;
        let (deployed, recorded) = outcome?;
        report
            .durations
            .insert("deploy".into(), started.elapsed().as_secs_f64());
        report.image.clone_from(&deployed.image);
        report.digest = digest_of(&deployed);
        let reason = decide::same_files_reason(&deployed);
        let target = format!("{}/{}", site.deployment.namespace, site.deployment.name);
        self.printer.stage(
            &site.name,
            "deploy",
            Status::Skipped,
            &if recorded {
                format!(
                    "up to date: {reason}; {target} now records {}",
                    reference::short(commit)
                )
            } else {
                format!("unchanged: {target} was just recorded by another caller")
            },
        );
        report.reason = Some(reason);
        Ok(if recorded {
            SiteAction::UpToDate
        } else {
            SiteAction::Unchanged
        })
    }
}
