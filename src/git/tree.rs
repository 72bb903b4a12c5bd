//! A site folder's files at a commit, read from the mirror: its tree id (the
//! input of the source digest), its files with their modes, and their blobs.

use std::path::Path;

use git2::{ObjectType, Oid, Repository};

pub use crate::files::{TreeFile, TreeFileKind};
use crate::git::{Mirror, MirrorError};

/// Blobs up to this size are read into memory for a context written from the mirror.
pub(super) const LARGEST_IN_MEMORY: u64 = 32 * 1024 * 1024;

/// The tree of `path` (`"."` for the root) at `commit`, or `None` when the commit
/// has no folder there.
pub(super) fn folder_at<'repo>(
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

impl Mirror {
    /// The Git tree id of `path` at `commit` (`"."` is the root).
    pub fn tree_id(&self, commit: &str, path: &str) -> Result<String, MirrorError> {
        Ok(self.subtree(commit, path)?.id().to_string())
    }

    pub(super) fn subtree(&self, commit: &str, path: &str) -> Result<git2::Tree<'_>, MirrorError> {
        let commit_object = self
            .git
            .find_commit(Oid::from_str(commit).map_err(|e| self.local(e))?)
            .map_err(|e| self.local(e))?;
        folder_at(&self.git, &commit_object, path)
            .map_err(|e| self.local(e))?
            .ok_or_else(|| MirrorError::NoPath {
                repo: self.repo.name.clone(),
                path: path.to_string(),
                commit: commit.to_string(),
            })
    }

    /// The entries of `path` at `commit` in Git's order, for a build context written
    /// straight from the mirror, or `None` when the folder holds a submodule or a
    /// file too large to read into memory (then `export` writes it to disk).
    pub fn files(&self, commit: &str, path: &str) -> Result<Option<Vec<TreeFile>>, MirrorError> {
        let tree = self.subtree(commit, path)?;
        let odb = self.git.odb().map_err(|e| self.local(e))?;
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
            return Err(self.local(error));
        }
        if !usable {
            return Ok(None);
        }
        walked.map_err(|e| self.local(e))?;
        Ok(Some(files))
    }

    /// The content of a blob.
    pub fn blob(&self, id: Oid) -> Result<Vec<u8>, MirrorError> {
        let blob = self.git.find_blob(id).map_err(|e| self.local(e))?;
        Ok(blob.content().to_vec())
    }
}
