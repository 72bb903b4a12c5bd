//! `berth mirror`: fetches the named repos' mirrors (all when none), one
//! after the other, and prints each one's branch head. A repo that fails is
//! reported and the next one is tried; the exit code is 1 if any failed.

use std::time::Instant;

use crate::config::Config;
use crate::exit;
use crate::pipeline::SetupError;
use crate::pipeline::sync::sync_mirror;
use crate::reference;
use crate::ui::{Printer, Status, table};

/// `berth mirror`: the table of mirrored repos, and the exit code.
pub async fn command(config: &Config, repos: &[String], printer: &Printer) -> anyhow::Result<u8> {
    let report = mirror_repos(config, repos, printer).await?;
    if !report.rows.is_empty() {
        printer.result(&table(&["REPO", "BRANCH", "HEAD"], &report.rows));
    }
    Ok(exit::of_failures(std::iter::once(report.failed > 0)))
}

/// What `berth mirror` did: a row of repo, branch and head per mirrored repo,
/// and how many repos failed (each reported as it failed).
pub struct MirrorReport {
    pub rows: Vec<Vec<String>>,
    pub failed: usize,
}

/// Fetches the mirrors of `names` (all repos when empty), one after the other.
/// A repo that fails is reported and the next one is tried.
pub async fn mirror_repos(
    config: &Config,
    names: &[String],
    printer: &Printer,
) -> anyhow::Result<MirrorReport> {
    if let Some(unknown) = names.iter().find(|name| config.repo(name).is_none()) {
        return Err(SetupError::UnknownRepo {
            name: unknown.clone(),
            config: config.path.display().to_string(),
            known: config
                .repos
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    }
    let mut report = MirrorReport {
        rows: Vec::new(),
        failed: 0,
    };
    for repo in &config.repos {
        if !names.is_empty() && !names.contains(&repo.name) {
            continue;
        }
        let (mirrors_dir, repo_copy, printer_copy) =
            (config.state_dir.join("mirrors"), repo.clone(), printer.clone());
        let started = Instant::now();
        let head = tokio::task::spawn_blocking(move || {
            sync_mirror(&mirrors_dir, &repo_copy, &printer_copy)?.branch_head(&repo_copy.branch)
        })
        .await?;
        match head {
            Ok(head) => {
                printer.stage(
                    &repo.name,
                    "mirror",
                    Status::Done,
                    &format!(
                        "{} ({:.2}s)",
                        reference::short(&head.id),
                        started.elapsed().as_secs_f64()
                    ),
                );
                report
                    .rows
                    .push(vec![repo.name.clone(), repo.branch.clone(), head.id]);
            }
            Err(error) => {
                printer.stage(&repo.name, "mirror", Status::Failed, &error.to_string());
                report.failed += 1;
            }
        }
    }
    Ok(report)
}
