//! A pull request's preview: built, deployed, verified and announced on the
//! pull request; closed; listed; swept when its pull request is closed or it
//! sat idle past `[preview] ttl`.
//!
//! `deploy` of a site for pull request N at commit C:
//! 1. Fetch the repo, and C (a fork's commits are only under
//!    `refs/pull/N/head`).
//! 2. Does the pull request change the site? The site's files as C builds
//!    them against the base branch's, by the same content digest `run`
//!    decides "same files" by; no change, no preview (and an earlier one
//!    goes).
//! 3. The preview's objects from the site's Deployment
//!    ([`crate::deploy::preview`]); its address (the `[preview] host`, else
//!    its Service's ClusterIP).
//! 4. The site shipped to the preview's Deployment through the pipeline's own
//!    stages (check, image, push, deploy under the lease, the verification of what is
//!    served, roll back), its generator told the address (`BERTH_BASE_URL`,
//!    `HUGO_BASEURL`), a build input like any other.
//! 5. With `[forge]`: the pull request's comment (one per site, edited in
//!    place) and the commit status `berth/preview`.

pub mod pages;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use crate::config::{Config, DeploymentTarget, ForkPolicy, HelmValues, Site};
use crate::deploy::preview::{self as objects, Found};
pub use crate::forge::PullRequest;
use crate::forge::{self, Forge};
use crate::pipeline::sync::{CommitChoice, Mirrored, mirror_all};
use crate::pipeline::{Connections, DeployOptions, SiteAction, connect_cluster, select};
use crate::reference;
use crate::ui::{Printer, Status};
use pages::ChangedPage;

/// The context of a commit status about previews.
pub const STATUS_CONTEXT: &str = "berth/preview";

/// What to preview.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub site: &'a str,
    pub number: u64,
    /// The pull request's head commit (full id or prefix).
    pub commit: &'a str,
}

/// What became of a preview request. Its word (in JSON, metrics and the
/// status page) is [`PreviewAction::word`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum PreviewAction {
    /// Built (or found) and rolled out, and its verification passed.
    Deployed,
    /// The preview already served this commit.
    Unchanged,
    /// The pull request does not change the site's files: no preview.
    NoChange,
    /// Not built: a fork's pull request, or the site has its most previews.
    Refused,
    /// Its Deployment, Service and Ingress were deleted.
    Closed,
    /// There was none to close.
    NotFound,
    Failed,
}

impl PreviewAction {
    /// The action's one word, as `--json`, `/metrics` and `berth serve`'s
    /// page say it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Deployed => "deployed",
            Self::Unchanged => "unchanged",
            Self::NoChange => "no-change",
            Self::Refused => "refused",
            Self::Closed => "closed",
            Self::NotFound => "not-found",
            Self::Failed => "failed",
        }
    }
}

impl From<PreviewAction> for &'static str {
    fn from(action: PreviewAction) -> Self {
        action.word()
    }
}

/// What `berth pr deploy` or `close` did for one site (`--json`: berth.pr/v1).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PreviewReport {
    pub site: String,
    pub number: u64,
    pub commit: Option<String>,
    /// The preview's Deployment (and Service, and Ingress).
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub url: Option<String>,
    pub action: PreviewAction,
    /// Why it was refused, failed, or made no preview.
    pub reason: Option<String>,
    /// berth's verification of what is served.
    pub verification: Option<String>,
    pub image: Option<String>,
    pub changed_pages: Vec<ChangedPage>,
    pub expires: Option<String>,
    /// What became of the pull request's comment: `created`, `edited`, or
    /// why none was written (no `[forge]`, the forge refused).
    pub comment: String,
    pub seconds: f64,
}

impl PreviewReport {
    fn new(site: &str, number: u64) -> Self {
        Self {
            site: site.to_string(),
            number,
            commit: None,
            name: None,
            namespace: None,
            url: None,
            action: PreviewAction::Failed,
            reason: None,
            verification: None,
            image: None,
            changed_pages: Vec::new(),
            expires: None,
            comment: "none".into(),
            seconds: 0.0,
        }
    }

    /// A pull request berth does not build, and why.
    pub fn refused(site: &str, number: u64, commit: &str, why: &str) -> Self {
        Self {
            commit: Some(commit.to_string()).filter(|commit| !commit.is_empty()),
            action: PreviewAction::Refused,
            reason: Some(why.to_string()),
            ..Self::new(site, number)
        }
    }

    /// A preview berth could not deal with, and why.
    pub fn failed(site: &str, number: u64, why: &str) -> Self {
        Self {
            reason: Some(why.to_string()),
            ..Self::new(site, number)
        }
    }

    /// Ends the request with `action` for `why`, said on the site's line.
    fn end(&mut self, action: PreviewAction, why: String, status: Status, printer: &Printer) {
        printer.stage(&self.site, "preview", status, &why);
        self.action = action;
        self.reason = Some(why);
    }

    /// Whether berth failed at what it was asked (exit 1).
    pub fn is_failure(&self) -> bool {
        self.action == PreviewAction::Failed
    }
}

/// Why berth has no forge to write the comment and status to.
#[derive(Debug, thiserror::Error)]
pub enum NoForge {
    /// The pipeline file has no `[forge]` table (a plain Git remote).
    #[error("no [forge] in the pipeline file")]
    NotDeclared,
    /// `[forge] token_env` names a variable that is unset or empty.
    #[error("{0} is not set")]
    TokenUnset(String),
    /// `[forge] api` is not a URL berth can talk to.
    #[error(transparent)]
    Invalid(#[from] forge::ForgeError),
}

/// The forge of `config`, with its token from the environment.
pub fn forge_of(config: &Config) -> Result<Forge, NoForge> {
    let declared = config.forge.as_ref().ok_or(NoForge::NotDeclared)?;
    match std::env::var(&declared.token_env) {
        Ok(token) if !token.is_empty() => Ok(Forge::new(&declared.api, token)?),
        _ => Err(NoForge::TokenUnset(declared.token_env.clone())),
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The address of a preview named `name`: its host's URL, or its Service's
/// ClusterIP.
fn address(config: &Config, site: &Site, number: u64, cluster_ip: Option<&str>) -> Option<String> {
    match &config.preview.host {
        Some(host) => Some(format!(
            "{}://{}/",
            config.preview.scheme,
            host_of(host, &site.name, number)
        )),
        None => cluster_ip.map(|ip| format!("http://{ip}/")),
    }
}

/// `[preview] host` filled in for `site` and `number`.
pub fn host_of(template: &str, site: &str, number: u64) -> String {
    template
        .replace("{number}", &number.to_string())
        .replace("{site}", site)
}

/// The sites of `config` a pull request of `repo` may preview (all of the
/// repo's, or the one named).
pub fn sites_of<'c>(config: &'c Config, repo: &str) -> Vec<&'c Site> {
    config.sites.iter().filter(|site| site.repo == repo).collect()
}

/// Why a pull request is not built, by `[preview] forks`; `None` when it is.
pub fn refused_fork(policy: &ForkPolicy, from_fork: bool, labels: &[String]) -> Option<String> {
    if !from_fork {
        return None;
    }
    match policy {
        ForkPolicy::Never => {
            Some("pull requests from forks are not built ([preview] forks = \"never\")".into())
        }
        ForkPolicy::Label(label) if labels.iter().any(|l| l == label) => None,
        ForkPolicy::Label(label) => Some(format!(
            "pull requests from forks are built once a maintainer gives them the label `{label}`"
        )),
    }
}

/// Deploys pull request `request.number`'s preview of `request.site`.
pub async fn deploy(
    config: &Config,
    connections: &Connections,
    request: &Request<'_>,
    options: &DeployOptions,
    interrupted: Arc<AtomicBool>,
    printer: &Printer,
) -> PreviewReport {
    let started = std::time::Instant::now();
    let mut report = PreviewReport::new(request.site, request.number);
    if let Err(error) = deploy_steps(
        config,
        connections,
        request,
        options,
        interrupted,
        printer,
        &mut report,
    )
    .await
    {
        report.end(
            PreviewAction::Failed,
            format!("{error:#}"),
            Status::Failed,
            printer,
        );
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.comment = tell(config, &report, printer).await;
    report
}

#[expect(
    clippy::too_many_lines,
    reason = "the steps of a preview, in order, each a few lines"
)]
async fn deploy_steps(
    config: &Config,
    connections: &Connections,
    request: &Request<'_>,
    options: &DeployOptions,
    interrupted: Arc<AtomicBool>,
    printer: &Printer,
    report: &mut PreviewReport,
) -> anyhow::Result<()> {
    let site = select(config, &[request.site.to_string()], None)?[0];
    let sites = [site];
    // 1. The base branch's head, and the pull request's commit.
    let mirrored = mirror_all(config, &sites, &CommitChoice::BranchHead, 1, printer).await;
    let base = mirrored[&site.repo]
        .as_ref()
        .map_err(|error| anyhow::Error::new(error.clone()))?;
    let head = base.at_commit(request.commit, request.number, &site.path).await?;
    report.commit = Some(head.commit.id.clone());
    // 2. Does the pull request change the site's files?
    let generator = crate::pipeline::Generator::new(config, printer)?;
    let head_content = generator.content(site, &head).await?;
    let base_content = generator.content(site, base).await?;
    let deployer = connections.deployer();
    let name = objects::name(&site.deployment.name, request.number);
    report.name = Some(name.clone());
    report.namespace = Some(site.deployment.namespace.clone());
    if head_content.digest == base_content.digest {
        if deployer.delete_preview(&site.deployment.namespace, &name).await? {
            printer.stage(
                &site.name,
                "preview",
                Status::Done,
                &format!("{name} deleted: no change left to preview"),
            );
        }
        let why = format!(
            "the pull request does not change the files of site `{}` (the same as {} on {})",
            site.name,
            reference::short(&base.commit.id),
            config
                .repo(&site.repo)
                .map_or("its branch", |repo| repo.branch.as_str())
        );
        report.end(PreviewAction::NoChange, why, Status::Skipped, printer);
        return Ok(());
    }
    // 3. Room for it, then its objects and its address.
    let previews = deployer
        .previews(&site.deployment.namespace, Some(&site.name))
        .await?;
    let others = previews.iter().filter(|found| found.name != name).count();
    if others >= config.preview.max_previews as usize {
        let why = format!(
            "site `{}` has {others} previews already ([preview] max_previews = {}); close one first",
            site.name, config.preview.max_previews
        );
        report.end(PreviewAction::Refused, why, Status::Failed, printer);
        return Ok(());
    }
    let source = deployer.read(&site.deployment).await?;
    let expires = rfc3339(now() + config.preview.ttl);
    report.expires = Some(expires.clone());
    let spec = objects::Spec {
        site: site.name.clone(),
        number: request.number,
        repo: site.repo.clone(),
        container: site.deployment.container.clone(),
        host: config
            .preview
            .host
            .as_ref()
            .map(|host| host_of(host, &site.name, request.number)),
        ingress_class: config.preview.ingress_class.clone(),
        expires,
    };
    deployer.ensure_preview(&source, &spec).await?;
    let cluster_ip = deployer
        .preview_address(&site.deployment.namespace, &name)
        .await?;
    let url = address(config, site, request.number, cluster_ip.as_deref())
        .ok_or_else(|| anyhow::anyhow!("Service {name} has no ClusterIP, and [preview] names no host"))?;
    deployer
        .annotate_preview(&site.deployment.namespace, &name, &url)
        .await?;
    report.url = Some(url.clone());
    report.changed_pages = pages::changed_pages(&base_content.blobs, &head_content.blobs, &url);
    // 4. The site, shipped to the preview as to any Deployment.
    let mut preview = site.clone();
    preview.deployment = DeploymentTarget {
        namespace: site.deployment.namespace.clone(),
        name: name.clone(),
        container: site.deployment.container.clone(),
    };
    preview.helm = HelmValues::default();
    preview.notify = None;
    preview.generator_env.insert("BERTH_BASE_URL".into(), url.clone());
    preview.generator_env.insert("HUGO_BASEURL".into(), url.clone());
    let mut mirrored_at_head = Mirrored::new();
    mirrored_at_head.insert(site.repo.clone(), Ok(head));
    let options = DeployOptions {
        // A pull request's branch may be rewritten: an older commit is no refusal.
        allow_older: true,
        ..options.clone()
    };
    let shipped = connections
        .ship(
            config,
            &[&preview],
            &mirrored_at_head,
            1,
            &options,
            interrupted,
            printer,
        )
        .await?;
    let site_report = shipped.sites.into_iter().next().expect("one site shipped");
    report.image.clone_from(&site_report.image);
    report.verification = site_report
        .verification
        .as_ref()
        .map(crate::deploy::verify::Verification::summary);
    report.action = match site_report.action {
        SiteAction::Deployed => PreviewAction::Deployed,
        SiteAction::Unchanged | SiteAction::UpToDate => PreviewAction::Unchanged,
        SiteAction::Failed | SiteAction::Interrupted => {
            report.reason.clone_from(&site_report.error);
            PreviewAction::Failed
        }
    };
    if report.action == PreviewAction::Unchanged && report.verification.is_none() {
        report.verification = Some("serves this commit already".into());
    }
    printer.stage(
        &site.name,
        "preview",
        if report.is_failure() {
            Status::Failed
        } else {
            Status::Done
        },
        &format!(
            "#{} {url} ({})",
            request.number,
            reference::short(report.commit.as_deref().unwrap_or_default())
        ),
    );
    Ok(())
}

/// Closes pull request `number`'s preview of `site`: its Deployment, and with
/// it its Service and Ingress. `why` goes into the pull request's comment.
pub async fn close(
    config: &Config,
    site: &str,
    number: u64,
    why: &str,
    printer: &Printer,
) -> anyhow::Result<PreviewReport> {
    let site = select(config, &[site.to_string()], None)?[0];
    let deployer = connect_cluster(config).await?;
    let name = objects::name(&site.deployment.name, number);
    let mut report = PreviewReport::new(&site.name, number);
    report.name = Some(name.clone());
    report.namespace = Some(site.deployment.namespace.clone());
    let deleted = deployer.delete_preview(&site.deployment.namespace, &name).await?;
    report.action = if deleted {
        PreviewAction::Closed
    } else {
        PreviewAction::NotFound
    };
    report.reason = Some(why.to_string());
    printer.stage(
        &site.name,
        "preview",
        if deleted { Status::Done } else { Status::Skipped },
        &if deleted {
            format!("#{number}: {name} deleted ({why})")
        } else {
            format!("#{number}: no preview {name} to close")
        },
    );
    report.comment = tell(config, &report, printer).await;
    Ok(report)
}

/// Every preview of `config`'s sites (in their namespaces).
pub async fn list(config: &Config) -> anyhow::Result<Vec<Found>> {
    let deployer = connect_cluster(config).await?;
    let mut namespaces: Vec<&str> = config
        .sites
        .iter()
        .map(|site| site.deployment.namespace.as_str())
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let mut found = Vec::new();
    for namespace in namespaces {
        found.extend(
            deployer
                .previews(namespace, None)
                .await?
                .into_iter()
                .filter(|preview| config.site(&preview.site).is_some()),
        );
    }
    found.sort_by(|a, b| (a.site.as_str(), a.number).cmp(&(b.site.as_str(), b.number)));
    Ok(found)
}

/// Why a preview goes in a sweep: its pull request is closed (the forge
/// says), or it expired; `None` when it stays.
pub fn sweep_reason(found: &Found, now: SystemTime, pull: Option<&forge::PullRequest>) -> Option<String> {
    if let Some(pull) = pull
        && !pull.open
    {
        return Some(if pull.merged {
            "the pull request was merged".into()
        } else {
            "the pull request was closed".into()
        });
    }
    let expires = found
        .expires
        .as_deref()
        .and_then(|text| humantime::parse_rfc3339(text).ok())?;
    (expires <= now).then(|| {
        format!(
            "it sat idle past [preview] ttl (expired {})",
            found.expires.as_deref().unwrap_or_default()
        )
    })
}

/// Sweeps previews whose pull request is closed (asking the forge) or that
/// expired: each closed as `close` does, with its reason.
pub async fn sweep(config: &Config, printer: &Printer) -> anyhow::Result<Vec<PreviewReport>> {
    let forge = forge_of(config).ok();
    let mut reports = Vec::new();
    for found in list(config).await? {
        let pull = match (&forge, found.repo.as_deref().and_then(|repo| config.repo(repo))) {
            (Some(forge), Some(repo)) => match forge::Repository::of_url(&repo.url) {
                Ok(repository) => match forge.pull_request(&repository, found.number).await {
                    Ok(pull) => Some(pull),
                    Err(error) => {
                        printer.warning(&format!(
                            "{}: cannot ask the forge about #{}: {error}",
                            found.site, found.number
                        ));
                        None
                    }
                },
                Err(_) => None,
            },
            _ => None,
        };
        if let Some(why) = sweep_reason(&found, now(), pull.as_ref()) {
            reports.push(close(config, &found.site, found.number, &why, printer).await?);
        }
    }
    Ok(reports)
}

/// The pull request's comment and the commit status, with `[forge]`: what
/// became of the comment (for the report).
pub async fn tell(config: &Config, report: &PreviewReport, printer: &Printer) -> String {
    let forge = match forge_of(config) {
        Ok(forge) => forge,
        Err(why) => return format!("not written: {why}"),
    };
    let Some(site) = config.site(&report.site) else {
        return "not written: no such site".into();
    };
    let Some(repo) = config.repo(&site.repo) else {
        return "not written: no such repo".into();
    };
    let repository = match forge::Repository::of_url(&repo.url) {
        Ok(repository) => repository,
        Err(error) => return format!("not written: {error}"),
    };
    let (comment, status) = match report.action {
        PreviewAction::Deployed | PreviewAction::Unchanged => {
            let url = report.url.clone().unwrap_or_default();
            let body = pages::serving_comment(&pages::Serving {
                site: &report.site,
                url: &url,
                commit: report.commit.as_deref().unwrap_or_default(),
                verification: report.verification.as_deref().unwrap_or("-"),
                pages: &report.changed_pages,
                expires: report.expires.as_deref().unwrap_or("-"),
            });
            (
                Some(body),
                Some((forge::State::Success, format!("{}: {url}", report.site))),
            )
        }
        PreviewAction::NoChange => (
            None,
            Some((
                forge::State::Success,
                format!("{}: no change to preview", report.site),
            )),
        ),
        PreviewAction::Refused => {
            let why = report.reason.clone().unwrap_or_default();
            (
                Some(pages::not_built_comment(&report.site, &why)),
                Some((forge::State::Failure, format!("not built: {why}"))),
            )
        }
        PreviewAction::Closed => (
            Some(pages::gone_comment(
                &report.site,
                report.reason.as_deref().unwrap_or("closed"),
            )),
            None,
        ),
        PreviewAction::NotFound => (None, None),
        PreviewAction::Failed => {
            let why = report.reason.clone().unwrap_or_default();
            let first = why.lines().next().unwrap_or_default().to_string();
            (
                Some(pages::not_built_comment(
                    &report.site,
                    &format!("the preview failed: {first}"),
                )),
                Some((forge::State::Failure, format!("failed: {first}"))),
            )
        }
    };
    if let (Some((state, description)), Some(commit)) = (status, report.commit.as_deref()) {
        let status = forge::Status {
            context: STATUS_CONTEXT.into(),
            state,
            description,
            target_url: report.url.clone(),
        };
        if let Err(error) = forge.set_status(&repository, commit, &status).await {
            printer.warning(&format!(
                "{}: the commit status was not set: {error}",
                report.site
            ));
        }
    }
    let Some(body) = comment else {
        return "none".into();
    };
    match forge
        .put_comment(&repository, report.number, &pages::marker(&report.site), &body)
        .await
    {
        Ok(forge::CommentWritten::Created(_)) => "created".into(),
        Ok(forge::CommentWritten::Edited(_)) => "edited".into(),
        Err(error) => {
            printer.warning(&format!(
                "{}: the comment on #{} was not written: {error}",
                report.site, report.number
            ));
            format!("not written: {error}")
        }
    }
}

/// The pull request's head commit, by the forge, for `berth pr deploy`
/// without `--commit`.
pub async fn head_commit(config: &Config, site: &str, number: u64) -> anyhow::Result<String> {
    let site = select(config, &[site.to_string()], None)?[0];
    let repo = config.repo(&site.repo).expect("validated");
    let forge = forge_of(config).map_err(|why| anyhow::anyhow!("--commit is needed: {why}"))?;
    let repository = forge::Repository::of_url(&repo.url)?;
    Ok(forge.pull_request(&repository, number).await?.head_commit)
}

/// How long berth waits between sweeps in `berth serve`.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn found(expires: &str) -> Found {
        Found {
            name: "www-pr-3".into(),
            namespace: "web".into(),
            site: "www".into(),
            number: 3,
            repo: Some("website".into()),
            commit: None,
            image: None,
            url: None,
            expires: Some(expires.into()),
        }
    }

    #[test]
    fn a_preview_goes_when_its_pull_request_is_closed_or_it_expired() {
        let now = humantime::parse_rfc3339("2026-12-10T00:00:00Z").unwrap();
        let open = forge::PullRequest {
            open: true,
            ..forge::PullRequest::default()
        };
        let merged = forge::PullRequest {
            merged: true,
            ..forge::PullRequest::default()
        };
        assert_eq!(
            sweep_reason(&found("2026-12-13T00:00:00Z"), now, Some(&open)),
            None
        );
        assert_eq!(sweep_reason(&found("2026-12-13T00:00:00Z"), now, None), None);
        assert_eq!(
            sweep_reason(&found("2026-12-13T00:00:00Z"), now, Some(&merged)).as_deref(),
            Some("the pull request was merged")
        );
        assert!(
            sweep_reason(&found("2026-12-09T00:00:00Z"), now, Some(&open))
                .unwrap()
                .starts_with("it sat idle past [preview] ttl")
        );
    }

    #[test]
    fn forks_are_built_only_as_the_policy_says() {
        let label = ForkPolicy::Label("safe to preview".into());
        assert_eq!(refused_fork(&ForkPolicy::Never, false, &[]), None);
        assert!(refused_fork(&ForkPolicy::Never, true, &["safe to preview".into()]).is_some());
        assert!(
            refused_fork(&label, true, &[])
                .unwrap()
                .contains("`safe to preview`")
        );
        assert_eq!(refused_fork(&label, true, &["safe to preview".into()]), None);
    }

    #[test]
    fn the_host_template_is_filled_in() {
        assert_eq!(
            host_of("pr-{number}.{site}.preview.example.com", "www", 12),
            "pr-12.www.preview.example.com"
        );
    }
}
