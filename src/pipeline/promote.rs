//! `berth promote`: the exact image one environment runs (or ran, and that
//! passed there) deployed to another, by digest, with every guarantee of a
//! deploy. Nothing is built and nothing is re-tagged on the source side.
//!
//! 1. **Source**: read the source Deployment, its rollout, the images that
//!    passed there and its revisions; [`decide::promotable`] picks the image
//!    or refuses (a failed or unfinished rollout, a commit that did not pass).
//! 2. **Copy**: when the target names another registry, the image is copied
//!    by digest through the registry API ([`registry::copy`]): the same
//!    manifest bytes, so the same digest in both registries.
//! 3. **Deploy**: mirror the repo (for the out-of-order guard), take the
//!    target Deployment's lease, decide again under it ([`decide::check`]),
//!    preflight, set the image by digest, wait, check what is served, roll
//!    back on failure, and record that the image passed in the target too.

use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;

use crate::config::{Config, Site};
use crate::deploy::rollout::rollout_state;
use crate::deploy::{self, Change, DeployError, Deployer, Outcome};
use crate::pipeline::decide::{self, Check, Promotable};
use crate::pipeline::failure::StageFailure;
use crate::pipeline::{
    CommitChoice, DeployOptions, Promotion, RunReport, SetupError, SiteAction, SiteReport, connect_cluster,
    mirror_all, registry_auth, select,
};
use crate::reference;
use crate::registry;
use crate::ui::{Printer, Status};

/// What to promote: a site, from one environment to another.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub site: &'a str,
    /// `None`: the target's `promote_from`, else the default environment.
    pub from: Option<&'a str>,
    pub to: &'a str,
    /// `None`: what the source runs.
    pub commit: Option<&'a str>,
    pub options: &'a DeployOptions,
    /// The cluster options, applied to the target (only `--timeout` gets
    /// here: the command refuses the others).
    pub cluster: &'a crate::config::ClusterOverrides,
}

/// The two environments of a promotion, as views of the pipeline file.
pub struct Environments {
    pub source: Config,
    pub target: Config,
}

/// Resolves the request's environments; a usage error when one is unknown
/// or they are the same.
pub fn environments(declared: &Config, request: &Request<'_>) -> anyhow::Result<Environments> {
    let target = declared
        .in_environment(Some(request.to))?
        .with_cluster(request.cluster)?;
    let from = match request.from {
        Some(from) => from,
        None => declared
            .promote_source(request.to)
            .ok_or_else(|| anyhow!(SetupError::SameEnvironment(request.to.to_string())))?,
    };
    if from == request.to {
        return Err(SetupError::SameEnvironment(from.to_string()).into());
    }
    let source = declared.in_environment(Some(from))?;
    Ok(Environments { source, target })
}

/// Promotes `request.site`; the report names the target environment. The
/// returned views let the caller log and notify in the target's terms.
pub async fn promote(
    declared: &Config,
    request: &Request<'_>,
    printer: &Printer,
) -> anyhow::Result<(Config, RunReport)> {
    let Environments { source, target } = environments(declared, request)?;
    // A usage error when the site does not ship to both.
    let named = [request.site.to_string()];
    let site_in_source = select::named(&source, &named)?.remove(0);
    let site_in_target = select::named(&target, &named)?.remove(0);
    let source_deployer = connect_cluster(&source).await?;
    let target_deployer = connect_cluster(&target).await?;
    let mut report = SiteReport::new(request.site);
    let promotion = Promotion {
        from: source.environment.clone().unwrap_or_default(),
        to: target.environment.clone().unwrap_or_default(),
        ..Promotion::default()
    };
    report.promotion = Some(promotion);
    let parts = Parts {
        source: &source,
        target: &target,
        site_in_source,
        site_in_target,
        source_deployer: &source_deployer,
        target_deployer: &target_deployer,
        options: request.options,
        printer,
    };
    if let Err(failure) = parts.run(request.commit, &mut report).await {
        report.fail(failure.kind, &failure.error, printer);
    }
    let environment = target.environment.clone();
    Ok((
        target,
        RunReport {
            environment,
            sites: vec![report],
            interrupted: false,
        },
    ))
}

/// Everything one promotion works with.
struct Parts<'a> {
    source: &'a Config,
    target: &'a Config,
    site_in_source: &'a Site,
    site_in_target: &'a Site,
    source_deployer: &'a Deployer,
    target_deployer: &'a Deployer,
    options: &'a DeployOptions,
    printer: &'a Printer,
}

impl Parts<'_> {
    async fn run(&self, commit: Option<&str>, report: &mut SiteReport) -> Result<(), StageFailure> {
        let started = Instant::now();
        let chosen = self.choose(commit).await?;
        report
            .durations
            .insert("source".into(), started.elapsed().as_secs_f64());
        report.commit = Some(chosen.commit.clone());
        report.source_digest.clone_from(&chosen.source_digest);
        report.content_digest.clone_from(&chosen.content_digest);
        let started = Instant::now();
        let target_image = self.copy(&chosen, report).await?;
        report
            .durations
            .insert("copy".into(), started.elapsed().as_secs_f64());
        report.image = Some(target_image.clone());
        report.digest = Some(chosen.digest.clone());
        let started = Instant::now();
        let outcome = self.deploy(&chosen, target_image, report).await;
        report
            .durations
            .insert("deploy".into(), started.elapsed().as_secs_f64());
        report.action = outcome?;
        Ok(())
    }

    /// The source stage: what runs (or ran) there, and whether it may go on.
    async fn choose(&self, commit: Option<&str>) -> Result<Promotable, StageFailure> {
        let site = self.site_in_source;
        let environment = self.source.environment.as_deref().unwrap_or_default();
        let target = &site.deployment;
        let deployment = self
            .source_deployer
            .read(target)
            .await
            .map_err(StageFailure::from)?;
        let (deployed, passed) = self
            .source_deployer
            .deployed_and_passed(&deployment, target)
            .await
            .map_err(StageFailure::from)?;
        // The revisions only say why a commit asked for did not pass.
        let revisions: Vec<String> = match commit {
            Some(_) => self
                .source_deployer
                .history_of(&deployment, target)
                .await
                .map_err(StageFailure::from)?
                .into_iter()
                .filter_map(|revision| revision.commit)
                .collect(),
            None => Vec::new(),
        };
        let rollout = rollout_state(&deployment);
        let source = decide::Source {
            environment,
            deployment: &format!("{}/{}", target.namespace, target.name),
            deployed: &deployed,
            rollout: &rollout,
            passed: &passed,
            revisions: &revisions,
        };
        let chosen = decide::promotable(&source, commit)?;
        self.printer.stage(
            &site.name,
            "source",
            Status::Done,
            &format!(
                "{environment} {} {} ({})",
                if chosen.current { "runs" } else { "passed" },
                reference::short(&chosen.commit),
                chosen.image
            ),
        );
        Ok(chosen)
    }

    /// The copy stage: the image as the target's registry holds it, copied
    /// there by digest when it is another registry.
    async fn copy(&self, chosen: &Promotable, report: &mut SiteReport) -> Result<String, StageFailure> {
        let site = &self.site_in_target.name;
        let promotion = report.promotion.as_mut().expect("set by promote");
        promotion.source_image.clone_from(&chosen.image);
        promotion.source_digest.clone_from(&chosen.digest);
        let tag = reference::tag(&chosen.image)
            .map_or_else(|| reference::commit_tag(&chosen.commit), str::to_string);
        let repository = self.target.image_repository(self.site_in_target);
        let target_image = format!("{repository}:{tag}@{}", chosen.digest);
        let source_registry = &self.source.registry.address;
        if source_registry == &self.target.registry.address {
            promotion.target_image.clone_from(&chosen.image);
            promotion.target_digest.clone_from(&chosen.digest);
            promotion.same_digest = true;
            self.printer
                .stage(site, "copy", Status::Skipped, "same registry: nothing to copy");
            return Ok(chosen.image.clone());
        }
        let from_auth = registry_auth(self.source).await?;
        let to_auth = registry_auth(self.target).await?;
        self.printer.progress(
            site,
            "copy",
            &format!("copying {} to {repository}", chosen.digest),
        );
        let copied = registry::copy::copy_by_digest(
            registry::Endpoint {
                auth: &from_auth,
                repository: &self.site_in_source.image,
            },
            &chosen.digest,
            registry::Endpoint {
                auth: &to_auth,
                repository: &self.site_in_target.image,
            },
            &tag,
        )
        .await
        .map_err(StageFailure::from)?;
        // `copied.digest` is what the target answers it stores: the copy
        // fails unless it is the source's.
        promotion.target_image.clone_from(&target_image);
        promotion.target_digest.clone_from(&copied.digest);
        promotion.same_digest = copied.digest == chosen.digest;
        promotion.copied = true;
        promotion.blobs_copied = copied.blobs_copied;
        promotion.bytes_copied = copied.bytes_copied;
        promotion.blobs_present = copied.blobs_present;
        self.printer.stage(
            site,
            "copy",
            Status::Done,
            &format!(
                "{target_image}: {} blobs copied ({} bytes), {} already there; same digest",
                copied.blobs_copied, copied.bytes_copied, copied.blobs_present
            ),
        );
        Ok(target_image)
    }

    /// The deploy stage in the target, under its Deployment's lease.
    async fn deploy(
        &self,
        chosen: &Promotable,
        image: String,
        report: &mut SiteReport,
    ) -> Result<SiteAction, StageFailure> {
        let site = self.site_in_target;
        let target = &site.deployment;
        let from = self.source.environment.as_deref().unwrap_or_default();
        let to = self.target.environment.as_deref().unwrap_or_default();
        // The mirror, for the out-of-order guard (is the commit older than
        // what the target runs?): not asked with --allow-older.
        let mirrored = if self.options.allow_older {
            None
        } else {
            let choice = CommitChoice::Exact(chosen.commit.clone());
            Some(mirror_all(self.target, &[site], &choice, 1, self.printer).await)
        };
        let synced = match &mirrored {
            Some(mirrored) => Some(mirrored[&site.repo].as_ref().map_err(Arc::clone)?),
            None => None,
        };
        let change = Change {
            image: image.clone(),
            commit: chosen.commit.clone(),
            source_digest: chosen.source_digest.clone().unwrap_or_default(),
            content_digest: chosen.content_digest.clone(),
            change_cause: format!(
                "berth promote: {} {} from {from}",
                site.name,
                reference::short(&chosen.commit)
            ),
            helm: site.helm.clone(),
        };
        let purpose = format!("promoting from {from} to {to}:");
        let lock = self
            .target_deployer
            .lock_site(site, &purpose, self.options.lock_wait, self.printer)
            .await
            .map_err(StageFailure::from)?;
        let outcome = async {
            let deployment = self.target_deployer.read(target).await?;
            let deployed = self.target_deployer.deployed_of(&deployment, target).await?;
            let repository = self.target.image_repository(site);
            let older = async || match synced {
                Some(synced) => synced.older_than(&chosen.commit, &deployed).await,
                None => None,
            };
            let check = decide::check(
                &deployed,
                &repository,
                &change.source_digest,
                self.options.allow_older,
                older,
            )
            .await;
            // The same source under another digest is no reason to stop: promote
            // deploys the bytes that passed (`apply` knows when they already run).
            if let Check::Older { deployed_commit } = check {
                return Err(DeployError::Older {
                    commit: chosen.commit.clone(),
                    deployed: deployed_commit,
                });
            }
            self.preflight(&deployment)?;
            self.target_deployer
                .apply(&site.name, target, &change, Some(deployment), &lock, self.printer)
                .await
                .inspect_err(|error| report.verification = error.verification())
        }
        .await
        .map_err(StageFailure::from);
        lock.release().await;
        let name = format!("{to} {}/{}", target.namespace, target.name);
        let (status, text, action) = match outcome? {
            Outcome::UpToDate => (
                Status::Skipped,
                format!("up to date: {name} already runs {image}"),
                SiteAction::UpToDate,
            ),
            Outcome::RolledOut(verification) => {
                report.verification = Some(verification);
                (Status::Done, format!("{name} rolled out"), SiteAction::Deployed)
            }
        };
        self.printer.stage(&site.name, "deploy", status, &text);
        Ok(action)
    }

    /// Preflight of the target Deployment: warnings, or with `--strict` an
    /// error before anything changes.
    fn preflight(&self, deployment: &k8s_openapi::api::apps::v1::Deployment) -> Result<(), DeployError> {
        let site = self.site_in_target;
        let findings = deploy::preflight::preflight(deployment, &site.deployment.container, &site.helm);
        deploy::preflight::verdict(site, findings, self.options.strict, self.printer)
    }
}

/// One row of `plan` or `status`, as the promote column reads it.
pub struct Row<'a> {
    pub site: &'a str,
    pub environment: Option<&'a str>,
    pub image: Option<&'a str>,
    pub commit: Option<&'a str>,
}

/// An entry of `plan` or `status`: one site in one environment, with a
/// promote column.
pub trait SideBySide {
    fn row(&self) -> Row<'_>;
    fn set_promote(&mut self, change: Option<decide::PromoteChange>);
}

/// Fills each entry's promote column: what `berth promote` would change in
/// its environment, when its source environment's entry for the same site is
/// among `entries` too ([`decide::promote_change`]).
pub fn fill_promote_column<E: SideBySide>(declared: &Config, entries: &mut [E]) {
    let column: Vec<Option<decide::PromoteChange>> = {
        let rows: Vec<Row<'_>> = entries.iter().map(SideBySide::row).collect();
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
    };
    for (entry, change) in entries.iter_mut().zip(column) {
        entry.set_promote(change);
    }
}
