//! Each file's time in the image: the time of the commit that wrote its
//! content, or the previous build's time for a generated file whose path and
//! content did not change, so unchanged pages keep their `Last-Modified`.

use std::collections::HashMap;

use sha2::Digest;

use crate::image::SiteContent;
use crate::image::content::DigestWriter;

/// The time each file of a site gets in its image.
///
/// A file whose content is a blob of the site's folder at the commit gets the time
/// of the commit that wrote that content (see `Mirror::content_times`), also when a
/// generator copied it to its output. Any other file (a generated page) keeps
/// the time it had in the previous build of the site when it has the same path
/// and content there ([`FileTimes::with_previous`]); a new or changed one gets
/// the commit time. So `Last-Modified` moves only for files that changed.
#[derive(Debug, Default, Clone)]
pub struct FileTimes {
    default: u64,
    /// Git blob id (SHA-1 of `blob <length>\0<content>`) to time.
    by_content: std::sync::Arc<HashMap<git2::Oid, u64>>,
    /// The previous build's files, by path below the content root.
    previous: FileIndex,
    /// Blob ids already known by path (the content digest's pass read them).
    known: HashMap<String, git2::Oid>,
}

/// A build's files by path below the content root: each one's blob id and time.
pub type FileIndex = HashMap<String, (git2::Oid, u64)>;

impl FileTimes {
    /// Every file gets `time`.
    pub fn uniform(time: u64) -> Self {
        Self {
            default: time,
            ..Self::default()
        }
    }

    /// Files whose blob is in `by_content` get its time (seconds), others `default`.
    pub fn new(default: u64, by_content: HashMap<git2::Oid, i64>) -> Self {
        let by_content = by_content
            .into_iter()
            .map(|(blob, time)| (blob, u64::try_from(time).unwrap_or(0)))
            .collect();
        Self {
            default,
            by_content: std::sync::Arc::new(by_content),
            ..Self::default()
        }
    }

    /// These times for one site whose previous build had the files `previous`;
    /// `content` (from [`crate::image::content_digest`]) gives the blob ids of this build's
    /// files, so they are not read again.
    #[must_use]
    pub fn with_previous(&self, previous: FileIndex, content: &SiteContent) -> Self {
        Self {
            previous,
            known: content.blobs.clone(),
            ..self.clone()
        }
    }

    /// The time of the file at `relative` whose content of `length` bytes is
    /// read from what `open` gives (a file, or a symlink's target, which Git
    /// stores as a blob). `open` is called only when the content must be read:
    /// not when every file gets one time, nor when its blob id is known.
    ///
    /// The blob id is hashed here with the `sha1` crate: it uses the CPU's SHA
    /// instructions, and hashed a 50 MB file in 112 ms against 225 ms for
    /// libgit2's collision-detecting `Oid::hash_file` (release build, this machine).
    pub(crate) fn of_content<R: std::io::Read>(
        &self,
        relative: &str,
        length: u64,
        open: impl FnOnce() -> std::io::Result<R>,
    ) -> std::io::Result<u64> {
        if self.by_content.is_empty() && self.previous.is_empty() {
            return Ok(self.default);
        }
        let blob = match self.known.get(relative) {
            Some(blob) => *blob,
            None => blob_id(length, open()?)?,
        };
        Ok(self.of_blob(relative, blob))
    }

    pub(crate) fn of_blob(&self, relative: &str, blob: git2::Oid) -> u64 {
        if let Some(time) = self.by_content.get(&blob) {
            return *time;
        }
        match self.previous.get(relative) {
            Some((previous, time)) if *previous == blob => *time,
            _ => self.default,
        }
    }

    /// This build's index: the time each file of `content` gets.
    pub fn index(&self, content: &SiteContent) -> FileIndex {
        content
            .blobs
            .iter()
            .map(|(relative, blob)| (relative.clone(), (*blob, self.of_blob(relative, *blob))))
            .collect()
    }
}

/// The Git blob id of content of `length` bytes read from `content`.
pub(crate) fn blob_id(length: u64, mut content: impl std::io::Read) -> std::io::Result<git2::Oid> {
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {length}\0").as_bytes());
    std::io::copy(&mut content, &mut DigestWriter(&mut hasher))?;
    git2::Oid::from_bytes(&hasher.finalize()).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// An opener that fails: the content must not be read.
    fn unread() -> std::io::Result<&'static [u8]> {
        Err(std::io::Error::other("opened a file whose content is not needed"))
    }

    #[test]
    fn a_files_content_is_opened_only_when_its_time_needs_it() {
        assert_eq!(FileTimes::uniform(7).of_content("a.html", 4, unread).unwrap(), 7);
        let page = blob_id(4, &b"page"[..]).unwrap();
        let times = FileTimes::new(9, HashMap::from([(page, 5)]));
        let content = SiteContent {
            digest: String::new(),
            blobs: HashMap::from([("a.html".to_string(), page)]),
        };
        let known = times.with_previous(FileIndex::new(), &content);
        assert_eq!(
            known.of_content("a.html", 4, unread).unwrap(),
            5,
            "its blob is known"
        );
        assert!(
            known.of_content("b.html", 4, unread).is_err(),
            "not known: it is read"
        );
        assert_eq!(times.of_content("b.html", 4, || Ok(&b"page"[..])).unwrap(), 5);
    }
}
