//! Image stage: the site's generator, then a container image through the
//! Docker Engine API.
//!
//! 1. [`generator`]: run the site's build command (`sh -c`) in the exported
//!    folder with a clean, documented environment; keep its last lines for the
//!    failure message.
//! 2. [`collect`]: the build context's entries: the Dockerfile and the site's
//!    content (from a folder, or for a site without a generator straight from
//!    the mirror's blobs), sorted, owner root, modes kept, each file's mtime the
//!    time of the commit that wrote its content ([`times`]), filtered by
//!    [`dockerignore`]; symlinks that leave the site are refused here, before a
//!    byte goes out.
//! 3. [`context`] and [`tar_writer`]: write the context tar straight into the request
//!    body of the Engine's `/build` (`BuildKit`), in 256 KiB chunks, while the
//!    Engine reads it: no copy on disk, never the whole site in memory. Layer
//!    tars nested in it get their size from a first pass that reads no
//!    content. Its SHA-256 is the context digest, known when the last byte went
//!    out. A failure half-way ends the body with an error, so the Engine builds
//!    nothing. (`berth build` writes the tar to a file first: its tag needs the
//!    digest.)
//! 4. [`engine`]: stream the Engine's output (shown with `-v`, kept for
//!    failures; each `BuildKit` step's times with `BERTH_LOG=debug`); the
//!    Engine's errors are shown as the Engine words them.
//!
//! [`content`] is what an image serves, times left out: the digest that
//! tells a commit with the same files from one that changes them; [`previous`]
//! reads the files of the image that runs, for their times.

use std::path::PathBuf;

use crate::image::context::ContextNotRead;

pub mod collect;
pub mod container;
pub mod content;
pub mod context;
pub mod dockerignore;
pub mod engine;
pub mod generator;
pub mod previous;
pub mod tar_writer;
pub mod times;

pub use content::{SiteContent, content_digest};
pub use context::{
    Content, Context, ContextLayout, ContextStream, ReadBlob, SiteFiles, site_context, stream_site_context,
    web_root,
};
pub use dockerignore::{Ignore, IgnoreError};
pub use engine::{ContextBody, ImageBuild, build_image};
pub use generator::run_generator;
use generator::tail_text;
pub use times::{FileIndex, FileTimes};

/// What can go wrong while building.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The generator command exited non-zero.
    #[error("build command `{command}` failed ({status}); its last lines:\n{tail}")]
    Command {
        command: String,
        status: String,
        tail: String,
    },
    /// The generator command could not be started.
    #[error("cannot run build command `{command}`: {error}")]
    Spawn { command: String, error: std::io::Error },
    /// The configured output folder is missing after the build.
    #[error("the site's content folder `{0}` does not exist (check `output` in pipeline.toml)")]
    NoOutput(String),
    /// A `.dockerignore` line is not a pattern.
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    /// A symlink in the site points outside it.
    #[error(
        "symlink `{link}` points outside the site (to `{target}`); refusing to put host files in an image"
    )]
    SymlinkEscape { link: String, target: String },
    /// Reading the site or writing the context failed.
    #[error("cannot write the build context ({path}): {error}")]
    Context { path: PathBuf, error: std::io::Error },
    /// The Engine refused or failed the build; its own words.
    #[error("the Docker Engine failed the build: {cause}{}", tail_text(.tail))]
    Engine { cause: BuildFailure, tail: String },
    /// The Engine built, and gave no id of the image, by the build or by its tag.
    #[error("the Docker Engine failed the build: the Engine reported no image id{}", tail_text(.tail))]
    NoImageId { tail: String },
    /// The Engine could not be reached.
    #[error("cannot reach the Docker Engine: {0}")]
    Unreachable(bollard::errors::Error),
}

impl BuildError {
    /// The Engine unreachable is the environment's failure (exit 3); a build
    /// that fails is the site's.
    pub fn kind(&self) -> crate::exit::Kind {
        match self {
            Self::Unreachable(_) => crate::exit::Kind::Environment,
            _ => crate::exit::Kind::Site,
        }
    }
}

/// What the Engine said about a failed build: its words, or why berth's
/// Engine client failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildFailure {
    /// The Engine's own words: a build stream's `errorDetail.message`, or
    /// the message of an error answer.
    #[error("{0}")]
    Said(String),
    /// bollard, berth's Engine client, failed: an answer it could not read.
    #[error("{0}")]
    Client(bollard::errors::Error),
}

impl BuildError {
    /// Reading `path` for the build context, or writing it there, failed.
    pub(crate) fn context(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Context {
            path: path.into(),
            error: source,
        }
    }

    /// Writing the context's tar itself failed (its sink, not one of its files).
    pub(crate) fn sink(source: std::io::Error) -> Self {
        Self::context("(build context)", source)
    }

    /// Whether this is the writer's side of the Engine giving up on the build:
    /// the Engine's own answer is the error to show.
    pub fn is_context_not_read(&self) -> bool {
        matches!(self, Self::Context { error: source, .. }
            if source.get_ref().and_then(|inner| inner.downcast_ref::<ContextNotRead>()).is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::image::collect::collect_tree;
    use crate::image::context::write_context;
    use crate::image::tar_writer::Exact;
    use crate::image::times::blob_id;

    /// A template site whose output is `public`, with `build_args`.
    fn template_site(root: &Path, build_args: &str) -> crate::config::Site {
        let text = format!(
            "templates = \"{}\"\n[registry]\naddress = \"127.0.0.1:5000\"\ncredentials = \"none\"\n\
             [[repo]]\nname = \"r\"\nurl = \"http://127.0.0.1/r.git\"\n\
             [[site]]\nname = \"s\"\nrepo = \"r\"\nbuild = \"true\"\noutput = \"public\"\nimage = \"s\"\n{build_args}\n\
             deployment = {{ name = \"s\", container = \"web\" }}\n",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").display()
        );
        crate::config::Config::parse(&root.join("pipeline.toml"), &text)
            .expect("valid")
            .sites
            .remove(0)
    }

    #[test]
    fn a_generated_file_keeps_the_previous_builds_time_only_with_the_same_path_and_content() {
        let blob = |text: &str| blob_id(text.len() as u64, text.as_bytes()).unwrap();
        let (page, other, source) = (blob("page"), blob("other"), blob("source"));
        let times = FileTimes::new(100, HashMap::from([(source, 5)]));
        let content = SiteContent {
            digest: String::new(),
            blobs: HashMap::from([
                ("a.html".to_string(), page),
                ("b.html".to_string(), other),
                ("c.css".to_string(), source),
                ("new.html".to_string(), page),
            ]),
        };
        let previous = FileIndex::from([
            ("a.html".to_string(), (page, 40)),
            ("b.html".to_string(), (page, 41)),
            ("c.css".to_string(), (source, 3)),
        ]);
        let index = times.with_previous(previous, &content).index(&content);
        assert_eq!(index["a.html"], (page, 40), "same path and content: its time");
        assert_eq!(index["b.html"], (other, 100), "changed: the commit's time");
        assert_eq!(
            index["c.css"],
            (source, 5),
            "a source file's content: its commit's time"
        );
        assert_eq!(index["new.html"], (page, 100), "a new path: the commit's time");
        assert_eq!(times.index(&content)["a.html"], (page, 100), "no previous build");
    }

    #[test]
    fn the_content_digest_follows_paths_bytes_and_modes_not_times() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let public = root.path().join("public");
        std::fs::create_dir_all(public.join("news")).unwrap();
        std::fs::write(public.join("index.html"), "<h1>home</h1>").unwrap();
        std::fs::write(public.join("news/index.html"), "<h1>news</h1>").unwrap();
        let site = template_site(root.path(), "");
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let digest = || {
            content_digest(&site, &templates, SiteFiles::Folder(root.path().to_path_buf()))
                .unwrap()
                .digest
        };
        let first = digest();
        // Written again with the same bytes, later: the same digest.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(public.join("index.html"), "<h1>home</h1>").unwrap();
        assert_eq!(digest(), first);
        // Other bytes, another path, another mode: another digest each time.
        std::fs::write(public.join("index.html"), "<h1>home!</h1>").unwrap();
        let changed = digest();
        assert_ne!(changed, first);
        std::fs::rename(public.join("news"), public.join("blog")).unwrap();
        let moved = digest();
        assert_ne!(moved, changed);
        let mut permissions = std::fs::metadata(public.join("index.html"))
            .unwrap()
            .permissions();
        permissions.set_mode(0o755);
        std::fs::set_permissions(public.join("index.html"), permissions).unwrap();
        assert_ne!(digest(), moved);
        // Other build args make another image from the same files.
        let with_args = template_site(root.path(), "build_args = { WEB_ROOT = \"/srv\" }");
        assert_ne!(
            content_digest(
                &with_args,
                &templates,
                SiteFiles::Folder(root.path().to_path_buf())
            )
            .unwrap()
            .digest,
            digest()
        );
    }

    #[test]
    fn context_is_reproducible_and_refuses_escaping_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        std::fs::create_dir_all(content.join("sub dir")).unwrap();
        std::fs::write(content.join("index.html"), "hi").unwrap();
        std::fs::write(content.join("sub dir/ünïcode.html"), "x").unwrap();
        std::os::unix::fs::symlink("index.html", content.join("alias.html")).unwrap();
        let dockerfile = dir.path().join("Dockerfile");
        std::fs::write(&dockerfile, "FROM scratch\n").unwrap();
        let layout = ContextLayout::Template {
            dockerfile: &dockerfile,
            content: Content::Folder(&content),
            web_root: "/www",
        };
        let times = FileTimes::uniform(1_700_000_000);
        let first = write_context(&layout, &times, Vec::new(), || {}).unwrap();
        let second = write_context(&layout, &times, Vec::new(), || {}).unwrap();
        assert_eq!(first.digest, second.digest);
        assert_eq!(first.files, 3);

        std::os::unix::fs::symlink("../../etc/passwd", content.join("escape")).unwrap();
        let mut checked = false;
        let error = write_context(&layout, &times, Vec::new(), || checked = true)
            .err()
            .unwrap();
        assert!(matches!(error, BuildError::SymlinkEscape { .. }), "{error}");
        assert!(!checked, "refused before a byte is written");
    }

    /// Names of a tar's entries with their sizes, and the content of the nested tars.
    fn entries(tar: &[u8]) -> Vec<(String, u64)> {
        let mut archive = tar::Archive::new(tar);
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            found.push((name.clone(), entry.header().size().unwrap()));
            if Path::new(&name)
                .extension()
                .is_some_and(|extension| extension == "tar")
            {
                let mut inner = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut inner).unwrap();
                found.extend(
                    entries(&inner)
                        .into_iter()
                        .map(|(n, size)| (format!("{name}:{n}"), size)),
                );
            }
        }
        found
    }

    #[test]
    fn layer_tars_are_written_into_the_context_with_their_exact_size() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        let long = format!(
            "{}/{}",
            "folder-".repeat(20),
            "page-with-a-rather-long-name-".repeat(4)
        );
        std::fs::create_dir_all(content.join(&long).parent().unwrap()).unwrap();
        std::fs::write(content.join(format!("{long}.html")), "x".repeat(1000)).unwrap();
        std::fs::write(content.join("image.bin"), vec![7; 70_000]).unwrap();
        std::os::unix::fs::symlink(format!("{long}.html"), content.join("alias.html")).unwrap();
        let dockerfile = dir.path().join("Dockerfile");
        std::fs::write(&dockerfile, "FROM scratch\n").unwrap();
        let layout = ContextLayout::Template {
            dockerfile: &dockerfile,
            content: Content::Folder(&content),
            web_root: "/usr/share/nginx/html",
        };
        let mut tar = Vec::new();
        let context = write_context(&layout, &FileTimes::uniform(7), &mut tar, || {}).unwrap();
        assert_eq!(context.bytes, tar.len() as u64);
        assert_eq!(context.files, 3);
        let found = entries(&tar);
        let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
        assert!(
            names.contains(&"assets.tar:usr/share/nginx/html/image.bin"),
            "{names:?}"
        );
        assert!(
            names.contains(&format!("pages.tar:usr/share/nginx/html/{long}.html").as_str()),
            "{names:?}"
        );
        assert!(
            names.contains(&"pages.tar:usr/share/nginx/html/alias.html"),
            "{names:?}"
        );
    }

    #[test]
    fn a_file_that_shrinks_while_it_is_read_fails_the_context() {
        let mut exact = Exact {
            inner: &b"short"[..],
            remaining: 10,
        };
        let error = std::io::copy(&mut exact, &mut std::io::sink()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
        let mut exact = Exact {
            inner: &b"longer than listed"[..],
            remaining: 6,
        };
        let mut read = Vec::new();
        std::io::copy(&mut exact, &mut read).unwrap();
        assert_eq!(read, b"longer");
    }

    #[test]
    fn files_get_the_time_of_their_content_and_folders_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        std::fs::create_dir_all(root.join("css")).unwrap();
        std::fs::write(root.join("css/old.css"), "kept").unwrap();
        std::fs::write(root.join("index.html"), "generated").unwrap();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        let blob =
            |content: &str| git2::Oid::hash_object(git2::ObjectType::Blob, content.as_bytes()).unwrap();
        let times = FileTimes::new(
            3000,
            HashMap::from([(blob("kept"), 1000), (blob("FROM scratch\n"), 2000)]),
        );
        let layout = ContextLayout::Folder {
            root: Content::Folder(&root),
            dockerfile: "Dockerfile",
        };
        let mut tar = Vec::new();
        write_context(&layout, &times, &mut tar, || {}).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let found: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.path().unwrap().to_string_lossy().into_owned(),
                    entry.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("Dockerfile".to_string(), 2000),
                ("css/".to_string(), 3000),
                ("css/old.css".to_string(), 1000),
                ("index.html".to_string(), 3000),
            ]
        );
    }

    #[test]
    fn a_context_from_the_mirror_follows_the_same_rules() {
        use crate::files::{TreeFile, TreeFileKind};
        let contents: HashMap<git2::Oid, &str> = [
            "drafts\n",
            "drafts\n!drafts/next.html\n",
            "page",
            "index.html",
            "../../etc/passwd",
        ]
        .into_iter()
        .map(|text| {
            (
                git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes()).unwrap(),
                text,
            )
        })
        .collect();
        let blob = |text: &str| *contents.iter().find(|(_, t)| **t == text).unwrap().0;
        let file = |relative: &str, text: &str| TreeFile {
            relative: relative.to_string(),
            kind: TreeFileKind::File {
                blob: blob(text),
                executable: false,
                size: text.len() as u64,
            },
        };
        let link = |relative: &str, target: &str| TreeFile {
            relative: relative.to_string(),
            kind: TreeFileKind::Symlink {
                blob: blob(target),
                target: target.as_bytes().to_vec(),
            },
        };
        let folder = |relative: &str| TreeFile {
            relative: relative.to_string(),
            kind: TreeFileKind::Folder,
        };
        let read = {
            let contents = contents.clone();
            move |id: git2::Oid| Ok(contents[&id].as_bytes().to_vec())
        };
        let mut files = vec![
            file(".dockerignore", "drafts\n"),
            folder("drafts"),
            file("drafts/next.html", "page"),
            link("alias.html", "index.html"),
            file("index.html", "page"),
        ];
        let times = FileTimes::new(9, HashMap::from([(blob("page"), 5)]));
        let items = collect_tree(&files, &read, &[], &times).unwrap();
        let found: Vec<(&str, u64)> = items
            .iter()
            .map(|item| (item.relative.as_str(), item.time))
            .collect();
        assert_eq!(found, [("alias.html", 9), ("index.html", 5)]);
        // A `!` line takes a file back from an excluded folder, with its folder.
        let mut taken_back = files.clone();
        taken_back[0] = file(".dockerignore", "drafts\n!drafts/next.html\n");
        let items = collect_tree(&taken_back, &read, &[], &times).unwrap();
        let names: Vec<&str> = items.iter().map(|item| item.relative.as_str()).collect();
        assert_eq!(names, ["drafts", "drafts/next.html", "alias.html", "index.html"]);

        // The `output` folder, `.` included, narrows the files the same way on disk and in the mirror.
        let site = SiteFiles::Tree {
            files: std::sync::Arc::new(files.clone()),
            read: std::sync::Arc::new(read.clone()),
        };
        let names = |below: Option<SiteFiles>| match below {
            Some(SiteFiles::Tree { files, .. }) => {
                files.iter().map(|f| f.relative.clone()).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        };
        assert_eq!(names(site.below(".")).len(), files.len());
        assert_eq!(names(site.below("drafts")), ["next.html"]);
        assert!(site.below("public").is_none());
        assert!(site.below("index.html").is_none(), "a file is not a folder");

        files.push(link("escape", "../../etc/passwd"));
        let error = collect_tree(&files, &read, &[], &times).err().unwrap();
        assert!(matches!(error, BuildError::SymlinkEscape { .. }), "{error}");
    }
}
