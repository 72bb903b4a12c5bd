//! `berth history SITE`: a site's past deployments, from its Deployment's
//! ReplicaSet revisions and from berth's run log ([`pipeline::history`]).
//! In a file with environments each line names its environment, and without
//! `--env` every environment the site ships to is shown.

use crate::commands::Context;
use crate::exit;
use crate::pipeline::history::History;
use crate::pipeline::{self, select};
use crate::reference;
use crate::ui::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The site.
    pub site: String,
}

/// One site's history in each environment shown that it ships to, as
/// tables or `--json` (`{"site", "environments": [...]}`, one entry in a file
/// without environments).
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let views = context.views("history")?;
    let mut histories = Vec::new();
    for (config, sites) in select::in_views(&views, std::slice::from_ref(&args.site), None)? {
        if let Some(site) = sites.first() {
            histories.push(pipeline::history::history(config, site).await?);
        }
    }
    if context.settings.json {
        let body = serde_json::json!({"site": args.site, "environments": histories});
        context
            .printer
            .result(&context.document("berth.history/v1", "history", &body)?);
    } else {
        let texts: Vec<String> = histories
            .iter()
            .map(|history| match &history.environment {
                Some(environment) if histories.len() > 1 => {
                    format!("{environment}:\n{}", history_text(history))
                }
                _ => history_text(history),
            })
            .collect();
        context.printer.result(&texts.join("\n"));
    }
    Ok(exit::OK)
}

/// A history as two tables: the revisions, then the run log's lines.
pub fn history_text(history: &History) -> String {
    let rows: Vec<Vec<String>> = history
        .revisions
        .iter()
        .map(|r| {
            vec![
                format!("{}{}", r.revision, if r.current { " *" } else { "" }),
                r.commit.as_deref().map_or("-", reference::short).to_string(),
                r.created.clone().unwrap_or_else(|| "-".into()),
                r.change_cause.clone().unwrap_or_else(|| "-".into()),
                r.image.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut text = table(&["REVISION", "COMMIT", "CREATED", "CAUSE", "IMAGE"], &rows);
    if !history.runs.is_empty() {
        text.push('\n');
        let rows: Vec<Vec<String>> = history
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.time.clone(),
                    r.command.clone(),
                    r.commit.as_deref().map_or("-", reference::short).to_string(),
                    r.action.clone(),
                    r.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        text.push_str(&table(&["RUN", "COMMAND", "COMMIT", "RESULT", "ERROR"], &rows));
    }
    text
}
