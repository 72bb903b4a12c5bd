//! `berth export`'s steps: a site's folder at a commit, from its repo's
//! mirror (fetched first, unless offline), written into an empty folder.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use crate::config::{Config, Site};
use crate::git::{Commit, Mirror, MirrorError};
use crate::pipeline::sync::sync_mirror;
use crate::pipeline::{CommitChoice, SetupError};
use crate::reference;
use crate::ui::{Printer, Status};

/// What `berth export` wrote.
pub struct Exported {
    pub commit: Commit,
    /// Files written (symlinks included).
    pub files: usize,
}

/// Writes `site`'s folder at `choice`, from its repo's mirror, into `directory`
/// (created when missing; refused unless empty). The mirror is fetched first
/// unless `offline`.
pub async fn export_site(
    config: &Config,
    site: &Site,
    choice: CommitChoice,
    offline: bool,
    directory: &Path,
    printer: &Printer,
) -> anyhow::Result<Exported> {
    let empty = match std::fs::read_dir(directory) {
        Ok(mut entries) => entries.next().is_none(),
        Err(error) => error.kind() == std::io::ErrorKind::NotFound,
    };
    if !empty {
        return Err(SetupError::NotEmpty {
            path: directory.display().to_string(),
        }
        .into());
    }
    let repo = config.repo(&site.repo).expect("validated").clone();
    let (mirrors_dir, path, destination, printer_copy) = (
        config.state_dir.join("mirrors"),
        site.path.clone(),
        directory.to_path_buf(),
        printer.clone(),
    );
    let started = Instant::now();
    let exported = tokio::task::spawn_blocking(move || {
        let mirror = if offline {
            Mirror::open_existing(&mirrors_dir, &repo, &|message| printer_copy.warning(&message))?
        } else {
            sync_mirror(&mirrors_dir, &repo, &printer_copy)?
        };
        let commit = choice.resolve(&mirror, &repo.branch)?;
        let files = mirror.export(&commit.id, &path, &destination)?;
        Ok::<_, MirrorError>(Exported { commit, files })
    })
    .await?
    .with_context(|| format!("cannot export site `{}`", site.name))?;
    printer.stage(
        &site.name,
        "export",
        Status::Done,
        &format!(
            "{} files at {} into {} ({:.2}s)",
            exported.files,
            reference::short(&exported.commit.id),
            directory.display(),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(exported)
}
