//! One site's stages, in order: mirror (already done for its repo), check,
//! image (found in the registry, or exported, generated, built and pushed),
//! deploy under the Deployment's lease. Each stage prints its line, records
//! its time in the site's report, and hands the next a typed value; the
//! decisions between them are [`super::decide`]'s. This file runs the stages
//! in order and holds what they share; [`check_stage`], [`image_stage`] and
//! [`deploy_stage`] hold one stage each.

mod check_stage;
mod deploy_stage;
mod image_stage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::anyhow;
use bollard::Docker;
use k8s_openapi::api::apps::v1::Deployment;

use crate::config::{Config, Site};
use crate::deploy::{self, Deployed, Deployer};
use crate::exit::Kind;
use crate::image::{self};
use crate::pipeline::DeployOptions;
use crate::pipeline::failure::StageFailure;
use crate::pipeline::generator_runs::Generator;
use crate::pipeline::report::{SiteAction, SiteReport};
use crate::pipeline::sync::{SyncError, Synced};
use crate::reference;
use crate::registry::RegistryAuth;
use crate::ui::{Printer, Status};

/// What one run's sites share: the connections, the generator runs, the
/// options, and whether berth was interrupted.
pub struct RunContext<'a> {
    pub config: &'a Config,
    pub docker: &'a Docker,
    pub deployer: &'a Deployer,
    pub auth: &'a RegistryAuth,
    /// The registry is spoken to over HTTP, as the Engine speaks to it
    /// ([`registry::plain_http`], asked once per run).
    pub plain_http: bool,
    pub printer: &'a Printer,
    pub generator: Generator<'a>,
    pub options: &'a DeployOptions,
    /// Set by Ctrl-C or SIGTERM: start no new stage.
    pub interrupted: Arc<AtomicBool>,
}

/// What the check stage hands on: the site's source, and the Deployment as read.
pub(super) struct Checked<'s> {
    pub(super) synced: &'s Synced,
    pub(super) source_digest: String,
    pub(super) repository: String,
    pub(super) deployment: Deployment,
    pub(super) deployed: Deployed,
}

/// Where the check stage leaves a site.
pub(super) enum Step<'s> {
    /// It runs this source, rolled out.
    Unchanged,
    /// It runs this source, but its rollout is not finished: a run before
    /// set the image and stopped.
    Unfinished(Deployed),
    /// Build (or find) the image and deploy it.
    Ship(Box<Checked<'s>>),
}

/// The Deployment as read again under its lease.
pub(super) struct Again {
    /// Another caller has shipped this source meanwhile.
    pub(super) unchanged: bool,
    pub(super) deployment: Deployment,
    pub(super) deployed: Deployed,
}

/// A built image, not yet pushed.
pub(super) struct Built {
    pub(super) image_id: String,
    /// SHA-256 of the build context berth sent to the Engine.
    pub(super) context_digest: String,
    /// Each file's blob and time, kept for the next build of the site.
    pub(super) index: image::FileIndex,
}

/// What the image stage hands on.
pub(super) enum Image {
    /// An image to roll out, pinned by digest, and what it serves.
    Ready {
        image: String,
        digest: String,
        content_digest: Option<String>,
    },
    /// The running image already serves these files: record, don't roll out.
    SameFiles(String),
}

impl RunContext<'_> {
    pub async fn site(&self, site: &Site, synced: &Result<Synced, Arc<SyncError>>) -> SiteReport {
        if self.interrupted.load(Ordering::SeqCst) {
            self.printer.stage(
                &site.name,
                "result",
                Status::Skipped,
                "not started: berth was interrupted; the Deployment was not touched",
            );
            return SiteReport {
                action: SiteAction::Interrupted,
                error: Some("interrupted before this site started".into()),
                failure: Some(Kind::Interrupted),
                ..SiteReport::new(&site.name)
            };
        }
        let mut report = SiteReport::new(&site.name);
        match self.site_stages(site, synced, &mut report).await {
            Ok(action) => report.action = action,
            Err(failure) => report.fail(failure.kind, &failure.error, self.printer),
        }
        report
    }

    async fn site_stages(
        &self,
        site: &Site,
        synced: &Result<Synced, Arc<SyncError>>,
        report: &mut SiteReport,
    ) -> Result<SiteAction, StageFailure> {
        let synced = self.mirrored(site, synced, report)?;
        let checked = match self.check(site, synced, report).await? {
            Step::Unchanged => return Ok(SiteAction::Unchanged),
            Step::Unfinished(deployed) => return self.resume(site, &deployed, report).await,
            Step::Ship(checked) => *checked,
        };
        self.check_interrupted("build")?;
        match self.image(site, &checked, report).await? {
            Image::SameFiles(content_digest) => {
                report.content_digest = Some(content_digest.clone());
                self.record_same_files(site, &checked, &content_digest, report)
                    .await
            }
            Image::Ready {
                image,
                digest,
                content_digest,
            } => {
                report.image = Some(image.clone());
                report.digest = Some(digest);
                report.content_digest.clone_from(&content_digest);
                self.deploy(site, &checked, image, content_digest, report).await
            }
        }
    }

    /// The mirror stage's line, from the repo mirrored for the whole run.
    fn mirrored<'s>(
        &self,
        site: &Site,
        synced: &'s Result<Synced, Arc<SyncError>>,
        report: &mut SiteReport,
    ) -> Result<&'s Synced, StageFailure> {
        let synced = match synced {
            Ok(synced) => synced,
            Err(error) => {
                self.printer
                    .stage(&site.name, "mirror", Status::Failed, &error.to_string());
                return Err(anyhow::Error::new(error.clone()).into());
            }
        };
        report
            .durations
            .insert("mirror".into(), synced.duration.as_secs_f64());
        report.commit = Some(synced.commit.id.clone());
        self.printer.stage(
            &site.name,
            "mirror",
            Status::Done,
            &format!(
                "{} {}",
                reference::short(&synced.commit.id),
                synced.commit.summary
            ),
        );
        Ok(synced)
    }

    fn check_interrupted(&self, stage: &str) -> Result<(), StageFailure> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(StageFailure::interrupted(anyhow!(
                "interrupted before {stage}; the Deployment was not touched"
            )));
        }
        Ok(())
    }

    async fn lock(&self, site: &Site) -> Result<deploy::lease::LeaseLock, StageFailure> {
        self.deployer
            .lock_site(site, "deploying", self.options.lock_wait, self.printer)
            .await
            .map_err(StageFailure::from)
    }

    /// The site's Deployment, and what it runs as berth sees it (its lease's
    /// record applied).
    async fn read_deployed(
        &self,
        site: &Site,
    ) -> Result<(k8s_openapi::api::apps::v1::Deployment, deploy::Deployed), StageFailure> {
        let deployment = self
            .deployer
            .read(&site.deployment)
            .await
            .map_err(StageFailure::from)?;
        let deployed = self
            .deployer
            .deployed_of(&deployment, &site.deployment)
            .await
            .map_err(StageFailure::from)?;
        Ok((deployment, deployed))
    }
}

/// The digest the Deployment's image is pinned by.
pub(super) fn digest_of(deployed: &Deployed) -> Option<String> {
    deployed
        .image
        .as_deref()
        .and_then(reference::digest)
        .map(String::from)
}

pub(super) fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

pub(super) fn rfc3339(seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_image_gives_its_digest_and_ids_and_times_are_shortened_for_people() {
        let deployed = Deployed {
            image: Some(format!("127.0.0.1:5000/www:abc@sha256:{}", "a".repeat(64))),
            ..Deployed::default()
        };
        assert_eq!(digest_of(&deployed), Some(format!("sha256:{}", "a".repeat(64))));
        let tag_only = Deployed {
            image: Some("127.0.0.1:5000/www:abc".into()),
            ..Deployed::default()
        };
        assert_eq!(digest_of(&tag_only), None);
        assert_eq!(digest_of(&Deployed::default()), None);
        assert_eq!(short_id(&format!("sha256:{}", "b".repeat(64))), "bbbbbbbbbbbb");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z", "a time before 1970 is none");
    }
}
