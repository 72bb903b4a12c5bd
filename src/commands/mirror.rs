//! `berth mirror`: fetches the named repos' mirrors (all when none), one
//! after the other, and prints each one's branch head (a table, or `--json`).
//! A repo that fails is reported and the next one is tried; the exit code is
//! 1 if any failed.

use std::time::{Instant, SystemTime};

use crate::commands::json_document;
use crate::config::Config;
use crate::exit;
use crate::pipeline::SetupError;
use crate::pipeline::sync::sync_mirror;
use crate::reference;
use crate::ui::{Printer, Status, table};

/// `berth mirror`: the mirrored repos as a table or `--json`, and the exit code.
pub async fn command(
    config: &Config,
    repos: &[String],
    json: bool,
    printer: &Printer,
    started: SystemTime,
) -> anyhow::Result<u8> {
    let mirrored = mirror_repos(config, repos, printer).await?;
    if json {
        let body = serde_json::json!({ "repos": mirrored });
        printer.result(&json_document("berth.mirror/v1", "mirror", started, &body)?);
    } else {
        let rows: Vec<Vec<String>> = mirrored
            .iter()
            .filter_map(|repo| Some(vec![repo.repo.clone(), repo.branch.clone(), repo.head.clone()?]))
            .collect();
        if !rows.is_empty() {
            printer.result(&table(&["REPO", "BRANCH", "HEAD"], &rows));
        }
    }
    Ok(exit::of_failures(
        mirrored.iter().map(|repo| repo.error.is_some()),
    ))
}

/// One repo `berth mirror` fetched: its branch head, or why it failed (each
/// failure also reported as it happened).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MirroredRepo {
    pub repo: String,
    pub branch: String,
    pub head: Option<String>,
    pub error: Option<String>,
}

/// Fetches the mirrors of `names` (all repos when empty), one after the other.
/// A repo that fails is reported and the next one is tried.
pub async fn mirror_repos(
    config: &Config,
    names: &[String],
    printer: &Printer,
) -> anyhow::Result<Vec<MirroredRepo>> {
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
    let mut mirrored = Vec::new();
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
        let mut entry = MirroredRepo {
            repo: repo.name.clone(),
            branch: repo.branch.clone(),
            head: None,
            error: None,
        };
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
                entry.head = Some(head.id);
            }
            Err(error) => {
                printer.stage(&repo.name, "mirror", Status::Failed, &error.to_string());
                entry.error = Some(error.to_string());
            }
        }
        mirrored.push(entry);
    }
    Ok(mirrored)
}
