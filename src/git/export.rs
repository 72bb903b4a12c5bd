//! A site folder written out from the mirror into a fresh folder (no
//! `.git`), its submodules included; or a checkout with history, for a
//! generator that reads `git log`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::{ObjectType, Oid};
use sha2::Digest as _;

use crate::config::Repo;
use crate::git::submodule::{parse_gitmodules, resolve_url};
use crate::git::{LocalProblem, Mirror, MirrorError};

/// Blobs up to this size are handed to the export's writer thread.
pub(super) const HANDED_OVER: usize = 1024 * 1024;

pub(super) fn export_error(path: &Path, source: std::io::Error) -> MirrorError {
    MirrorError::Export {
        path: path.to_path_buf(),
        error: source,
    }
}

/// The (path, url) of each submodule a repo's `.gitmodules` names, or why it names none.
type Gitmodules = Result<Vec<(String, String)>, SubmoduleProblem>;

/// Why a submodule cannot be exported, for [`crate::git::LocalProblem::Submodule`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmoduleProblem {
    /// The commit has no `.gitmodules`.
    #[error("no .gitmodules names it")]
    NoGitmodules,
    /// `.gitmodules` is not a git config file (shared by every submodule of the export).
    #[error(".gitmodules cannot be read: {0}")]
    Unreadable(Arc<gix_config::file::init::Error>),
    /// `.gitmodules` names no URL for the submodule's path.
    #[error(".gitmodules has no url for it")]
    NoUrl,
}

/// Writes one file or symlink; its folder exists (the walk made it first).
pub(super) fn write_entry(target: &Path, content: &[u8], mode: i32) -> std::io::Result<()> {
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

impl Mirror {
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
                        // In libgit2's words, as every mirror error is.
                        Err(error) => Err(std::io::Error::other(LocalProblem::Git(error))),
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
        walked.map_err(|error| self.local(error))?;
        if !submodules.is_empty() {
            let modules = self.gitmodules(commit)?;
            for (relative, oid) in submodules {
                count += self.export_submodule(&modules, path, &relative, oid, destination)?;
            }
        }
        Ok(count)
    }

    /// The (path, url) of each submodule in `.gitmodules` at `commit`, read once
    /// for all the submodules an export meets; `Err` says why it names none
    /// (each submodule's error gives it with the submodule's path).
    fn gitmodules(&self, commit: &str) -> Result<Gitmodules, MirrorError> {
        let root = self.subtree(commit, ".")?;
        let Ok(entry) = root.get_path(Path::new(".gitmodules")) else {
            return Ok(Err(SubmoduleProblem::NoGitmodules));
        };
        let blob = self.git.find_blob(entry.id()).map_err(|e| self.local(e))?;
        Ok(parse_gitmodules(blob.content()).map_err(|error| SubmoduleProblem::Unreadable(Arc::new(error))))
    }

    /// Exports a submodule (a theme, say) at the commit the parent records, from a
    /// mirror of its own, fetched only when it does not hold that commit yet; its
    /// URL comes from the parent's `.gitmodules` (`modules`, [`Mirror::gitmodules`]).
    fn export_submodule(
        &self,
        modules: &Gitmodules,
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
        let missing = |problem: SubmoduleProblem| MirrorError::Local {
            repo: self.repo.name.clone(),
            problem: LocalProblem::Submodule {
                path: full_path.clone(),
                problem,
            },
        };
        let modules = modules.as_ref().map_err(|problem| missing(problem.clone()))?;
        let url = modules
            .iter()
            .find(|(path, _)| path == &full_path)
            .map(|(_, url)| resolve_url(&self.repo.url, url))
            .ok_or_else(|| missing(SubmoduleProblem::NoUrl))?;
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
        let mut sub = Mirror::open(&self.mirrors_dir, &repo, &warn)?;
        if sub.git.find_commit(oid).is_err() {
            sub.fetch(&warn, &|_| {})?;
        }
        sub.export(&oid.to_string(), ".", &destination.join(relative))
    }

    /// A working checkout of `commit` with its history (a local clone of the
    /// mirror), for generators that read Git history. Returns the number of files.
    pub fn checkout(&self, commit: &str, destination: &Path) -> Result<usize, MirrorError> {
        let source = format!("file://{}", self.git.path().display());
        let clone = git2::build::RepoBuilder::new()
            .bare(false)
            .clone(&source, destination)
            .map_err(|e| self.local(e))?;
        let oid = Oid::from_str(commit).map_err(|e| self.local(e))?;
        clone.set_head_detached(oid).map_err(|e| self.local(e))?;
        clone
            .checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .map_err(|e| self.local(e))?;
        let files = walkdir::WalkDir::new(destination)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git")
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count();
        Ok(files)
    }
}
