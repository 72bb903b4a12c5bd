//! Mirrors a run's repos, once each, and resolves what to ship from them.
//!
//! Each repo is fetched off the runtime (git2 blocks), its commit resolved
//! from a [`CommitChoice`], and each site folder's tree id read: the input of
//! the site's source digest. A repo that fails fails its sites only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::config::{Config, Repo, Site};
use crate::deploy;
use crate::git::{Commit, Mirror, MirrorError};
use crate::pipeline::SetupError;
use crate::reference;
use crate::ui::{Printer, Status};

/// Which commit of each site to take.
#[derive(Debug, Clone)]
pub enum CommitChoice {
    /// The head of each repo's branch.
    BranchHead,
    /// Exactly this commit (or tag).
    Exact(String),
}

impl CommitChoice {
    /// The commit this choice names in `mirror`, whose branch is `branch`.
    pub fn resolve(&self, mirror: &Mirror, branch: &str) -> Result<Commit, MirrorError> {
        match self {
            Self::BranchHead => mirror.branch_head(branch),
            Self::Exact(spec) => mirror.resolve(spec),
        }
    }
}

/// Why a repo (or one site folder in it) could not be mirrored. Shared by
/// every site of the repo, hence behind an [`Arc`].
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Fetching, resolving the commit or reading the folder failed.
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The blocking task that mirrors stopped (a panic or the runtime shut down).
    #[error("mirroring stopped")]
    Stopped(#[from] tokio::task::JoinError),
}

/// Each repo's mirror, by repo name: what its sites ship, or why it failed.
pub type Mirrored = HashMap<String, Result<Synced, Arc<SyncError>>>;

/// Mirrors each repo of `sites` once (blocking work off the runtime), resolving
/// the commit to ship and each site folder's tree id.
pub async fn mirror_all(
    config: &Config,
    sites: &[&Site],
    choice: &CommitChoice,
    jobs: usize,
    printer: &Printer,
) -> Mirrored {
    let mut repo_names: Vec<String> = sites.iter().map(|s| s.repo.clone()).collect();
    repo_names.sort_unstable();
    repo_names.dedup();
    let mirrors_dir = config.state_dir.join("mirrors");
    // Owned names and paths in each future, so that a caller may spawn the
    // whole (its futures hold no borrowed closure arguments).
    let futures: Vec<_> = repo_names
        .into_iter()
        .map(|name| {
            let repo = config.repo(&name).expect("validated").clone();
            let mirrors_dir = mirrors_dir.clone();
            let printer = printer.clone();
            let choice = choice.clone();
            let paths: Vec<String> = sites
                .iter()
                .filter(|s| s.repo == name)
                .map(|s| s.path.clone())
                .collect();
            async move {
                let started = Instant::now();
                let name = repo.name.clone();
                let result = tokio::task::spawn_blocking(move || {
                    sync_repo(&mirrors_dir, &repo, &choice, &paths, &printer)
                })
                .await
                .map_err(SyncError::from)
                .and_then(|synced| synced.map_err(SyncError::from))
                .map(|mut synced| {
                    synced.duration = started.elapsed();
                    synced
                })
                .map_err(Arc::new);
                (name, result)
            }
        })
        .collect();
    futures_util::stream::iter(futures)
        .buffer_unordered(jobs.max(1))
        .collect()
        .await
}

/// A mirrored repo: the commit to ship and each path's tree id.
pub struct Synced {
    pub mirror: Arc<Mutex<Mirror>>,
    pub commit: Commit,
    pub trees: HashMap<String, Result<String, Arc<SyncError>>>,
    pub duration: Duration,
}

impl Synced {
    /// The tree id of the site folder `path`, as read when the repo was mirrored.
    pub fn tree(&self, path: &str) -> Result<String, Arc<SyncError>> {
        self.trees.get(path).expect("every path was resolved").clone()
    }

    /// The same mirror at `commit` (a full id or a prefix), with the tree of
    /// `path`: for a pull request's head, fetched from `refs/pull/NUMBER/head`
    /// (or GitLab's `refs/merge-requests/NUMBER/head`) when the branches did
    /// not bring it.
    pub async fn at_commit(&self, commit: &str, number: u64, path: &str) -> Result<Self, Arc<SyncError>> {
        let mirror = self.mirror.clone();
        let (commit, path_owned) = (commit.to_string(), path.to_string());
        let started = Instant::now();
        let (resolved, tree) = tokio::task::spawn_blocking(move || {
            let mirror = mirror.lock().expect("not poisoned");
            let resolved = if let Ok(resolved) = mirror.resolve(&commit) {
                resolved
            } else {
                mirror.fetch_change(number)?;
                mirror.resolve(&commit)?
            };
            let tree = mirror.tree_id(&resolved.id, &path_owned);
            Ok::<_, MirrorError>((resolved, tree))
        })
        .await
        .map_err(|error| Arc::new(SyncError::from(error)))?
        .map_err(|error| Arc::new(SyncError::from(error)))?;
        let trees = HashMap::from([(
            path.to_string(),
            tree.map_err(|error| Arc::new(SyncError::from(error))),
        )]);
        Ok(Self {
            mirror: self.mirror.clone(),
            commit: resolved,
            trees,
            duration: started.elapsed(),
        })
    }

    /// Whether the mirror holds any of `commits` (full ids or prefixes).
    pub async fn contains_any(&self, commits: &[&str]) -> bool {
        let mirror = self.mirror.clone();
        let commits: Vec<String> = commits.iter().map(|commit| (*commit).to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let mirror = mirror.lock().expect("not poisoned");
            commits.iter().any(|commit| mirror.resolve(commit).is_ok())
        })
        .await
        .unwrap_or(false)
    }

    /// The deployed commit, when `commit` is an ancestor of it (an out-of-order
    /// CI job): `run` refuses it unless allowed, `plan` says so. None when
    /// nothing is deployed, it is the same commit, or the deployed commit is
    /// not in this repo (another branch or repo: no order to keep).
    pub async fn older_than(&self, commit: &str, deployed: &deploy::Deployed) -> Option<String> {
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

/// Per repo of `config`, the remote's branch head when it differs from the
/// mirror's (`None` when they are the same, or the remote could not be
/// asked: said on `printer` as a warning, and asked again at the next poll).
/// The remotes are asked eight at a time, off the runtime; no mirror is
/// locked or fetched.
pub async fn remote_heads(config: &Config, printer: &Printer) -> Vec<(String, Option<String>)> {
    let mirrors_dir = config.state_dir.join("mirrors");
    futures_util::stream::iter(config.repos.iter().cloned().map(|repo| {
        let mirrors_dir = mirrors_dir.clone();
        let printer = printer.clone();
        async move {
            let name = repo.name.clone();
            let moved = tokio::task::spawn_blocking(move || {
                let remote = match crate::git::remote_branch_head(&repo, &repo.branch) {
                    Ok(remote) => remote?,
                    Err(error) => {
                        printer.warning(&format!("poll: {error}"));
                        return None;
                    }
                };
                let local = Mirror::peek_branch_head(&mirrors_dir, &repo, &repo.branch);
                (local.as_deref() != Some(remote.as_str())).then_some(remote)
            })
            .await
            .unwrap_or(None);
            (name, moved)
        }
    }))
    .buffer_unordered(8)
    .collect()
    .await
}

/// Opens and fetches `repo`'s mirror (blocking), its warnings and progress on `printer`.
pub fn sync_mirror(mirrors_dir: &Path, repo: &Repo, printer: &Printer) -> Result<Mirror, MirrorError> {
    let warn = |message: String| printer.warning(&message);
    let progress = |text: String| printer.progress(&repo.name, "mirror", &text);
    let mirror = Mirror::sync(mirrors_dir, repo, &warn, &progress);
    printer.clear_progress(&repo.name);
    mirror
}

fn sync_repo(
    mirrors_dir: &Path,
    repo: &Repo,
    choice: &CommitChoice,
    paths: &[String],
    printer: &Printer,
) -> Result<Synced, MirrorError> {
    let mut mirror = sync_mirror(mirrors_dir, repo, printer)?;
    let commit = choice.resolve(&mirror, &repo.branch)?;
    // Fetched and resolved: the rest of the run only reads.
    mirror.unlock();
    let trees = paths
        .iter()
        .map(|path| {
            let tree = mirror.tree_id(&commit.id, path);
            (path.clone(), tree.map_err(|error| Arc::new(error.into())))
        })
        .collect();
    Ok(Synced {
        mirror: Arc::new(Mutex::new(mirror)),
        commit,
        trees,
        duration: Duration::ZERO,
    })
}

/// One repo `berth mirror` fetched: its branch head, or why it failed (each
/// failure also reported as it happened).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MirroredRepo {
    pub repo: String,
    pub branch: String,
    pub head: Option<String>,
    pub error: Option<String>,
}

/// Fetches the mirrors of `names` (all repos when empty), one after the other.
/// A repo that fails is reported and the next one is tried.
pub async fn mirror_repos(
    config: &Config,
    names: &[String],
    printer: &Printer,
) -> anyhow::Result<Vec<MirroredRepo>> {
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
    let mut mirrored = Vec::new();
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
        let mut entry = MirroredRepo {
            repo: repo.name.clone(),
            branch: repo.branch.clone(),
            head: None,
            error: None,
        };
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
                entry.head = Some(head.id);
            }
            Err(error) => {
                printer.stage(&repo.name, "mirror", Status::Failed, &error.to_string());
                entry.error = Some(error.to_string());
            }
        }
        mirrored.push(entry);
    }
    Ok(mirrored)
}
