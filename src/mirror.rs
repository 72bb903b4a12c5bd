//! Mirror stage: one bare mirror per repo, fetched incrementally.
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
//!    key must be in `known_hosts` ([`crate::ssh`]); an unknown or changed one is
//!    refused, never retried. Every transport is libgit2's; it follows a redirect
//!    on the remote's host only, and a server silent for too long fails the attempt.
//! 4. Resolve a branch head or an exact commit.
//! 5. Export the site's subtree at that commit into a fresh folder (no `.git`),
//!    and give the subtree's Git tree id for the source digest.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{
    AutotagOption, CertificateCheckStatus, FetchOptions, FetchPrune, ObjectType, Oid, RemoteCallbacks,
    RemoteRedirect, Repository,
};
use sha2::Digest as _;

use crate::config::Repo;
use crate::git::ffi;
use crate::ssh;

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
    #[error("cannot fetch repo `{repo}` from {url} (tried {}): {message}", times(*attempts))]
    Fetch {
        repo: String,
        url: String,
        attempts: u32,
        message: String,
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
    #[error("mirror of repo `{repo}`: {message}")]
    Local { repo: String, message: String },
    /// Writing the exported files failed.
    #[error("cannot export to {path}: {source}")]
    Export { path: PathBuf, source: std::io::Error },
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
    _lock: File,
}

/// How long a second process waits for a mirror's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(120);
const FETCH_ATTEMPTS: u32 = 3;

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
        let local = |message: String| MirrorError::Local {
            repo: repo.name.clone(),
            message,
        };
        std::fs::create_dir_all(mirrors_dir)
            .map_err(|error| local(format!("cannot create {}: {error}", mirrors_dir.display())))?;
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
            .map_err(|error| local(error.message().to_string()))?;
        Ok(Self {
            mirrors_dir: mirrors_dir.to_path_buf(),
            repo: repo.clone(),
            git,
            _lock: lock,
        })
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

    /// Fetches every branch and tag, pruning deleted ones; retries transient failures.
    pub fn fetch(
        &mut self,
        on_warning: &dyn Fn(String),
        on_progress: &dyn Fn(String),
    ) -> Result<(), MirrorError> {
        if self.repo.url.starts_with("https://") {
            load_ca_bundle();
        }
        limit_silence();
        let mut last_error = String::new();
        // Whether the redirect of an http:// remote to https:// was warned about.
        let mut warned_https = false;
        for attempt in 1..=FETCH_ATTEMPTS {
            let bundle_loaded = ca_bundle_loaded();
            let (mut fetched, mut https_host) = self.fetch_once(on_progress);
            if fetched.is_err() && https_host.is_some() && !bundle_loaded {
                // libgit2 followed the redirect before any CA bundle was loaded,
                // so the certificate could not be checked: again, with it.
                load_ca_bundle();
                (fetched, https_host) = self.fetch_once(on_progress);
            }
            if let Some(host) = https_host.filter(|_| !warned_https) {
                warned_https = true;
                on_warning(format!(
                    "repo `{}`: {} redirects to https:// on {host}; fetching from there (write the https:// URL in [[repo]] to save the redirect)",
                    self.repo.name, self.repo.url
                ));
            }
            match fetched {
                Ok(()) => return Ok(()),
                Err(error) if is_corruption(&error) => {
                    on_warning(format!(
                        "mirror of repo `{}` is damaged ({}); cloning it again",
                        self.repo.name,
                        error.message()
                    ));
                    self.git =
                        recreate(self.git.path(), &self.repo.url).map_err(|message| MirrorError::Local {
                            repo: self.repo.name.clone(),
                            message,
                        })?;
                }
                Err(error) => {
                    last_error = redact(&with_hint(error.message(), &self.repo), &self.repo);
                    if !is_transient(&error) {
                        return Err(self.fetch_error(attempt, last_error));
                    }
                    if attempt < FETCH_ATTEMPTS {
                        tracing::debug!(repo = %self.repo.name, attempt, "fetch failed, retrying: {last_error}");
                        std::thread::sleep(Duration::from_millis(500 * u64::from(attempt * attempt)));
                    }
                }
            }
        }
        Err(self.fetch_error(FETCH_ATTEMPTS, last_error))
    }

    fn fetch_error(&self, attempts: u32, message: String) -> MirrorError {
        MirrorError::Fetch {
            repo: self.repo.name.clone(),
            url: self.repo.url.clone(),
            attempts,
            message,
        }
    }

    /// One fetch from the repo's URL. With it, the host of the https:// server
    /// an `http://` remote redirected libgit2 to (on the same host), if it did.
    fn fetch_once(&self, on_progress: &dyn Fn(String)) -> (Result<(), git2::Error>, Option<String>) {
        let mut remote = match self.git.find_remote("origin") {
            Ok(remote) => remote,
            Err(error) => return (Err(error), None),
        };
        // libgit2 replaces a refused host key's message by its own; ours is kept here.
        let host_key_refusal = std::cell::RefCell::new(None::<String>);
        // A certificate on a fetch from an http:// URL: libgit2 followed a redirect to https://.
        let https_host = std::cell::RefCell::new(None::<String>);
        let plain_http = self.repo.url.starts_with("http://");
        let mut callbacks = RemoteCallbacks::new();
        let mut credentials = Credentials::new(&self.repo);
        callbacks.credentials(move |_url, username, allowed| credentials.next(username, allowed));
        callbacks.certificate_check(|certificate, host| {
            // X.509 (https) is checked by libgit2 and OpenSSL as usual.
            let Some(host_key) = certificate.as_hostkey() else {
                if plain_http {
                    *https_host.borrow_mut() = Some(host.to_string());
                }
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            match check_host_key(&self.repo, host_key, host) {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(message) => {
                    *host_key_refusal.borrow_mut() = Some(message.clone());
                    Err(git2::Error::new(
                        git2::ErrorCode::Certificate,
                        git2::ErrorClass::Ssh,
                        message,
                    ))
                }
            }
        });
        let mut options = FetchOptions::new();
        // Objects and bytes while they arrive, a few times a second (a terminal shows
        // them live; elsewhere only `-v` prints them).
        let mut last = std::time::Instant::now();
        callbacks.transfer_progress(move |progress| {
            if last.elapsed() >= Duration::from_millis(250) {
                last = std::time::Instant::now();
                on_progress(transfer_line(
                    progress.total_objects(),
                    progress.received_objects(),
                    progress.indexed_objects(),
                    progress.received_bytes(),
                ));
            }
            true
        });
        options.remote_callbacks(callbacks);
        options.prune(FetchPrune::On);
        options.download_tags(AutotagOption::All);
        // Redirects are followed on the remote's host only (libgit2 checks the
        // host, not the port or scheme): the repo's token is for that host alone.
        options.follow_redirects(RemoteRedirect::None);
        let fetched = remote.fetch(
            &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            Some(&mut options),
            None,
        );
        drop(options);
        let fetched = match (fetched, host_key_refusal.into_inner()) {
            (Err(_), Some(refusal)) => Err(git2::Error::new(
                git2::ErrorCode::Certificate,
                git2::ErrorClass::Ssh,
                refusal,
            )),
            (fetched, _) => fetched,
        };
        (fetched, https_host.into_inner())
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
        let commit = reference.peel_to_commit().map_err(|error| self.local(&error))?;
        Ok(describe(&commit))
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

    /// The Git tree id of `path` at `commit` (`"."` is the root).
    pub fn tree_id(&self, commit: &str, path: &str) -> Result<String, MirrorError> {
        Ok(self.subtree(commit, path)?.id().to_string())
    }

    fn subtree(&self, commit: &str, path: &str) -> Result<git2::Tree<'_>, MirrorError> {
        let commit_object = self
            .git
            .find_commit(Oid::from_str(commit).map_err(|e| self.local(&e))?)
            .map_err(|e| self.local(&e))?;
        folder_at(&self.git, &commit_object, path)
            .map_err(|e| self.local(&e))?
            .ok_or_else(|| MirrorError::NoPath {
                repo: self.repo.name.clone(),
                path: path.to_string(),
                commit: commit.to_string(),
            })
    }

    /// When each file of `path` at `commit` got its current content: for every blob
    /// of that folder, the time of the newest commit on the first-parent line that
    /// wrote it at its path (the commit that brought it in, for a merge).
    ///
    /// The build gives files these times, so a file that did not change keeps its
    /// `Last-Modified` and its image layer from one commit to the next. The walk
    /// stops as soon as every file is placed; a commit that leaves the folder's
    /// tree unchanged costs one tree lookup and no diff.
    ///
    /// The times of the last walk are kept beside the mirror (one small file per
    /// folder): the next walk stops at that commit when it is on the branch's
    /// first-parent line, so a build after a few new commits reads those commits
    /// only, not years of history again.
    pub fn content_times(&self, commit: &str, path: &str) -> Result<HashMap<Oid, i64>, MirrorError> {
        let start = Oid::from_str(commit).map_err(|e| self.local(&e))?;
        let cache = self
            .mirrors_dir
            .join(format!("{}.times", self.repo.name))
            .join(format!(
                "{}.json",
                &hex::encode(sha2::Sha256::digest(path.as_bytes()))[..16]
            ));
        let known = std::fs::read(&cache)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<TimesCache>(&bytes).ok())
            .filter(|known| known.path == path);
        let by_path = content_times(&self.git, start, path, known.as_ref()).map_err(|e| self.local(&e))?;
        // A rebuild of the kept commit, answered from what was kept, has nothing new to keep.
        let unchanged = known
            .as_ref()
            .is_some_and(|known| known.commit == commit && known.times.len() == by_path.len());
        if !unchanged && let Err(error) = write_times_cache(&cache, commit, path, &by_path) {
            tracing::debug!("cannot keep the file times in {}: {error}", cache.display());
        }
        Ok(newest_by_blob(by_path))
    }

    /// The entries of `path` at `commit` in Git's order, for a build context written
    /// straight from the mirror, or `None` when the folder holds a submodule or a
    /// file too large to read into memory (then `export` writes it to disk).
    pub fn files(&self, commit: &str, path: &str) -> Result<Option<Vec<TreeFile>>, MirrorError> {
        let tree = self.subtree(commit, path)?;
        let odb = self.git.odb().map_err(|e| self.local(&e))?;
        let mut files = Vec::new();
        let mut usable = true;
        let mut failure = None;
        let walked = tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            let Ok(name) = entry.name() else {
                return git2::TreeWalkResult::Skip;
            };
            let relative = format!("{parent}{name}");
            let kind = match entry.kind() {
                Some(ObjectType::Tree) => TreeFileKind::Folder,
                Some(ObjectType::Blob) if entry.filemode() == 0o120_000 => {
                    match self.git.find_blob(entry.id()) {
                        Ok(blob) => TreeFileKind::Symlink {
                            blob: entry.id(),
                            target: blob.content().to_vec(),
                        },
                        Err(error) => {
                            failure = Some(error);
                            return git2::TreeWalkResult::Abort;
                        }
                    }
                }
                Some(ObjectType::Blob) => match odb.read_header(entry.id()) {
                    Ok((size, _)) if size as u64 <= LARGEST_IN_MEMORY => TreeFileKind::File {
                        blob: entry.id(),
                        executable: entry.filemode() == 0o100_755,
                        size: size as u64,
                    },
                    Ok(_) => {
                        usable = false;
                        return git2::TreeWalkResult::Abort;
                    }
                    Err(error) => {
                        failure = Some(error);
                        return git2::TreeWalkResult::Abort;
                    }
                },
                Some(ObjectType::Commit) => {
                    usable = false;
                    return git2::TreeWalkResult::Abort;
                }
                _ => return git2::TreeWalkResult::Ok,
            };
            files.push(TreeFile { relative, kind });
            git2::TreeWalkResult::Ok
        });
        if let Some(error) = failure {
            return Err(self.local(&error));
        }
        if !usable {
            return Ok(None);
        }
        walked.map_err(|e| self.local(&e))?;
        Ok(Some(files))
    }

    /// The content of a blob.
    pub fn blob(&self, id: Oid) -> Result<Vec<u8>, MirrorError> {
        let blob = self.git.find_blob(id).map_err(|e| self.local(&e))?;
        Ok(blob.content().to_vec())
    }

    /// Writes the files of `path` at `commit` into `destination` (created; must not exist).
    /// Returns the number of files written.
    pub fn export(&self, commit: &str, path: &str, destination: &Path) -> Result<usize, MirrorError> {
        let tree = self.subtree(commit, path)?;
        std::fs::create_dir_all(destination).map_err(|e| export_error(destination, e))?;
        let mut count = 0;
        let mut failure = None;
        let mut submodules = Vec::new();
        // This thread reads the blobs (inflating, applying deltas) while a second
        // one writes them, as `git archive | tar -x` overlaps the two. Blobs over
        // HANDED_OVER are written here, so the queue holds at most 64 small ones.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<(PathBuf, Vec<u8>, i32)>(64);
        let (walked, writer) = std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                for (target, content, mode) in receiver {
                    write_entry(&target, &content, mode).map_err(|error| export_error(&target, error))?;
                }
                Ok::<(), MirrorError>(())
            });
            let walked = tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
                let Ok(name) = entry.name() else {
                    return git2::TreeWalkResult::Skip;
                };
                let target = destination.join(parent).join(name);
                let result = match entry.kind() {
                    // The walk visits a folder before what it holds.
                    Some(ObjectType::Tree) => std::fs::create_dir_all(&target),
                    Some(ObjectType::Blob) => match self.git.find_blob(entry.id()) {
                        Ok(blob) if blob.size() <= HANDED_OVER => {
                            let handed =
                                sender.send((target.clone(), blob.content().to_vec(), entry.filemode()));
                            if handed.is_err() {
                                // The writer stopped: its error is the one to report.
                                return git2::TreeWalkResult::Abort;
                            }
                            Ok(())
                        }
                        Ok(blob) => write_entry(&target, blob.content(), entry.filemode()),
                        Err(error) => Err(std::io::Error::other(error.message().to_string())),
                    },
                    // Submodules (commits): exported from their own mirrors below.
                    Some(ObjectType::Commit) => {
                        submodules.push((format!("{parent}{name}"), entry.id()));
                        Ok(())
                    }
                    _ => Ok(()),
                };
                match result {
                    Ok(()) => {
                        if entry.kind() == Some(ObjectType::Blob) {
                            count += 1;
                        }
                        git2::TreeWalkResult::Ok
                    }
                    Err(error) => {
                        failure = Some(export_error(&target, error));
                        git2::TreeWalkResult::Abort
                    }
                }
            });
            drop(sender);
            (walked, writer.join().expect("the writer thread does not panic"))
        });
        writer?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        walked.map_err(|error| self.local(&error))?;
        for (relative, oid) in submodules {
            count += self.export_submodule(commit, path, &relative, oid, destination)?;
        }
        Ok(count)
    }

    /// Exports a submodule (a theme, say) at the commit the parent records, from a
    /// mirror of its own; its URL comes from the parent's `.gitmodules`.
    fn export_submodule(
        &self,
        commit: &str,
        site_path: &str,
        relative: &str,
        oid: Oid,
        destination: &Path,
    ) -> Result<usize, MirrorError> {
        let full_path = if site_path == "." {
            relative.to_string()
        } else {
            format!("{site_path}/{relative}")
        };
        let missing = |detail: String| MirrorError::Local {
            repo: self.repo.name.clone(),
            message: format!("submodule `{full_path}`: {detail}"),
        };
        let root = self.subtree(commit, ".")?;
        let entry = root
            .get_path(Path::new(".gitmodules"))
            .map_err(|_| missing("no .gitmodules names it".into()))?;
        let blob = self.git.find_blob(entry.id()).map_err(|e| self.local(&e))?;
        let modules = parse_gitmodules(blob.content())
            .map_err(|error| missing(format!(".gitmodules cannot be read: {error}")))?;
        let url = modules
            .iter()
            .find(|(path, _)| path == &full_path)
            .map(|(_, url)| resolve_url(&self.repo.url, url))
            .ok_or_else(|| missing(".gitmodules has no url for it".into()))?;
        let digest = sha2::Sha256::digest(url.as_bytes());
        let repo = Repo {
            name: format!("submodule-{}", hex::encode(&digest[..6])),
            url,
            branch: "main".into(),
            token_env: self.repo.token_env.clone(),
            ssh_key: self.repo.ssh_key.clone(),
            ssh_key_passphrase_env: self.repo.ssh_key_passphrase_env.clone(),
            known_hosts: self.repo.known_hosts.clone(),
        };
        let warn = |message: String| tracing::warn!("{message}");
        let sub = Mirror::sync(&self.mirrors_dir, &repo, &warn, &|_| {})?;
        sub.export(&oid.to_string(), ".", &destination.join(relative))
    }

    /// A working checkout of `commit` with its history (a local clone of the
    /// mirror), for generators that read Git history. Returns the number of files.
    pub fn checkout(&self, commit: &str, destination: &Path) -> Result<usize, MirrorError> {
        let source = format!("file://{}", self.git.path().display());
        let clone = git2::build::RepoBuilder::new()
            .bare(false)
            .clone(&source, destination)
            .map_err(|e| self.local(&e))?;
        let oid = Oid::from_str(commit).map_err(|e| self.local(&e))?;
        clone.set_head_detached(oid).map_err(|e| self.local(&e))?;
        clone
            .checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .map_err(|e| self.local(&e))?;
        let files = walkdir::WalkDir::new(destination)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git")
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count();
        Ok(files)
    }

    fn local(&self, error: &git2::Error) -> MirrorError {
        MirrorError::Local {
            repo: self.repo.name.clone(),
            message: error.message().to_string(),
        }
    }

    /// Is `ancestor` an ancestor of (or equal to) `descendant`?
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, MirrorError> {
        let ancestor = Oid::from_str(ancestor).map_err(|e| self.local(&e))?;
        let descendant = Oid::from_str(descendant).map_err(|e| self.local(&e))?;
        if ancestor == descendant {
            return Ok(true);
        }
        self.git
            .graph_descendant_of(descendant, ancestor)
            .map_err(|e| self.local(&e))
    }
}

/// Answers libgit2's credential requests for one fetch: a token for https, a key
/// file or the ssh-agent for ssh. A request repeated after a refusal fails with
/// what was refused (libgit2 would ask forever).
struct Credentials<'r> {
    repo: &'r Repo,
    attempts: u32,
}

impl<'r> Credentials<'r> {
    fn new(repo: &'r Repo) -> Self {
        Self { repo, attempts: 0 }
    }

    fn next(
        &mut self,
        username: Option<&str>,
        allowed: git2::CredentialType,
    ) -> Result<git2::Cred, git2::Error> {
        use git2::CredentialType;
        // An ssh URL without a user: libgit2 asks for the name first.
        if allowed == CredentialType::USERNAME {
            return git2::Cred::username(username.unwrap_or("git"));
        }
        self.attempts += 1;
        let refused = |message: String| git2::Error::from_str(&message);
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let token = token(self.repo.token_env.as_deref())?;
            if self.attempts > 3 {
                return Err(refused(
                    "authentication failed (credentials were rejected)".into(),
                ));
            }
            return git2::Cred::userpass_plaintext(username.unwrap_or("berth"), &token);
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = username.unwrap_or("git");
            if let Some(key) = &self.repo.ssh_key {
                if self.attempts > 1 {
                    return Err(refused(format!(
                        "ssh authentication as `{user}` failed: the server refused the key in {}",
                        key.display()
                    )));
                }
                let passphrase = match &self.repo.ssh_key_passphrase_env {
                    Some(name) => Some(std::env::var(name).map_err(|_| {
                        refused(format!("ssh_key_passphrase_env names `{name}`, which is not set"))
                    })?),
                    None => None,
                };
                // The public key beside it, as OpenSSH reads it; libssh2 derives it otherwise.
                let mut public = key.as_os_str().to_owned();
                public.push(".pub");
                let public = Some(PathBuf::from(public)).filter(|public| public.is_file());
                return git2::Cred::ssh_key(user, public.as_deref(), key, passphrase.as_deref());
            }
            if std::env::var_os("SSH_AUTH_SOCK").is_none_or(|socket| socket.is_empty()) {
                return Err(refused(
                    "the ssh remote needs a key: set ssh_key in [[repo]], or run an ssh-agent with the key (SSH_AUTH_SOCK is not set)"
                        .into(),
                ));
            }
            if self.attempts > 1 {
                return Err(refused(format!(
                    "ssh authentication as `{user}` failed: the server refused every key of the ssh-agent (SSH_AUTH_SOCK)"
                )));
            }
            return git2::Cred::ssh_key_from_agent(user);
        }
        git2::Cred::default()
    }
}

/// The token for an http(s) remote that asks for credentials, from the variable
/// `token_env` names.
fn token(token_env: Option<&str>) -> Result<String, git2::Error> {
    token_env
        .and_then(|name| std::env::var(name).ok())
        .ok_or_else(|| {
            git2::Error::from_str(
                "the remote asks for credentials and no token is configured (set token_env in [[repo]])",
            )
        })
}

/// Looks the server's host key up in the repo's `known_hosts` file, or in the
/// user's and the system's; `Err` says why it is refused.
fn check_host_key(repo: &Repo, host_key: &git2::cert::CertHostkey<'_>, host: &str) -> Result<(), String> {
    let Some(key) = host_key.hostkey() else {
        return Err(format!("the ssh server {host} sent no host key berth can check"));
    };
    let port = ssh::port_of(&repo.url);
    let files = repo
        .known_hosts
        .clone()
        .map_or_else(ssh::default_known_hosts, |file| vec![file]);
    let name = ssh::known_hosts_name(host, port);
    let presented = format!(
        "{} {}",
        ssh::key_type(key).unwrap_or("unknown type"),
        ssh::fingerprint(key)
    );
    let listed = files
        .iter()
        .map(|file| file.display().to_string())
        .collect::<Vec<_>>()
        .join(" or ");
    match ssh::check(&files, host, port, key).map_err(|error| error.to_string())? {
        ssh::Verdict::Known => Ok(()),
        ssh::Verdict::Revoked { file, line } => Err(format!(
            "the host key of {name} ({presented}) is revoked ({}:{line}); refusing to connect",
            file.display()
        )),
        ssh::Verdict::Changed { file, line } => Err(format!(
            "the host key of {name} has CHANGED: the server presents {presented}, but {}:{line} lists another key; \
             the key was replaced or someone is in between, so berth refuses to connect (if the change is expected, replace that line)",
            file.display()
        )),
        ssh::Verdict::Unknown { other_types } => {
            let others = if other_types.is_empty() {
                String::new()
            } else {
                format!(" (it lists only {} keys for that host)", other_types.join(", "))
            };
            Err(format!(
                "unknown ssh host {name}: its key {presented} is not in {listed}{others}; berth refuses unknown hosts. \
                 Check the fingerprint with the server's owner, then add the host's line to the file \
                 (`ssh-keyscan{} {host}` prints it), or name a file with known_hosts in [[repo]]",
                if port == 22 {
                    String::new()
                } else {
                    format!(" -p {port}")
                }
            ))
        }
    }
}

/// (path, url) of each submodule in a `.gitmodules` file, read by gix-config
/// as git reads it: quoted values and escapes, `;` and `#` comments, the
/// sections of one submodule's name merged, the last value winning. A
/// submodule without a path or a url is left out. `[include]` is not followed
/// (git does not either for `.gitmodules`), so a repo's file cannot name local ones.
pub fn parse_gitmodules(text: &[u8]) -> Result<Vec<(String, String)>, String> {
    let file = gix_config::File::from_bytes_no_includes(
        text,
        gix_config::file::Metadata::api(),
        gix_config::file::init::Options::default(),
    )
    .map_err(|error| error.to_string())?;
    // (name, path, url), in the order the names first appear.
    let mut modules: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for section in file.sections_by_name("submodule").into_iter().flatten() {
        let Some(name) = section.header().subsection_name() else {
            continue;
        };
        let name = name.to_string();
        let index = modules
            .iter()
            .position(|(known, ..)| *known == name)
            .unwrap_or_else(|| {
                modules.push((name, None, None));
                modules.len() - 1
            });
        if let Some(path) = section.value("path") {
            modules[index].1 = Some(path.to_string());
        }
        if let Some(url) = section.value("url") {
            modules[index].2 = Some(url.to_string());
        }
    }
    Ok(modules
        .into_iter()
        .filter_map(|(_, path, url)| Some((path?.trim_matches('/').to_string(), url?)))
        .collect())
}

/// A submodule URL, relative ones (`../theme.git`) resolved against the parent's.
pub fn resolve_url(parent: &str, url: &str) -> String {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return url.to_string();
    }
    let mut base = parent.trim_end_matches('/').to_string();
    let mut rest = url;
    loop {
        if let Some(tail) = rest.strip_prefix("../") {
            if let Some(index) = base.rfind('/') {
                base.truncate(index);
            }
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix("./") {
            rest = tail;
        } else {
            break;
        }
    }
    format!("{base}/{rest}")
}

/// Blobs up to this size are read into memory for a context written from the mirror.
const LARGEST_IN_MEMORY: u64 = 32 * 1024 * 1024;

/// One entry of a folder at a commit (see [`Mirror::files`]).
#[derive(Debug, Clone)]
pub struct TreeFile {
    /// Below the folder, `/`-separated.
    pub relative: String,
    pub kind: TreeFileKind,
}

#[derive(Debug, Clone)]
pub enum TreeFileKind {
    Folder,
    File {
        blob: Oid,
        executable: bool,
        size: u64,
    },
    /// Git stores a symlink's target as a blob.
    Symlink {
        blob: Oid,
        target: Vec<u8>,
    },
}

/// The file times of a folder at one commit, kept for the next walk.
#[derive(serde::Serialize, serde::Deserialize)]
struct TimesCache {
    commit: String,
    path: String,
    /// Path below the folder to the time of the commit that wrote its content.
    times: HashMap<String, i64>,
}

/// Each blob's time: the newest of the files that hold its content.
fn newest_by_blob(by_path: HashMap<Vec<u8>, (Oid, i64)>) -> HashMap<Oid, i64> {
    let mut times = HashMap::new();
    for (blob, time) in by_path.into_values() {
        let entry = times.entry(blob).or_insert(time);
        *entry = (*entry).max(time);
    }
    times
}

/// Writes the cache (through a temporary file, so a crash leaves the old one or
/// none); folders with a path that is not UTF-8 are not cached.
fn write_times_cache(
    cache: &Path,
    commit: &str,
    path: &str,
    by_path: &HashMap<Vec<u8>, (Oid, i64)>,
) -> std::io::Result<()> {
    let mut times = HashMap::with_capacity(by_path.len());
    for (file, (_, time)) in by_path {
        let Ok(file) = String::from_utf8(file.clone()) else {
            return Ok(());
        };
        times.insert(file, *time);
    }
    let known = TimesCache {
        commit: commit.to_string(),
        path: path.to_string(),
        times,
    };
    std::fs::create_dir_all(cache.parent().expect("in a folder"))?;
    let temporary = cache.with_extension("json.tmp");
    std::fs::write(&temporary, serde_json::to_vec(&known)?)?;
    std::fs::rename(&temporary, cache)
}

/// See [`Mirror::content_times`]: each file's path, blob and time. With `known`
/// (the times at an earlier commit), the walk stops at that commit, and the files
/// still unplaced there, unchanged since, take its times.
fn content_times(
    git: &Repository,
    start: Oid,
    path: &str,
    known: Option<&TimesCache>,
) -> Result<HashMap<Vec<u8>, (Oid, i64)>, git2::Error> {
    let known_commit = known.and_then(|known| Oid::from_str(&known.commit).ok());
    let mut current = git.find_commit(start)?;
    let mut current_tree = folder_at(git, &current, path)?;
    let mut pending: HashMap<Vec<u8>, Oid> = HashMap::new();
    if let Some(tree) = &current_tree {
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(ObjectType::Blob) {
                let mut full = parent.as_bytes().to_vec();
                full.extend_from_slice(entry.name_bytes());
                pending.insert(full, entry.id());
            }
            git2::TreeWalkResult::Ok
        })?;
    }
    let mut times = HashMap::new();
    while !pending.is_empty() {
        if Some(current.id()) == known_commit
            && let Some(known) = known
            && pending
                .keys()
                .all(|file| std::str::from_utf8(file).is_ok_and(|file| known.times.contains_key(file)))
        {
            for (file, blob) in pending.drain() {
                let time = known.times[std::str::from_utf8(&file).expect("checked above")];
                times.insert(file, (blob, time));
            }
            break;
        }
        let parent = current.parent(0).ok();
        let parent_tree = match &parent {
            Some(parent) => folder_at(git, parent, path)?,
            None => None,
        };
        if let Some(tree) = &current_tree
            && Some(tree.id()) != parent_tree.as_ref().map(git2::Tree::id)
        {
            let time = current.time().seconds();
            let mut written = |file: &[u8], blob: Oid| {
                if pending.remove(file).is_some() {
                    times.insert(file.to_vec(), (blob, time));
                }
            };
            changed_blobs(git, parent_tree.as_ref(), tree, &mut Vec::new(), &mut written)?;
        }
        let Some(parent) = parent else { break };
        current = parent;
        current_tree = parent_tree;
    }
    Ok(times)
}

/// Calls `written` with the path and blob of every blob in `new` that `old` does
/// not hold at the same path. Subtrees with the same id are skipped without
/// being read, so a commit costs what it changed, not the size of the folder.
fn changed_blobs(
    git: &Repository,
    old: Option<&git2::Tree<'_>>,
    new: &git2::Tree<'_>,
    prefix: &mut Vec<u8>,
    written: &mut dyn FnMut(&[u8], Oid),
) -> Result<(), git2::Error> {
    for entry in new {
        let before = old.and_then(|old| old.get_name_bytes(entry.name_bytes()));
        if before.as_ref().is_some_and(|before| before.id() == entry.id()) {
            continue;
        }
        let length = prefix.len();
        prefix.extend_from_slice(entry.name_bytes());
        match entry.kind() {
            Some(ObjectType::Blob) => written(prefix, entry.id()),
            Some(ObjectType::Tree) => {
                let subtree = git.find_tree(entry.id())?;
                let old_subtree = before
                    .filter(|before| before.kind() == Some(ObjectType::Tree))
                    .map(|before| git.find_tree(before.id()))
                    .transpose()?;
                prefix.push(b'/');
                changed_blobs(git, old_subtree.as_ref(), &subtree, prefix, written)?;
            }
            _ => {}
        }
        prefix.truncate(length);
    }
    Ok(())
}

/// The tree of `path` (`"."` for the root) at `commit`, or `None` when the commit
/// has no folder there.
fn folder_at<'repo>(
    git: &'repo Repository,
    commit: &git2::Commit<'repo>,
    path: &str,
) -> Result<Option<git2::Tree<'repo>>, git2::Error> {
    let root = commit.tree()?;
    if path == "." {
        return Ok(Some(root));
    }
    match root.get_path(Path::new(path)) {
        Ok(entry) if entry.kind() == Some(ObjectType::Tree) => git.find_tree(entry.id()).map(Some),
        Ok(_) => Ok(None),
        Err(error) if error.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Blobs up to this size are handed to the export's writer thread.
const HANDED_OVER: usize = 1024 * 1024;

fn export_error(path: &Path, source: std::io::Error) -> MirrorError {
    MirrorError::Export {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes one file or symlink; its folder exists (the walk made it first).
fn write_entry(target: &Path, content: &[u8], mode: i32) -> std::io::Result<()> {
    if mode == 0o120_000 {
        let link = std::str::from_utf8(content).map_err(std::io::Error::other)?;
        return std::os::unix::fs::symlink(link, target);
    }
    let mut file = File::create(target)?;
    file.write_all(content)?;
    if mode == 0o100_755 {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
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

/// Loads the system's CA bundle into libgit2 for https remotes, once: berth
/// starts libgit2 without it ([`ffi::start_without_ca_bundle`]).
/// `SSL_CERT_FILE` names it, or it is where OpenSSL keeps it on this system.
/// An `http://` remote that redirects to `https://` loads it when its first
/// attempt meets the certificate (see [`Mirror::fetch`]).
fn load_ca_bundle() {
    ffi::load_ca_bundle_once(|| {
        std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .or_else(|| openssl_probe::probe().cert_file)
    });
}

fn ca_bundle_loaded() -> bool {
    ffi::ca_bundle_loaded()
}

/// How long a server may stay silent before a fetch's attempt fails (and is
/// retried): 600 s, or `BERTH_GIT_TIMEOUT` seconds. Without a limit, a server
/// that accepts and never answers would hold a nightly run forever; git itself
/// has none. The limit is long because a server may say nothing while it packs
/// a large repo: behind a proxy that buffers whole responses (lighttpd's
/// default), the stack's server sent a 1 GB repo's first byte after 2 minutes.
fn silence() -> Duration {
    let seconds = std::env::var("BERTH_GIT_TIMEOUT")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .unwrap_or(600);
    Duration::from_secs(seconds)
}

/// How long a connection may take to open (or less, if the silence allowed is).
fn connect_limit() -> Duration {
    silence().min(Duration::from_secs(60))
}

/// Sets libgit2's limits on a server's silence and on opening a connection,
/// once, before the first fetch.
fn limit_silence() {
    ffi::limit_silence_once(connect_limit(), silence());
}

/// Where the mirror of repo `name` lives.
fn mirror_path(mirrors_dir: &Path, name: &str) -> PathBuf {
    mirrors_dir.join(format!("{name}.git"))
}

/// Removes whatever is at `path` and creates an empty mirror of `url` there.
fn recreate(path: &Path, url: &str) -> Result<Repository, String> {
    if path.exists() {
        std::fs::remove_dir_all(path)
            .map_err(|error| format!("cannot remove {}: {error}", path.display()))?;
    }
    let create = || -> Result<Repository, git2::Error> {
        let git = Repository::init_bare(path)?;
        crate::git::pack_index::install(&git)?;
        git.remote_with_fetch("origin", url, "+refs/heads/*:refs/heads/*")?;
        git.config()?.set_str("remote.origin.tagopt", "--tags")?;
        Ok(git)
    };
    create().map_err(|error| format!("cannot create {}: {}", path.display(), error.message()))
}

/// Opens the mirror and checks that its refs point at readable objects.
fn open_checked(path: &Path) -> Result<Repository, String> {
    let git = Repository::open_bare(path).map_err(|error| error.message().to_string())?;
    // A mirror whose first fetch failed is still empty: its next fetch is a first one too.
    crate::git::pack_index::install(&git).map_err(|error| error.message().to_string())?;
    {
        let references = git.references().map_err(|error| error.message().to_string())?;
        for reference in references {
            let reference = reference.map_err(|error| error.message().to_string())?;
            if let Some(target) = reference.target() {
                git.find_object(target, None).map_err(|error| {
                    format!(
                        "{} points at an unreadable object: {}",
                        reference.name().unwrap_or("?"),
                        error.message()
                    )
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

fn is_transient(error: &git2::Error) -> bool {
    matches!(
        error.class(),
        git2::ErrorClass::Net | git2::ErrorClass::Os | git2::ErrorClass::Http | git2::ErrorClass::Ssl
    ) && error.code() != git2::ErrorCode::Auth
        // A certificate no CA bundle trusts stays untrusted (libgit2 does not
        // always pass GIT_ECERTIFICATE up from its TLS stream).
        && error.code() != git2::ErrorCode::Certificate
        && !(error.class() == git2::ErrorClass::Ssl && error.message().contains("certificate"))
        && !refused_by_server(error.message())
        // The server answered (git daemon: no such repository, access denied).
        && !error.message().starts_with("remote error:")
        // A redirect to another host: the next attempt meets the same one.
        && !is_refused_redirect(error.message())
}

/// libgit2's refusal of a redirect (to another host, or from https to http).
fn is_refused_redirect(message: &str) -> bool {
    message.starts_with("cannot redirect from ")
}

/// The progress line of a fetch. libgit2's indexer counts objects as they
/// arrive; a new mirror's first pack goes to [`crate::git::pack_index`], which knows
/// only the total until the pack is complete, so its line counts bytes.
fn transfer_line(total: usize, received: usize, indexed: usize, bytes: usize) -> String {
    let mebibytes = bytes / 1_048_576;
    match (total, received) {
        (0, _) => format!("receiving, {mebibytes} MiB"),
        (total, 0) => format!("receiving {total} objects, {mebibytes} MiB"),
        (total, received) => {
            format!("receiving objects {received}/{total}, {mebibytes} MiB; indexed {indexed}")
        }
    }
}

/// Whether an HTTP error says the server refused us (401, 403, 404), which no
/// retry changes. Only the status code counts, not a port or path in the message
/// that happens to hold the same digits.
fn refused_by_server(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.match_indices("status code: ").any(|(at, found)| {
        let code = &lower[at + found.len()..];
        ["401", "403", "404"]
            .iter()
            .any(|refused| code.starts_with(refused) && !code[3..].starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// A failed fetch's message with what to do about it: libgit2 says neither why
/// it refused a redirect nor how long it waited, and libssh2 says "Unsupported
/// private key format" for a wrong passphrase too.
fn with_hint(message: &str, repo: &Repo) -> String {
    if is_refused_redirect(message) {
        return format!(
            "{message} (berth follows a redirect on the repo's host only, where its token may go, and never from https to http: \
             write the URL the server redirects to in [[repo]])"
        );
    }
    if message.ends_with("socket: timed out") {
        return format!(
            "{message}: the server sent nothing for {} s (BERTH_GIT_TIMEOUT sets how long to wait)",
            silence().as_secs()
        );
    }
    if message.starts_with("failed to connect to ") && message.ends_with("Operation timed out") {
        return format!(
            "{message}: no connection within {} s (BERTH_GIT_TIMEOUT sets how long to wait, up to 60 s)",
            connect_limit().as_secs()
        );
    }
    if repo.ssh_key.is_none() || !message.contains("private key") {
        return message.to_string();
    }
    match &repo.ssh_key_passphrase_env {
        Some(name) => format!("{message} (is the passphrase in {name} the key's?)"),
        None => {
            format!("{message} (if the key has a passphrase, name its variable in ssh_key_passphrase_env)")
        }
    }
}

/// Removes the token and the key's passphrase (if any) from a message, so no
/// secret reaches an error.
fn redact(message: &str, repo: &Repo) -> String {
    let mut message = message.to_string();
    for name in [&repo.token_env, &repo.ssh_key_passphrase_env]
        .into_iter()
        .flatten()
    {
        if let Ok(secret) = std::env::var(name)
            && !secret.is_empty()
        {
            message = message.replace(&secret, "***");
        }
    }
    message
}

/// Takes `<name>.lock` with a bounded wait; the file says who holds it.
fn lock(dir: &Path, name: &str) -> Result<File, MirrorError> {
    let path = dir.join(format!("{name}.lock"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|error| MirrorError::Local {
            repo: name.to_string(),
            message: format!("cannot open {}: {error}", path.display()),
        })?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if started.elapsed() >= LOCK_WAIT {
                    let mut holder = String::new();
                    let _ = File::open(&path).and_then(|mut f| f.read_to_string(&mut holder));
                    let holder = if holder.trim().is_empty() {
                        "another process".to_string()
                    } else {
                        holder.trim().to_string()
                    };
                    return Err(MirrorError::Locked {
                        repo: name.to_string(),
                        holder,
                        waited: started.elapsed(),
                        path,
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(MirrorError::Local {
                    repo: name.to_string(),
                    message: format!("cannot lock {}: {error}", path.display()),
                });
            }
        }
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "berth pid {} on {}", std::process::id(), hostname());
    Ok(file)
}

/// "1 time", "3 times".
fn times(count: u32) -> String {
    if count == 1 {
        "1 time".into()
    } else {
        format!("{count} times")
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "this machine".into(), |name| name.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_counts_objects_when_they_are_counted_and_bytes_always() {
        assert_eq!(transfer_line(0, 0, 0, 10), "receiving, 0 MiB");
        assert_eq!(
            transfer_line(59_379, 0, 0, 3 * 1_048_576),
            "receiving 59379 objects, 3 MiB"
        );
        assert_eq!(
            transfer_line(100, 40, 30, 2_097_152),
            "receiving objects 40/100, 2 MiB; indexed 30"
        );
    }

    #[test]
    fn only_a_refusing_status_code_stops_the_retries() {
        // A 503 from a server whose port holds "401" was taken for a refusal.
        assert!(!refused_by_server(
            "unexpected http status code: 503 (from GET http://127.0.0.1:40155/git/x.git/info/refs)"
        ));
        assert!(refused_by_server(
            "unexpected http status code: 404 (from GET http://h/x)"
        ));
        assert!(refused_by_server("Unexpected HTTP status code: 403"));
        assert!(refused_by_server("request failed with status code: 401"));
        assert!(!refused_by_server("unexpected http status code: 4040"));
        assert!(!refused_by_server(
            "cannot connect to 127.0.0.1:4011: Connection refused"
        ));
    }

    #[test]
    fn a_refused_redirect_and_a_silent_server_say_what_to_do() {
        let repo = Repo {
            name: "site".into(),
            url: "http://127.0.0.1/git/site.git".into(),
            branch: "main".into(),
            token_env: None,
            ssh_key: None,
            ssh_key_passphrase_env: None,
            known_hosts: None,
        };
        let refused = git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Net,
            "cannot redirect from '127.0.0.1' to 'localhost'",
        );
        assert!(!is_transient(&refused), "the same redirect comes back");
        assert!(
            with_hint(refused.message(), &repo)
                .ends_with("write the URL the server redirects to in [[repo]])"),
            "{}",
            with_hint(refused.message(), &repo)
        );
        let silent = git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Net,
            "could not read from socket: timed out",
        );
        assert!(is_transient(&silent));
        assert!(
            with_hint(silent.message(), &repo).contains(": the server sent nothing for "),
            "{}",
            with_hint(silent.message(), &repo)
        );
        assert_eq!(with_hint("early EOF", &repo), "early EOF");
    }

    #[test]
    fn gitmodules_and_relative_urls() {
        let text = b"[submodule \"themes/ananke\"]\n\tpath = themes/ananke\n\turl = ../ananke.git\n[submodule \"x\"]\n\tpath = x\n\turl = https://example.com/x.git\n";
        assert_eq!(
            parse_gitmodules(text).unwrap(),
            vec![
                ("themes/ananke".to_string(), "../ananke.git".to_string()),
                ("x".to_string(), "https://example.com/x.git".to_string())
            ]
        );
        assert_eq!(
            resolve_url("http://127.0.0.1:8480/git/site.git", "../ananke.git"),
            "http://127.0.0.1:8480/git/ananke.git"
        );
        assert_eq!(
            resolve_url("http://h/git/site.git/", "./sub.git"),
            "http://h/git/site.git/sub.git"
        );
        assert_eq!(
            resolve_url("http://h/a.git", "https://x/y.git"),
            "https://x/y.git"
        );
    }

    fn modules(text: &str) -> Vec<(String, String)> {
        parse_gitmodules(text.as_bytes()).unwrap()
    }

    fn pair(path: &str, url: &str) -> (String, String) {
        (path.to_string(), url.to_string())
    }

    #[test]
    fn gitmodules_values_are_unquoted_and_unescaped() {
        let text = "[submodule \"theme\"]\n\tpath = \"themes/my theme\"\n\turl = \"https://example.com/a;b#c.git\"\n\
                    [submodule \"docs\"]\n\tpath = docs/\n\turl = \"../say \\\"hi\\\".git\"\n";
        assert_eq!(
            modules(text),
            [
                pair("themes/my theme", "https://example.com/a;b#c.git"),
                pair("docs", "../say \"hi\".git")
            ]
        );
    }

    #[test]
    fn gitmodules_comments_are_not_values() {
        let text = "# a comment = not a key\n; url = https://wrong.example/\n\
                    [submodule \"theme\"] # trailing comment\n\
                    \t; path = commented/out\n\tpath = themes/ananke ; the theme\n\
                    \turl = ../ananke.git # relative\n\t# url = https://wrong.example/x.git\n";
        assert_eq!(modules(text), [pair("themes/ananke", "../ananke.git")]);
    }

    #[test]
    fn gitmodules_subsection_names_may_hold_quotes_and_one_name_is_one_submodule() {
        let text = "[submodule \"we\\\"ird \\\\ name\"]\n\tpath = a\n\turl = ../a.git\n\
                    [Submodule \"b\"]\n\tPath = b\n[submodule \"b\"]\n\tURL = ../old.git\n\turl = ../b.git\n";
        assert_eq!(modules(text), [pair("a", "../a.git"), pair("b", "../b.git")]);
    }

    #[test]
    fn gitmodules_without_a_url_or_a_name_are_left_out() {
        let text = "[submodule \"no-url\"]\n\tpath = vendor/x\n[submodule]\n\tpath = y\n\turl = ../y.git\n\
                    [core]\n\tpath = z\n\turl = ../z.git\n[submodule \"ok\"]\n\tpath = ok\n\turl = ../ok.git\n";
        assert_eq!(modules(text), [pair("ok", "../ok.git")]);
        assert!(parse_gitmodules(b"[submodule \"broken\"\n\tpath = x\n").is_err());
    }

    /// Commits `files` in the working tree of `repo` at `time`.
    fn commit_files(repo: &Repository, files: &[(&str, &str)], time: i64) -> Oid {
        let root = repo.workdir().unwrap();
        for (path, content) in files {
            let target = root.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, content).unwrap();
        }
        let mut index = repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = git2::Signature::new("T", "t@example.test", &git2::Time::new(time, 0)).unwrap();
        let parent = repo.head().ok().map(|head| head.peel_to_commit().unwrap());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repo.commit(Some("HEAD"), &signature, &signature, "m", &tree, &parents)
            .unwrap()
    }

    /// The walk's result by blob, as the build uses it.
    fn by_blob(repo: &Repository, start: Oid, path: &str, known: Option<&TimesCache>) -> HashMap<Oid, i64> {
        newest_by_blob(content_times(repo, start, path, known).unwrap())
    }

    #[test]
    fn content_times_give_each_blob_the_commit_that_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let blob = |content: &str| Oid::hash_object(ObjectType::Blob, content.as_bytes()).unwrap();
        commit_files(
            &repo,
            &[("site/a.css", "a"), ("site/b.html", "b1"), ("other/x", "x")],
            1000,
        );
        commit_files(&repo, &[("site/b.html", "b2")], 2000);
        let third = commit_files(&repo, &[("other/x", "y")], 3000);
        let times = by_blob(&repo, third, "site", None);
        assert_eq!(times, HashMap::from([(blob("a"), 1000), (blob("b2"), 2000)]));

        // The same content at a new path: its newest writing counts.
        let fourth = commit_files(&repo, &[("site/copy/c.css", "a")], 4000);
        let times = by_blob(&repo, fourth, "site", None);
        assert_eq!(times, HashMap::from([(blob("a"), 4000), (blob("b2"), 2000)]));
        // The whole repo, too.
        assert_eq!(by_blob(&repo, fourth, ".", None)[&blob("y")], 3000);
    }

    #[test]
    fn a_kept_walk_is_taken_up_at_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let blob = |content: &str| Oid::hash_object(ObjectType::Blob, content.as_bytes()).unwrap();
        commit_files(&repo, &[("site/a.css", "a"), ("site/b.html", "b1")], 1000);
        let second = commit_files(&repo, &[("site/b.html", "b2")], 2000);
        let third = commit_files(&repo, &[("site/c.html", "c")], 3000);
        let full = by_blob(&repo, third, "site", None);
        // The kept times at the second commit are the ones the walk would find.
        let kept = |times: &[(&str, i64)]| TimesCache {
            commit: second.to_string(),
            path: "site".into(),
            times: times
                .iter()
                .map(|(file, time)| ((*file).to_string(), *time))
                .collect(),
        };
        let known = kept(&[("a.css", 1000), ("b.html", 2000)]);
        assert_eq!(by_blob(&repo, third, "site", Some(&known)), full);
        // The walk stops there: what is kept is what counts (here made up, to see it used).
        let made_up = kept(&[("a.css", 42), ("b.html", 43)]);
        assert_eq!(
            by_blob(&repo, third, "site", Some(&made_up)),
            HashMap::from([(blob("a"), 42), (blob("b2"), 43), (blob("c"), 3000)])
        );
        // Kept times that miss a file are not trusted: the walk goes on to the start.
        let partial = kept(&[("b.html", 43)]);
        assert_eq!(by_blob(&repo, third, "site", Some(&partial)), full);
        // Kept times of a commit that is not on the line (a force-push) are never reached.
        let elsewhere = TimesCache {
            commit: "0123456789012345678901234567890123456789".into(),
            ..made_up
        };
        assert_eq!(by_blob(&repo, third, "site", Some(&elsewhere)), full);
    }
}
