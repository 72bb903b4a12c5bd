//! A developer's local build and preview, from a working tree.
//!
//! 1. Copy the site's folder from the working tree around `--source` as it is
//!    on disk (uncommitted and untracked files included, files Git ignores and
//!    `.git` left out), and note its HEAD commit ([`crate::git::worktree`]).
//! 2. Run the site's generator there and build the image through the Engine as
//!    the pipeline does, tagged `<commit>-dirty-<context digest>` so it can never
//!    be mistaken for a commit image; it stays in the local Engine, never pushed.
//!    BuildKit gets the credentials of every registry Docker's config.json
//!    knows, for the base images (when the pipeline file reads config.json).
//! 3. `preview` runs that image on a loopback port ([`serve`]) until stopped.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use bollard::Docker;

use crate::config::{Config, Site};
use crate::git::worktree;
use crate::image::{self, ImageBuild, container};
use crate::pipeline::connect_docker;
use crate::reference;
use crate::registry;
use crate::ui::{Printer, Status};

/// A local build (`build --json` prints it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    pub site: String,
    pub tag: String,
    pub image_id: String,
}

/// Builds `site` from the working tree around `source` into the local Engine.
pub async fn build(config: &Config, site: &Site, source: &Path, printer: &Printer) -> anyhow::Result<Built> {
    let docker = connect_docker().await?;
    let work_dir = config.state_dir.join("work");
    std::fs::create_dir_all(&work_dir).with_context(|| format!("cannot create {}", work_dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(&format!("{}-local-", site.name))
        .tempdir_in(&work_dir)?;
    let tree = work.path().join("source");
    let copied = {
        let (source, path, tree) = (source.to_path_buf(), site.path.clone(), tree.clone());
        tokio::task::spawn_blocking(move || worktree::copy_site(&source, &path, &tree)).await??
    };
    let commit = copied.commit;
    printer.stage(
        &site.name,
        "export",
        Status::Done,
        &format!(
            "{} files from the working tree at {}",
            copied.files,
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
            &site.generator_env,
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
        registry::credentials_for_build(&site.name, &anonymous, &config.registry.credentials, printer)
            .await?;
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

/// A local build served on a loopback port, until [`Serving::stop`].
pub struct Serving {
    docker: Docker,
    name: String,
    pub url: String,
    /// The image's port the loopback port leads to (`8080/tcp`).
    pub container_port: String,
}

/// Runs `built` as a container whose port is published on 127.0.0.1:`port`
/// (a free port when 0).
pub async fn serve(built: &Built, port: u16) -> anyhow::Result<Serving> {
    let docker = connect_docker().await?;
    let container_port = container::served_port(&docker, &built.tag).await?;
    let port = if port == 0 {
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    } else {
        port
    };
    let name = format!("berth-preview-{}-{port}", std::process::id());
    let labels = [("dev.berth.preview", built.tag.as_str())];
    container::create_published(&docker, &built.image_id, &name, &container_port, port, &labels).await?;
    if let Err(error) = container::start(&docker, &name).await {
        let _ = container::remove(&docker, &name).await;
        return Err(error.into());
    }
    Ok(Serving {
        docker,
        name,
        url: format!("http://127.0.0.1:{port}/"),
        container_port,
    })
}

impl Serving {
    /// Waits for Ctrl-C or SIGTERM, then removes the container.
    pub async fn until_stopped(self) -> anyhow::Result<()> {
        wait_for_stop().await;
        self.stop().await
    }

    /// Removes the container.
    pub async fn stop(self) -> anyhow::Result<()> {
        container::remove(&self.docker, &self.name).await?;
        Ok(())
    }
}

async fn wait_for_stop() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
    }
}
