//! `berth mirror [REPO...]`: fetches the named repos' mirrors (all when
//! none), one after the other ([`pipeline::sync::mirror_repos`]), and prints
//! each one's branch head (a table, or `--json`). A repo that fails is
//! reported and the next one is tried; the exit code is 1 if any failed.

use crate::commands::Context;
use crate::exit;
use crate::pipeline;
use crate::ui::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repos to fetch (default: all).
    pub repos: Vec<String>,
}

/// The mirrored repos as a table or `--json`, and the exit code.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let config = context.view()?;
    let mirrored = pipeline::sync::mirror_repos(&config, &args.repos, context.printer).await?;
    if context.settings.json {
        let body = serde_json::json!({ "repos": mirrored });
        context
            .printer
            .result(&context.document("berth.mirror/v1", "mirror", &body)?);
    } else {
        let rows: Vec<Vec<String>> = mirrored
            .iter()
            .filter_map(|repo| Some(vec![repo.repo.clone(), repo.branch.clone(), repo.head.clone()?]))
            .collect();
        if !rows.is_empty() {
            context.printer.result(&table(&["REPO", "BRANCH", "HEAD"], &rows));
        }
    }
    Ok(exit::of_failures(
        mirrored.iter().map(|repo| repo.error.is_some()),
    ))
}
