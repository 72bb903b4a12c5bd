//! The image stage: the commit's image found in the registry, or exported,
//! generated, built and pushed; or none, when the running image already
//! serves the commit's files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow};

use crate::config::Site;
use crate::deploy::{self};
use crate::image::{self, ImageBuild};
use crate::pipeline::decide::{self, Existing, ImageChoice};
use crate::pipeline::failure::StageFailure;
use crate::pipeline::report::SiteReport;
use crate::reference;
use crate::registry::{self};
use crate::ui::Status;

use super::{Built, Checked, Image, RunContext, rfc3339, short_id};

impl RunContext<'_> {
    /// The image to roll out: the registry's, when it holds this commit's
    /// image built from this source; else built and pushed. Or none, when the
    /// running image already serves the commit's files.
    pub(super) async fn image(
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
        // The commit's image may be in the registry; its label says what it serves.
        match decide::image_choice(existing.as_ref(), deployed, repository) {
            ImageChoice::SameFiles(content) => return Ok(Image::SameFiles(content)),
            ImageChoice::Reuse {
                digest,
                content_digest,
            } => {
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
            ImageChoice::Build => {}
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

    /// What the registry holds under `site`'s image tagged `tag`: its digest,
    /// and whether it was built from `source_digest` (its labels say).
    pub(super) async fn existing(
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
    pub(super) async fn build(
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
        let commit = &checked.synced.commit;
        let labels = labels(
            &site.name,
            &self.config.repo(&site.repo).expect("validated").url,
            &commit.id,
            commit.time,
            &checked.source_digest,
            &content.digest,
        );
        let credentials = registry::credentials_for_build(
            &site.name,
            self.auth,
            &self.config.registry.credentials,
            printer,
        )
        .await?;
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

    /// The files of the image the Deployment runs, when it is an earlier build
    /// of this template site (see [`crate::image::previous`]); none otherwise, or when
    /// they cannot be read (said as a warning: the files then get the commit's
    /// time, as on a first build).
    pub(super) async fn previous_files(&self, site: &Site, deployed: &deploy::Deployed) -> image::FileIndex {
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

    /// The TCP ports an image declares it serves (`EXPOSE`, its base's included).
    pub(super) async fn exposed_ports(&self, image_id: &str) -> Vec<i32> {
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

    /// Pushes the built image as `repository:tag`; returns its digest.
    pub(super) async fn push(
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
}

/// The labels of a site's image: the OCI ones (the commit, the repo, when
/// the commit was made), and what berth decides by (the source and content
/// digests, the site).
fn labels(
    site: &str,
    source: &str,
    commit: &str,
    commit_time: i64,
    source_digest: &str,
    content_digest: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "org.opencontainers.image.revision".to_string(),
            commit.to_string(),
        ),
        ("org.opencontainers.image.source".to_string(), source.to_string()),
        (
            "org.opencontainers.image.created".to_string(),
            rfc3339(commit_time),
        ),
        (decide::SOURCE_DIGEST_LABEL.to_string(), source_digest.to_string()),
        (
            decide::CONTENT_DIGEST_LABEL.to_string(),
            content_digest.to_string(),
        ),
        ("dev.berth.site".to_string(), site.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_labelled_with_its_commit_repo_time_digests_and_site() {
        let labels = labels(
            "www",
            "http://git/site.git",
            "abc",
            1_767_261_600,
            "source-1",
            "files-1",
        );
        assert_eq!(labels["org.opencontainers.image.revision"], "abc");
        assert_eq!(labels["org.opencontainers.image.source"], "http://git/site.git");
        assert_eq!(labels["org.opencontainers.image.created"], "2026-01-01T10:00:00Z");
        assert_eq!(labels["dev.berth.source-digest"], "source-1");
        assert_eq!(labels["dev.berth.content-digest"], "files-1");
        assert_eq!(labels["dev.berth.site"], "www");
        assert_eq!(labels.len(), 6);
    }
}
