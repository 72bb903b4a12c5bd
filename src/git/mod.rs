//! The git stage: one bare mirror per repo, fetched incrementally, and what
//! berth reads from it.
//!
//! Everything here is blocking (git2); the pipeline calls it through
//! `tokio::task::spawn_blocking`.
//!
//! 1. Take the mirror's lock (a file lock with a bounded wait that names the holder).
//! 2. Open the bare mirror under the state dir, or create it; a mirror that cannot
//!    be opened or read is moved aside and cloned again, with a warning.
//! 3. Fetch all branches and tags with pruning, retrying transient failures;
//!    credentials come from the environment at fetch time and are never stored:
//!    a token for http(s), a key file or the ssh-agent for ssh. An ssh server's host
//!    key must be in `known_hosts` ([`known_hosts`]); an unknown or changed one is
//!    refused, never retried. Every transport is libgit2's; it follows a redirect
//!    on the remote's host only, and a server silent for too long fails the attempt.
//! 4. Resolve a branch head or an exact commit.
//! 5. Export the site's subtree at that commit into a fresh folder (no `.git`),
//!    and give the subtree's Git tree id for the source digest.
//!
//! The jobs, a file each: [`lock`] (the mirror's file lock), [`fetch`] (with
//! [`credentials`] and [`known_hosts`]), [`tree`] (a folder's files and
//! blobs), [`commit_times`] (each blob's commit time), [`export`] (a folder written
//! out, [`submodule`]s included), [`pack_index`] (a first pack indexed on
//! every core); [`ffi`] is the only module with `unsafe`; [`words`] is the
//! one place berth reads libgit2's error messages.

pub mod commit_times;
pub mod credentials;
pub mod export;
pub mod fetch;
pub mod ffi;
pub mod known_hosts;
pub mod lock;
pub mod pack_index;
pub mod submodule;
pub mod tree;
pub mod wildcard;
pub mod words;
pub mod worktree;

pub use fetch::remote_branch_head;
pub use tree::{TreeFile, TreeFileKind};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{ObjectType, Oid, Repository};

use crate::config::Repo;
use crate::git::fetch::{FetchFailure, times};
use crate::git::lock::lock;

/// What can go wrong while mirroring.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Another process holds the mirror's lock for longer than we wait.
    #[error("mirror of repo `{repo}` is locked by {holder} (waited {waited:?}; lock file {path})")]
    Locked {
        repo: String,
        holder: String,
        waited: Duration,
        path: PathBuf,
    },
    /// The remote could not be reached or refused us, after retries.
    #[error("cannot fetch repo `{repo}` from {url} (tried {}): {failure}", times(*attempts))]
    Fetch {
        repo: String,
        url: String,
        attempts: u32,
        failure: FetchFailure,
    },
    /// The branch does not exist on the remote.
    #[error("repo `{repo}` has no branch `{branch}`")]
    NoBranch { repo: String, branch: String },
    /// The commit given is not in the repo (or not unique).
    #[error("repo `{repo}` has no commit `{commit}`{detail}")]
    NoCommit {
        repo: String,
        commit: String,
        detail: String,
    },
    /// The site's folder does not exist at that commit.
    #[error("folder `{path}` does not exist in repo `{repo}` at commit {commit}")]
    NoPath {
        repo: String,
        path: String,
        commit: String,
    },
    /// `--offline` was asked for and the repo has no mirror yet.
    #[error("repo `{repo}` has no mirror yet (no {path}); run without --offline to fetch it")]
    NoMirror { repo: String, path: PathBuf },
    /// A Git operation on the local mirror failed.
    #[error("mirror of repo `{repo}`: {problem}")]
    Local { repo: String, problem: LocalProblem },
    /// Writing the exported files failed.
    #[error("cannot export to {path}: {error}")]
    Export { path: PathBuf, error: std::io::Error },
}

/// What failed on a mirror's own disk, for [`MirrorError::Local`].
#[derive(Debug, thiserror::Error)]
pub enum LocalProblem {
    /// libgit2 failed an operation on the mirror.
    #[error("{}", .0.message())]
    Git(git2::Error),
    /// A folder or file could not be made, removed, opened or locked.
    #[error("cannot {action} {}: {error}", path.display())]
    File {
        /// `create`, `remove`, `open`, `lock`.
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// A new mirror could not be made.
    #[error("cannot create {}: {}", path.display(), error.message())]
    Create { path: PathBuf, error: git2::Error },
    /// A mirror's ref points at an object libgit2 cannot read.
    #[error("{reference} points at an unreadable object: {}", error.message())]
    Unreadable { reference: String, error: git2::Error },
    /// A submodule cannot be exported.
    #[error("submodule `{path}`: {problem}")]
    Submodule {
        path: String,
        problem: export::SubmoduleProblem,
    },
}

impl From<git2::Error> for LocalProblem {
    fn from(error: git2::Error) -> Self {
        Self::Git(error)
    }
}

/// A resolved commit of a mirrored repo.
#[derive(Debug, Clone)]
pub struct Commit {
    /// Full 40-hex id.
    pub id: String,
    /// Commit time, seconds since the epoch.
    pub time: i64,
    pub summary: String,
}

/// An open, locked mirror. The lock is released when this is dropped.
pub struct Mirror {
    repo: Repo,
    git: Repository,
    /// Where this and the submodules' mirrors live.
    mirrors_dir: PathBuf,
    /// The mirror's file lock ([`lock`]), held from open through the fetch.
    lock: Option<File>,
}

fn describe(commit: &git2::Commit<'_>) -> Commit {
    Commit {
        id: commit.id().to_string(),
        time: commit.time().seconds(),
        summary: commit
            .summary()
            .ok()
            .flatten()
            .map(str::to_string)
            .unwrap_or_default(),
    }
}

/// Where the mirror of repo `name` lives.
fn mirror_path(mirrors_dir: &Path, name: &str) -> PathBuf {
    mirrors_dir.join(format!("{name}.git"))
}

/// Removes whatever is at `path` and creates an empty mirror of `url` there.
fn recreate(path: &Path, url: &str) -> Result<Repository, LocalProblem> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|error| LocalProblem::File {
            action: "remove",
            path: path.to_path_buf(),
            error,
        })?;
    }
    let create = || -> Result<Repository, git2::Error> {
        let git = Repository::init_bare(path)?;
        crate::git::pack_index::install(&git)?;
        git.remote_with_fetch("origin", url, "+refs/heads/*:refs/heads/*")?;
        git.config()?.set_str("remote.origin.tagopt", "--tags")?;
        Ok(git)
    };
    create().map_err(|error| LocalProblem::Create {
        path: path.to_path_buf(),
        error,
    })
}

/// Opens the mirror and checks that its refs point at readable objects.
fn open_checked(path: &Path) -> Result<Repository, LocalProblem> {
    let git = Repository::open_bare(path)?;
    // A mirror whose first fetch failed is still empty: its next fetch is a first one too.
    crate::git::pack_index::install(&git)?;
    {
        for reference in git.references()? {
            let reference = reference?;
            if let Some(target) = reference.target() {
                git.find_object(target, None)
                    .map_err(|error| LocalProblem::Unreadable {
                        reference: reference.name().unwrap_or("?").to_string(),
                        error,
                    })?;
            }
        }
    }
    Ok(git)
}

fn is_corruption(error: &git2::Error) -> bool {
    matches!(
        error.class(),
        git2::ErrorClass::Odb | git2::ErrorClass::Zlib | git2::ErrorClass::Indexer | git2::ErrorClass::Object
    )
}

impl Mirror {
    /// Opens (or creates) the mirror of `repo` under `mirrors_dir`, locked, and fetches it.
    pub fn sync(
        mirrors_dir: &Path,
        repo: &Repo,
        on_warning: &dyn Fn(String),
        on_progress: &dyn Fn(String),
    ) -> Result<Self, MirrorError> {
        let mut mirror = Self::open(mirrors_dir, repo, on_warning)?;
        mirror.fetch(on_warning, on_progress)?;
        Ok(mirror)
    }

    /// Opens (or creates) the mirror without fetching.
    pub fn open(mirrors_dir: &Path, repo: &Repo, on_warning: &dyn Fn(String)) -> Result<Self, MirrorError> {
        let local = |problem: LocalProblem| MirrorError::Local {
            repo: repo.name.clone(),
            problem,
        };
        std::fs::create_dir_all(mirrors_dir).map_err(|error| {
            local(LocalProblem::File {
                action: "create",
                path: mirrors_dir.to_path_buf(),
                error,
            })
        })?;
        let lock = lock(mirrors_dir, &repo.name)?;
        let path = mirror_path(mirrors_dir, &repo.name);
        let git = match open_checked(&path) {
            Ok(git) => git,
            Err(problem) => {
                if path.exists() {
                    on_warning(format!(
                        "mirror of repo `{}` is damaged ({problem}); cloning it again",
                        repo.name
                    ));
                }
                recreate(&path, &repo.url).map_err(local)?
            }
        };
        // The stored remote URL is the configured one, which never holds credentials.
        git.remote_set_url("origin", &repo.url)
            .map_err(|error| local(LocalProblem::Git(error)))?;
        Ok(Self {
            mirrors_dir: mirrors_dir.to_path_buf(),
            repo: repo.clone(),
            git,
            lock: Some(lock),
        })
    }

    /// The commit `branch` names in the mirror at `mirrors_dir`, read without
    /// its lock (refs are replaced whole, so a fetch going on meanwhile shows
    /// the old commit or the new); `None` when there is no mirror or no such
    /// branch yet.
    pub fn peek_branch_head(mirrors_dir: &Path, repo: &Repo, branch: &str) -> Option<String> {
        let git = Repository::open_bare(mirror_path(mirrors_dir, &repo.name)).ok()?;
        let reference = git.find_reference(&format!("refs/heads/{branch}")).ok()?;
        reference
            .peel_to_commit()
            .ok()
            .map(|commit| commit.id().to_string())
    }

    /// Lets another process fetch this mirror while this one goes on reading
    /// it: the commits, trees and blobs it reads stay (a fetch adds objects
    /// and moves refs; pruning removes refs, never objects). A run unlocks
    /// once it has fetched and resolved its commit, so a second run of the
    /// same repo (another site, another CI job, `berth serve`'s next push)
    /// does not wait for the first one's rollout.
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// Opens the mirror without fetching; unlike [`Mirror::open`], it must exist.
    pub fn open_existing(
        mirrors_dir: &Path,
        repo: &Repo,
        on_warning: &dyn Fn(String),
    ) -> Result<Self, MirrorError> {
        let path = mirror_path(mirrors_dir, &repo.name);
        if !path.is_dir() {
            return Err(MirrorError::NoMirror {
                repo: repo.name.clone(),
                path,
            });
        }
        Self::open(mirrors_dir, repo, on_warning)
    }

    /// The head commit of `branch`.
    pub fn branch_head(&self, branch: &str) -> Result<Commit, MirrorError> {
        let reference = self
            .git
            .find_reference(&format!("refs/heads/{branch}"))
            .map_err(|_| MirrorError::NoBranch {
                repo: self.repo.name.clone(),
                branch: branch.to_string(),
            })?;
        let commit = reference.peel_to_commit().map_err(|error| self.local(error))?;
        Ok(describe(&commit))
    }

    /// Every branch head and tag, by the commit it is (a tag peeled to its
    /// commit; a tag of no commit is left out): `refs/heads/…`, `refs/tags/…`.
    pub fn refs(&self) -> Result<Vec<(String, String)>, MirrorError> {
        let mut refs = Vec::new();
        for glob in ["refs/heads/*", "refs/tags/*"] {
            let references = self
                .git
                .references_glob(glob)
                .map_err(|error| self.local(error))?;
            for reference in references {
                let reference = reference.map_err(|error| self.local(error))?;
                let (Ok(name), Ok(commit)) = (reference.name(), reference.peel_to_commit()) else {
                    continue;
                };
                refs.push((name.to_string(), commit.id().to_string()));
            }
        }
        Ok(refs)
    }

    /// An exact commit, full or abbreviated (at least 7 hex digits), or a tag.
    pub fn resolve(&self, spec: &str) -> Result<Commit, MirrorError> {
        let no_commit = |detail: String| MirrorError::NoCommit {
            repo: self.repo.name.clone(),
            commit: spec.to_string(),
            detail,
        };
        let is_hex = !spec.is_empty() && spec.chars().all(|c| c.is_ascii_hexdigit());
        let object = if is_hex {
            if spec.len() < 7 {
                return Err(no_commit(": give at least 7 hex digits".into()));
            }
            self.git.revparse_single(spec).map_err(|error| {
                if error.code() == git2::ErrorCode::Ambiguous {
                    no_commit(": the abbreviation is ambiguous, give more digits".into())
                } else {
                    no_commit(String::new())
                }
            })?
        } else {
            self.git
                .find_reference(&format!("refs/tags/{spec}"))
                .and_then(|reference| reference.peel(ObjectType::Commit))
                .map_err(|_| no_commit(" (not a commit id or tag)".into()))?
        };
        let commit = object
            .peel_to_commit()
            .map_err(|_| no_commit(" (it is not a commit)".into()))?;
        Ok(describe(&commit))
    }

    /// libgit2's `error` on this mirror.
    fn local(&self, error: git2::Error) -> MirrorError {
        MirrorError::Local {
            repo: self.repo.name.clone(),
            problem: LocalProblem::Git(error),
        }
    }

    /// Is `ancestor` an ancestor of (or equal to) `descendant`?
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, MirrorError> {
        let ancestor = Oid::from_str(ancestor).map_err(|e| self.local(e))?;
        let descendant = Oid::from_str(descendant).map_err(|e| self.local(e))?;
        if ancestor == descendant {
            return Ok(true);
        }
        self.git
            .graph_descendant_of(descendant, ancestor)
            .map_err(|e| self.local(e))
    }
}
