//! `berth status`: per site, the branch head, what the Deployment runs, its
//! rollout state and since when ([`pipeline::status`]), as a table or
//! `--json`. It exits 1 when a site's last rollout failed
//! ([`StatusEntry::failed`]).

use crate::commands::Context;
use crate::exit;
use crate::pipeline;
use crate::pipeline::status::StatusEntry;
use crate::reference;
use crate::ui::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sites to show (default: all).
    pub sites: Vec<String>,
}

/// The named sites' state in each environment shown, side by side.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let views = context.views("status")?;
    let entries = pipeline::status::statuses(&views, &args.sites, None, context.printer).await?;
    if context.settings.json {
        let body = serde_json::json!({"sites": entries});
        context
            .printer
            .result(&context.document("berth.status/v1", "status", &body)?);
    } else {
        context.printer.result(&status_table(&entries));
    }
    Ok(exit::of_failures(entries.iter().map(StatusEntry::failed)))
}

pub fn status_table(entries: &[StatusEntry]) -> String {
    let environments = entries.iter().any(|e| e.environment.is_some());
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut row = vec![e.site.clone()];
            if environments {
                row.push(e.environment.clone().unwrap_or_default());
            }
            row.extend([
                e.branch_head.as_deref().map_or("-", reference::short).to_string(),
                e.deployed_commit
                    .as_deref()
                    .map_or("-", reference::short)
                    .to_string(),
                e.rollout.clone().unwrap_or_else(|| "-".into()),
                e.deployed_at.clone().unwrap_or_else(|| "-".into()),
                match (&e.deployed_image, &e.ships_to) {
                    (Some(image), Some(next)) => format!("{image} (ships to {next})"),
                    (Some(image), None) => image.clone(),
                    (None, _) => e.error.clone().unwrap_or_else(|| "-".into()),
                },
            ]);
            if environments {
                row.push(e.promote.as_ref().map_or_else(|| "-".into(), ToString::to_string));
            }
            row
        })
        .collect();
    let headers: &[&str] = if environments {
        &[
            "SITE", "ENV", "HEAD", "DEPLOYED", "ROLLOUT", "SINCE", "IMAGE", "PROMOTE",
        ]
    } else {
        &["SITE", "HEAD", "DEPLOYED", "ROLLOUT", "SINCE", "IMAGE"]
    };
    table(headers, &rows)
}
