//! One site's stages, in order: mirror (already done for its repo), check,
//! image (found in the registry, or exported, generated, built and pushed),
//! deploy under the Deployment's lease. Each stage prints its line, records
//! its time in the site's report, and hands the next a typed value; the
//! decisions between them are [`super::decide`]'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use k8s_openapi::api::apps::v1::Deployment;

use crate::config::{Config, CredentialSource, ImageSource, Site};
use crate::deploy::rollout::{RolloutState, rollout_state};
use crate::deploy::{self, Change, DeployError, Deployed, Deployer, Outcome};
use crate::exit::Kind;
use crate::image::{self, ImageBuild};
use crate::pipeline::DeployOptions;
use crate::pipeline::decide::{self, Check, Existing};
use crate::pipeline::failure::StageFailure;
use crate::pipeline::generator::Generator;
use crate::pipeline::report::{SiteAction, SiteReport};
use crate::pipeline::sync::{SyncError, Synced};
use crate::reference;
use crate::registry::{self, RegistryAuth};
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
struct Checked<'s> {
    synced: &'s Synced,
    source_digest: String,
    repository: String,
    deployment: Deployment,
    deployed: Deployed,
}

/// Where the check stage leaves a site.
enum Step<'s> {
    /// It runs this source, rolled out.
    Unchanged,
    /// It runs this source, but its rollout is not finished: a run before
    /// set the image and stopped.
    Unfinished(Deployed),
    /// Build (or find) the image and deploy it.
    Ship(Box<Checked<'s>>),
}

/// The Deployment as read again under its lease.
struct Again {
    /// Another caller has shipped this source meanwhile.
    unchanged: bool,
    deployment: Deployment,
    deployed: Deployed,
}

/// A built image, not yet pushed.
struct Built {
    image_id: String,
    /// SHA-256 of the build context berth sent to the Engine.
    context_digest: String,
    /// Each file's blob and time, kept for the next build of the site.
    index: image::FileIndex,
}

/// What the image stage hands on.
enum Image {
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

    /// Check, reading only: unchanged, older than what runs, preflight.
    async fn check<'s>(
        &self,
        site: &Site,
        synced: &'s Synced,
        report: &mut SiteReport,
    ) -> Result<Step<'s>, StageFailure> {
        let tree = synced.tree(&site.path)?;
        let source_digest = source_digest(self.config, site, &tree)?;
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
    async fn resume(
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
                    report.verification = verification_of(&error);
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

    /// The image to roll out: the registry's, when it holds this commit's
    /// image built from this source; else built and pushed. Or none, when the
    /// running image already serves the commit's files.
    async fn image(
        &self,
        site: &Site,
        checked: &Checked<'_>,
        report: &mut SiteReport,
    ) -> Result<Image, StageFailure> {
        let Checked {
            synced,
            source_digest,
            repository,
            deployed,
            ..
        } = checked;
        let started = Instant::now();
        let commit_tag = reference::commit_tag(&synced.commit.id);
        let mut existing = self.existing(site, &commit_tag, source_digest).await?;
        let tag = decide::tag(&synced.commit.id, existing.as_ref(), source_digest);
        let reference_with_tag = format!("{repository}:{tag}");
        if tag != commit_tag {
            self.printer.stage(
                &site.name,
                "build",
                Status::Warning,
                &format!("the commit's tag holds an image of other build inputs; using {tag}"),
            );
            existing = self.existing(site, &tag, source_digest).await?;
        }
        if let Some(Existing::Same {
            digest,
            content_digest,
        }) = existing
        {
            // The commit's image is in the registry; its label says what it serves.
            if let Some(content) = content_digest
                .as_deref()
                .filter(|c| deployed.serves_files(repository, c))
            {
                return Ok(Image::SameFiles(content.to_string()));
            }
            self.printer.stage(
                &site.name,
                "build",
                Status::Skipped,
                &format!("exists: {reference_with_tag}"),
            );
            return Ok(Image::Ready {
                image: format!("{reference_with_tag}@{digest}"),
                digest,
                content_digest,
            });
        }
        // What this commit's image would serve. The same files as the running
        // image (another output of a shared generator changed, or only files
        // the site leaves out): nothing to build or roll out.
        let content = self.generator.content(site, synced).await?;
        if deployed.serves_files(repository, &content.digest) {
            return Ok(Image::SameFiles(content.digest));
        }
        let built = self.build(site, checked, &content, &reference_with_tag).await?;
        // What only the image knows (the ports it serves), before it is pushed.
        let exposed = self.exposed_ports(&built.image_id).await;
        self.preflight_findings(
            site,
            deploy::preflight::probe_ports(&checked.deployment, &site.deployment.container, &exposed),
        )?;
        report.context_digest = Some(built.context_digest);
        report
            .durations
            .insert("build".into(), started.elapsed().as_secs_f64());
        let digest = self.push(site, &built.image_id, repository, &tag, report).await?;
        // The next build of this site starts from this one's files and times.
        if let Err(error) = crate::image::previous::keep(&self.config.state_dir, &digest, &built.index) {
            tracing::warn!("cannot keep the index of {reference_with_tag}: {error}");
        }
        Ok(Image::Ready {
            image: format!("{reference_with_tag}@{digest}"),
            digest,
            content_digest: Some(content.digest),
        })
    }

    /// Pushes the built image as `repository:tag`; returns its digest.
    async fn push(
        &self,
        site: &Site,
        image_id: &str,
        repository: &str,
        tag: &str,
        report: &mut SiteReport,
    ) -> Result<String, StageFailure> {
        let started = Instant::now();
        let reference_with_tag = format!("{repository}:{tag}");
        self.printer
            .progress(&site.name, "push", &format!("pushing {reference_with_tag}"));
        let digest = registry::push(self.docker, image_id, repository, tag, self.auth)
            .await
            .map_err(StageFailure::from)?;
        report
            .durations
            .insert("push".into(), started.elapsed().as_secs_f64());
        self.printer.stage(
            &site.name,
            "push",
            Status::Done,
            &format!(
                "{reference_with_tag}@{digest} ({:.1}s)",
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(digest)
    }

    /// Deploys `image`, holding the Deployment's lease; decides again under it.
    async fn deploy(
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
                    report.verification = verification_of(&error);
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
    async fn still_in_registry(&self, site: &Site, image: &str) -> Result<(), StageFailure> {
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

    /// Under the lease: the Deployment read again, and the check made again
    /// on it; `unchanged` when another caller has shipped this source meanwhile.
    async fn check_again(&self, site: &Site, checked: &Checked<'_>) -> Result<Again, StageFailure> {
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
    fn preflight_findings(
        &self,
        site: &Site,
        findings: Vec<deploy::preflight::Finding>,
    ) -> Result<(), StageFailure> {
        Ok(preflight_verdict(
            site,
            findings,
            self.options.strict,
            self.printer,
        )?)
    }

    /// The TCP ports an image declares it serves (`EXPOSE`, its base's included).
    async fn exposed_ports(&self, image_id: &str) -> Vec<i32> {
        match self.docker.inspect_image(image_id).await {
            Ok(image) => image
                .config
                .and_then(|config| config.exposed_ports)
                .unwrap_or_default()
                .iter()
                .filter_map(|port| port.strip_suffix("/tcp")?.parse().ok())
                .collect(),
            Err(error) => {
                tracing::debug!("cannot read the ports of image {image_id}: {error}");
                Vec::new()
            }
        }
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
        lock_site(
            self.deployer,
            site,
            "deploying",
            self.options.lock_wait,
            self.printer,
        )
        .await
        .map_err(StageFailure::from)
    }

    /// A commit whose image would serve the files the Deployment already
    /// serves: under the lease, and deciding again there, berth records the
    /// commit and source digest on the Deployment's lease (so the next run
    /// calls the site unchanged, and the out-of-order guard starts from this
    /// commit) and touches neither the registry nor the Deployment.
    async fn record_same_files(
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

    /// What the registry holds under `site`'s image tagged `tag`: its digest,
    /// and whether it was built from `source_digest` (its labels say).
    async fn existing(
        &self,
        site: &Site,
        tag: &str,
        source_digest: &str,
    ) -> Result<Option<Existing>, StageFailure> {
        let reference = format!("{}:{tag}", self.config.image_repository(site));
        let Some(digest) = registry::registry_digest(self.docker, &reference, self.auth)
            .await
            .map_err(StageFailure::from)?
        else {
            return Ok(None);
        };
        // The registry holds the tag: was it built from this source? Its
        // manifest and config say, read from the registry (as the Engine
        // speaks to it: HTTP for an insecure one): nothing is pulled.
        let endpoint = registry::Endpoint {
            auth: self.auth,
            repository: &site.image,
        };
        let labels = registry::Repository::new(endpoint, self.plain_http)
            .map_err(StageFailure::from)?
            .image(&digest)
            .await
            .map_err(StageFailure::from)?
            .labels;
        Ok(Some(decide::existing(&labels, digest, source_digest)))
    }

    /// Builds the site's image: its files generated, given their times, and
    /// streamed to the Engine as the build context.
    async fn build(
        &self,
        site: &Site,
        checked: &Checked<'_>,
        content: &image::SiteContent,
        tag: &str,
    ) -> Result<Built, StageFailure> {
        let printer = self.printer;
        let started = Instant::now();
        let (generated, times) = self.generator.generate(site, checked.synced).await?;
        let previous = self.previous_files(site, &checked.deployed).await;
        let times = Arc::new(times.with_previous(previous, content));
        let index = times.index(content);
        // For scripts/bench: a copy of the context, to measure the Engine's own cost on it.
        let copy = std::env::var_os("BERTH_KEEP_CONTEXT")
            .map(|keep| std::path::Path::new(&keep).join(format!("{}.tar", site.name)));
        let context =
            image::stream_site_context(site, &self.config.templates_dir, generated, times, copy).await?;
        let labels = self.labels(site, checked, content);
        let credentials =
            build_credentials(site, self.auth, &self.config.registry.credentials, printer).await?;
        let request = ImageBuild {
            context: image::ContextBody::Stream(context.body),
            dockerfile: &context.dockerfile,
            tag,
            build_args: &site.build_args,
            labels: &labels,
            credentials,
        };
        printer.progress(
            &site.name,
            "build",
            "building the image through the Docker Engine",
        );
        // The Engine reads the context while it is written.
        let written = async {
            let written = context.written.finished().await;
            if let Ok(context) = &written {
                printer.stage(
                    &site.name,
                    "context",
                    Status::Done,
                    &format!(
                        "{} files, {} KiB, sha256:{}",
                        context.files,
                        context.bytes / 1024,
                        &context.digest[..12]
                    ),
                );
            }
            written
        };
        let (built, written) = tokio::join!(image::build_image(self.docker, request, printer), written);
        // A writer that stopped because the Engine gave up defers to the Engine's words.
        let (image_id, build_context) = match (built, written) {
            (_, Err(error)) if !error.is_context_not_read() => return Err(error.into()),
            (built, written) => (built?, written?),
        };
        printer.stage(
            &site.name,
            "build",
            Status::Done,
            &format!(
                "{tag} {} ({:.1}s)",
                short_id(&image_id),
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(Built {
            image_id,
            context_digest: build_context.digest,
            index,
        })
    }

    /// The labels of a site's image: the OCI ones, and what berth decides by.
    fn labels(
        &self,
        site: &Site,
        checked: &Checked<'_>,
        content: &image::SiteContent,
    ) -> BTreeMap<String, String> {
        let commit = &checked.synced.commit;
        let source = self.config.repo(&site.repo).expect("validated").url.clone();
        BTreeMap::from([
            ("org.opencontainers.image.revision".to_string(), commit.id.clone()),
            ("org.opencontainers.image.source".to_string(), source),
            (
                "org.opencontainers.image.created".to_string(),
                rfc3339(commit.time),
            ),
            (
                decide::SOURCE_DIGEST_LABEL.to_string(),
                checked.source_digest.clone(),
            ),
            (decide::CONTENT_DIGEST_LABEL.to_string(), content.digest.clone()),
            ("dev.berth.site".to_string(), site.name.clone()),
        ])
    }

    /// The files of the image the Deployment runs, when it is an earlier build
    /// of this template site (see [`crate::image::previous`]); none otherwise, or when
    /// they cannot be read (said as a warning: the files then get the commit's
    /// time, as on a first build).
    async fn previous_files(&self, site: &Site, deployed: &deploy::Deployed) -> image::FileIndex {
        let repository = self.config.image_repository(site);
        let Some(image) = deployed
            .image
            .as_deref()
            .filter(|image| image.starts_with(&format!("{repository}:")))
        else {
            return image::FileIndex::new();
        };
        if !matches!(site.image_source, crate::config::ImageSource::Template(_)) {
            return image::FileIndex::new();
        }
        let web_root = image::web_root(&site.build_args);
        if let Some(index) = image::previous::kept(&self.config.state_dir, image) {
            return index;
        }
        let read = async {
            let Some(pinned) = image::previous::to_read(image) else {
                return Ok(image::FileIndex::new());
            };
            let engine = || format!("cannot read {pinned} through the Docker Engine");
            let id = registry::inspect_or_pull(self.docker, &pinned, self.auth)
                .await
                .with_context(engine)?
                .id
                .ok_or_else(|| anyhow!("the Engine gave no image id"))
                .with_context(engine)?;
            Ok::<_, anyhow::Error>(
                image::previous::index_of(self.docker, &self.config.state_dir, image, &id, &web_root).await?,
            )
        };
        match read.await {
            Ok(index) => index,
            Err(error) => {
                self.printer.stage(
                    &site.name,
                    "build",
                    Status::Warning,
                    &format!("{error:#}; every generated file gets the commit's time"),
                );
                image::FileIndex::new()
            }
        }
    }
}

/// The credentials a build of `site` gives BuildKit, for the base images its
/// Dockerfile pulls ([`registry::build_credentials`]: every registry the
/// source knows, and `auth`'s), read off the runtime (a helper is a process).
/// A registry whose credentials cannot be read is a warning on the site's
/// build line.
pub async fn build_credentials(
    site: &Site,
    auth: &RegistryAuth,
    source: &CredentialSource,
    printer: &Printer,
) -> anyhow::Result<HashMap<String, DockerCredentials>> {
    let (auth, source) = (auth.clone(), source.clone());
    let build = tokio::task::spawn_blocking(move || registry::build_credentials(&auth, &source)).await?;
    for message in &build.unreadable {
        printer.stage(
            &site.name,
            "build",
            Status::Warning,
            &format!("{message}; the build pulls from there without credentials"),
        );
    }
    Ok(build.credentials)
}

/// The site's source digest ([`decide::source_digest`]), its template's
/// Dockerfile read from the templates folder.
pub fn source_digest(config: &Config, site: &Site, tree: &str) -> anyhow::Result<String> {
    let template = match &site.image_source {
        ImageSource::Template(name) => {
            let path = config.templates_dir.join(name).join("Dockerfile");
            Some(std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        ImageSource::Dockerfile(_) => None,
    };
    Ok(decide::source_digest(site, template.as_deref(), tree))
}

/// Takes `site`'s Deployment lease for `purpose`, saying whom it waits for.
pub async fn lock_site(
    deployer: &Deployer,
    site: &Site,
    purpose: &str,
    wait: Duration,
    printer: &Printer,
) -> Result<deploy::lease::LeaseLock, DeployError> {
    let identity = deploy::lease::identity(&format!("{purpose} {}", site.name));
    let on_wait = |holder: &deploy::lease::Holder| {
        printer.stage(
            &site.name,
            "lock",
            Status::Warning,
            &format!(
                "waiting for {} (lease expires in {}s at most)",
                holder.identity,
                holder.expires_in.as_secs()
            ),
        );
    };
    deployer.lock(&site.deployment, &identity, wait, &on_wait).await
}

/// Preflight findings on `site`'s Deployment: warnings on `printer`, or with
/// `strict` the error that stops the site before anything changes.
pub fn preflight_verdict(
    site: &Site,
    findings: Vec<deploy::preflight::Finding>,
    strict: bool,
    printer: &Printer,
) -> Result<(), DeployError> {
    if findings.is_empty() {
        return Ok(());
    }
    if strict {
        return Err(DeployError::Preflight {
            namespace: site.deployment.namespace.clone(),
            name: site.deployment.name.clone(),
            findings,
        });
    }
    for finding in &findings {
        printer.stage(&site.name, "preflight", Status::Warning, &finding.to_string());
    }
    Ok(())
}

/// What berth checked before a rollout failed, if Kubernetes had called it complete.
pub fn verification_of(error: &DeployError) -> Option<deploy::verify::Verification> {
    match error {
        DeployError::RolloutFailed { verification, .. } => verification.as_deref().cloned(),
        _ => None,
    }
}

/// The digest the Deployment's image is pinned by.
fn digest_of(deployed: &Deployed) -> Option<String> {
    deployed
        .image
        .as_deref()
        .and_then(reference::digest)
        .map(String::from)
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

fn rfc3339(seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}
