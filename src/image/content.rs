//! What an image serves, times left out: a digest over the paths, modes and
//! bytes of the site's files as the image would hold them. Equal digests mean
//! the running image already serves this commit's files.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::Site;
use crate::image::collect::{ItemKind, collect};
use crate::image::context::Plan;
use crate::image::times::blob_id;
use crate::image::{BuildError, ContextLayout, FileTimes, SiteFiles};

/// What the image of `site` serves, times left out: a SHA-256 over its
/// Dockerfile, build args and web root, and every entry of its context (path,
/// kind, executable bit, and the Git blob id of its content or link target).
/// Two builds with the same content digest give images that serve the same
/// files; only their times and labels can differ. Reads every file on disk
/// once; blobs of the mirror are known by id. Blocking.
pub fn content_digest(site: &Site, templates_dir: &Path, root: SiteFiles) -> Result<SiteContent, BuildError> {
    let plan = Plan::new(site, templates_dir, root)?;
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    let (content, always) = match plan.layout() {
        ContextLayout::Template {
            dockerfile,
            content,
            web_root,
        } => {
            field(b"template");
            field(&std::fs::read(dockerfile).map_err(|e| BuildError::context(dockerfile, e))?);
            field(web_root.as_bytes());
            (content, Vec::new())
        }
        ContextLayout::Folder { root, dockerfile } => {
            field(b"folder");
            field(dockerfile.as_bytes());
            (root, vec![dockerfile, ".dockerignore"])
        }
    };
    for (key, value) in &site.build_args {
        field(key.as_bytes());
        field(value.as_bytes());
    }
    let mut items = collect(content, &always, &FileTimes::uniform(0))?;
    items.sort_by(|a, b| a.relative.cmp(&b.relative));
    let mut blobs = HashMap::new();
    for item in &items {
        field(item.relative.as_bytes());
        match &item.kind {
            ItemKind::Directory => field(b"d"),
            ItemKind::Symlink(target) => {
                field(b"l");
                let bytes = target.as_os_str().as_encoded_bytes();
                field(bytes);
                blobs.insert(
                    item.relative.clone(),
                    blob_id(bytes.len() as u64, bytes).map_err(|e| BuildError::context(&item.path, e))?,
                );
            }
            ItemKind::File { executable, length } => {
                field(if *executable { b"x" } else { b"f" });
                let id = match item.blob {
                    Some(blob) => blob,
                    None => std::fs::File::open(&item.path)
                        .and_then(|file| blob_id(*length, file))
                        .map_err(|e| BuildError::context(&item.path, e))?,
                };
                field(id.as_bytes());
                blobs.insert(item.relative.clone(), id);
            }
        }
    }
    Ok(SiteContent {
        digest: hex::encode(hasher.finalize()),
        blobs,
    })
}

/// What a site's image would serve ([`content_digest`]).
#[derive(Debug, Clone)]
pub struct SiteContent {
    /// SHA-256 over the image's inputs, times left out.
    pub digest: String,
    /// Each file's (and link's) Git blob id, by path below the content root.
    pub blobs: HashMap<String, git2::Oid>,
}

pub(crate) struct DigestWriter<'a, D>(pub(crate) &'a mut D);

impl<D: Digest> std::io::Write for DigestWriter<'_, D> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.0.update(buffer);
        Ok(buffer.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
