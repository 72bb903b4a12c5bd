//! Build stage: the site's generator, then a container image through the Docker Engine API.
//!
//! 1. Run the site's build command (`sh -c`) in the exported folder with a clean,
//!    documented environment; keep its last lines for the failure message.
//! 2. Collect the build context's entries: the Dockerfile and the site's content
//!    (from a folder, or for a site without a generator straight from the mirror's
//!    blobs), sorted, owner root, modes kept, each file's mtime the time of the
//!    commit that wrote its content (`FileTimes`); symlinks that leave the site are
//!    refused here, before a byte goes out.
//! 3. Write the context tar straight into the request body of the Engine's
//!    `/build` (`BuildKit`), in 256 KiB chunks, while the Engine reads it: no copy
//!    on disk, never the whole site in memory. Layer tars nested in it get their
//!    size from a first pass that reads no content. Its SHA-256 is the context
//!    digest, known when the last byte went out. A failure half-way ends the body
//!    with an error, so the Engine builds nothing. (`berth build` writes the tar
//!    to a file first: its tag needs the digest.)
//! 4. Stream the Engine's output (shown with `-v`, kept for failures; each
//!    `BuildKit` step's times with `BERTH_LOG=debug`); the Engine's errors are
//!    shown as the Engine words them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::Docker;
use bollard::models::BuildInfoAux;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::config::{ImageSource, Site};
use crate::mirror::{TreeFile, TreeFileKind};
use crate::output::Printer;

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
    #[error("cannot run build command `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
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
    #[error("cannot write the build context ({path}): {source}")]
    Context { path: PathBuf, source: std::io::Error },
    /// The Engine refused or failed the build; its own words.
    #[error("the Docker Engine failed the build: {message}{}", tail_text(.tail))]
    Engine { message: String, tail: String },
    /// The Engine could not be reached.
    #[error("cannot reach the Docker Engine: {0}")]
    Unreachable(String),
}

fn tail_text(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\nlast lines of the build:\n{tail}")
    }
}

/// Keeps the last `capacity` lines of some output.
struct Tail {
    lines: VecDeque<String>,
    capacity: usize,
}

impl Tail {
    fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            capacity,
        }
    }

    fn push(&mut self, line: &str) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line.trim_end().to_string());
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|line| format!("  | {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs `command` with `sh -c` in `directory`.
///
/// The environment is cleared except `PATH`; berth sets `HOME` (a fresh folder),
/// `LANG=C.UTF-8`, `TZ=UTC`, `SOURCE_DATE_EPOCH` (the commit time),
/// `BERTH_COMMIT` and `BERTH_REPO`, so a build depends on the commit, not on
/// whoever runs it.
pub async fn run_generator(
    command: &str,
    directory: &Path,
    home: &Path,
    commit: &str,
    commit_time: i64,
    repo: &str,
    printer: &Printer,
) -> Result<(), BuildError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(directory)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", commit_time.to_string())
        .env("BERTH_COMMIT", commit)
        .env("BERTH_REPO", repo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| BuildError::Spawn {
            command: command.to_string(),
            source,
        })?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut tail = Tail::new(20);
    let mut out_lines = BufReader::new(stdout).lines();
    let mut err_lines = BufReader::new(stderr).lines();
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            line = out_lines.next_line(), if out_open => match line {
                Ok(Some(line)) => { printer.detail(&line); tail.push(&line); }
                _ => out_open = false,
            },
            line = err_lines.next_line(), if err_open => match line {
                Ok(Some(line)) => { printer.detail(&line); tail.push(&line); }
                _ => err_open = false,
            },
        }
    }
    let status = child.wait().await.map_err(|source| BuildError::Spawn {
        command: command.to_string(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        let status = status.code().map_or_else(
            || "killed by a signal".to_string(),
            |code| format!("exit code {code}"),
        );
        Err(BuildError::Command {
            command: command.to_string(),
            status,
            tail: tail.text(),
        })
    }
}

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
    fn below(&self, folder: &str) -> Option<Self> {
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

    fn content(&self) -> Content<'_> {
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
struct Plan {
    /// The Dockerfile's path inside the context.
    dockerfile: String,
    /// The template's Dockerfile, for a template site.
    template: Option<PathBuf>,
    web_root: String,
    /// The site's files (the `output` folder, for a template site).
    content: SiteFiles,
}

impl Plan {
    fn new(site: &Site, templates_dir: &Path, root: SiteFiles) -> Result<Self, BuildError> {
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

    fn layout(&self) -> ContextLayout<'_> {
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
        let file = std::fs::File::create(&destination).map_err(|source| BuildError::Context {
            path: destination.clone(),
            source,
        })?;
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
fn writer_stopped(error: tokio::task::JoinError) -> BuildError {
    BuildError::Context {
        path: PathBuf::from("(context writer)"),
        source: std::io::Error::other(error),
    }
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
            .map_err(|source| BuildError::Context {
                path: PathBuf::from("(copy of the context)"),
                source,
            })?;
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
const CHUNK: usize = 256 * 1024;

/// Sends what is written to it in chunks of [`CHUNK`] bytes (waiting while the
/// Engine has not read the chunks before), and to `copy` if there is one.
struct ChannelWriter {
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

impl BuildError {
    /// Whether this is the writer's side of the Engine giving up on the build:
    /// the Engine's own answer is the error to show.
    pub fn is_context_not_read(&self) -> bool {
        matches!(self, Self::Context { source, .. }
            if source.get_ref().and_then(|inner| inner.downcast_ref::<ContextNotRead>()).is_some())
    }
}

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
    let context_error = |path: &Path, source: std::io::Error| BuildError::Context {
        path: path.to_path_buf(),
        source,
    };
    let sink_error = |source| context_error(Path::new("(build context)"), source);
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
                let text = std::fs::read(dockerfile).map_err(|e| context_error(dockerfile, e))?;
                checked();
                append_bytes(&mut builder, "Dockerfile", &text, 0o644, newest(items.iter()))
                    .map_err(sink_error)?;
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
                    header.set_path(name).map_err(sink_error)?;
                    header.set_cksum();
                    let outer = builder.get_mut();
                    std::io::Write::write_all(outer, header.as_bytes()).map_err(sink_error)?;
                    let (layer_files, written) =
                        write_layer_tar(chosen(), *content, web_root, time, &mut *outer, false)?;
                    // Both passes write the same headers and, through `Exact`, the
                    // listed length of every file (a file that changed fails there);
                    // were they ever to differ, the context must not go out broken.
                    if written != size {
                        return Err(sink_error(std::io::Error::other(format!(
                            "{name}: the sizing pass counted {size} bytes and the writing pass {written}"
                        ))));
                    }
                    files += layer_files;
                    let padding = (512 - size % 512) % 512;
                    std::io::Write::write_all(outer, &[0; 512][..usize::try_from(padding).expect("< 512")])
                        .map_err(sink_error)?;
                }
            }
            ContextLayout::Folder { root, dockerfile } => {
                let items = collect(*root, &[dockerfile, ".dockerignore"], times)?;
                checked();
                files += append_items(&mut builder, items.iter(), *root, "", newest(items.iter()), false)?;
            }
        }
        builder.finish().map_err(sink_error)?;
    }
    std::io::Write::flush(&mut hashing.inner).map_err(sink_error)?;
    let digest = hex::encode(hashing.hasher.finalize());
    Ok(Context {
        digest,
        files,
        bytes: hashing.inner.bytes,
    })
}

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
    /// `content` (from [`content_digest`]) gives the blob ids of this build's
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
    /// read from `content` (a file, or a symlink's target, which Git stores as
    /// a blob).
    ///
    /// The blob id is hashed here with the `sha1` crate: it uses the CPU's SHA
    /// instructions, and hashed a 50 MB file in 112 ms against 225 ms for
    /// libgit2's collision-detecting `Oid::hash_file` (release build, this machine).
    fn of_content(&self, relative: &str, length: u64, content: impl std::io::Read) -> std::io::Result<u64> {
        if self.by_content.is_empty() && self.previous.is_empty() {
            return Ok(self.default);
        }
        let blob = match self.known.get(relative) {
            Some(blob) => *blob,
            None => blob_id(length, content)?,
        };
        Ok(self.of_blob(relative, blob))
    }

    fn of_blob(&self, relative: &str, blob: git2::Oid) -> u64 {
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

/// What the image of `site` serves, times left out: a SHA-256 over its
/// Dockerfile, build args and web root, and every entry of its context (path,
/// kind, executable bit, and the Git blob id of its content or link target).
/// Two builds with the same content digest give images that serve the same
/// files; only their times and labels can differ. Reads every file on disk
/// once; blobs of the mirror are known by id. Blocking.
pub fn content_digest(site: &Site, templates_dir: &Path, root: SiteFiles) -> Result<SiteContent, BuildError> {
    let plan = Plan::new(site, templates_dir, root)?;
    let context_error = |path: &Path, source: std::io::Error| BuildError::Context {
        path: path.to_path_buf(),
        source,
    };
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
            field(&std::fs::read(dockerfile).map_err(|e| context_error(dockerfile, e))?);
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
                    blob_id(bytes.len() as u64, bytes).map_err(|e| context_error(&item.path, e))?,
                );
            }
            ItemKind::File { executable, length } => {
                field(if *executable { b"x" } else { b"f" });
                let id = match item.blob {
                    Some(blob) => blob,
                    None => std::fs::File::open(&item.path)
                        .and_then(|file| blob_id(*length, file))
                        .map_err(|e| context_error(&item.path, e))?,
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

struct DigestWriter<'a, D>(&'a mut D);

impl<D: Digest> std::io::Write for DigestWriter<'_, D> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.0.update(buffer);
        Ok(buffer.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One entry of a site's content, in the order it goes into a tar.
struct Item {
    /// The file on disk, or (for [`Content::Tree`]) its relative path.
    path: PathBuf,
    /// Its blob, for [`Content::Tree`].
    blob: Option<git2::Oid>,
    /// Below the content root, `/`-separated.
    relative: String,
    kind: ItemKind,
    time: u64,
}

enum ItemKind {
    Directory,
    File { executable: bool, length: u64 },
    Symlink(PathBuf),
}

impl Item {
    fn is_dir(&self) -> bool {
        matches!(self.kind, ItemKind::Directory)
    }
}

/// The newest time of the files and links among `items`, 0 when there are none.
fn newest<'a>(items: impl Iterator<Item = &'a Item>) -> u64 {
    items
        .filter(|item| !item.is_dir())
        .map(|item| item.time)
        .max()
        .unwrap_or(0)
}

/// The folder the image serves: the `WEB_ROOT` build arg, `/www` by default.
pub fn web_root(build_args: &BTreeMap<String, String>) -> String {
    build_args
        .get("WEB_ROOT")
        .cloned()
        .unwrap_or_else(|| "/www".to_string())
}

/// Files that are pages (change often, small) rather than assets.
fn is_page(relative: &str) -> bool {
    let extension = relative
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(
        extension.as_str(),
        "html" | "htm" | "xml" | "json" | "txt" | "rss" | "atom" | "webmanifest"
    )
}

/// Writes one layer tar to `sink`: the folders of `web_root`, then `items` under
/// it, folders stamped with `folder_time`. Returns the number of files and of
/// bytes. A `dry` pass writes zeros for the files' content without reading it, to
/// learn the size.
fn write_layer_tar<'a, W: std::io::Write>(
    items: impl Iterator<Item = &'a Item>,
    content: Content<'_>,
    web_root: &str,
    folder_time: u64,
    sink: W,
    dry: bool,
) -> Result<(usize, u64), BuildError> {
    let sink_error = |source| BuildError::Context {
        path: PathBuf::from("(build context)"),
        source,
    };
    let mut counting = CountingWriter {
        inner: sink,
        bytes: 0,
    };
    let mut builder = tar::Builder::new(&mut counting);
    builder.mode(tar::HeaderMode::Deterministic);
    let root = web_root.trim_matches('/');
    let mut prefix = String::new();
    for part in root.split('/').filter(|p| !p.is_empty()) {
        prefix.push_str(part);
        append_directory(&mut builder, &prefix, folder_time).map_err(sink_error)?;
        prefix.push('/');
    }
    let files = append_items(&mut builder, items, content, &prefix, folder_time, dry)?;
    builder.finish().map_err(sink_error)?;
    drop(builder);
    Ok((files, counting.bytes))
}

/// Counts the bytes that go through it.
struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for CountingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what goes through it; `inner` counts it.
struct HashingWriter<W> {
    inner: CountingWriter<W>,
    hasher: Sha256,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn header(kind: tar::EntryType, mode: u32, mtime: u64, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(size);
    header
}

fn append_bytes<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
    mode: u32,
    mtime: u64,
) -> std::io::Result<()> {
    let mut header = header(tar::EntryType::Regular, mode, mtime, data.len() as u64);
    builder.append_data(&mut header, name, data)
}

fn append_directory<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    mtime: u64,
) -> std::io::Result<()> {
    let mut header = header(tar::EntryType::Directory, 0o755, mtime, 0);
    builder.append_data(&mut header, format!("{name}/"), std::io::empty())
}

/// Every entry below `root`, sorted by name, with its time: `.dockerignore` and
/// `.git` left out (except the names in `always`), symlinks that leave `root` refused.
fn collect(content: Content<'_>, always: &[&str], times: &FileTimes) -> Result<Vec<Item>, BuildError> {
    match content {
        Content::Folder(root) => collect_folder(root, always, times),
        Content::Tree { files, read } => collect_tree(files, read, always, times),
    }
}

/// Whether `relative` goes into the context: not `.git`, not `.dockerignore` and
/// not excluded by it, except the names in `always` (the Dockerfile and
/// `.dockerignore` of a site's own context go to the Engine, as docker sends
/// them, which applies `.dockerignore` to `COPY`).
fn kept(relative: &str, always: &[&str], ignore: &Ignore) -> bool {
    always.contains(&relative)
        || (relative != ".dockerignore" && relative != ".git" && !ignore.excludes(relative))
}

/// Whether a symlink at `link` (relative to the content root) pointing to
/// `target` leaves the content root, judged on the names alone.
fn leaves_root(link: &Path, target: &Path) -> bool {
    let root = Path::new("/content-root");
    let folder = link.parent().unwrap_or(Path::new(""));
    target.is_absolute() || !normalise(&root.join(folder).join(target)).starts_with(root)
}

/// Excluded folders walked for a `!` line below them (Docker walks them too):
/// each goes into the context only when something below it does, so the
/// taken-back file keeps its folders.
#[derive(Default)]
struct ExcludedFolders {
    /// The excluded folders above the walk's position, outermost first.
    open: Vec<Item>,
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
fn collect_tree(
    files: &[TreeFile],
    read: &ReadBlob,
    always: &[&str],
    times: &FileTimes,
) -> Result<Vec<Item>, BuildError> {
    let ignore = match files.iter().find(|file| file.relative == ".dockerignore") {
        Some(TreeFile {
            kind: TreeFileKind::File { blob, .. },
            ..
        }) => Ignore::parse(&String::from_utf8_lossy(&read(*blob).map_err(|source| {
            BuildError::Context {
                path: PathBuf::from(".dockerignore"),
                source,
            }
        })?))?,
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
fn collect_folder(root: &Path, always: &[&str], times: &FileTimes) -> Result<Vec<Item>, BuildError> {
    let context_error = |path: &Path, source: std::io::Error| BuildError::Context {
        path: path.to_path_buf(),
        source,
    };
    let canonical_root = root.canonicalize().map_err(|e| context_error(root, e))?;
    let ignore = Ignore::read(&root.join(".dockerignore"))?;
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            let relative = entry
                .path()
                .strip_prefix(root)
                .unwrap_or(entry.path())
                .to_string_lossy()
                .into_owned();
            kept(&relative, always, &ignore) || (ignore.has_exceptions() && entry.file_type().is_dir())
        });
    let mut excluded_folders = ExcludedFolders::default();
    let mut items = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e.path().map_or_else(|| root.to_path_buf(), Path::to_path_buf);
            context_error(&path, std::io::Error::other(e.to_string()))
        })?;
        let relative = entry
            .path()
            .strip_prefix(root)
            .expect("below root")
            .to_string_lossy()
            .into_owned();
        let file_type = entry.file_type();
        if !kept(&relative, always, &ignore) {
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
        let (kind, time) = if file_type.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(|e| context_error(entry.path(), e))?;
            // Inside by its names, or (a link through another link) once resolved.
            let resolves_inside = || {
                entry
                    .path()
                    .parent()
                    .expect("has parent")
                    .join(&target)
                    .canonicalize()
                    .is_ok_and(|c| c.starts_with(&canonical_root))
            };
            if target.is_absolute() || (leaves_root(Path::new(&relative), &target) && !resolves_inside()) {
                return Err(BuildError::SymlinkEscape {
                    link: relative,
                    target: target.to_string_lossy().into_owned(),
                });
            }
            let bytes = target.as_os_str().as_encoded_bytes();
            let time = times
                .of_content(&relative, bytes.len() as u64, bytes)
                .map_err(|e| context_error(entry.path(), e))?;
            (ItemKind::Symlink(target), time)
        } else if file_type.is_dir() {
            (ItemKind::Directory, 0)
        } else if file_type.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let metadata = entry
                .metadata()
                .map_err(|e| context_error(entry.path(), std::io::Error::other(e.to_string())))?;
            let time = std::fs::File::open(entry.path())
                .and_then(|file| times.of_content(&relative, metadata.len(), file))
                .map_err(|e| context_error(entry.path(), e))?;
            let kind = ItemKind::File {
                executable: metadata.permissions().mode() & 0o111 != 0,
                length: metadata.len(),
            };
            (kind, time)
        } else {
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

/// Appends `items` under `prefix`, folders stamped with `folder_time`. Returns the
/// number of files. A `dry` pass writes zeros instead of the files' content.
fn append_items<'a, W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    items: impl Iterator<Item = &'a Item>,
    content: Content<'_>,
    prefix: &str,
    folder_time: u64,
    dry: bool,
) -> Result<usize, BuildError> {
    let context_error = |path: &Path, source: std::io::Error| BuildError::Context {
        path: path.to_path_buf(),
        source,
    };
    let mut files = 0;
    for item in items {
        let name = format!("{prefix}{}", item.relative);
        match &item.kind {
            ItemKind::Directory => {
                append_directory(builder, &name, folder_time).map_err(|e| context_error(&item.path, e))?;
            }
            ItemKind::Symlink(target) => {
                let mut header = header(tar::EntryType::Symlink, 0o777, item.time, 0);
                builder
                    .append_link(&mut header, &name, target)
                    .map_err(|e| context_error(&item.path, e))?;
            }
            ItemKind::File { executable, length } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut header = header(tar::EntryType::Regular, mode, item.time, *length);
                let data: Box<dyn std::io::Read> = match (dry, content, item.blob) {
                    (true, ..) => Box::new(std::io::Read::take(std::io::repeat(0), *length)),
                    (false, Content::Tree { read, .. }, Some(blob)) => Box::new(std::io::Cursor::new(
                        read(blob).map_err(|e| context_error(&item.path, e))?,
                    )),
                    _ => Box::new(std::fs::File::open(&item.path).map_err(|e| context_error(&item.path, e))?),
                };
                // A file whose size changed since it was listed would make a broken tar.
                let data = Exact {
                    inner: data,
                    remaining: *length,
                };
                builder
                    .append_data(&mut header, &name, data)
                    .map_err(|e| context_error(&item.path, e))?;
                files += 1;
            }
        }
    }
    Ok(files)
}

/// Reads exactly `remaining` bytes from `inner`: fewer is an error, more are left.
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: std::io::Read> std::io::Read for Exact<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let limit = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let read = self.inner.read(&mut buffer[..limit])?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the file became {} bytes shorter while it was read",
                    self.remaining
                ),
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

/// The patterns of a `.dockerignore` file, as Docker reads them (moby's
/// `patternmatcher`): one per line, `#` comments; each pattern cleaned as Go's
/// `filepath.Clean` does (leading and trailing `/`, `.` and `..` resolved);
/// within a path part `*`, `?`, `[...]` classes (`[^...]` negated, ranges) and
/// `\` escapes, as Go's `filepath.Match`; `**` across any number of parts;
/// `!` to take an exclusion back. The last matching line wins, and a pattern
/// that matches a folder matches all below it.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    /// A `!` line: what it matches goes back in.
    keep: bool,
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    /// `**`: any number of path parts, none included.
    AnyDepth,
    /// One path part's pattern.
    Glob(globset::GlobMatcher),
}

/// A `.dockerignore` line Docker would refuse too (`ErrBadPattern`).
#[derive(Debug, thiserror::Error)]
#[error(".dockerignore:{line}: `{pattern}` is not a valid pattern: {message}")]
pub struct IgnoreError {
    pub line: usize,
    pub pattern: String,
    pub message: String,
}

impl Ignore {
    /// Reads `path`; a missing file ignores nothing.
    pub fn read(path: &Path) -> Result<Self, BuildError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(BuildError::Context {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        let mut rules = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keep, pattern) = line
                .strip_prefix('!')
                .map_or((false, line), |rest| (true, rest.trim()));
            let cleaned = normalise(&Path::new("/").join(pattern));
            let cleaned = cleaned.to_string_lossy();
            let parts = cleaned
                .split('/')
                .filter(|part| !part.is_empty())
                .map(|part| {
                    if part == "**" {
                        return Ok(Part::AnyDepth);
                    }
                    globset::GlobBuilder::new(&go_pattern(part))
                        .literal_separator(true)
                        .backslash_escape(true)
                        .build()
                        .map(|glob| Part::Glob(glob.compile_matcher()))
                        .map_err(|error| IgnoreError {
                            line: index + 1,
                            pattern: line.to_string(),
                            message: error.kind().to_string(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !parts.is_empty() {
                rules.push(Rule { keep, parts });
            }
        }
        Ok(Self { rules })
    }

    /// Whether a `!` line could take back something below an excluded folder:
    /// then, as Docker does, excluded folders are walked, not skipped.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|rule| rule.keep)
    }

    /// Whether `relative` (with `/` separators) is left out of the context.
    pub fn excludes(&self, relative: &str) -> bool {
        let parts: Vec<&str> = relative.split('/').collect();
        let mut excluded = false;
        for rule in &self.rules {
            // A pattern matches the path or any folder above it.
            let matched = (1..=parts.len()).any(|length| match_parts(&rule.parts, &parts[..length]));
            if matched {
                excluded = !rule.keep;
            }
        }
        excluded
    }
}

/// One path part of a Go `filepath.Match` pattern in globset's syntax: `[^`
/// negates a class there (`[!` in globset), braces are literal in Go, and a
/// run of `*` within a part is one `*`.
fn go_pattern(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('!');
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '{' | '}' if !in_class => {
                out.push('\\');
                out.push(c);
            }
            '*' if !in_class => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push('*');
            }
            _ => out.push(c),
        }
    }
    out
}

fn match_parts(pattern: &[Part], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((Part::AnyDepth, rest)) => (0..=parts.len()).any(|skip| match_parts(rest, &parts[skip..])),
        Some((Part::Glob(glob), rest)) => parts
            .split_first()
            .is_some_and(|(part, others)| glob.is_match(part) && match_parts(rest, others)),
    }
}

/// Resolves `.` and `..` without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Where the Engine reads a build context from.
pub enum ContextBody {
    /// A tar file on disk.
    File(PathBuf),
    /// A tar being written (see [`stream_site_context`]).
    Stream(tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>),
}

/// An image build request.
pub struct ImageBuild<'a> {
    pub context: ContextBody,
    /// Path of the Dockerfile inside the context.
    pub dockerfile: &'a str,
    pub tag: &'a str,
    pub build_args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub credentials: HashMap<String, bollard::auth::DockerCredentials>,
}

/// Builds the image through the Engine API and returns its id.
pub async fn build_image(
    docker: &Docker,
    request: ImageBuild<'_>,
    printer: &Printer,
) -> Result<String, BuildError> {
    let options = BuildImageOptions {
        dockerfile: request.dockerfile.to_string(),
        t: Some(request.tag.to_string()),
        rm: true,
        forcerm: true,
        buildargs: Some(
            request
                .build_args
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        labels: Some(
            request
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        version: BuilderVersion::BuilderBuildKit,
        // BuildKit through the Engine needs a session; it also carries the
        // registry credentials for private base images.
        session: Some(session_id()),
        ..Default::default()
    };
    let body = match request.context {
        ContextBody::File(path) => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|source| BuildError::Context { path, source })?;
            bollard::body_try_stream(tokio_util::io::ReaderStream::with_capacity(file, CHUNK))
        }
        ContextBody::Stream(receiver) => bollard::body_try_stream(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
        )),
    };
    let credentials = if request.credentials.is_empty() {
        None
    } else {
        Some(request.credentials)
    };
    let mut stream = docker.build_image(options, credentials, Some(body));
    let mut tail = Tail::new(30);
    let mut image_id = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    let message = detail.message.unwrap_or_else(|| "unknown error".into());
                    return Err(BuildError::Engine {
                        message: message.trim().to_string(),
                        tail: tail.text(),
                    });
                }
                if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                    for line in text.lines().filter(|line| !line.trim().is_empty()) {
                        printer.detail(line);
                        tail.push(line);
                    }
                }
                match info.aux {
                    Some(BuildInfoAux::Default(image)) => {
                        if let Some(id) = image.id {
                            image_id = Some(id);
                        }
                    }
                    Some(BuildInfoAux::BuildKit(status)) => {
                        for vertex in &status.vertexes {
                            if !vertex.error.is_empty() {
                                tail.push(&format!("{}: {}", vertex.name, vertex.error));
                            } else if let Some(completed) = &vertex.completed {
                                if let Some(started) = &vertex.started {
                                    tracing::debug!(
                                        vertex = %vertex.name,
                                        cached = vertex.cached,
                                        started = format!("{}.{:09}", started.seconds, started.nanos),
                                        completed = format!("{}.{:09}", completed.seconds, completed.nanos),
                                        "build step done"
                                    );
                                }
                                printer.detail(&format!("done {}", vertex.name));
                            }
                        }
                        for log in &status.logs {
                            for line in String::from_utf8_lossy(&log.msg)
                                .lines()
                                .filter(|l| !l.trim().is_empty())
                            {
                                printer.detail(line);
                                tail.push(line);
                            }
                        }
                    }
                    None => {}
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Err(BuildError::Engine {
                    message: message.trim().to_string(),
                    tail: tail.text(),
                });
            }
            Err(error) => return Err(engine_error(&error, &tail)),
        }
    }
    if let Some(id) = image_id {
        Ok(id)
    } else {
        // Some Engines send no id record: ask for the tag instead.
        let inspect = docker
            .inspect_image(request.tag)
            .await
            .map_err(|error| engine_error(&error, &tail))?;
        inspect.id.ok_or_else(|| BuildError::Engine {
            message: "the Engine reported no image id".into(),
            tail: tail.text(),
        })
    }
}

fn session_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("berth-{}-{nanos:x}", std::process::id())
}

fn engine_error(error: &bollard::errors::Error, tail: &Tail) -> BuildError {
    use bollard::errors::Error;
    match error {
        Error::HyperResponseError { .. }
        | Error::IOError { .. }
        | Error::SocketNotFoundError(_)
        | Error::RequestTimeoutError => BuildError::Unreachable(error.to_string()),
        _ => BuildError::Engine {
            message: error.to_string(),
            tail: tail.text(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn dockerignore_patterns() {
        let ignore =
            Ignore::parse("# drafts\ndrafts\n*.psd\n**/*.map\n!keep.psd\n/tmp/\nsecret?.txt\n").unwrap();
        assert!(ignore.excludes("drafts"));
        assert!(ignore.excludes("drafts/a.html"));
        assert!(ignore.excludes("logo.psd"));
        assert!(!ignore.excludes("keep.psd"));
        assert!(!ignore.excludes("img/logo.psd"), "* does not cross folders");
        assert!(ignore.excludes("js/deep/app.js.map"));
        assert!(ignore.excludes("app.js.map"));
        assert!(ignore.excludes("tmp/x"));
        assert!(ignore.excludes("secret1.txt"));
        assert!(!ignore.excludes("secret12.txt"));
        assert!(!ignore.excludes("index.html"));
    }

    /// The examples of Docker's `.dockerignore` documentation, each with what
    /// the documentation says it leaves out.
    #[test]
    fn dockerignore_follows_dockers_documented_examples() {
        let ignore = Ignore::parse("# comment\n*/temp*\n*/*/temp*\ntemp?\n").unwrap();
        assert!(ignore.excludes("somedir/temporary.txt"));
        assert!(ignore.excludes("somedir/temp"));
        assert!(ignore.excludes("somedir/subdir/temporary.txt"));
        assert!(ignore.excludes("tempa"));
        assert!(ignore.excludes("tempb"));
        assert!(!ignore.excludes("temporary.txt"), "*/temp* needs a folder above");
        assert!(!ignore.excludes("a/b/c/temporary.txt"));

        let ignore = Ignore::parse("**/*.go\n").unwrap();
        assert!(ignore.excludes("main.go") && ignore.excludes("cmd/tool/main.go"));

        let ignore = Ignore::parse("*.md\n!README.md\n").unwrap();
        assert!(ignore.excludes("CHANGES.md") && !ignore.excludes("README.md"));

        let ignore = Ignore::parse("*.md\n!README*.md\nREADME-secret.md\n").unwrap();
        assert!(!ignore.excludes("README-public.md"));
        assert!(ignore.excludes("README-secret.md") && ignore.excludes("CHANGES.md"));

        let ignore = Ignore::parse("*.md\nREADME-secret.md\n!README*.md\n").unwrap();
        assert!(
            !ignore.excludes("README-secret.md"),
            "the last matching line wins"
        );
    }

    #[test]
    fn dockerignore_classes_escapes_and_cleaning_are_go_filepath_match() {
        let ignore = Ignore::parse("draft[0-9].html\nlog[^s]\n\\*star\n{a,b}\n./sub/../cache/\n").unwrap();
        assert!(ignore.excludes("draft1.html") && !ignore.excludes("draftx.html"));
        assert!(ignore.excludes("logx") && !ignore.excludes("logs"));
        assert!(
            ignore.excludes("*star") && !ignore.excludes("bigstar"),
            "`\\*` is a literal star"
        );
        assert!(
            ignore.excludes("{a,b}") && !ignore.excludes("a"),
            "braces are literal in Go"
        );
        assert!(
            ignore.excludes("cache/x"),
            "the pattern is cleaned as filepath.Clean does"
        );
        let error = Ignore::parse("ok\nbad[\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(
            error
                .to_string()
                .starts_with(".dockerignore:2: `bad[` is not a valid pattern"),
            "{error}"
        );
    }

    #[test]
    fn an_exception_below_an_excluded_folder_is_taken_back_with_its_folders() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("drafts/deep")).unwrap();
        std::fs::write(
            root.path().join(".dockerignore"),
            "drafts\n!drafts/deep/keep.html\n",
        )
        .unwrap();
        for file in [
            "index.html",
            "drafts/a.html",
            "drafts/deep/keep.html",
            "drafts/deep/b.html",
        ] {
            std::fs::write(root.path().join(file), file).unwrap();
        }
        let items = collect_folder(root.path(), &[], &FileTimes::uniform(0)).unwrap();
        let names: Vec<&str> = items.iter().map(|item| item.relative.as_str()).collect();
        assert_eq!(
            names,
            ["drafts", "drafts/deep", "drafts/deep/keep.html", "index.html"]
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut tail = Tail::new(2);
        for line in ["a", "b", "c"] {
            tail.push(line);
        }
        assert_eq!(tail.text(), "  | b\n  | c");
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
        use crate::mirror::{TreeFile, TreeFileKind};
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
