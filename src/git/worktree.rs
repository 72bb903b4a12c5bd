//! A developer's working tree, read as it is on disk: a site's folder copied
//! with its uncommitted and untracked files, and without the files Git
//! ignores or `.git` (`berth build` and `berth preview`).

use std::path::{Path, PathBuf};

/// What can go wrong reading a working tree.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    /// No Git repo holds the folder.
    #[error("{} is not inside a Git working tree: {}", .path.display(), .error.message())]
    NotInRepo { path: PathBuf, error: git2::Error },
    /// The repo has no working tree.
    #[error("{} is a bare repo; give a working tree", .0.display())]
    Bare(PathBuf),
    /// The site's folder is not in the working tree.
    #[error("the site's folder {} does not exist in the working tree", .0.display())]
    NoSiteFolder(PathBuf),
    /// A file or folder could not be walked, read or written.
    #[error("cannot copy {}", .path.display())]
    Copy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A working tree's copy of a site's folder.
pub struct Copied {
    /// The HEAD commit (40 zeros when the repo has none yet).
    pub commit: String,
    /// Files copied (symlinks and folders not counted).
    pub files: usize,
}

/// Copies the folder `site_path` of the working tree around `source` into
/// `destination`, as it is on disk.
pub fn copy_site(source: &Path, site_path: &str, destination: &Path) -> Result<Copied, WorktreeError> {
    let repo = git2::Repository::discover(source).map_err(|error| WorktreeError::NotInRepo {
        path: source.to_path_buf(),
        error,
    })?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| WorktreeError::Bare(source.to_path_buf()))?
        .to_path_buf();
    let commit = repo
        .head()
        .ok()
        .and_then(|head| head.target())
        .map_or_else(|| "0".repeat(40), |oid| oid.to_string());
    let root = if site_path == "." {
        workdir.clone()
    } else {
        workdir.join(site_path)
    };
    if !root.is_dir() {
        return Err(WorktreeError::NoSiteFolder(root));
    }
    let copy_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WorktreeError::Copy { path, source }
    };
    std::fs::create_dir_all(destination).map_err(copy_error(destination))?;
    let mut files = 0;
    let walker = walkdir::WalkDir::new(&root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            let relative = entry.path().strip_prefix(&workdir).unwrap_or(entry.path());
            entry.file_name() != ".git" && !repo.is_path_ignored(relative).unwrap_or(false)
        });
    for entry in walker {
        let entry = entry.map_err(|error| {
            let path = error.path().unwrap_or(&root).to_path_buf();
            WorktreeError::Copy {
                path,
                source: error.into(),
            }
        })?;
        let relative = entry.path().strip_prefix(&root).expect("below root");
        let target = destination.join(relative);
        if entry.file_type().is_symlink() {
            let link = std::fs::read_link(entry.path()).map_err(copy_error(entry.path()))?;
            std::os::unix::fs::symlink(link, &target).map_err(copy_error(entry.path()))?;
        } else if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(copy_error(entry.path()))?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(copy_error(entry.path()))?;
            files += 1;
        }
    }
    Ok(Copied { commit, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_is_copied_as_on_disk_without_ignored_files_or_git() {
        let work = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(work.path()).unwrap();
        std::fs::create_dir_all(work.path().join("site/sub")).unwrap();
        std::fs::write(work.path().join(".gitignore"), "site/public/\n").unwrap();
        std::fs::write(work.path().join("site/index.html"), "uncommitted").unwrap();
        std::fs::write(work.path().join("site/sub/page.html"), "untracked").unwrap();
        std::fs::create_dir_all(work.path().join("site/public")).unwrap();
        std::fs::write(work.path().join("site/public/out.html"), "ignored").unwrap();
        drop(repo);
        let destination = tempfile::tempdir().unwrap();
        let copied = copy_site(work.path(), "site", &destination.path().join("copy")).unwrap();
        assert_eq!(copied.commit, "0".repeat(40), "no commit yet");
        assert_eq!(copied.files, 2);
        let copy = destination.path().join("copy");
        assert_eq!(
            std::fs::read_to_string(copy.join("index.html")).unwrap(),
            "uncommitted"
        );
        assert!(copy.join("sub/page.html").exists());
        assert!(!copy.join("public").exists(), "ignored by Git");
        assert!(matches!(
            copy_site(work.path(), "nowhere", &destination.path().join("other")),
            Err(WorktreeError::NoSiteFolder(_))
        ));
        let outside = tempfile::tempdir().unwrap();
        assert!(matches!(
            copy_site(outside.path(), ".", &destination.path().join("third")),
            Err(WorktreeError::NotInRepo { .. })
        ));
    }
}
