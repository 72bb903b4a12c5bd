//! A site's files at a commit, as the mirror lists them ([`crate::git`]) and
//! the image stage packs them into a build context ([`crate::image`]): each
//! file's path below the site's folder, its kind and mode, and its Git blob.
//! A leaf: the two stages share these types without knowing each other.

use git2::Oid;

/// One entry of a folder at a commit.
#[derive(Debug, Clone)]
pub struct TreeFile {
    /// Below the folder, `/`-separated.
    pub relative: String,
    pub kind: TreeFileKind,
}

/// What a [`TreeFile`] is.
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
