//! `berth build`: a developer's local build, from a working tree.
//!
//! 1. Find the Git repo around `--source`, its HEAD commit, and copy the site's
//!    folder as it is on disk (uncommitted and untracked files included, files
//!    Git ignores and `.git` left out) into a fresh folder.
//! 2. Run the site's generator there and build the image through the Engine as
//!    the pipeline does, tagged `<commit>-dirty-<context digest>` so it can never
//!    be mistaken for a commit image; it stays in the local Engine, never pushed.
//!    BuildKit gets the credentials of every registry Docker's config.json
//!    knows, for the base images (when the pipeline file reads config.json).
//!
//! `preview` ([`super::preview`]) then runs that image.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context as _, anyhow};

use crate::commands::json_document;
use crate::config::{Config, Site};
use crate::image::{self, ImageBuild};
use crate::pipeline;
use crate::reference;
use crate::registry;
use crate::ui::{Printer, Status};

/// `berth build` (and the first half of `preview`): the named site built
/// from the working tree around `source`.
pub async fn command(config: &Config, site: &str, source: &Path, printer: &Printer) -> anyhow::Result<Built> {
    let selected = pipeline::select(config, &[site.to_string()], None)?;
    build(config, selected[0], source, printer).await
}

/// Prints a local build: its tag, or with `json` the whole [`Built`].
pub fn print(built: &Built, json: bool, printer: &Printer, started: SystemTime) -> anyhow::Result<()> {
    if json {
        printer.result(&json_document("berth.build/v1", "build", started, built)?);
    } else {
        printer.result(&built.tag);
    }
    Ok(())
}

/// A local build (`build --json` prints it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    pub site: String,
    pub tag: String,
    pub image_id: String,
}

/// Copies the site's folder from the working tree around `source`; returns the
/// HEAD commit (40 zeros when the repo has none yet) and the number of files.
fn copy_working_tree(source: &Path, site_path: &str, destination: &Path) -> anyhow::Result<(String, usize)> {
    let repo = git2::Repository::discover(source).map_err(|e| {
        anyhow!(
            "{} is not inside a Git working tree: {}",
            source.display(),
            e.message()
        )
    })?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| anyhow!("{} is a bare repo; give a working tree", source.display()))?
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
        return Err(anyhow!(
            "the site's folder {} does not exist in the working tree",
            root.display()
        ));
    }
    std::fs::create_dir_all(destination)?;
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
        let entry = entry?;
        let relative = entry.path().strip_prefix(&root).expect("below root");
        let target = destination.join(relative);
        if entry.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
            files += 1;
        }
    }
    Ok((commit, files))
}

/// Builds `site` from the working tree around `source` into the local Engine.
pub async fn build(config: &Config, site: &Site, source: &Path, printer: &Printer) -> anyhow::Result<Built> {
    let docker = pipeline::connect_docker().await?;
    let work_dir = config.state_dir.join("work");
    std::fs::create_dir_all(&work_dir).with_context(|| format!("cannot create {}", work_dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(&format!("{}-local-", site.name))
        .tempdir_in(&work_dir)?;
    let tree = work.path().join("source");
    let (commit, files) = {
        let (source, path, tree) = (source.to_path_buf(), site.path.clone(), tree.clone());
        tokio::task::spawn_blocking(move || copy_working_tree(&source, &path, &tree)).await??
    };
    printer.stage(
        &site.name,
        "export",
        Status::Done,
        &format!(
            "{files} files from the working tree at {}",
            reference::short(&commit)
        ),
    );
    if let Some(command) = &site.build {
        let home = work.path().join("home");
        std::fs::create_dir_all(&home)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        image::run_generator(
            command,
            &tree,
            &home,
            &commit,
            i64::try_from(now).unwrap_or(0),
            &site.repo,
            printer,
        )
        .await?;
        printer.stage(&site.name, "generate", Status::Done, &format!("`{command}`"));
    }
    let context_file = work.path().join("context.tar");
    let (context, dockerfile) = image::site_context(
        site,
        &config.templates_dir,
        image::SiteFiles::Folder(tree.clone()),
        std::sync::Arc::new(image::FileTimes::uniform(0)),
        &context_file,
    )
    .await?;
    let tag = format!(
        "{}:{}",
        config.image_repository(site),
        reference::dirty_tag(&commit, &context.digest)
    );
    let mut labels = BTreeMap::new();
    labels.insert("org.opencontainers.image.revision".to_string(), commit.clone());
    labels.insert("dev.berth.site".to_string(), site.name.clone());
    labels.insert("dev.berth.dirty".to_string(), "true".to_string());
    labels.insert("dev.berth.context-digest".to_string(), context.digest.clone());
    // The base images' registries' credentials, as the pipeline's builds
    // get them from config.json; berth's own registry's other sources are
    // not read (nothing is pushed, and their variables may not be set here).
    let anonymous = registry::RegistryAuth {
        registry: config.registry.address.clone(),
        credentials: None,
        source_description: config.registry.credentials.to_string(),
    };
    let credentials =
        pipeline::site::build_credentials(site, &anonymous, &config.registry.credentials, printer).await?;
    let request = ImageBuild {
        context: image::ContextBody::File(context_file),
        dockerfile: &dockerfile,
        tag: &tag,
        build_args: &site.build_args,
        labels: &labels,
        credentials,
    };
    let image_id = image::build_image(&docker, request, printer).await?;
    printer.stage(
        &site.name,
        "build",
        Status::Done,
        &format!("{tag} (local only, not pushed)"),
    );
    Ok(Built {
        site: site.name.clone(),
        tag,
        image_id,
    })
}
