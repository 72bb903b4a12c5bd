//! The entries of a build context, collected from a folder or from the
//! mirror's tree: sorted, `.dockerignore` applied (exceptions inside
//! excluded folders included, as Docker does), symlinks that leave the site
//! refused.

use std::path::{Path, PathBuf};

use crate::files::{TreeFile, TreeFileKind};
use crate::image::dockerignore::normalise;
use crate::image::{BuildError, Content, FileTimes, Ignore, ReadBlob};

/// One entry of a site's content, in the order it goes into a tar.
pub(crate) struct Item {
    /// The file on disk, or (for [`Content::Tree`]) its relative path.
    pub(crate) path: PathBuf,
    /// Its blob, for [`Content::Tree`].
    pub(crate) blob: Option<git2::Oid>,
    /// Below the content root, `/`-separated.
    pub(crate) relative: String,
    pub(crate) kind: ItemKind,
    pub(crate) time: u64,
}

pub(crate) enum ItemKind {
    Directory,
    File { executable: bool, length: u64 },
    Symlink(PathBuf),
}

impl Item {
    pub(crate) fn is_dir(&self) -> bool {
        matches!(self.kind, ItemKind::Directory)
    }
}

/// The newest time of the files and links among `items`, 0 when there are none.
pub(crate) fn newest<'a>(items: impl Iterator<Item = &'a Item>) -> u64 {
    items
        .filter(|item| !item.is_dir())
        .map(|item| item.time)
        .max()
        .unwrap_or(0)
}

/// Every entry below `root`, sorted by name, with its time: `.dockerignore` and
/// `.git` left out (except the names in `always`), symlinks that leave `root` refused.
pub(crate) fn collect(
    content: Content<'_>,
    always: &[&str],
    times: &FileTimes,
) -> Result<Vec<Item>, BuildError> {
    match content {
        Content::Folder(root) => collect_folder(root, always, times),
        Content::Tree { files, read } => collect_tree(files, read, always, times),
    }
}

/// Whether `relative` goes into the context: nothing of `.git` (not even a
/// `!` line takes a file of it back), not `.dockerignore` and not what it
/// excludes, except the names in `always` (the Dockerfile and `.dockerignore`
/// of a site's own context go to the Engine, as docker sends them, which
/// applies `.dockerignore` to `COPY`).
pub(crate) fn kept(relative: &str, always: &[&str], ignore: &Ignore) -> bool {
    let in_git = relative == ".git" || relative.starts_with(".git/");
    always.contains(&relative) || (relative != ".dockerignore" && !in_git && !ignore.excludes(relative))
}

/// Whether a symlink at `link` (relative to the content root) pointing to
/// `target` leaves the content root, judged on the names alone.
pub(crate) fn leaves_root(link: &Path, target: &Path) -> bool {
    let root = Path::new("/content-root");
    let folder = link.parent().unwrap_or(Path::new(""));
    target.is_absolute() || !normalise(&root.join(folder).join(target)).starts_with(root)
}

/// Excluded folders walked for a `!` line below them (Docker walks them too):
/// each goes into the context only when something below it does, so the
/// taken-back file keeps its folders.
#[derive(Default)]
pub(crate) struct ExcludedFolders {
    /// The excluded folders above the walk's position, outermost first.
    pub(crate) open: Vec<Item>,
}

impl ExcludedFolders {
    /// The walk enters the excluded folder `folder`.
    fn walk_into(&mut self, folder: Item) {
        self.close_above(&folder.relative);
        self.open.push(folder);
    }

    /// `relative` goes into the context: first the excluded folders above it.
    fn holding(&mut self, relative: &str, items: &mut Vec<Item>) {
        self.close_above(relative);
        items.append(&mut self.open);
    }

    /// Forgets the folders the walk has left (it visits a folder's contents
    /// right after the folder, sorted, so it never comes back to one).
    fn close_above(&mut self, relative: &str) {
        self.open
            .retain(|folder| relative.starts_with(&format!("{}/", folder.relative)));
    }
}

/// [`collect`] for a folder read from the mirror, with the same rules.
pub(crate) fn collect_tree(
    files: &[TreeFile],
    read: &ReadBlob,
    always: &[&str],
    times: &FileTimes,
) -> Result<Vec<Item>, BuildError> {
    let ignore = match files.iter().find(|file| file.relative == ".dockerignore") {
        Some(TreeFile {
            kind: TreeFileKind::File { blob, .. },
            ..
        }) => Ignore::parse(&String::from_utf8_lossy(
            &read(*blob).map_err(|source| BuildError::context(".dockerignore", source))?,
        ))?,
        _ => Ignore::default(),
    };
    let mut left_out: Vec<String> = Vec::new();
    let mut excluded_folders = ExcludedFolders::default();
    let mut items = Vec::new();
    for file in files {
        let relative = file.relative.as_str();
        if left_out
            .iter()
            .any(|folder| relative.starts_with(folder.as_str()))
        {
            continue;
        }
        if !kept(relative, always, &ignore) {
            if matches!(file.kind, TreeFileKind::Folder) {
                if ignore.has_exceptions() {
                    excluded_folders.walk_into(Item {
                        path: PathBuf::from(relative),
                        blob: None,
                        relative: relative.to_string(),
                        kind: ItemKind::Directory,
                        time: 0,
                    });
                } else {
                    left_out.push(format!("{relative}/"));
                }
            }
            continue;
        }
        excluded_folders.holding(relative, &mut items);
        let (kind, time, blob) = match &file.kind {
            TreeFileKind::Folder => (ItemKind::Directory, 0, None),
            TreeFileKind::File {
                blob,
                executable,
                size,
            } => (
                ItemKind::File {
                    executable: *executable,
                    length: *size,
                },
                times.of_blob(relative, *blob),
                Some(*blob),
            ),
            TreeFileKind::Symlink { blob, target } => {
                let target = PathBuf::from(String::from_utf8_lossy(target).into_owned());
                if leaves_root(Path::new(relative), &target) {
                    return Err(BuildError::SymlinkEscape {
                        link: relative.to_string(),
                        target: target.to_string_lossy().into_owned(),
                    });
                }
                (ItemKind::Symlink(target), times.of_blob(relative, *blob), None)
            }
        };
        items.push(Item {
            path: PathBuf::from(relative),
            blob,
            relative: relative.to_string(),
            kind,
            time,
        });
    }
    Ok(items)
}

/// [`collect`] for a folder on disk.
pub(crate) fn collect_folder(
    root: &Path,
    always: &[&str],
    times: &FileTimes,
) -> Result<Vec<Item>, BuildError> {
    let canonical_root = root.canonicalize().map_err(|e| BuildError::context(root, e))?;
    let ignore = Ignore::read(&root.join(".dockerignore"))?;
    let mut walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    let mut excluded_folders = ExcludedFolders::default();
    let mut items = Vec::new();
    while let Some(entry) = walker.next() {
        let entry = entry.map_err(|e| {
            let path = e.path().map_or_else(|| root.to_path_buf(), Path::to_path_buf);
            BuildError::context(&path, std::io::Error::from(e))
        })?;
        let relative = entry
            .path()
            .strip_prefix(root)
            .expect("below root")
            .to_string_lossy()
            .into_owned();
        if !kept(&relative, always, &ignore) {
            if !entry.file_type().is_dir() {
                continue;
            }
            if !ignore.has_exceptions() {
                // Nothing below an excluded folder can come back: not walked.
                walker.skip_current_dir();
                continue;
            }
            // Walked only for a `!` line that may take back something below it.
            excluded_folders.walk_into(Item {
                path: entry.into_path(),
                blob: None,
                relative,
                kind: ItemKind::Directory,
                time: 0,
            });
            continue;
        }
        excluded_folders.holding(&relative, &mut items);
        let Some((kind, time)) = folder_entry(&entry, &relative, &canonical_root, times)? else {
            continue;
        };
        items.push(Item {
            path: entry.into_path(),
            blob: None,
            relative,
            kind,
            time,
        });
    }
    Ok(items)
}

/// A folder's entry as the context holds it: its kind and time; `None` for
/// what a context cannot hold (sockets, devices). A symlink that leaves the
/// site is refused.
fn folder_entry(
    entry: &walkdir::DirEntry,
    relative: &str,
    canonical_root: &Path,
    times: &FileTimes,
) -> Result<Option<(ItemKind, u64)>, BuildError> {
    let file_type = entry.file_type();
    Ok(Some(if file_type.is_symlink() {
        let target = std::fs::read_link(entry.path()).map_err(|e| BuildError::context(entry.path(), e))?;
        // Inside by its names, or (a link through another link) once resolved.
        let resolves_inside = || {
            entry
                .path()
                .parent()
                .expect("has parent")
                .join(&target)
                .canonicalize()
                .is_ok_and(|c| c.starts_with(canonical_root))
        };
        if target.is_absolute() || (leaves_root(Path::new(&relative), &target) && !resolves_inside()) {
            return Err(BuildError::SymlinkEscape {
                link: relative.to_string(),
                target: target.to_string_lossy().into_owned(),
            });
        }
        let bytes = target.as_os_str().as_encoded_bytes();
        let time = times
            .of_content(relative, bytes.len() as u64, || Ok(bytes))
            .map_err(|e| BuildError::context(entry.path(), e))?;
        (ItemKind::Symlink(target), time)
    } else if file_type.is_dir() {
        (ItemKind::Directory, 0)
    } else if file_type.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let metadata = entry
            .metadata()
            .map_err(|e| BuildError::context(entry.path(), std::io::Error::other(e.to_string())))?;
        // Opened only when its time needs its content (its blob id is not known).
        let time = times
            .of_content(relative, metadata.len(), || std::fs::File::open(entry.path()))
            .map_err(|e| BuildError::context(entry.path(), e))?;
        let kind = ItemKind::File {
            executable: metadata.permissions().mode() & 0o111 != 0,
            length: metadata.len(),
        };
        (kind, time)
    } else {
        return Ok(None);
    }))
}

#[cfg(test)]
mod tests {
    use super::kept;
    use crate::image::dockerignore::Ignore;

    #[test]
    fn nothing_of_git_is_kept_even_when_a_later_line_takes_files_back() {
        let ignore = Ignore::parse("drafts\n!drafts/keep.html\n!.git/config\n").unwrap();
        assert!(!kept(".git", &[], &ignore));
        assert!(!kept(".git/config", &[], &ignore));
        assert!(!kept(".git/objects/ab/cdef", &[], &ignore));
        assert!(kept("drafts/keep.html", &[], &ignore));
        assert!(
            kept(".github/workflow.yml", &[], &ignore),
            "only .git itself is left out"
        );
        assert!(!kept("drafts/other.html", &[], &ignore));
    }
}
