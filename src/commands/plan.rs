//! `berth plan`: what `run` would do per site ([`pipeline::plan`]), as a
//! table or `--json`, changing nothing; exit 1 when a site's state could not
//! be read.

use crate::commands::Context;
use crate::exit;
use crate::pipeline;
use crate::pipeline::plan::{PlanAction, PlanEntry};
use crate::pipeline::select::Shard;
use crate::reference;
use crate::ui::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sites to plan (default: all).
    pub sites: Vec<String>,
    /// Only this shard of the sites, `I/N` (1-based).
    #[arg(long)]
    pub shard: Option<Shard>,
}

/// The plan of the named sites in each environment shown, side by side.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let views = context.views("plan")?;
    let entries = pipeline::plan::plans(&views, &args.sites, args.shard, context.printer).await?;
    if context.settings.json {
        let body = serde_json::json!({"sites": entries});
        context
            .printer
            .result(&context.document("berth.plan/v1", "plan", &body)?);
    } else {
        context.printer.result(&plan_table(&entries));
    }
    Ok(exit::of_failures(
        entries.iter().map(|e| e.action == PlanAction::Error),
    ))
}

pub fn plan_table(entries: &[PlanEntry]) -> String {
    let environments = entries.iter().any(|e| e.environment.is_some());
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut row = vec![e.site.clone()];
            if environments {
                row.push(e.environment.clone().unwrap_or_default());
            }
            row.extend([
                e.head_commit.as_deref().map_or("-", reference::short).to_string(),
                match e.image_present {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "?".into(),
                },
                e.deployed_commit
                    .as_deref()
                    .map_or("-", reference::short)
                    .to_string(),
                action_word(e.action).to_string(),
            ]);
            if environments {
                row.push(e.promote.as_ref().map_or_else(|| "-".into(), ToString::to_string));
            }
            row.push(
                e.error
                    .clone()
                    .or_else(|| e.reason.clone())
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
            row
        })
        .collect();
    let headers: &[&str] = if environments {
        &[
            "SITE", "ENV", "HEAD", "IMAGE", "DEPLOYED", "ACTION", "PROMOTE", "NOTE",
        ]
    } else {
        &["SITE", "HEAD", "IMAGE", "DEPLOYED", "ACTION", "NOTE"]
    };
    table(headers, &rows)
}

fn action_word(action: PlanAction) -> &'static str {
    match action {
        PlanAction::Unchanged => "unchanged",
        PlanAction::Resume => "resume",
        PlanAction::UpToDate => "up to date",
        PlanAction::Deploy => "deploy",
        PlanAction::BuildAndDeploy => "build+deploy",
        PlanAction::RefuseOlder => "refuse (older)",
        PlanAction::Error => "error",
    }
}
