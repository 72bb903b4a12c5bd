//! Exports sites' folders and runs their generators, once per (repo, commit,
//! folder, command, history): for `run` (sites sharing a generator share its
//! run) and for `plan`, which needs a site's files to know whether they
//! changed. A site without a generator is read straight from the mirror.
//! Work folders are removed when the [`Generator`] is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;

use crate::config::{Config, Site};
use crate::git::{Mirror, MirrorError, TreeFileKind};
use crate::image::{self, BuildError};
use crate::pipeline::sync::Synced;
use crate::reference;
use crate::ui::{Printer, Status};

/// A site's files (exported and generated, or read from the mirror), and the
/// times they get.
pub type Generated = (image::SiteFiles, Arc<image::FileTimes>);

/// Why a site's files could not be had. Shared by every site of one
/// generator run, hence behind an [`Arc`].
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The run's work folder could not be made.
    #[error("cannot create a work folder in {folder}: {error}")]
    WorkFolder { folder: String, error: std::io::Error },
    /// Exporting the site's folder from the mirror failed.
    #[error(transparent)]
    Export(#[from] MirrorError),
    /// The generator failed (its exit status and the tail of its output).
    #[error(transparent)]
    Generator(#[from] BuildError),
    /// The blocking export stopped (a panic or the runtime shut down).
    #[error("exporting stopped")]
    Stopped(#[from] tokio::task::JoinError),
}

/// Generator runs shared between sites built from one repo, commit, folder and
/// command: one run's files, or why it failed.
type SharedRun = Arc<tokio::sync::OnceCell<Result<Generated, Arc<GenerateError>>>>;

#[derive(Default)]
struct SharedRuns {
    cells: Mutex<HashMap<String, SharedRun>>,
    /// Work folders to remove when the run ends.
    dirs: Mutex<Vec<PathBuf>>,
}

impl Drop for SharedRuns {
    fn drop(&mut self) {
        for dir in self.dirs.get_mut().map(std::mem::take).unwrap_or_default() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The generator runs of one berth command.
pub struct Generator<'a> {
    config: &'a Config,
    printer: &'a Printer,
    work_dir: PathBuf,
    shared: SharedRuns,
}

/// Where one generator run works: the folder the generator runs in, and the
/// one the export writes (the checkout's root, with `git_history`).
struct WorkFolders {
    source: PathBuf,
    export_to: PathBuf,
}

impl WorkFolders {
    fn in_directory(directory: &Path, site: &Site) -> Self {
        if site.git_history {
            // A checkout the generator can run `git log` in (Hugo's
            // enableGitInfo); its `.git` never reaches the image.
            let root = directory.join("checkout");
            let source = if site.path == "." {
                root.clone()
            } else {
                root.join(&site.path)
            };
            Self {
                source,
                export_to: root,
            }
        } else {
            let source = directory.join("source");
            Self {
                export_to: source.clone(),
                source,
            }
        }
    }
}

impl<'a> Generator<'a> {
    pub fn new(config: &'a Config, printer: &'a Printer) -> anyhow::Result<Self> {
        let work_dir = config.state_dir.join("work");
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("cannot create {}", work_dir.display()))?;
        Ok(Self {
            config,
            printer,
            work_dir,
            shared: SharedRuns::default(),
        })
    }

    /// What the image of `site` at `synced` would serve, times left out
    /// ([`image::content_digest`]): its files exported and generated first.
    pub async fn content(&self, site: &Site, synced: &Synced) -> anyhow::Result<image::SiteContent> {
        let (generated, _) = self.generate(site, synced).await?;
        let (site, templates) = (site.clone(), self.config.templates_dir.clone());
        Ok(
            tokio::task::spawn_blocking(move || image::content_digest(&site, &templates, generated))
                .await??,
        )
    }

    /// Exports the site's folder and runs its generator, once per (repo, commit, folder, command).
    pub async fn generate(&self, site: &Site, synced: &Synced) -> Result<Generated, Arc<GenerateError>> {
        let key = format!(
            "{}\0{}\0{}\0{}\0{}\0{:?}",
            site.repo,
            synced.commit.id,
            site.path,
            site.build.as_deref().unwrap_or(""),
            site.git_history,
            site.generator_env
        );
        let cell = self
            .shared
            .cells
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_init(|| async { self.run(site, synced).await.map_err(Arc::new) })
            .await
            .clone()
    }

    /// One generator run: export (or read from the mirror), then the command.
    async fn run(&self, site: &Site, synced: &Synced) -> Result<Generated, GenerateError> {
        let directory = tempfile::Builder::new()
            .prefix(&format!("{}-{}-", site.repo, reference::short(&synced.commit.id)))
            .tempdir_in(&self.work_dir)
            .map_err(|error| GenerateError::WorkFolder {
                folder: self.work_dir.display().to_string(),
                error,
            })?
            .keep();
        self.shared
            .dirs
            .lock()
            .expect("not poisoned")
            .push(directory.clone());
        let folders = WorkFolders::in_directory(&directory, site);
        let (site_files, times) = self.export(site, synced, &folders).await?;
        if let Some(command) = &site.build {
            let started = Instant::now();
            let home = directory.join("home");
            std::fs::create_dir_all(&home).map_err(|source| GenerateError::WorkFolder {
                folder: home.display().to_string(),
                error: source,
            })?;
            self.printer
                .progress(&site.name, "generate", &format!("running `{command}`"));
            image::run_generator(
                command,
                &folders.source,
                &home,
                &synced.commit.id,
                synced.commit.time,
                &site.repo,
                &site.generator_env,
                self.printer,
            )
            .await?;
            self.printer.stage(
                &site.name,
                "generate",
                Status::Done,
                &format!("`{command}` ({:.1}s)", started.elapsed().as_secs_f64()),
            );
        }
        Ok((site_files, Arc::new(times)))
    }

    /// The site's files at the commit, off the runtime: read in place from
    /// the mirror when no generator runs (and no history is needed), else
    /// exported (or checked out) into the work folder. And their times.
    async fn export(
        &self,
        site: &Site,
        synced: &Synced,
        folders: &WorkFolders,
    ) -> Result<(image::SiteFiles, image::FileTimes), GenerateError> {
        let started = Instant::now();
        let mirror = synced.mirror.clone();
        let (commit, path, git_history) = (synced.commit.id.clone(), site.path.clone(), site.git_history);
        let in_place = site.build.is_none() && !site.git_history;
        let commit_time = u64::try_from(synced.commit.time).unwrap_or(0);
        let (source, export_to) = (folders.source.clone(), folders.export_to.clone());
        let ((files, site_files), times) = tokio::task::spawn_blocking(move || {
            let locked = mirror.lock().expect("not poisoned");
            let tree = if in_place {
                locked.files(&commit, &path)?
            } else {
                None
            };
            let files = match tree {
                Some(files) => in_mirror(files, mirror.clone()),
                None if git_history => (
                    locked.checkout(&commit, &export_to)?,
                    image::SiteFiles::Folder(source),
                ),
                None => (
                    locked.export(&commit, &path, &export_to)?,
                    image::SiteFiles::Folder(source),
                ),
            };
            let walk = Instant::now();
            let times = image::FileTimes::new(commit_time, locked.content_times(&commit, &path)?);
            tracing::debug!(
                seconds = walk.elapsed().as_secs_f64(),
                "file times of {path} at {commit}"
            );
            Ok::<_, MirrorError>((files, times))
        })
        .await??;
        self.printer.stage(
            &site.name,
            "export",
            Status::Done,
            &format!(
                "{files} files of {}:{}{} ({:.1}s)",
                site.repo,
                site.path,
                if matches!(site_files, image::SiteFiles::Tree { .. }) {
                    ", read from the mirror"
                } else {
                    ""
                },
                started.elapsed().as_secs_f64()
            ),
        );
        Ok((site_files, times))
    }
}

/// A site folder read in place from the mirror: how many files, and the
/// files with a way to read each blob.
fn in_mirror(files: Vec<crate::git::TreeFile>, mirror: Arc<Mutex<Mirror>>) -> (usize, image::SiteFiles) {
    let count = files
        .iter()
        .filter(|file| !matches!(file.kind, TreeFileKind::Folder))
        .count();
    let read: Arc<image::ReadBlob> = Arc::new(move |blob| {
        mirror
            .lock()
            .expect("not poisoned")
            .blob(blob)
            .map_err(std::io::Error::other)
    });
    (
        count,
        image::SiteFiles::Tree {
            files: Arc::new(files),
            read,
        },
    )
}
