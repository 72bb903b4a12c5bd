//! A developer's local build and preview, from a working tree.
//!
//! 1. Find the Git repo around `--source`, its HEAD commit, and copy the site's
//!    folder as it is on disk (uncommitted and untracked files included, files
//!    Git ignores and `.git` left out) into a fresh folder.
//! 2. Run the site's generator there and build the image through the Engine as
//!    the pipeline does, tagged `<commit>-dirty-<context digest>` so it can never
//!    be mistaken for a commit image; it stays in the local Engine, never pushed.
//! 3. `preview` runs that image on a loopback port, prints the URL, and removes
//!    the container on Ctrl-C.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context as _, anyhow};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions, StartContainerOptions};

use crate::build::{self, ImageBuild};
use crate::config::{Config, Site};
use crate::output::{Printer, Status};
use crate::pipeline;
use crate::reference;

/// A local build.
#[derive(Debug, Clone)]
pub struct Built {
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
        build::run_generator(
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
    let (context, dockerfile) = build::site_context(
        site,
        &config.templates_dir,
        build::SiteFiles::Folder(tree.clone()),
        std::sync::Arc::new(build::FileTimes::uniform(0)),
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
    let request = ImageBuild {
        context: build::ContextBody::File(context_file),
        dockerfile: &dockerfile,
        tag: &tag,
        build_args: &site.build_args,
        labels: &labels,
        credentials: HashMap::new(),
    };
    let image_id = build::build_image(&docker, request, printer).await?;
    printer.stage(
        &site.name,
        "build",
        Status::Done,
        &format!("{tag} (local only, not pushed)"),
    );
    Ok(Built { tag, image_id })
}

/// Runs `built` on a loopback port, prints the URL, waits for Ctrl-C, removes the container.
pub async fn preview(built: &Built, port: u16, printer: &Printer) -> anyhow::Result<()> {
    let docker = pipeline::connect_docker().await?;
    let inspect = docker.inspect_image(&built.tag).await?;
    let container_port = inspect
        .config
        .and_then(|c| c.exposed_ports)
        .and_then(|ports| ports.into_iter().next())
        .map_or_else(|| "8080/tcp".to_string(), |port| port.clone());
    let port = if port == 0 {
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    } else {
        port
    };
    let name = format!("berth-preview-{}-{port}", std::process::id());
    let labels = [("dev.berth.preview", built.tag.as_str())];
    create_published(&docker, &built.image_id, &name, &container_port, port, &labels).await?;
    let result = async {
        docker
            .start_container(&name, None::<StartContainerOptions>)
            .await?;
        printer.result(&format!("http://127.0.0.1:{port}/"));
        printer.note(&format!(
            "serving {} (container port {container_port}); Ctrl-C stops it",
            built.tag
        ));
        wait_for_stop().await;
        anyhow::Ok(())
    }
    .await;
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await?;
    printer.note("preview stopped; container removed");
    result
}

/// Creates (does not start) a container of `image` named `name`, its
/// `container_port` (say `8080/tcp`) published on 127.0.0.1:`host_port` only.
pub async fn create_published(
    docker: &bollard::Docker,
    image: &str,
    name: &str,
    container_port: &str,
    host_port: u16,
    labels: &[(&str, &str)],
) -> Result<(), bollard::errors::Error> {
    let binding = PortBinding {
        host_ip: Some("127.0.0.1".into()),
        host_port: Some(host_port.to_string()),
    };
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(container_port.to_string(), Some(vec![binding]))])),
            auto_remove: Some(false),
            ..Default::default()
        }),
        labels: Some(
            labels
                .iter()
                .map(|(key, value)| ((*key).to_string(), (*value).to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            }),
            body,
        )
        .await?;
    Ok(())
}

async fn wait_for_stop() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
    }
}
