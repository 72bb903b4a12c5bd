//! Each blob's time: the time of the newest commit that wrote that content
//! into the folder, walked once and kept (`TimesCache`) so the next walk
//! starts where this one ended.

use std::collections::HashMap;
use std::path::Path;

use git2::{ObjectType, Oid, Repository};
use sha2::Digest as _;

use crate::git::tree::folder_at;
use crate::git::{Mirror, MirrorError};

/// The file times of a folder at one commit, kept for the next walk.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct TimesCache {
    commit: String,
    path: String,
    /// Path below the folder to the time of the commit that wrote its content.
    times: HashMap<String, i64>,
}

/// Each blob's time: the newest of the files that hold its content.
pub(super) fn newest_by_blob(by_path: HashMap<Vec<u8>, (Oid, i64)>) -> HashMap<Oid, i64> {
    let mut times = HashMap::new();
    for (blob, time) in by_path.into_values() {
        let entry = times.entry(blob).or_insert(time);
        *entry = (*entry).max(time);
    }
    times
}

/// Writes the cache (through a temporary file, so a crash leaves the old one or
/// none); folders with a path that is not UTF-8 are not cached.
pub(super) fn write_times_cache(
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
pub(super) fn content_times(
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
pub(super) fn changed_blobs(
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

impl Mirror {
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
        let start = Oid::from_str(commit).map_err(|e| self.local(e))?;
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
        let by_path = content_times(&self.git, start, path, known.as_ref()).map_err(|e| self.local(e))?;
        // A rebuild of the kept commit, answered from what was kept, has nothing new to keep.
        let unchanged = known
            .as_ref()
            .is_some_and(|known| known.commit == commit && known.times.len() == by_path.len());
        if !unchanged && let Err(error) = write_times_cache(&cache, commit, path, &by_path) {
            tracing::debug!("cannot keep the file times in {}: {error}", cache.display());
        }
        Ok(newest_by_blob(by_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
