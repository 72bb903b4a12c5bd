//! `berth gc`: each site's old images deleted from its registries, keeping
//! every one that may still be needed ([`super::retention`] decides).
//!
//! Per site:
//! 1. Take the lease of its Deployment in every environment it ships to (the
//!    lease deploys take), so no rollout starts to reference an image while
//!    gc decides and deletes; a deploy checks under its lease that its image
//!    is still there.
//! 2. Gather what may still need an image: what each Deployment runs, its
//!    ReplicaSet revisions, and the branch heads and tags of the repo's
//!    mirror (fetched first).
//! 3. For each registry the site's image goes to: list the repository's tags,
//!    read each manifest's config, and take as candidates only the images
//!    whose labels name the site (`dev.berth.site`); nothing else there is
//!    touched.
//! 4. Decide, and with `--delete` delete each manifest that may go (the
//!    distribution registry deletes by digest; its blobs stay on disk until
//!    `registry garbage-collect`). The first refusal stops that registry's
//!    deletes: what was deleted is said, nothing is left half-deleted.
//! 5. Free the leases.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use bollard::Docker;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};

use crate::config::{Config, Retention, Site};
use crate::deploy::lease::LeaseLock;
use crate::deploy::{DeployError, Deployer};
use crate::exit::{self, Kind};
use crate::pipeline::failure::StageFailure;
use crate::pipeline::retention::{self, Candidate, Needed, Verdict};
use crate::pipeline::sync::Mirrored;
use crate::pipeline::{CommitChoice, connect_cluster, mirror_all, registry_auth};
use crate::registry::{self, Endpoint, Repository};
use crate::ui::{Printer, Status};

/// The label that names the site an image was built for.
pub const SITE_LABEL: &str = "dev.berth.site";
const COMMIT_LABEL: &str = "org.opencontainers.image.revision";
/// How many registry reads gc has in flight at once.
const READS_AT_ONCE: usize = 8;

/// What `berth gc` is asked to do.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Sites to clean (all when empty).
    pub sites: &'a [String],
    /// Only this environment's registries (`--env`); what every
    /// environment's Deployments need is kept all the same.
    pub environment: Option<&'a str>,
    /// Delete; without it, only say what would be deleted.
    pub delete: bool,
    /// How long to wait for another caller's lease on a Deployment.
    pub lock_wait: Duration,
}

/// What `berth gc` did (or would do), per site and registry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GcReport {
    pub delete: bool,
    pub sites: Vec<SiteGc>,
}

impl GcReport {
    /// `berth gc`'s exit code: ENVIRONMENT when a registry or cluster could
    /// not be reached, else SITE_FAILED when a site's gc failed (a registry
    /// refused a delete), else OK.
    pub fn exit_code(&self) -> u8 {
        exit::code(
            self.sites
                .iter()
                .filter(|site| site.error.is_some())
                .map(|site| site.failure.unwrap_or(Kind::Site)),
        )
    }
}

/// One site's images in one registry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteGc {
    pub site: String,
    /// The environments whose registry this is (none in a file without environments).
    pub environments: Vec<String>,
    pub registry: String,
    pub repository: String,
    pub keep_last: u32,
    pub keep_days: u32,
    /// The site's images, newest first.
    pub images: Vec<ImageGc>,
    pub kept: usize,
    /// Deleted, or (in a dry run) to delete.
    pub deleted: usize,
    /// The bytes of the blobs only deleted images name (not kept ones, nor
    /// other tools' images here): what the registry's own garbage
    /// collection frees at most (another repository may share a blob).
    pub bytes_deleted: u64,
    /// Tags in the repository of images that are not the site's: left alone.
    pub other_tags: Vec<String>,
    pub error: Option<String>,
    #[serde(skip)]
    pub failure: Option<Kind>,
    /// The first of the site's views (in [`SiteRun::shipped`]) whose registry this is.
    #[serde(skip)]
    view: usize,
}

/// One image's verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageGc {
    pub digest: String,
    pub tags: Vec<String>,
    pub commit: Option<String>,
    pub created: Option<String>,
    pub bytes: u64,
    /// `keep`, `delete` (in a dry run) or `deleted`.
    pub action: &'static str,
    /// Why it stays (empty when it goes).
    pub reasons: Vec<String>,
}

/// Runs `berth gc` over `request.sites` of `views` (every environment of
/// the pipeline file, or the file itself when it declares none).
pub async fn gc(views: &[Config], request: &Request<'_>, printer: &Printer) -> anyhow::Result<GcReport> {
    let declared = &views[0];
    let sites = super::select::declared(declared, request.sites)?;
    let mirrored = mirror_all(declared, &sites, &CommitChoice::BranchHead, 2, printer).await;
    // An insecure registry is spoken to over HTTP, as the Engine speaks to it;
    // without an Engine, only loopback is.
    let docker = super::connect_docker().await.ok();
    let mut deployers: HashMap<String, Deployer> = HashMap::new();
    let mut report = GcReport {
        delete: request.delete,
        sites: Vec::new(),
    };
    for site in sites {
        let shipped: Vec<(&Config, &Site)> = views
            .iter()
            .filter_map(|view| Some((view, view.site(&site.name)?)))
            .collect();
        let gc = SiteRun {
            site,
            shipped: &shipped,
            request,
            docker: docker.as_ref(),
            printer,
        };
        report.sites.extend(gc.run(&mut deployers, &mirrored).await);
    }
    Ok(report)
}

/// One site's gc.
struct SiteRun<'a> {
    site: &'a Site,
    /// Each view it ships to, with the site as that view sees it.
    shipped: &'a [(&'a Config, &'a Site)],
    request: &'a Request<'a>,
    docker: Option<&'a Docker>,
    printer: &'a Printer,
}

impl SiteRun<'_> {
    /// One entry per registry the site's image goes to.
    async fn run(&self, deployers: &mut HashMap<String, Deployer>, mirrored: &Mirrored) -> Vec<SiteGc> {
        let mut units: BTreeMap<(String, String), SiteGc> = BTreeMap::new();
        let narrowed = self.shipped.iter().filter(|(view, _)| {
            self.request.environment.is_none() || view.environment.as_deref() == self.request.environment
        });
        for (index, (view, site)) in narrowed.enumerate() {
            let keep = view.retention(site);
            let unit = units
                .entry((view.registry.address.clone(), site.image.clone()))
                .or_insert_with(|| SiteGc {
                    view: index,
                    site: site.name.clone(),
                    environments: Vec::new(),
                    registry: view.registry.address.clone(),
                    repository: site.image.clone(),
                    keep_last: keep.last,
                    keep_days: keep.days,
                    images: Vec::new(),
                    kept: 0,
                    deleted: 0,
                    bytes_deleted: 0,
                    other_tags: Vec::new(),
                    error: None,
                    failure: None,
                });
            unit.environments.extend(view.environment.clone());
            // Environments sharing a registry keep what the most keeping one says.
            unit.keep_last = unit.keep_last.max(keep.last);
            unit.keep_days = unit.keep_days.max(keep.days);
        }
        if units.is_empty() {
            return Vec::new();
        }
        let mut locks = Vec::new();
        let outcome = self.locked(deployers, mirrored, &mut locks, &mut units).await;
        for lock in locks {
            lock.release().await;
        }
        let mut units: Vec<SiteGc> = units.into_values().collect();
        if let Err(failure) = outcome {
            let message = format!("{:#}", failure.error);
            self.printer
                .stage(&self.site.name, "gc", Status::Failed, &message);
            for unit in &mut units {
                unit.error.get_or_insert_with(|| message.clone());
                unit.failure.get_or_insert(failure.kind);
            }
        }
        units
    }

    /// Steps 1 to 4, with the leases taken into `locks` (freed by the caller).
    async fn locked(
        &self,
        deployers: &mut HashMap<String, Deployer>,
        mirrored: &Mirrored,
        locks: &mut Vec<LeaseLock>,
        units: &mut BTreeMap<(String, String), SiteGc>,
    ) -> Result<(), StageFailure> {
        let mut needed = Needed::default();
        for (view, site) in self.shipped {
            let place = view.environment.clone().unwrap_or_default();
            if !deployers.contains_key(&place) {
                let deployer = connect_cluster(view).await.map_err(StageFailure::from)?;
                deployers.insert(place.clone(), deployer);
            }
            let deployer = &deployers[&place];
            let purpose = "cleaning the registry of";
            let lock = deployer
                .lock_site(site, purpose, self.request.lock_wait, self.printer)
                .await
                .map_err(StageFailure::from)?;
            locks.push(lock);
            gather(deployer, site, &place, &mut needed)
                .await
                .map_err(StageFailure::from)?;
        }
        let synced = mirrored[&self.site.repo].as_ref().map_err(|error| {
            anyhow!("cannot tell the repo's branch heads and tags, so nothing is deleted: {error}")
        })?;
        let mirror = synced.mirror.clone();
        needed.refs = tokio::task::spawn_blocking(move || mirror.lock().expect("not poisoned").refs())
            .await
            .map_err(|error| anyhow!(error))??;
        for unit in units.values_mut() {
            let (view, site) = self.shipped[unit.view];
            self.registry(view, site, &needed, locks, unit).await?;
        }
        Ok(())
    }

    /// Steps 3 and 4 in `view`'s registry.
    async fn registry(
        &self,
        view: &Config,
        site: &Site,
        needed: &Needed,
        locks: &[LeaseLock],
        unit: &mut SiteGc,
    ) -> Result<(), StageFailure> {
        let auth = registry_auth(view).await?;
        let plain_http = match self.docker {
            Some(docker) => registry::plain_http(docker, &auth.registry).await,
            None => false,
        };
        let endpoint = Endpoint {
            auth: &auth,
            repository: &site.image,
        };
        let repository = Repository::new(endpoint, plain_http).map_err(StageFailure::from)?;
        self.printer
            .progress(&site.name, "gc", "listing the repository's tags");
        // Reads go READS_AT_ONCE at a time: one after the other, 300 images took 3.3 s.
        let tags = repository.tags().await.map_err(StageFailure::from)?;
        let digests: Vec<Option<String>> = stream::iter(tags.iter().map(|tag| repository.digest_of(tag)))
            .buffered(READS_AT_ONCE)
            .try_collect()
            .await
            .map_err(StageFailure::from)?;
        let mut by_digest: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tag, digest) in tags.into_iter().zip(digests) {
            if let Some(digest) = digest {
                by_digest.entry(digest).or_default().push(tag);
            }
        }
        self.printer.progress(
            &site.name,
            "gc",
            &format!("reading the {} images of the repository", by_digest.len()),
        );
        let images: Vec<registry::Image> =
            stream::iter(by_digest.keys().map(|digest| repository.image(digest)))
                .buffered(READS_AT_ONCE)
                .try_collect()
                .await
                .map_err(StageFailure::from)?;
        let mut candidates = Vec::new();
        let mut created = HashMap::new();
        // Blobs of images that are not the site's stay whatever gc does.
        let mut others = HashSet::new();
        for ((digest, tags), image) in by_digest.into_iter().zip(images) {
            if image.labels.get(SITE_LABEL) != Some(&site.name) {
                unit.other_tags.extend(tags);
                others.extend(image.blobs.into_iter().map(|(blob, _)| blob));
                continue;
            }
            created.insert(digest.clone(), image.created.clone());
            candidates.push(Candidate {
                built: image
                    .created
                    .as_deref()
                    .and_then(|text| humantime::parse_rfc3339_weak(text).ok()),
                commit: image.labels.get(COMMIT_LABEL).cloned(),
                digest,
                tags,
                blobs: image.blobs,
            });
        }
        let full = format!("{}/{}", auth.registry, site.image);
        let policy = Retention {
            last: unit.keep_last,
            days: unit.keep_days,
        };
        let verdicts = retention::verdicts(&candidates, &full, needed, policy, SystemTime::now());
        unit.images = verdicts
            .iter()
            .map(|verdict| image_gc(verdict, created[&verdict.candidate.digest].clone()))
            .collect();
        unit.kept = verdicts.iter().filter(|v| v.keep()).count();
        let doomed: Vec<usize> = (0..verdicts.len()).filter(|&i| !verdicts[i].keep()).collect();
        unit.bytes_deleted = retention::freed(&verdicts, &others);
        if !self.request.delete {
            unit.deleted = doomed.len();
            self.say(unit);
            return Ok(());
        }
        self.delete(&repository, &verdicts, &doomed, locks, unit).await?;
        self.say(unit);
        Ok(())
    }

    /// Deletes the images at `doomed` of `verdicts`, marking each in `unit`.
    /// The first delete goes alone (a registry that refuses deletes refuses
    /// it, and nothing is deleted), then READS_AT_ONCE at a time; after a
    /// failure no batch starts, and every answered delete is counted. Each
    /// batch starts only while every lease in `locks` is still held.
    async fn delete(
        &self,
        repository: &Repository,
        verdicts: &[Verdict],
        doomed: &[usize],
        locks: &[LeaseLock],
        unit: &mut SiteGc,
    ) -> Result<(), StageFailure> {
        let (first, rest) = doomed.split_at(doomed.len().min(1));
        for batch in std::iter::once(first).chain(rest.chunks(READS_AT_ONCE)) {
            for lock in locks {
                lock.check().map_err(|error| {
                    anyhow!(
                        "{error}; {} of the {} images to delete were deleted before",
                        unit.deleted,
                        doomed.len()
                    )
                })?;
            }
            self.printer.progress(
                &unit.site,
                "gc",
                &format!("deleting images: {} of {} done", unit.deleted, doomed.len()),
            );
            let answers = futures_util::future::join_all(
                batch
                    .iter()
                    .map(|&index| repository.delete(&verdicts[index].candidate.digest)),
            )
            .await;
            let mut failed = None;
            for (&index, answer) in batch.iter().zip(answers) {
                match answer {
                    Ok(()) => {
                        unit.images[index].action = "deleted";
                        unit.deleted += 1;
                    }
                    Err(error) => failed = failed.or(Some(error)),
                }
            }
            if let Some(error) = failed {
                return Err(anyhow!(
                    "{error}; {} of the {} images to delete were deleted",
                    unit.deleted,
                    doomed.len()
                )
                .into());
            }
        }
        Ok(())
    }

    /// The site's line: how many images stay and go.
    fn say(&self, unit: &SiteGc) {
        let verb = if self.request.delete {
            "deleted"
        } else {
            "to delete"
        };
        self.printer.stage(
            &unit.site,
            "gc",
            Status::Done,
            &format!(
                "{}/{}: {} images, {} kept, {} {verb} ({})",
                unit.registry,
                unit.repository,
                unit.images.len(),
                unit.kept,
                unit.deleted,
                bytes_text(unit.bytes_deleted)
            ),
        );
    }
}

/// What may still need an image, from the site's Deployment in one place.
async fn gather(
    deployer: &Deployer,
    site: &Site,
    place: &str,
    needed: &mut Needed,
) -> Result<(), DeployError> {
    let deployment = match deployer.read(&site.deployment).await {
        Ok(deployment) => deployment,
        // Not deployed there (yet): nothing runs, no revision.
        Err(DeployError::NotFound { .. }) => return Ok(()),
        Err(error) => return Err(error),
    };
    let deployed = deployer.deployed_of(&deployment, &site.deployment).await?;
    for image in [deployed.image, deployed.shipped_image].into_iter().flatten() {
        needed.running.push((place.to_string(), image));
    }
    // A pull request's preview runs an image of the site's repository too,
    // for as long as the preview lives.
    for preview in deployer
        .previews(&site.deployment.namespace, Some(&site.name))
        .await?
    {
        if let Some(image) = preview.image {
            needed.previews.push((preview.number, image));
        }
    }
    for revision in deployer.history_of(&deployment, &site.deployment).await? {
        if let Some(image) = revision.image {
            needed
                .revisions
                .push((place.to_string(), revision.revision, image));
        }
    }
    Ok(())
}

fn image_gc(verdict: &Verdict, created: Option<String>) -> ImageGc {
    let candidate = &verdict.candidate;
    ImageGc {
        digest: candidate.digest.clone(),
        tags: candidate.tags.clone(),
        commit: candidate.commit.clone(),
        created,
        bytes: candidate.bytes(),
        action: if verdict.keep() { "keep" } else { "delete" },
        reasons: verdict.reasons.iter().map(ToString::to_string).collect(),
    }
}

/// `1.2 MiB`, `340 KiB`, `12 B`.
pub fn bytes_text(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "a size for a person, to one decimal")]
    let value = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", value / f64::from(1u32 << 30))
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", value / f64::from(1u32 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.0} KiB", value / 1024.0)
    } else {
        format!("{bytes} B")
    }
}
