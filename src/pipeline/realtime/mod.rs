//! `berth serve`'s pipeline side: every delivery and every poll round becomes
//! a hint for the sites of a repo, and [`Realtime`] ships them.
//!
//! - One run per site at a time; while it runs, any number of further hints
//!   leave one pending run, which ships the branch head as it is when it
//!   starts ([`queue`]). Sites run in parallel up to `--jobs`.
//! - A run fetches the site's repo, and ships nothing when every commit its
//!   hints named is missing from Git (a delivery is only a hint); else it
//!   ships the branch head through the same stages and decisions as `run`
//!   (an unchanged site is left alone, a rollout a killed server left is seen
//!   through).
//! - A poll of every repo on `poll_interval` asks the remote for its branch
//!   head and hints the repo's sites when it differs from the mirror's: what
//!   a lost delivery missed. At start, every site gets one run.
//! - Each hinted commit gets a commit status per site on the forge, when one
//!   is configured: pending when queued, then success or failure.
//! - What happened is kept for the page and the JSON ([`state`]) and counted
//!   in the metrics ([`metrics`]).

pub mod metrics;
pub mod queue;
pub mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::forge::{self, Forge};
use crate::pipeline::preview::{self, PreviewAction, PreviewReport};
use crate::pipeline::sync::{CommitChoice, mirror_all, remote_heads};
use crate::pipeline::{Connections, DeployOptions, SiteAction, SiteReport};
use crate::reference;
use crate::ui::Printer;
use metrics::Metrics;
use queue::{Hint, Offer, Queue, Wanted};
use state::{PreviewState, Running, SiteState, Snapshot, States};

/// How `berth serve` ships: the pipeline file's view, the deploy options, and
/// how many sites at once.
pub struct Settings {
    pub config: Config,
    pub options: DeployOptions,
    pub jobs: usize,
}

/// What a push delivery asked for, for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hinted {
    /// These sites were queued (or their pending run was).
    Sites(Vec<String>),
    /// No site follows this repo and branch: nothing is queued.
    NoSite { repository: String, reference: String },
}

/// The sites served, their queue, and what happened to them.
pub struct Realtime {
    settings: Settings,
    /// The forge told of each hinted commit; none without `[forge]`.
    forge: Option<Forge>,
    connections: Connections,
    slots: Semaphore,
    queue: Mutex<Queue>,
    states: Mutex<States>,
    /// Each preview's last run, by `site#number`.
    previews: Mutex<std::collections::BTreeMap<String, PreviewState>>,
    metrics: Metrics,
    interrupted: Arc<AtomicBool>,
    tasks: TaskTracker,
    printer: Printer,
    started_at: String,
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Realtime {
    /// Connects to the Engine, the cluster and the registry, and knows every
    /// site of the view; ships nothing yet ([`Self::catch_up`] does).
    pub async fn start(
        settings: Settings,
        interrupted: Arc<AtomicBool>,
        printer: &Printer,
    ) -> anyhow::Result<Arc<Self>> {
        let connections = Connections::open(&settings.config).await?;
        let forge = match &settings.config.forge {
            None => None,
            Some(declared) => match std::env::var(&declared.token_env) {
                Ok(token) if !token.is_empty() => Some(Forge::new(&declared.api, token)?),
                _ => {
                    printer.warning(&format!(
                        "{} is not set: no commit statuses are written to {}",
                        declared.token_env, declared.api
                    ));
                    None
                }
            },
        };
        let states = settings
            .config
            .sites
            .iter()
            .map(|site| {
                let branch = settings
                    .config
                    .repo(&site.repo)
                    .map(|repo| repo.branch.clone())
                    .unwrap_or_default();
                let state = SiteState {
                    site: site.name.clone(),
                    repo: site.repo.clone(),
                    branch,
                    ..SiteState::default()
                };
                (site.name.clone(), state)
            })
            .collect();
        let jobs = settings.jobs.max(1);
        Ok(Arc::new(Self {
            settings,
            forge,
            connections,
            slots: Semaphore::new(jobs),
            queue: Mutex::new(Queue::default()),
            states: Mutex::new(states),
            previews: Mutex::new(std::collections::BTreeMap::new()),
            metrics: Metrics::new(),
            interrupted,
            tasks: TaskTracker::new(),
            printer: printer.clone(),
            started_at: now_text(),
        }))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every site gets one run: a server started again sees through a
    /// rollout it was killed in, and catches up with what it missed.
    pub fn catch_up(self: &Arc<Self>) {
        let arrived = Instant::now();
        let sites: Vec<(String, String)> = self
            .settings
            .config
            .sites
            .iter()
            .map(|site| (site.name.clone(), site.repo.clone()))
            .collect();
        for (site, repo) in sites {
            self.offer(
                &site,
                Hint {
                    wanted: Wanted::Ship,
                    repo,
                    commit: None,
                    arrived,
                },
            );
        }
    }

    /// A push to `repository_urls`' `reference`, which named `after`: each site
    /// of a `[[repo]]` with one of those URLs that follows that branch gets a
    /// hint. Returns at once; the runs go on in the background.
    pub fn push(
        self: &Arc<Self>,
        repository_urls: &[String],
        reference: &str,
        after: Option<&str>,
        arrived: Instant,
    ) -> Hinted {
        let config = &self.settings.config;
        let branch = reference.strip_prefix("refs/heads/");
        let repos: Vec<&crate::config::Repo> = config
            .repos
            .iter()
            .filter(|repo| repository_urls.iter().any(|url| same_repository(&repo.url, url)))
            .filter(|repo| Some(repo.branch.as_str()) == branch)
            .collect();
        let sites: Vec<(String, String)> = config
            .sites
            .iter()
            .filter(|site| repos.iter().any(|repo| repo.name == site.repo))
            .map(|site| (site.name.clone(), site.repo.clone()))
            .collect();
        if sites.is_empty() {
            return Hinted::NoSite {
                repository: repository_urls.first().cloned().unwrap_or_default(),
                reference: reference.to_string(),
            };
        }
        for (site, repo) in &sites {
            self.offer(
                site,
                Hint {
                    wanted: Wanted::Ship,
                    repo: repo.clone(),
                    commit: after.map(str::to_string),
                    arrived,
                },
            );
        }
        Hinted::Sites(sites.into_iter().map(|(site, _)| site).collect())
    }

    /// A pull request event of `repository_urls` into `base_branch`: each
    /// site of a `[[repo]]` with one of those URLs that follows that branch
    /// gets its preview built (or closed). A fork's pull request is not built
    /// unless `[preview] forks` allows it: the pull request is told why.
    pub fn pull_request(self: &Arc<Self>, event: &PullRequestEvent<'_>, arrived: Instant) -> Hinted {
        let config = &self.settings.config;
        let sites: Vec<(String, String)> = config
            .repos
            .iter()
            .filter(|repo| {
                event
                    .repository_urls
                    .iter()
                    .any(|url| same_repository(&repo.url, url))
            })
            .filter(|repo| repo.branch == event.base_branch)
            .flat_map(|repo| preview::sites_of(config, &repo.name))
            .map(|site| (site.name.clone(), site.repo.clone()))
            .collect();
        if sites.is_empty() {
            return Hinted::NoSite {
                repository: event.repository_urls.first().cloned().unwrap_or_default(),
                reference: format!("pull request #{} into {}", event.number, event.base_branch),
            };
        }
        let refused = match event.close {
            None => preview::refused_fork(&config.preview.forks, event.from_fork, event.labels),
            Some(_) => None,
        };
        for (site, repo) in &sites {
            if let Some(why) = &refused {
                let mut report = PreviewReport::refused(site, event.number, event.head_commit, why);
                let this = Arc::clone(self);
                self.tasks.spawn(async move {
                    report.comment = preview::tell(&this.settings.config, &report, &this.printer).await;
                    this.record_preview(&report);
                });
                continue;
            }
            let wanted = match event.close {
                Some(merged) => Wanted::ClosePreview {
                    number: event.number,
                    merged,
                },
                None => Wanted::Preview { number: event.number },
            };
            self.offer(
                site,
                Hint {
                    wanted,
                    repo: repo.clone(),
                    commit: Some(event.head_commit.to_string()),
                    arrived,
                },
            );
        }
        Hinted::Sites(sites.into_iter().map(|(site, _)| site).collect())
    }

    /// A hint for `site`: a run starts now, or the site's pending run takes
    /// it. A preview's runs queue apart from the site's (`site#number`).
    fn offer(self: &Arc<Self>, site: &str, hint: Hint) {
        if self.interrupted.load(Ordering::SeqCst) {
            return;
        }
        let key = match hint.wanted {
            Wanted::Ship => site.to_string(),
            Wanted::Preview { number } | Wanted::ClosePreview { number, .. } => format!("{site}#{number}"),
        };
        if let (Wanted::Ship, Some(commit)) = (hint.wanted, &hint.commit) {
            self.tell_forge(site, &hint.repo, commit, forge::State::Pending, "queued");
        }
        let offer = self.queue.lock().expect("not poisoned").offer(&key, hint.clone());
        match offer {
            Offer::Start(hints) if hint.wanted != Wanted::Ship => {
                let this = Arc::clone(self);
                let site = site.to_string();
                self.tasks
                    .spawn(async move { this.preview_runs(site, key, hints).await });
            }
            Offer::Start(hints) => {
                let this = Arc::clone(self);
                let site = site.to_string();
                self.tasks.spawn(async move { this.runs(site, hints).await });
            }
            Offer::Pending if hint.wanted != Wanted::Ship => {}
            Offer::Pending => {
                let mut states = self.states.lock().expect("not poisoned");
                if let Some(state) = states.get_mut(site) {
                    state.pending = true;
                    if let Some(commit) = hint.commit
                        && !state.pending_commits.contains(&commit)
                    {
                        state.pending_commits.push(commit);
                    }
                }
            }
        }
        self.metrics
            .queue_depth
            .set(i64::try_from(self.queue.lock().expect("not poisoned").depth()).unwrap_or(i64::MAX));
    }

    /// `site`'s runs, one after the other while hints keep coming.
    async fn runs(self: Arc<Self>, site: String, mut hints: Vec<Hint>) {
        loop {
            if self.interrupted.load(Ordering::SeqCst) {
                break;
            }
            let Ok(permit) = self.slots.acquire().await else {
                break;
            };
            let commits: Vec<String> = hints.iter().filter_map(|hint| hint.commit.clone()).collect();
            self.update(&site, |state| {
                state.running = Some(Running {
                    since: now_text(),
                    commits: commits.clone(),
                });
            });
            for hint in &hints {
                if let Some(commit) = &hint.commit {
                    self.tell_forge(&site, &hint.repo, commit, forge::State::Pending, "shipping");
                }
            }
            let started = Instant::now();
            let outcome = self.ship(&site, &hints).await;
            drop(permit);
            self.record(&site, &hints, &outcome, started.elapsed());
            let next = self.queue.lock().expect("not poisoned").finished(&site);
            self.metrics
                .queue_depth
                .set(i64::try_from(self.queue.lock().expect("not poisoned").depth()).unwrap_or(i64::MAX));
            match next {
                Some(next) => {
                    self.update(&site, |state| {
                        state.pending = false;
                        state.pending_commits.clear();
                    });
                    hints = next;
                }
                None => break,
            }
        }
    }

    /// A preview's runs, one after the other while hints keep coming; each
    /// run does what the newest hint asks (build at its commit, or close).
    async fn preview_runs(self: Arc<Self>, site: String, key: String, mut hints: Vec<Hint>) {
        loop {
            if self.interrupted.load(Ordering::SeqCst) {
                break;
            }
            let Some(last) = hints.last().cloned() else { break };
            let Ok(permit) = self.slots.acquire().await else {
                break;
            };
            let config = &self.settings.config;
            let report = match last.wanted {
                Wanted::Preview { number } => {
                    let commit = last.commit.clone().unwrap_or_default();
                    let request = preview::Request {
                        site: &site,
                        number,
                        commit: &commit,
                    };
                    preview::deploy(
                        config,
                        &self.connections,
                        &request,
                        &self.settings.options,
                        self.interrupted.clone(),
                        &self.printer,
                    )
                    .await
                }
                Wanted::ClosePreview { number, merged } => {
                    let why = if merged {
                        "the pull request was merged"
                    } else {
                        "the pull request was closed"
                    };
                    match preview::close(config, &site, number, why, &self.printer).await {
                        Ok(report) => report,
                        Err(error) => PreviewReport::failed(&site, number, &format!("{error:#}")),
                    }
                }
                Wanted::Ship => break,
            };
            drop(permit);
            self.metrics.ship(&format!("preview-{}", report.action.word()));
            self.record_preview(&report);
            match self.queue.lock().expect("not poisoned").finished(&key) {
                Some(next) => hints = next,
                None => break,
            }
        }
    }

    /// A preview's last run, for the page; a closed one leaves it.
    fn record_preview(&self, report: &PreviewReport) {
        let key = format!("{}#{}", report.site, report.number);
        let mut previews = self.previews.lock().expect("not poisoned");
        if matches!(
            report.action,
            PreviewAction::Closed | PreviewAction::NotFound | PreviewAction::NoChange
        ) {
            previews.remove(&key);
            return;
        }
        previews.insert(
            key,
            PreviewState {
                site: report.site.clone(),
                number: report.number,
                commit: report.commit.clone(),
                url: report.url.clone(),
                result: report.action.word().to_string(),
                error: report.reason.clone(),
                at: now_text(),
            },
        );
    }

    /// Sweeps previews whose pull request is closed or that expired.
    pub async fn sweep_previews(&self) {
        match preview::sweep(&self.settings.config, &self.printer).await {
            Ok(reports) => {
                for report in &reports {
                    self.record_preview(report);
                }
            }
            Err(error) => self.printer.warning(&format!("preview sweep: {error:#}")),
        }
    }

    /// One run of `site`: its repo fetched, then nothing when every commit
    /// the hints named is missing from Git, else the branch head shipped.
    async fn ship(&self, site_name: &str, hints: &[Hint]) -> Outcome {
        let config = &self.settings.config;
        let Some(site) = config.site(site_name) else {
            return Outcome::Skipped(format!("no site `{site_name}` in the pipeline file"));
        };
        let sites = [site];
        let mirrored = mirror_all(config, &sites, &CommitChoice::BranchHead, 1, &self.printer).await;
        let named: Vec<&str> = hints.iter().filter_map(|hint| hint.commit.as_deref()).collect();
        if let Some(Ok(synced)) = mirrored.get(&site.repo)
            && !named.is_empty()
            && hints.iter().all(|hint| hint.commit.is_some())
            && !synced.contains_any(&named).await
        {
            let list: Vec<&str> = named.iter().map(|commit| reference::short(commit)).collect();
            return Outcome::Skipped(format!(
                "{} not in Git (the delivery named {}): nothing shipped",
                if named.len() == 1 {
                    "the commit is"
                } else {
                    "the commits are"
                },
                list.join(", ")
            ));
        }
        match self
            .connections
            .ship(
                config,
                &sites,
                &mirrored,
                1,
                &self.settings.options,
                self.interrupted.clone(),
                &self.printer,
            )
            .await
        {
            Ok(mut report) => match report.sites.pop() {
                Some(site) => Outcome::Report(Box::new(site)),
                None => Outcome::Skipped("the run reported nothing".into()),
            },
            Err(error) => Outcome::Skipped(format!("{error:#}")),
        }
    }

    /// What a run of `site` did: its state, the metrics, the forge.
    fn record(&self, site: &str, hints: &[Hint], outcome: &Outcome, took: Duration) {
        let at = now_text();
        match outcome {
            Outcome::Report(report) => {
                self.update(site, |state| state.after_run(report, &at, took.as_secs_f64()));
                self.metrics.ship(result_word(report.action));
                // From a push (a delivery, or the poll that saw it); the
                // catch-up at start names no commit and is no push.
                if report.action == SiteAction::Deployed
                    && let Some(arrived) = hints
                        .iter()
                        .filter(|hint| hint.commit.is_some())
                        .map(|hint| hint.arrived)
                        .min()
                {
                    self.metrics
                        .push_to_served
                        .observe(arrived.elapsed().as_secs_f64());
                }
            }
            Outcome::Skipped(why) => {
                self.update(site, |state| state.skipped(&at, why));
                self.metrics.ship("skipped");
            }
        }
        for hint in hints {
            let Some(commit) = &hint.commit else { continue };
            let (forge_state, words) = match outcome {
                Outcome::Report(report) => match report.action {
                    SiteAction::Deployed => (forge::State::Success, served_words(report, commit)),
                    SiteAction::Unchanged | SiteAction::UpToDate => (
                        forge::State::Success,
                        format!(
                            "served (already up to date at {})",
                            short_of(report.commit.as_deref())
                        ),
                    ),
                    SiteAction::Failed | SiteAction::Interrupted => (
                        forge::State::Failure,
                        report
                            .error
                            .as_deref()
                            .and_then(|error| error.lines().next())
                            .unwrap_or("failed")
                            .to_string(),
                    ),
                },
                Outcome::Skipped(why) => (forge::State::Error, why.clone()),
            };
            self.tell_forge(site, &hint.repo, commit, forge_state, &words);
        }
    }

    fn update(&self, site: &str, change: impl FnOnce(&mut SiteState)) {
        if let Some(state) = self.states.lock().expect("not poisoned").get_mut(site) {
            change(state);
        }
    }

    /// Sets `site`'s commit status on `commit` of `repo`, in the background;
    /// a forge that refuses is a warning, never a failed run.
    fn tell_forge(&self, site: &str, repo: &str, commit: &str, state: forge::State, words: &str) {
        let Some(forge) = &self.forge else {
            return;
        };
        let Some(url) = self.settings.config.repo(repo).map(|repo| repo.url.clone()) else {
            return;
        };
        let repository = match forge::Repository::of_url(&url) {
            Ok(repository) => repository,
            Err(error) => {
                tracing::debug!("no commit status for {site}: {error}");
                return;
            }
        };
        let status = forge::Status {
            context: format!("berth/{site}"),
            state,
            description: words.to_string(),
            target_url: self
                .settings
                .config
                .serve
                .public_url
                .as_ref()
                .map(|url| format!("{url}/#site-{site}")),
        };
        let forge = forge.clone();
        let (commit, printer, site) = (commit.to_string(), self.printer.clone(), site.to_string());
        self.tasks.spawn(async move {
            if let Err(error) = forge.set_status(&repository, &commit, &status).await {
                printer.warning(&format!(
                    "{site}: the commit status on {} was not set: {error}",
                    reference::short(&commit)
                ));
            }
        });
    }

    /// A poll of every repo: the remote's branch head against the mirror's;
    /// each repo that moved hints its sites. Returns how long it took.
    pub async fn poll(self: &Arc<Self>) -> Duration {
        let started = Instant::now();
        let config = &self.settings.config;
        let heads = remote_heads(config, &self.printer).await;
        let arrived = Instant::now();
        for (repo, moved) in heads {
            let Some(commit) = moved else { continue };
            let sites: Vec<String> = config
                .sites
                .iter()
                .filter(|site| site.repo == repo)
                .map(|site| site.name.clone())
                .collect();
            for site in sites {
                self.offer(
                    &site,
                    Hint {
                        wanted: Wanted::Ship,
                        repo: repo.clone(),
                        commit: Some(commit.clone()),
                        arrived,
                    },
                );
            }
        }
        let took = started.elapsed();
        self.metrics.poll_seconds.observe(took.as_secs_f64());
        took
    }

    /// Polls every `interval` until interrupted.
    pub async fn poll_every(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = Instant::now();
        loop {
            ticker.tick().await;
            if self.interrupted.load(Ordering::SeqCst) {
                break;
            }
            let took = self.poll().await;
            tracing::debug!("poll round took {:.3}s", took.as_secs_f64());
            if last_sweep.elapsed() >= preview::SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep_previews().await;
            }
        }
    }

    /// What every site is doing, for the page and the JSON.
    pub fn snapshot(&self) -> Snapshot {
        let sites = self
            .states
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .map(|mut state| {
                state.deployed_commit_url = state
                    .deployed_commit
                    .as_deref()
                    .and_then(|commit| self.commit_url(&state.repo, commit));
                state
            })
            .collect();
        Snapshot {
            schema: "berth.sites/v1",
            environment: self.settings.config.environment.clone(),
            started_at: self.started_at.clone(),
            queue_depth: self.queue.lock().expect("not poisoned").depth(),
            sites,
            previews: self
                .previews
                .lock()
                .expect("not poisoned")
                .values()
                .cloned()
                .collect(),
        }
    }

    /// The commit's page on the forge, for an http(s) repo URL.
    fn commit_url(&self, repo: &str, commit: &str) -> Option<String> {
        let url = &self.settings.config.repo(repo)?.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return None;
        }
        Some(format!(
            "{}/commit/{commit}",
            url.trim_end_matches('/').trim_end_matches(".git")
        ))
    }

    /// Starts no new run, and waits for the runs in flight (their rollouts
    /// finish or roll back) and the statuses being written.
    pub async fn drain(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A pull request event, as [`Realtime::pull_request`] takes it.
pub struct PullRequestEvent<'a> {
    pub number: u64,
    pub repository_urls: &'a [String],
    pub base_branch: &'a str,
    pub head_commit: &'a str,
    pub from_fork: bool,
    pub labels: &'a [String],
    /// Closed (merged or not), or opened and pushed to (`None`).
    pub close: Option<bool>,
}

/// How a run of a site ended.
enum Outcome {
    Report(Box<SiteReport>),
    /// Nothing ran, and why.
    Skipped(String),
}

fn result_word(action: SiteAction) -> &'static str {
    match action {
        SiteAction::Deployed => "deployed",
        SiteAction::Unchanged => "unchanged",
        SiteAction::UpToDate => "up-to-date",
        SiteAction::Failed => "failed",
        SiteAction::Interrupted => "interrupted",
    }
}

fn short_of(commit: Option<&str>) -> &str {
    commit.map_or("-", reference::short)
}

/// A deployed run in words, for the hinted `commit`'s status.
fn served_words(report: &SiteReport, commit: &str) -> String {
    let shipped = report.commit.as_deref().unwrap_or_default();
    if shipped == commit {
        "served and verified".to_string()
    } else {
        format!("served and verified, with {}", short_of(Some(shipped)))
    }
}

/// Whether two Git URLs name the same repository: scheme, user and a
/// trailing `.git` or `/` left out, the host's case ignored.
pub fn same_repository(a: &str, b: &str) -> bool {
    fn key(url: &str) -> String {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let rest = rest
            .rsplit_once('@')
            .map_or(rest, |(_, host_and_path)| host_and_path);
        // scp-like `host:path` (no scheme): the path after the colon.
        let (host, path) = match rest.split_once('/') {
            Some((host, path)) if !host.contains(':') || url.contains("://") => (host, path),
            _ => rest.split_once(':').unwrap_or((rest, "")),
        };
        let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
        let path = path
            .trim_end_matches('/')
            .trim_end_matches(".git")
            .trim_start_matches('/');
        format!("{host}/{path}")
    }
    key(a) == key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_the_same_over_http_ssh_and_with_or_without_dot_git() {
        let https = "https://github.com/Harbor/website.git";
        for other in [
            "https://github.com/Harbor/website",
            "http://GitHub.com/Harbor/website/",
            "git@github.com:Harbor/website.git",
            "ssh://git@github.com/Harbor/website.git",
            "ssh://git@github.com:22/Harbor/website.git",
            "https://token@github.com/Harbor/website.git",
        ] {
            assert!(same_repository(https, other), "{other}");
        }
        assert!(!same_repository(https, "https://github.com/Harbor/product.git"));
        assert!(!same_repository(https, "https://gitlab.com/Harbor/website.git"));
        assert!(!same_repository(https, "https://github.com/Other/website.git"));
        assert!(same_repository(
            "http://127.0.0.1:3000/berth/website.git",
            "http://127.0.0.1:3000/berth/website"
        ));
    }
}
