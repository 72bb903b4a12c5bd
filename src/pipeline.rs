//! The pipeline: runs the stages for each site and reports what happened.
//!
//! 1. Select the sites; connect to the Docker Engine and the cluster (an
//!    unreachable part is an environment error, exit 3).
//! 2. Mirror each repo once (blocking, off the runtime), resolve the branch head
//!    or the requested commit, and compute each site's source digest.
//! 3. Per site, with a bound on parallel sites: compare with what the Deployment
//!    runs ("unchanged" skips everything); export and generate (shared between
//!    sites built by one generator run); build; push; deploy.
//! 4. One line per stage per site while it runs, a summary table at the end.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::build::{self, ImageBuild};
use crate::config::{Config, ImageSource, Site};
use crate::deploy::{self, Change, DeployError, Deployer, Outcome};
use crate::mirror::{Commit, Mirror};
use crate::output::{Printer, Status, table};
use crate::push::{self, RegistryAuth};
use crate::reference;
use crate::settings::DeployOptions;

/// What happened to one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteAction {
    /// Built (or found in the registry), pushed and rolled out.
    Deployed,
    /// The Deployment already runs this source digest: nothing was done.
    Unchanged,
    /// The Deployment already ran exactly this image.
    UpToDate,
    /// Something failed; `error` says what.
    Failed,
    /// berth was interrupted before this site's next stage; its Deployment was not touched.
    Interrupted,
}

/// Why a site failed, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The site's own problem (build, rollout, missing commit...).
    Site,
    /// Docker Engine, registry or cluster unreachable.
    Environment,
    /// berth was interrupted (Ctrl-C, SIGTERM) before the site's next stage.
    Interrupted,
}

/// The result of one site.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteReport {
    pub site: String,
    pub commit: Option<String>,
    pub source_digest: Option<String>,
    /// SHA-256 of the build context berth sent to the Engine (when it built).
    pub context_digest: Option<String>,
    /// What the site's image serves, times left out (when berth knows it).
    pub content_digest: Option<String>,
    /// Why the site is unchanged or up to date, in words.
    pub reason: Option<String>,
    pub image: Option<String>,
    pub digest: Option<String>,
    pub action: SiteAction,
    /// Seconds per stage.
    pub durations: BTreeMap<String, f64>,
    pub error: Option<String>,
    /// Why it failed: `site` or `environment`.
    pub failure: Option<FailureKind>,
    /// What berth checked after a rollout Kubernetes called complete: the
    /// digest each ready pod runs, and a request through each Service.
    pub verification: Option<deploy::verify::Verification>,
}

impl SiteReport {
    /// A report that says "failed" until a stage says otherwise.
    fn new(site: &str) -> Self {
        Self {
            site: site.to_string(),
            commit: None,
            source_digest: None,
            context_digest: None,
            content_digest: None,
            reason: None,
            image: None,
            digest: None,
            action: SiteAction::Failed,
            durations: BTreeMap::new(),
            error: None,
            failure: None,
            verification: None,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub sites: Vec<SiteReport>,
}

impl RunReport {
    /// The `--json` document of run, ship and rollback (schema: docs/schema/report.schema.json).
    pub fn document(
        &self,
        command: &str,
        started: std::time::SystemTime,
        exit_code: u8,
    ) -> serde_json::Value {
        serde_json::json!({
            "schema": "berth.report/v1",
            "command": command,
            "started_at": humantime::format_rfc3339_seconds(started).to_string(),
            "duration_seconds": started.elapsed().unwrap_or_default().as_secs_f64(),
            "exit_code": exit_code,
            "sites": self.sites,
        })
    }

    pub fn summary(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .sites
            .iter()
            .map(|site| {
                let total = site.durations.values().fold(0.0, |sum, seconds| sum + seconds);
                vec![
                    site.site.clone(),
                    site.commit.as_deref().map_or("-", reference::short).to_string(),
                    format!("{:?}", site.action)
                        .to_lowercase()
                        .replace("uptodate", "up-to-date"),
                    site.image.as_deref().map_or_else(|| "-".into(), short_image),
                    format!("{total:.1}s"),
                ]
            })
            .collect();
        table(&["SITE", "COMMIT", "RESULT", "IMAGE", "TIME"], &rows)
    }
}

/// An error before any site ran: usage (exit 2) or environment (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A site named on the command line is not in the pipeline file.
    #[error("no site named `{name}` in {config} (sites: {known})")]
    UnknownSite {
        name: String,
        config: String,
        known: String,
    },
    /// A repo named on the command line is not in the pipeline file.
    #[error("no repo named `{name}` in {config} (repos: {known})")]
    UnknownRepo {
        name: String,
        config: String,
        known: String,
    },
    /// The Docker Engine or the cluster cannot be reached.
    #[error("{0}")]
    Environment(String),
    /// `berth export` was given a folder that holds something (or is no folder).
    #[error("{path} is not an empty folder; export writes only into a new or empty one")]
    NotEmpty { path: String },
}

/// Which commit of each site to take.
#[derive(Debug, Clone)]
pub enum Revision {
    /// The head of each repo's branch.
    BranchHead,
    /// Exactly this commit (or tag).
    Exact(String),
}

impl Revision {
    /// The commit this revision names in `mirror`, whose branch is `branch`.
    fn resolve(&self, mirror: &Mirror, branch: &str) -> Result<Commit, crate::mirror::MirrorError> {
        match self {
            Self::BranchHead => mirror.branch_head(branch),
            Self::Exact(spec) => mirror.resolve(spec),
        }
    }
}

/// Runs the pipeline for `names` (all sites when empty).
pub async fn run(
    config: &Config,
    sites: &[&Site],
    revision: Revision,
    jobs: usize,
    options: &DeployOptions,
    printer: &Printer,
) -> anyhow::Result<RunReport> {
    let docker = connect_docker().await?;
    let deployer = connect_cluster(config).await?;
    let auth = registry_auth(config).await?;
    let generator = Generator::new(config, printer)?;

    let interrupted = Arc::new(AtomicBool::new(false));
    let signals = tokio::spawn(watch_signals(interrupted.clone(), printer.clone()));
    let mirrored = mirror_all(config, sites, &revision, jobs, printer).await;

    let context = RunContext {
        config,
        docker: &docker,
        deployer: &deployer,
        auth: &auth,
        printer,
        generator,
        options,
        interrupted: interrupted.clone(),
    };
    let reports: Vec<SiteReport> = futures_util::stream::iter(sites.iter().map(|site| {
        let synced = mirrored.get(&site.repo).expect("every repo was mirrored");
        let context = &context;
        async move { context.site(site, synced).await }
    }))
    .buffered(jobs.max(1))
    .collect()
    .await;
    signals.abort();
    Ok(RunReport { sites: reports })
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
            std::process::exit(130);
        }
    }
}

/// The sites named (all when none), or a usage error naming the unknown one.
pub(crate) fn select<'c>(config: &'c Config, names: &[String]) -> Result<Vec<&'c Site>, SetupError> {
    if names.is_empty() {
        return Ok(config.sites.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            config.site(name).ok_or_else(|| SetupError::UnknownSite {
                name: name.clone(),
                config: config.path.display().to_string(),
                known: config
                    .sites
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        })
        .collect()
}

/// Mirrors each repo of `sites` once (blocking work off the runtime), resolving
/// the commit to ship and each site folder's tree id.
pub(crate) async fn mirror_all(
    config: &Config,
    sites: &[&Site],
    revision: &Revision,
    jobs: usize,
    printer: &Printer,
) -> HashMap<String, Result<Synced, String>> {
    let mut repo_names: Vec<&str> = sites.iter().map(|s| s.repo.as_str()).collect();
    repo_names.sort_unstable();
    repo_names.dedup();
    let mirrors_dir = config.state_dir.join("mirrors");
    let mirrored: Vec<(String, Result<Synced, String>)> =
        futures_util::stream::iter(repo_names.into_iter().map(|name| {
            let repo = config.repo(name).expect("validated").clone();
            let mirrors_dir = mirrors_dir.clone();
            let printer = printer.clone();
            let revision = revision.clone();
            let paths: Vec<String> = sites
                .iter()
                .filter(|s| s.repo == name)
                .map(|s| s.path.clone())
                .collect();
            async move {
                let started = Instant::now();
                let name = repo.name.clone();
                let result = tokio::task::spawn_blocking(move || {
                    sync_repo(&mirrors_dir, &repo, &revision, &paths, &printer)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                (
                    name,
                    result.map(|mut synced| {
                        synced.duration = started.elapsed();
                        synced
                    }),
                )
            }
        }))
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    mirrored.into_iter().collect()
}

/// What `berth mirror` did: a row of repo, branch and head per mirrored repo,
/// and how many repos failed (each reported as it failed).
pub struct MirrorReport {
    pub rows: Vec<Vec<String>>,
    pub failed: usize,
}

/// Fetches the mirrors of `names` (all repos when empty), one after the other.
/// A repo that fails is reported and the next one is tried.
pub async fn mirror_repos(
    config: &Config,
    names: &[String],
    printer: &Printer,
) -> anyhow::Result<MirrorReport> {
    if let Some(unknown) = names.iter().find(|name| config.repo(name).is_none()) {
        return Err(SetupError::UnknownRepo {
            name: unknown.clone(),
            config: config.path.display().to_string(),
            known: config
                .repos
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    }
    let mut report = MirrorReport {
        rows: Vec::new(),
        failed: 0,
    };
    for repo in &config.repos {
        if !names.is_empty() && !names.contains(&repo.name) {
            continue;
        }
        let (mirrors_dir, repo_copy, printer_copy) =
            (config.state_dir.join("mirrors"), repo.clone(), printer.clone());
        let started = Instant::now();
        let head = tokio::task::spawn_blocking(move || {
            sync_mirror(&mirrors_dir, &repo_copy, &printer_copy)?.branch_head(&repo_copy.branch)
        })
        .await?;
        match head {
            Ok(head) => {
                printer.stage(
                    &repo.name,
                    "mirror",
                    Status::Done,
                    &format!(
                        "{} ({:.2}s)",
                        reference::short(&head.id),
                        started.elapsed().as_secs_f64()
                    ),
                );
                report
                    .rows
                    .push(vec![repo.name.clone(), repo.branch.clone(), head.id]);
            }
            Err(error) => {
                printer.stage(&repo.name, "mirror", Status::Failed, &error.to_string());
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// What `berth export` wrote.
pub struct Exported {
    pub commit: Commit,
    /// Files written (symlinks included).
    pub files: usize,
}

/// Writes `site`'s folder at `revision`, from its repo's mirror, into `directory`
/// (created when missing; refused unless empty). The mirror is fetched first
/// unless `offline`.
pub async fn export_site(
    config: &Config,
    site: &Site,
    revision: Revision,
    offline: bool,
    directory: &Path,
    printer: &Printer,
) -> anyhow::Result<Exported> {
    let empty = match std::fs::read_dir(directory) {
        Ok(mut entries) => entries.next().is_none(),
        Err(error) => error.kind() == std::io::ErrorKind::NotFound,
    };
    if !empty {
        return Err(SetupError::NotEmpty {
            path: directory.display().to_string(),
        }
        .into());
    }
    let repo = config.repo(&site.repo).expect("validated").clone();
    let (mirrors_dir, path, destination, printer_copy) = (
        config.state_dir.join("mirrors"),
        site.path.clone(),
        directory.to_path_buf(),
        printer.clone(),
    );
    let started = Instant::now();
    let exported = tokio::task::spawn_blocking(move || {
        let mirror = if offline {
            Mirror::open_existing(&mirrors_dir, &repo, &|message| printer_copy.warning(&message))?
        } else {
            sync_mirror(&mirrors_dir, &repo, &printer_copy)?
        };
        let commit = revision.resolve(&mirror, &repo.branch)?;
        let files = mirror.export(&commit.id, &path, &destination)?;
        Ok::<_, crate::mirror::MirrorError>(Exported { commit, files })
    })
    .await?
    .with_context(|| format!("cannot export site `{}`", site.name))?;
    printer.stage(
        &site.name,
        "export",
        Status::Done,
        &format!(
            "{} files at {} into {} ({:.2}s)",
            exported.files,
            reference::short(&exported.commit.id),
            directory.display(),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(exported)
}

/// Connects to the cluster of the pipeline's `[kubernetes]` section.
pub(crate) async fn connect_cluster(config: &Config) -> Result<Deployer, SetupError> {
    Deployer::connect(
        config.kubernetes.context.as_deref(),
        config.kubernetes.rollout_timeout,
    )
    .await
    .map_err(|error| SetupError::Environment(error.to_string()))
}

/// The registry's credentials from their source, read off the runtime (a
/// credential helper is a process).
pub(crate) async fn registry_auth(config: &Config) -> anyhow::Result<RegistryAuth> {
    let registry = config.registry.address.clone();
    let source = config.registry.credentials.clone();
    let base = config.path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(tokio::task::spawn_blocking(move || push::resolve_credentials(&registry, &source, &base)).await??)
}

/// Connects to the Engine from `DOCKER_HOST` (or the default socket) and pings it.
pub async fn connect_docker() -> Result<Docker, SetupError> {
    // DOCKER_HOST may be unix://, tcp:// (with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH
    // for TLS) or https://. Builds of large sites can take long: one hour per request.
    let docker = Docker::connect_with_defaults()
        .map_err(|error| SetupError::Environment(format!("cannot reach the Docker Engine: {error}")))?
        .with_timeout(Duration::from_secs(3600));
    docker.ping().await.map_err(|error| {
        SetupError::Environment(format!(
            "cannot reach the Docker Engine ({}): {error}",
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
        ))
    })?;
    Ok(docker)
}

/// A mirrored repo: the commit to ship and each path's tree id.
pub(crate) struct Synced {
    pub(crate) mirror: Arc<Mutex<Mirror>>,
    pub(crate) commit: Commit,
    pub(crate) trees: HashMap<String, Result<String, String>>,
    pub(crate) duration: Duration,
}

impl Synced {
    /// The deployed commit, when `commit` is an ancestor of it (an out-of-order
    /// CI job): `run` refuses it unless allowed, `plan` says so. None when
    /// nothing is deployed, it is the same commit, or the deployed commit is
    /// not in this repo (another branch or repo: no order to keep).
    pub(crate) async fn older_than(&self, commit: &str, deployed: &deploy::Deployed) -> Option<String> {
        let deployed_commit = deployed.commit.clone().filter(|c| c != commit)?;
        let mirror = self.mirror.clone();
        let (candidate, other) = (commit.to_string(), deployed_commit.clone());
        let older = tokio::task::spawn_blocking(move || {
            mirror
                .lock()
                .expect("not poisoned")
                .is_ancestor(&candidate, &other)
        })
        .await;
        match older {
            Ok(Ok(true)) => Some(deployed_commit),
            Ok(Ok(false)) => None,
            Ok(Err(error)) => {
                tracing::debug!("cannot compare {commit} with deployed {deployed_commit}: {error}");
                None
            }
            Err(error) => {
                tracing::warn!("comparing {commit} with deployed {deployed_commit} stopped: {error}");
                None
            }
        }
    }
}

/// Opens and fetches `repo`'s mirror (blocking), its warnings and progress on `printer`.
fn sync_mirror(
    mirrors_dir: &Path,
    repo: &crate::config::Repo,
    printer: &Printer,
) -> Result<Mirror, crate::mirror::MirrorError> {
    let warn = |message: String| printer.warning(&message);
    let progress = |text: String| printer.progress(&repo.name, "mirror", &text);
    let mirror = Mirror::sync(mirrors_dir, repo, &warn, &progress);
    printer.clear_progress(&repo.name);
    mirror
}

fn sync_repo(
    mirrors_dir: &Path,
    repo: &crate::config::Repo,
    revision: &Revision,
    paths: &[String],
    printer: &Printer,
) -> Result<Synced, String> {
    let mirror = sync_mirror(mirrors_dir, repo, printer).map_err(|e| e.to_string())?;
    let commit = revision
        .resolve(&mirror, &repo.branch)
        .map_err(|e| e.to_string())?;
    let trees = paths
        .iter()
        .map(|path| {
            (
                path.clone(),
                mirror.tree_id(&commit.id, path).map_err(|e| e.to_string()),
            )
        })
        .collect();
    Ok(Synced {
        mirror: Arc::new(Mutex::new(mirror)),
        commit,
        trees,
        duration: Duration::ZERO,
    })
}

/// What the registry holds under a tag.
enum Existing {
    /// An image built from this source digest: its manifest digest, and what
    /// it serves (its content-digest label, from berth versions that write it).
    Same {
        digest: String,
        content_digest: Option<String>,
    },
    /// An image built from other inputs.
    Different,
}

/// A site's files (exported and generated, or read from the mirror), and the
/// times they get.
type Generated = (build::SiteFiles, Arc<build::FileTimes>);
/// Generator runs shared between sites built from one repo, commit, folder and
/// command: one run's files, or why it failed.
type SharedBuild = Arc<tokio::sync::OnceCell<Result<Generated, String>>>;

#[derive(Default)]
struct SharedBuilds {
    cells: Mutex<HashMap<String, SharedBuild>>,
    /// Work folders to remove when the run ends.
    dirs: Mutex<Vec<PathBuf>>,
}

impl Drop for SharedBuilds {
    fn drop(&mut self) {
        for dir in self.dirs.get_mut().map(std::mem::take).unwrap_or_default() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

struct RunContext<'a> {
    config: &'a Config,
    docker: &'a Docker,
    deployer: &'a Deployer,
    auth: &'a RegistryAuth,
    printer: &'a Printer,
    generator: Generator<'a>,
    options: &'a DeployOptions,
    /// Set by Ctrl-C or SIGTERM: start no new stage.
    interrupted: Arc<AtomicBool>,
}

/// Turns a stage error into the site's failure, keeping its kind.
struct StageFailure {
    kind: FailureKind,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for StageFailure {
    fn from(error: E) -> Self {
        Self {
            kind: FailureKind::Site,
            error: error.into(),
        }
    }
}

fn environment(error: impl Into<anyhow::Error>) -> StageFailure {
    StageFailure {
        kind: FailureKind::Environment,
        error: error.into(),
    }
}

impl RunContext<'_> {
    async fn site(&self, site: &Site, synced: &Result<Synced, String>) -> SiteReport {
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
                failure: Some(FailureKind::Interrupted),
                ..SiteReport::new(&site.name)
            };
        }
        let mut report = SiteReport::new(&site.name);
        match self.site_stages(site, synced, &mut report).await {
            Ok(action) => report.action = action,
            Err(failure) => {
                let message = format!("{:#}", failure.error);
                self.printer.stage(&site.name, "result", Status::Failed, &message);
                report.error = Some(message);
                report.failure = Some(failure.kind);
                report.action = if failure.kind == FailureKind::Interrupted {
                    SiteAction::Interrupted
                } else {
                    SiteAction::Failed
                };
            }
        }
        report
    }

    async fn site_stages(
        &self,
        site: &Site,
        synced: &Result<Synced, String>,
        report: &mut SiteReport,
    ) -> Result<SiteAction, StageFailure> {
        let printer = self.printer;
        let synced = match synced {
            Ok(synced) => synced,
            Err(message) => {
                printer.stage(&site.name, "mirror", Status::Failed, message);
                return Err(anyhow!("{message}").into());
            }
        };
        report
            .durations
            .insert("mirror".into(), synced.duration.as_secs_f64());
        let commit = &synced.commit;
        report.commit = Some(commit.id.clone());
        let tree = synced
            .trees
            .get(&site.path)
            .expect("every path was resolved")
            .clone()
            .map_err(|e| anyhow!(e))?;
        printer.stage(
            &site.name,
            "mirror",
            Status::Done,
            &format!("{} {}", reference::short(&commit.id), commit.summary),
        );

        let source_digest = source_digest(self.config, site, &tree)?;
        report.source_digest = Some(source_digest.clone());
        let repository = self.config.image_repository(site);
        let tag = reference::commit_tag(&commit.id);

        // Check, reading only: unchanged, older than what runs, preflight.
        let started = Instant::now();
        let (deployment, deployed) = self.read_deployed(site).await?;
        if deployed.runs_source(&repository, &source_digest) {
            report.image.clone_from(&deployed.image);
            report.digest = deployed
                .image
                .as_deref()
                .and_then(deploy::verify::digest_of)
                .map(String::from);
            report
                .durations
                .insert("check".into(), started.elapsed().as_secs_f64());
            printer.stage(
                &site.name,
                "check",
                Status::Skipped,
                &format!(
                    "unchanged: {} already runs source {}",
                    site.deployment.name,
                    &source_digest[..12]
                ),
            );
            return Ok(SiteAction::Unchanged);
        }
        self.guard_older(synced, &commit.id, &deployed).await?;
        self.preflight_findings(
            site,
            deploy::preflight::preflight(&deployment, &site.deployment.container),
        )?;
        report
            .durations
            .insert("check".into(), started.elapsed().as_secs_f64());

        self.check_interrupted("build")?;
        // Build, unless the registry already holds this tag built from this source.
        let mut tag = tag;
        let mut reference_with_tag = format!("{repository}:{tag}");
        let started = Instant::now();
        let mut existing = self.existing(&reference_with_tag, &source_digest).await?;
        if matches!(existing, Some(Existing::Different)) {
            // The commit's tag holds an image built from other inputs (a changed
            // template or build args): tags never move, so this one gets its own.
            tag = reference::variant_tag(&tag, &source_digest);
            reference_with_tag = format!("{repository}:{tag}");
            printer.stage(
                &site.name,
                "build",
                Status::Warning,
                &format!("the commit's tag holds an image of other build inputs; using {tag}"),
            );
            existing = self.existing(&reference_with_tag, &source_digest).await?;
        }
        let (digest, content_digest) = if let Some(Existing::Same {
            digest,
            content_digest,
        }) = existing
        {
            // The commit's image is in the registry; its label says what it serves.
            if let Some(content) = content_digest.as_deref().filter(|c| deployed.serves_files(c)) {
                report.content_digest = Some(content.to_string());
                return self
                    .record_same_files(site, synced, &repository, &source_digest, content, report)
                    .await;
            }
            printer.stage(
                &site.name,
                "build",
                Status::Skipped,
                &format!("exists: {reference_with_tag}"),
            );
            (digest, content_digest)
        } else {
            // What this commit's image would serve. The same files as the
            // running image (another output of a shared generator changed, or
            // only files the site leaves out): nothing to build or roll out.
            let content = self.generator.content(site, synced).await?;
            report.content_digest = Some(content.digest.clone());
            if deployed.serves_files(&content.digest) {
                return self
                    .record_same_files(site, synced, &repository, &source_digest, &content.digest, report)
                    .await;
            }
            let (image_id, context_digest, index) = self
                .build(
                    site,
                    synced,
                    &source_digest,
                    &content,
                    &deployed,
                    &reference_with_tag,
                )
                .await?;
            // What only the image knows (the ports it serves), before it is pushed.
            let exposed = self.exposed_ports(&image_id).await;
            self.preflight_findings(
                site,
                deploy::preflight::probe_ports(&deployment, &site.deployment.container, &exposed),
            )?;
            report.context_digest = Some(context_digest);
            report
                .durations
                .insert("build".into(), started.elapsed().as_secs_f64());
            let started = Instant::now();
            printer.progress(&site.name, "push", &format!("pushing {reference_with_tag}"));
            let digest = push::push(self.docker, &image_id, &repository, &tag, self.auth)
                .await
                .map_err(push_failure)?;
            report
                .durations
                .insert("push".into(), started.elapsed().as_secs_f64());
            printer.stage(
                &site.name,
                "push",
                Status::Done,
                &format!(
                    "{reference_with_tag}@{digest} ({:.1}s)",
                    started.elapsed().as_secs_f64()
                ),
            );
            // The next build of this site starts from this one's files and times.
            if let Err(error) = crate::previous::keep(&self.config.state_dir, &digest, &index) {
                tracing::warn!("cannot keep the index of {reference_with_tag}: {error}");
            }
            (digest, Some(content.digest))
        };
        let image = format!("{reference_with_tag}@{digest}");
        report.image = Some(image.clone());
        report.digest = Some(digest);

        // Deploy, holding the Deployment's lease; decide again under it.
        let started = Instant::now();
        report.content_digest.clone_from(&content_digest);
        let change = Change {
            image: image.clone(),
            commit: commit.id.clone(),
            source_digest: source_digest.clone(),
            content_digest,
            change_cause: format!(
                "berth: {} {} {}",
                site.name,
                reference::short(&commit.id),
                commit.summary
            ),
        };
        let target = format!("{}/{}", site.deployment.namespace, site.deployment.name);
        self.check_interrupted("deploy")?;
        let lock = self.lock(site).await?;
        let outcome = async {
            let (deployment, deployed) = self.read_deployed(site).await?;
            if deployed.runs_source(&repository, &source_digest) {
                return Ok(None);
            }
            self.guard_older(synced, &commit.id, &deployed).await?;
            self.deployer
                .apply(&site.name, &site.deployment, &change, Some(deployment), printer)
                .await
                .map(Some)
                .map_err(|error| {
                    report.verification = verification_of(&error);
                    deploy_failure(error)
                })
        }
        .await;
        lock.release().await;
        report
            .durations
            .insert("deploy".into(), started.elapsed().as_secs_f64());
        Ok(match outcome? {
            None => {
                printer.stage(
                    &site.name,
                    "deploy",
                    Status::Skipped,
                    &format!("unchanged: {target} was just deployed by another caller"),
                );
                SiteAction::Unchanged
            }
            Some(Outcome::UpToDate) => {
                printer.stage(
                    &site.name,
                    "deploy",
                    Status::Skipped,
                    &format!("up to date: {target} already runs {image}"),
                );
                SiteAction::UpToDate
            }
            Some(Outcome::RolledOut(verification)) => {
                report.verification = Some(verification);
                printer.stage(
                    &site.name,
                    "deploy",
                    Status::Done,
                    &format!("{target} rolled out ({:.1}s)", started.elapsed().as_secs_f64()),
                );
                SiteAction::Deployed
            }
        })
    }

    /// Preflight findings are warnings, or with `--strict` an error that stops
    /// the site before anything is pushed or deployed.
    fn preflight_findings(
        &self,
        site: &Site,
        findings: Vec<deploy::preflight::Finding>,
    ) -> Result<(), StageFailure> {
        if findings.is_empty() {
            return Ok(());
        }
        if self.options.strict {
            return Err(DeployError::Preflight {
                namespace: site.deployment.namespace.clone(),
                name: site.deployment.name.clone(),
                findings,
            }
            .into());
        }
        for finding in &findings {
            self.printer
                .stage(&site.name, "preflight", Status::Warning, &finding.to_string());
        }
        Ok(())
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
            return Err(StageFailure {
                kind: FailureKind::Interrupted,
                error: anyhow!("interrupted before {stage}; the Deployment was not touched"),
            });
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
        .map_err(deploy_failure)
    }

    /// A commit whose image would serve the files the Deployment already
    /// serves: under the lease, and deciding again there, berth records the
    /// commit and source digest on the Deployment's lease (so the next run
    /// calls the site unchanged, and the out-of-order guard starts from this
    /// commit) and touches neither the registry nor the Deployment.
    async fn record_same_files(
        &self,
        site: &Site,
        synced: &Synced,
        repository: &str,
        source_digest: &str,
        content_digest: &str,
        report: &mut SiteReport,
    ) -> Result<SiteAction, StageFailure> {
        let started = Instant::now();
        let commit = &synced.commit.id;
        self.check_interrupted("deploy")?;
        let lock = self.lock(site).await?;
        let outcome = async {
            let (_, deployed) = self.read_deployed(site).await?;
            if deployed.runs_source(repository, source_digest) {
                return Ok::<_, StageFailure>((deployed, false));
            }
            self.guard_older(synced, commit, &deployed).await?;
            if !deployed.serves_files(content_digest) {
                return Err(anyhow!(
                    "{}/{} changed while berth compared its files; nothing was recorded (run again)",
                    site.deployment.namespace,
                    site.deployment.name
                )
                .into());
            }
            self.deployer
                .record(&lock, &deployed, commit, source_digest)
                .await
                .map_err(deploy_failure)?;
            Ok((deployed, true))
        }
        .await;
        lock.release().await;
        let (deployed, recorded) = outcome?;
        report
            .durations
            .insert("deploy".into(), started.elapsed().as_secs_f64());
        report.image.clone_from(&deployed.image);
        report.digest = deployed
            .image
            .as_deref()
            .and_then(deploy::verify::digest_of)
            .map(String::from);
        let reason = same_files_reason(&deployed);
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
            .map_err(deploy_failure)?;
        let deployed = self
            .deployer
            .deployed_of(&deployment, &site.deployment)
            .await
            .map_err(deploy_failure)?;
        Ok((deployment, deployed))
    }

    /// Refuses a commit that is an ancestor of the deployed one, unless allowed.
    async fn guard_older(
        &self,
        synced: &Synced,
        commit: &str,
        deployed: &deploy::Deployed,
    ) -> Result<(), StageFailure> {
        if self.options.allow_older {
            return Ok(());
        }
        match synced.older_than(commit, deployed).await {
            Some(deployed_commit) => Err(DeployError::Older {
                commit: commit.to_string(),
                deployed: deployed_commit,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// The registry's digest for `reference` when the local Engine knows that image
    /// was built from `source_digest` and the registry holds it.
    async fn existing(&self, reference: &str, source_digest: &str) -> Result<Option<Existing>, StageFailure> {
        let Some(digest) = push::registry_digest(self.docker, reference, self.auth)
            .await
            .map_err(push_failure)?
        else {
            return Ok(None);
        };
        // The registry holds the tag: was it built from this source? Ask the local
        // Engine's copy, pulling it when this machine has none (a fresh CronJob pod).
        let pinned = format!(
            "{}@{digest}",
            reference.rsplit_once(':').map_or(reference, |(name, _)| name)
        );
        if self.docker.inspect_image(&pinned).await.is_err() {
            push::pull(self.docker, &pinned, self.auth)
                .await
                .map_err(push_failure)?;
        }
        let labels = self
            .docker
            .inspect_image(&pinned)
            .await
            .ok()
            .and_then(|image| image.config)
            .and_then(|c| c.labels)
            .unwrap_or_default();
        Ok(Some(
            if labels.get(SOURCE_DIGEST_LABEL).map(String::as_str) == Some(source_digest) {
                Existing::Same {
                    digest,
                    content_digest: labels.get(CONTENT_DIGEST_LABEL).cloned(),
                }
            } else {
                Existing::Different
            },
        ))
    }

    /// Builds the site's image; returns its id, the context digest, and the
    /// index of its files (each one's blob and time).
    async fn build(
        &self,
        site: &Site,
        synced: &Synced,
        source_digest: &str,
        content: &build::SiteContent,
        deployed: &deploy::Deployed,
        tag: &str,
    ) -> Result<(String, String, build::FileIndex), StageFailure> {
        let printer = self.printer;
        let commit = &synced.commit;
        let started = Instant::now();
        let (generated, times) = self
            .generator
            .generate(site, synced)
            .await
            .map_err(|e| anyhow!(e))?;
        let times = Arc::new(times.with_previous(self.previous_files(site, deployed).await, content));
        let index = times.index(content);
        // For scripts/bench: a copy of the context, to measure the Engine's own cost on it.
        let copy = std::env::var_os("BERTH_KEEP_CONTEXT")
            .map(|keep| std::path::Path::new(&keep).join(format!("{}.tar", site.name)));
        let context =
            build::stream_site_context(site, &self.config.templates_dir, generated, times, copy).await?;
        let mut labels = BTreeMap::new();
        labels.insert("org.opencontainers.image.revision".to_string(), commit.id.clone());
        labels.insert(
            "org.opencontainers.image.source".to_string(),
            self.config.repo(&site.repo).expect("validated").url.clone(),
        );
        labels.insert(
            "org.opencontainers.image.created".to_string(),
            rfc3339(commit.time),
        );
        labels.insert(SOURCE_DIGEST_LABEL.to_string(), source_digest.to_string());
        labels.insert(CONTENT_DIGEST_LABEL.to_string(), content.digest.clone());
        labels.insert("dev.berth.site".to_string(), site.name.clone());
        let mut credentials = HashMap::new();
        if let Some(creds) = &self.auth.credentials {
            credentials.insert(self.auth.registry.clone(), creds.clone());
        }
        let request = ImageBuild {
            context: build::ContextBody::Stream(context.body),
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
        let (built, written) = tokio::join!(build::build_image(self.docker, request, printer), written);
        let build_failure = |error| match error {
            build::BuildError::Unreachable(_) => environment(error),
            other => other.into(),
        };
        // A writer that stopped because the Engine gave up defers to the Engine's words.
        let (image_id, build_context) = match (built, written) {
            (_, Err(error)) if !error.is_context_not_read() => return Err(error.into()),
            (Err(error), _) => return Err(build_failure(error)),
            (Ok(_), Err(error)) => return Err(error.into()),
            (Ok(image_id), Ok(context)) => (image_id, context),
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
        Ok((image_id, build_context.digest, index))
    }

    /// The files of the image the Deployment runs, when it is an earlier build
    /// of this template site (see [`crate::previous`]); none otherwise, or when
    /// they cannot be read (said as a warning: the files then get the commit's
    /// time, as on a first build).
    async fn previous_files(&self, site: &Site, deployed: &deploy::Deployed) -> build::FileIndex {
        let repository = self.config.image_repository(site);
        let Some(image) = deployed
            .image
            .as_deref()
            .filter(|image| image.starts_with(&format!("{repository}:")))
        else {
            return build::FileIndex::new();
        };
        if !matches!(site.image_source, crate::config::ImageSource::Template(_)) {
            return build::FileIndex::new();
        }
        let web_root = build::web_root(&site.build_args);
        match crate::previous::index_of(self.docker, self.auth, &self.config.state_dir, image, &web_root)
            .await
        {
            Ok(index) => index,
            Err(error) => {
                self.printer.stage(
                    &site.name,
                    "build",
                    Status::Warning,
                    &format!("{error}; every generated file gets the commit's time"),
                );
                build::FileIndex::new()
            }
        }
    }
}

/// Exports sites' folders and runs their generators, once per (repo, commit,
/// folder, command): for `run` (sites sharing a generator share its run) and
/// for `plan`, which needs a site's files to know whether they changed. Its
/// work folders are removed when it is dropped.
pub(crate) struct Generator<'a> {
    config: &'a Config,
    printer: &'a Printer,
    work_dir: PathBuf,
    shared: SharedBuilds,
}

impl<'a> Generator<'a> {
    pub(crate) fn new(config: &'a Config, printer: &'a Printer) -> anyhow::Result<Self> {
        let work_dir = config.state_dir.join("work");
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("cannot create {}", work_dir.display()))?;
        Ok(Self {
            config,
            printer,
            work_dir,
            shared: SharedBuilds::default(),
        })
    }

    /// What the image of `site` at `synced` would serve, times left out
    /// ([`build::content_digest`]): its files exported and generated first.
    pub(crate) async fn content(&self, site: &Site, synced: &Synced) -> anyhow::Result<build::SiteContent> {
        let (generated, _) = self.generate(site, synced).await.map_err(|e| anyhow!(e))?;
        let (site, templates) = (site.clone(), self.config.templates_dir.clone());
        Ok(
            tokio::task::spawn_blocking(move || build::content_digest(&site, &templates, generated))
                .await??,
        )
    }

    /// Exports the site's folder and runs its generator, once per (repo, commit, folder, command).
    pub(crate) async fn generate(&self, site: &Site, synced: &Synced) -> Result<Generated, String> {
        let key = format!(
            "{}\0{}\0{}\0{}\0{}",
            site.repo,
            synced.commit.id,
            site.path,
            site.build.as_deref().unwrap_or(""),
            site.git_history
        );
        let cell = self
            .shared
            .cells
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let started = Instant::now();
            let directory = tempfile::Builder::new()
                .prefix(&format!("{}-{}-", site.repo, reference::short(&synced.commit.id)))
                .tempdir_in(&self.work_dir)
                .map_err(|e| format!("cannot create a work folder in {}: {e}", self.work_dir.display()))?
                .keep();
            self.shared
                .dirs
                .lock()
                .expect("not poisoned")
                .push(directory.clone());
            let mirror = synced.mirror.clone();
            let commit = synced.commit.id.clone();
            let path = site.path.clone();
            // With `git_history`, a checkout the generator can run `git log` in
            // (Hugo's enableGitInfo); its `.git` never reaches the image.
            let (source, export_to) = if site.git_history {
                let root = directory.join("checkout");
                (
                    if path == "." {
                        root.clone()
                    } else {
                        root.join(&path)
                    },
                    root,
                )
            } else {
                (directory.join("source"), directory.join("source"))
            };
            let git_history = site.git_history;
            // Without a generator the context is written straight from the mirror.
            let in_place = site.build.is_none() && !site.git_history;
            let commit_time = u64::try_from(synced.commit.time).unwrap_or(0);
            let shared_mirror = mirror.clone();
            let exported = source.clone();
            let ((files, site_files), times) = tokio::task::spawn_blocking(move || {
                let locked = mirror.lock().expect("not poisoned");
                let tree = if in_place {
                    locked.files(&commit, &path)?
                } else {
                    None
                };
                let files = match tree {
                    Some(files) => {
                        let count = files
                            .iter()
                            .filter(|file| !matches!(file.kind, crate::mirror::TreeFileKind::Folder))
                            .count();
                        let read: Arc<build::ReadBlob> = Arc::new(move |blob| {
                            shared_mirror
                                .lock()
                                .expect("not poisoned")
                                .blob(blob)
                                .map_err(std::io::Error::other)
                        });
                        (
                            count,
                            build::SiteFiles::Tree {
                                files: Arc::new(files),
                                read,
                            },
                        )
                    }
                    None if git_history => (
                        locked.checkout(&commit, &export_to)?,
                        build::SiteFiles::Folder(exported),
                    ),
                    None => (
                        locked.export(&commit, &path, &export_to)?,
                        build::SiteFiles::Folder(exported),
                    ),
                };
                let walk = Instant::now();
                let times = build::FileTimes::new(commit_time, locked.content_times(&commit, &path)?);
                tracing::debug!(
                    seconds = walk.elapsed().as_secs_f64(),
                    "file times of {path} at {commit}"
                );
                Ok::<_, crate::mirror::MirrorError>((files, times))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            self.printer.stage(
                &site.name,
                "export",
                Status::Done,
                &format!(
                    "{files} files of {}:{}{} ({:.1}s)",
                    site.repo,
                    site.path,
                    if matches!(site_files, build::SiteFiles::Tree { .. }) {
                        ", read from the mirror"
                    } else {
                        ""
                    },
                    started.elapsed().as_secs_f64()
                ),
            );
            if let Some(command) = &site.build {
                let started = Instant::now();
                let home = directory.join("home");
                std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
                self.printer
                    .progress(&site.name, "generate", &format!("running `{command}`"));
                build::run_generator(
                    command,
                    &source,
                    &home,
                    &synced.commit.id,
                    synced.commit.time,
                    &site.repo,
                    self.printer,
                )
                .await
                .map_err(|e| e.to_string())?;
                self.printer.stage(
                    &site.name,
                    "generate",
                    Status::Done,
                    &format!("`{command}` ({:.1}s)", started.elapsed().as_secs_f64()),
                );
            }
            Ok((site_files, Arc::new(times)))
        })
        .await
        .clone()
    }
}

/// Why a site whose files the running image serves is up to date, naming the
/// commit that image was built from (`run` and `plan` say it alike).
pub fn same_files_reason(deployed: &deploy::Deployed) -> String {
    let built_at = deployed
        .image
        .as_deref()
        .and_then(reference::built_commit)
        .map_or_else(
            || "an earlier commit".to_string(),
            |c| format!("`{}`", reference::short(c)),
        );
    format!("same files as the running image, built at {built_at}")
}

/// Rolls `site`'s Deployment back to its previous revision, or to the newest
/// earlier revision that ran `to` (a commit or its prefix), and waits for it.
pub async fn rollback(
    config: &Config,
    name: &str,
    to: Option<&str>,
    options: &DeployOptions,
    printer: &Printer,
) -> anyhow::Result<RunReport> {
    let site = select(config, &[name.to_string()])?.remove(0);
    let deployer = connect_cluster(config).await?;
    let started = Instant::now();
    let mut report = SiteReport::new(&site.name);
    let result = async {
        let lock = lock_site(&deployer, site, "rolling back", options.lock_wait, printer).await?;
        let outcome = async {
            let revision = deployer.revision(&site.deployment, to).await?;
            let image = revision.image.clone().unwrap_or_default();
            let commit = revision.commit.clone().unwrap_or_default();
            printer.stage(
                &site.name,
                "rollback",
                Status::Done,
                &format!("to revision {} ({image})", revision.revision),
            );
            let change = Change {
                image: image.clone(),
                commit: commit.clone(),
                source_digest: revision.source_digest.clone().unwrap_or_default(),
                content_digest: revision.content_digest.clone(),
                change_cause: format!(
                    "berth rollback: {} to {}",
                    site.name,
                    if commit.is_empty() {
                        image.clone()
                    } else {
                        reference::short(&commit).to_string()
                    }
                ),
            };
            deployer
                .apply(&site.name, &site.deployment, &change, None, printer)
                .await
                .map(|outcome| (outcome, change))
                .inspect_err(|error| report.verification = verification_of(error))
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
        Ok((outcome, change)) => {
            report.commit = Some(change.commit).filter(|c| !c.is_empty());
            report.source_digest = Some(change.source_digest).filter(|d| !d.is_empty());
            report.digest = change.image.split_once('@').map(|(_, d)| d.to_string());
            report.image = Some(change.image);
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
        Err(error) => {
            let failure = deploy_failure(error);
            printer.stage(
                &site.name,
                "result",
                Status::Failed,
                &format!("{:#}", failure.error),
            );
            report.error = Some(format!("{:#}", failure.error));
            report.failure = Some(failure.kind);
        }
    }
    Ok(RunReport { sites: vec![report] })
}

/// Takes `site`'s Deployment lease for `purpose`, saying whom it waits for.
async fn lock_site(
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

/// Image label holding the source digest.
pub const SOURCE_DIGEST_LABEL: &str = "dev.berth.source-digest";
/// Image label holding what the image serves, times left out (`build::content_digest`).
pub const CONTENT_DIGEST_LABEL: &str = "dev.berth.content-digest";

/// The site's source digest: SHA-256 over the Git tree id of its folder and every
/// input of its build that is not in that folder (command, output folder,
/// Dockerfile, build args). Equal digests mean the same image.
pub fn source_digest(config: &Config, site: &Site, tree: &str) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(b"berth-source-v1\n");
    hasher.update(format!(
        "tree {tree}\nbuild {}\noutput {}\n",
        site.build.as_deref().unwrap_or("-"),
        site.output.as_deref().unwrap_or("-")
    ));
    match &site.image_source {
        ImageSource::Template(name) => {
            let path = config.templates_dir.join(name).join("Dockerfile");
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            hasher.update(b"template ");
            hasher.update(Sha256::digest(&bytes));
            hasher.update(b"\n");
        }
        ImageSource::Dockerfile(path) => hasher.update(format!("dockerfile {path}\n")),
    }
    for (key, value) in &site.build_args {
        hasher.update(format!("arg {key}={value}\n"));
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What berth checked before a rollout failed, if Kubernetes had called it complete.
fn verification_of(error: &DeployError) -> Option<deploy::verify::Verification> {
    match error {
        DeployError::RolloutFailed { verification, .. } => verification.as_deref().cloned(),
        _ => None,
    }
}

fn deploy_failure(error: DeployError) -> StageFailure {
    match error {
        DeployError::Unreachable(_) => environment(error),
        other => other.into(),
    }
}

fn push_failure(error: push::PushError) -> StageFailure {
    match &error {
        push::PushError::Unreachable(_) => environment(error),
        // The registry itself cannot be reached (down, wrong address): an
        // environment error, exit 3, like an unreachable Engine or cluster.
        push::PushError::Failed { message, .. } if is_network_error(message) => environment(error),
        _ => error.into(),
    }
}

fn is_network_error(message: &str) -> bool {
    [
        "connection refused",
        "no such host",
        "i/o timeout",
        "connection reset",
        "dial tcp",
        "EOF",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// `registry/repo:<12 hex>@sha256:<12 hex>` for tables; JSON keeps the full reference.
fn short_image(image: &str) -> String {
    let (name, digest) = image.split_once('@').unwrap_or((image, ""));
    let (repository, tag) = name
        .rsplit_once(':')
        .filter(|(r, _)| !r.ends_with(']'))
        .unwrap_or((name, ""));
    let mut text = repository.to_string();
    if !tag.is_empty() {
        text.push(':');
        text.push_str(&tag[..tag.len().min(12)]);
    }
    if let Some(hex) = digest.strip_prefix("sha256:") {
        text.push_str("@sha256:");
        text.push_str(&hex[..hex.len().min(12)]);
    }
    text
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

fn rfc3339(seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}
