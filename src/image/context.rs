//! The build context: the Dockerfile and the site's files, written as one
//! tar into the Engine's request body while the Engine reads it, or into a
//! file for `berth build`. Its SHA-256 is the context digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{ImageSource, Site};
use crate::files::{TreeFile, TreeFileKind};
use crate::image::collect::{collect, newest};
use crate::image::tar_writer::{
    CountingWriter, HashingWriter, append_bytes, append_items, header, write_layer_tar,
};
use crate::image::{BuildError, FileTimes};

/// A build context, as written.
pub struct Context {
    /// SHA-256 of the tar, hex.
    pub digest: String,
    pub files: usize,
    pub bytes: u64,
}

/// What goes into the context.
pub enum ContextLayout<'a> {
    /// A template's Dockerfile at the root, and the site's content in two tars
    /// for `ADD … /`: `assets.tar` (everything but pages) and `pages.tar` (HTML,
    /// XML, JSON, text), each holding the files under `web_root` with fixed times
    /// and owner. `ADD` of a local tar keeps those, so one commit gives the same
    /// layers; and a changed page changes only the small pages layer.
    Template {
        dockerfile: &'a Path,
        content: Content<'a>,
        web_root: &'a str,
    },
    /// The site's own folder as the context, its Dockerfile inside it.
    Folder { root: Content<'a>, dockerfile: &'a str },
}

/// Reads a blob of the site's mirror.
pub type ReadBlob = dyn Fn(git2::Oid) -> std::io::Result<Vec<u8>> + Send + Sync;

/// Where the site's files are read from.
#[derive(Clone, Copy)]
pub enum Content<'a> {
    /// A folder on disk (exported, generated, or a working tree).
    Folder(&'a Path),
    /// The entries of the site's folder at the commit, read straight from the
    /// mirror: no file is written to disk before the context.
    Tree {
        files: &'a [TreeFile],
        read: &'a ReadBlob,
    },
}

/// A site's files, after export and generator.
#[derive(Clone)]
pub enum SiteFiles {
    /// A folder on disk.
    Folder(PathBuf),
    /// The site's folder at the commit, in its mirror (see [`Content::Tree`]).
    Tree {
        files: std::sync::Arc<Vec<TreeFile>>,
        read: std::sync::Arc<ReadBlob>,
    },
}

impl SiteFiles {
    /// The files below `folder` (normalised, `"."` for all), if it is a folder.
    pub(crate) fn below(&self, folder: &str) -> Option<Self> {
        if folder == "." {
            return Some(self.clone());
        }
        match self {
            Self::Folder(root) => {
                let below = root.join(folder);
                below.is_dir().then_some(Self::Folder(below))
            }
            Self::Tree { files, read } => {
                let prefix = format!("{folder}/");
                files
                    .iter()
                    .any(|file| file.relative == folder && matches!(file.kind, TreeFileKind::Folder))
                    .then(|| Self::Tree {
                        files: std::sync::Arc::new(
                            files
                                .iter()
                                .filter_map(|file| {
                                    Some(TreeFile {
                                        relative: file.relative.strip_prefix(&prefix)?.to_string(),
                                        kind: file.kind.clone(),
                                    })
                                })
                                .collect(),
                        ),
                        read: read.clone(),
                    })
            }
        }
    }

    pub(crate) fn content(&self) -> Content<'_> {
        match self {
            Self::Folder(path) => Content::Folder(path),
            Self::Tree { files, read } => Content::Tree {
                files,
                read: read.as_ref(),
            },
        }
    }
}

/// The Dockerfile and content of a site's context, decided before a byte is written.
pub(crate) struct Plan {
    /// The Dockerfile's path inside the context.
    dockerfile: String,
    /// The template's Dockerfile, for a template site.
    template: Option<PathBuf>,
    web_root: String,
    /// The site's files (the `output` folder, for a template site).
    content: SiteFiles,
}

impl Plan {
    pub(crate) fn new(site: &Site, templates_dir: &Path, root: SiteFiles) -> Result<Self, BuildError> {
        let (dockerfile, template, content) = match &site.image_source {
            ImageSource::Template(name) => {
                let output = site.output.as_deref().unwrap_or(".");
                let content = root
                    .below(output)
                    .ok_or_else(|| BuildError::NoOutput(output.to_string()))?;
                (
                    "Dockerfile".to_string(),
                    Some(templates_dir.join(name).join("Dockerfile")),
                    content,
                )
            }
            ImageSource::Dockerfile(path) => (path.clone(), None, root),
        };
        Ok(Self {
            dockerfile,
            template,
            web_root: web_root(&site.build_args),
            content,
        })
    }

    pub(crate) fn layout(&self) -> ContextLayout<'_> {
        match &self.template {
            Some(dockerfile) => ContextLayout::Template {
                dockerfile,
                content: self.content.content(),
                web_root: &self.web_root,
            },
            None => ContextLayout::Folder {
                root: self.content.content(),
                dockerfile: &self.dockerfile,
            },
        }
    }
}

/// The build context of `site` from `root` (its exported or checked-out folder,
/// after the generator ran), written to the file `destination`: the template with
/// the `output` folder's content, or the folder itself with the site's own
/// Dockerfile. Written off the runtime. Returns the context and the Dockerfile's
/// path inside it.
pub async fn site_context(
    site: &Site,
    templates_dir: &Path,
    root: SiteFiles,
    times: std::sync::Arc<FileTimes>,
    destination: &Path,
) -> Result<(Context, String), BuildError> {
    let plan = Plan::new(site, templates_dir, root)?;
    let destination = destination.to_path_buf();
    let dockerfile = plan.dockerfile.clone();
    let context = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&destination)
            .map_err(|source| BuildError::context(&destination, source))?;
        write_context(
            &plan.layout(),
            &times,
            std::io::BufWriter::with_capacity(CHUNK, file),
            || {},
        )
    })
    .await
    .map_err(writer_stopped)??;
    Ok((context, dockerfile))
}

/// The context writer's thread ended without an answer (it panicked).
pub(crate) fn writer_stopped(error: tokio::task::JoinError) -> BuildError {
    BuildError::context("(context writer)", std::io::Error::other(error))
}

/// A build context on its way to the Engine: the tar arrives in `body` while it
/// is written; `written` gives its digest once the last byte went out.
pub struct ContextStream {
    pub body: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    pub written: ContextWriter,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
}

/// The thread writing a streamed context.
pub struct ContextWriter(tokio::task::JoinHandle<Result<Context, BuildError>>);

impl ContextWriter {
    /// The context once its last byte went out, or why it was not written.
    pub async fn finished(self) -> Result<Context, BuildError> {
        self.0.await.map_err(writer_stopped)?
    }
}

/// Like [`site_context`], but the tar is streamed to the Engine as it is written,
/// with no copy on disk: the Engine reads the context while berth is still
/// writing it. Returns once the entries are collected and checked (an escaping
/// symlink is refused before the Engine sees a byte). A failure while writing
/// ends `body` with an error, so the Engine never builds a truncated context.
/// `copy`, when given, gets a copy of the tar (for the benchmark script).
pub async fn stream_site_context(
    site: &Site,
    templates_dir: &Path,
    root: SiteFiles,
    times: std::sync::Arc<FileTimes>,
    copy: Option<PathBuf>,
) -> Result<ContextStream, BuildError> {
    let plan = Plan::new(site, templates_dir, root)?;
    let dockerfile = plan.dockerfile.clone();
    let (sender, body) = tokio::sync::mpsc::channel(4);
    let (checked_sender, checked) = tokio::sync::oneshot::channel();
    let written = tokio::task::spawn_blocking(move || {
        let failure = sender.clone();
        let copy = copy
            .map(|path| {
                std::fs::File::create(&path).map(|file| std::io::BufWriter::with_capacity(CHUNK, file))
            })
            .transpose()
            .map_err(|source| BuildError::context("(copy of the context)", source))?;
        let sink = ChannelWriter {
            sender,
            buffer: Vec::with_capacity(CHUNK),
            copy,
        };
        let written = write_context(&plan.layout(), &times, sink, || {
            let _ = checked_sender.send(());
        });
        if let Err(error) = &written {
            // Ends the request body with an error: the Engine drops the build.
            let _ = failure.blocking_send(Err(std::io::Error::other(error.to_string())));
        }
        written
    });
    let written = ContextWriter(written);
    if checked.await.is_err() {
        // The writer stopped before its checks passed: its error says why.
        return Err(match written.finished().await {
            Err(error) => error,
            Ok(_) => unreachable!("the writer signals before it writes"),
        });
    }
    Ok(ContextStream {
        body,
        written,
        dockerfile,
    })
}

/// Size of the chunks the context is written and sent in.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Sends what is written to it in chunks of [`CHUNK`] bytes (waiting while the
/// Engine has not read the chunks before), and to `copy` if there is one.
pub(crate) struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
    copy: Option<std::io::BufWriter<std::fs::File>>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        if let Some(copy) = &mut self.copy {
            std::io::Write::write_all(copy, &chunk)?;
        }
        self.sender
            .blocking_send(Ok(bytes::Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, ContextNotRead))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buffer);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(buffer.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()?;
        match &mut self.copy {
            Some(copy) => copy.flush(),
            None => Ok(()),
        }
    }
}

/// The Engine closed the request before it read the whole context (it failed the
/// build, and says why in its answer).
#[derive(Debug, thiserror::Error)]
#[error("the Docker Engine stopped reading the build context")]
pub struct ContextNotRead;

/// Writes the build context tar to `sink` and returns its digest. `checked` is
/// called once every entry is collected and checked, before the first byte.
///
/// Every file gets its time from `times`; a folder gets the newest time of the
/// files it is written with, so a layer whose files did not change is the same
/// tar, byte for byte, from one commit to the next.
pub fn write_context<W: std::io::Write>(
    layout: &ContextLayout<'_>,
    times: &FileTimes,
    sink: W,
    checked: impl FnOnce(),
) -> Result<Context, BuildError> {
    let mut hashing = HashingWriter {
        inner: CountingWriter {
            inner: sink,
            bytes: 0,
        },
        hasher: Sha256::new(),
    };
    let mut files = 0;
    {
        let mut builder = tar::Builder::new(&mut hashing);
        builder.mode(tar::HeaderMode::Deterministic);
        match layout {
            ContextLayout::Template {
                dockerfile,
                content,
                web_root,
            } => {
                let items = collect(*content, &[], times)?;
                let text = std::fs::read(dockerfile).map_err(|e| BuildError::context(dockerfile, e))?;
                checked();
                append_bytes(&mut builder, "Dockerfile", &text, 0o644, newest(items.iter()))
                    .map_err(BuildError::sink)?;
                files += 1;
                for (name, pages) in [("assets.tar", false), ("pages.tar", true)] {
                    let chosen = || {
                        items
                            .iter()
                            .filter(move |item| item.is_dir() || is_page(&item.relative) == pages)
                    };
                    let time = newest(chosen());
                    // The layer tar goes straight into the context: its size comes
                    // first, from a pass that writes no content.
                    let (_, size) =
                        write_layer_tar(chosen(), *content, web_root, time, std::io::sink(), true)?;
                    let mut header = header(tar::EntryType::Regular, 0o644, time, size);
                    header.set_path(name).map_err(BuildError::sink)?;
                    header.set_cksum();
                    let outer = builder.get_mut();
                    std::io::Write::write_all(outer, header.as_bytes()).map_err(BuildError::sink)?;
                    let (layer_files, written) =
                        write_layer_tar(chosen(), *content, web_root, time, &mut *outer, false)?;
                    // Both passes write the same headers and, through `Exact`, the
                    // listed length of every file (a file that changed fails there);
                    // were they ever to differ, the context must not go out broken.
                    if written != size {
                        return Err(BuildError::sink(std::io::Error::other(format!(
                            "{name}: the sizing pass counted {size} bytes and the writing pass {written}"
                        ))));
                    }
                    files += layer_files;
                    let padding = (512 - size % 512) % 512;
                    std::io::Write::write_all(outer, &[0; 512][..usize::try_from(padding).expect("< 512")])
                        .map_err(BuildError::sink)?;
                }
            }
            ContextLayout::Folder { root, dockerfile } => {
                let items = collect(*root, &[dockerfile, ".dockerignore"], times)?;
                checked();
                files += append_items(&mut builder, items.iter(), *root, "", newest(items.iter()), false)?;
            }
        }
        builder.finish().map_err(BuildError::sink)?;
    }
    std::io::Write::flush(&mut hashing.inner).map_err(BuildError::sink)?;
    let digest = hex::encode(hashing.hasher.finalize());
    Ok(Context {
        digest,
        files,
        bytes: hashing.inner.bytes,
    })
}

/// The folder the image serves: the `WEB_ROOT` build arg, `/www` by default.
pub fn web_root(build_args: &BTreeMap<String, String>) -> String {
    build_args
        .get("WEB_ROOT")
        .cloned()
        .unwrap_or_else(|| "/www".to_string())
}

/// Files that are pages (change often, small) rather than assets.
pub(crate) fn is_page(relative: &str) -> bool {
    let extension = relative
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(
        extension.as_str(),
        "html" | "htm" | "xml" | "json" | "txt" | "rss" | "atom" | "webmanifest"
    )
}
