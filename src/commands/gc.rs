//! `berth gc [SITE...] [--delete]`: each site's images that no Deployment,
//! revision, branch head, tag or keep policy needs, deleted from its
//! registries ([`pipeline::gc`]); without `--delete`, a dry run that says
//! what would go and why each kept image stays.

use std::time::Duration;

use crate::commands::Context;
use crate::config::OverrideError;
use crate::pipeline::gc::{self, GcReport, Request, bytes_text};
use crate::reference;
use crate::settings::parse_duration;
use crate::ui::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sites whose images to clean (default: all).
    pub sites: Vec<String>,
    /// Delete the images the keep policy lets go (without it: only say which).
    #[arg(long)]
    pub delete: bool,
    /// How long to wait for another caller's lock on a Deployment, for example `2m`.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub lock_wait: Duration,
}

/// Runs gc, prints its table (or `--json`) and what the registry must still do.
/// Every environment's Deployments say what is needed; `--env` narrows the
/// registries cleaned.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let declared = context.declared()?;
    let environment = context.settings.environment.as_deref();
    declared.in_environment(environment)?;
    let given = context.settings.cluster.given();
    if declared.environments.len() > 1 && !given.is_empty() {
        return Err(OverrideError::Gc {
            options: given.join(", "),
        }
        .into());
    }
    let views = context.every_view("gc")?;
    let request = Request {
        sites: &args.sites,
        environment,
        delete: args.delete,
        lock_wait: args.lock_wait,
    };
    let report = gc::gc(&views, &request, context.printer).await?;
    if context.settings.json {
        context
            .printer
            .result(&context.document("berth.gc/v1", "gc", &report)?);
    } else {
        context.printer.result(&gc_table(&report));
    }
    let deleted: usize = report.sites.iter().map(|s| s.deleted).sum();
    if !request.delete {
        context.printer.note(&format!(
            "dry run: nothing was deleted; `berth gc --delete` deletes the {deleted} images marked delete"
        ));
    } else if deleted > 0 {
        context.printer.note(
            "the registry frees the disk only in its own garbage collection: for the distribution registry, \
             `registry garbage-collect --delete-untagged CONFIG` while it is stopped or read-only (see README, Registry retention)",
        );
    }
    Ok(report.exit_code())
}

/// One row per image: site, registry repository, tag, built, size, action, why.
pub fn gc_table(report: &GcReport) -> String {
    let mut rows = Vec::new();
    for site in &report.sites {
        for image in &site.images {
            rows.push(vec![
                site.site.clone(),
                format!("{}/{}", site.registry, site.repository),
                image
                    .tags
                    .first()
                    .map_or("-", |tag| reference::short(tag))
                    .to_string(),
                image
                    .created
                    .as_deref()
                    .map_or("-", |c| c.get(..10).unwrap_or(c))
                    .to_string(),
                bytes_text(image.bytes),
                image.action.to_string(),
                image.reasons.join(", "),
            ]);
        }
    }
    table(
        &["SITE", "REPOSITORY", "TAG", "BUILT", "SIZE", "ACTION", "WHY"],
        &rows,
    )
}
