//! `berth gc [SITE...] [--delete]`: each site's images that no Deployment,
//! revision, branch head, tag or keep policy needs, deleted
//! from its registries ([`crate::pipeline::gc`]); without `--delete`, a dry
//! run that says what would go and why each kept image stays.

use std::time::SystemTime;

use crate::commands::json_document;
use crate::config::Config;
use crate::exit;
use crate::pipeline::gc::{self, GcReport, Request, bytes_text};
use crate::reference;
use crate::settings::Settings;
use crate::ui::{Printer, table};

/// Runs gc, prints its table (or `--json`) and what the registry must still do.
pub async fn command(
    settings: &Settings,
    views: &[Config],
    request: &Request<'_>,
    printer: &Printer,
    started: SystemTime,
) -> anyhow::Result<u8> {
    let report = gc::gc(views, request, printer).await?;
    if settings.json {
        printer.result(&json_document("berth.gc/v1", "gc", started, &report)?);
    } else {
        printer.result(&gc_table(&report));
    }
    let deleted: usize = report.sites.iter().map(|s| s.deleted).sum();
    if !request.delete {
        printer.note(&format!(
            "dry run: nothing was deleted; `berth gc --delete` deletes the {deleted} images marked delete"
        ));
    } else if deleted > 0 {
        printer.note(
            "the registry frees the disk only in its own garbage collection: for the distribution registry, \
             `registry garbage-collect --delete-untagged CONFIG` while it is stopped or read-only (see README, Registry retention)",
        );
    }
    Ok(exit::of_gc(&report))
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
