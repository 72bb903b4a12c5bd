//! `berth export SITE DIR [--commit C] [--offline]`: writes a site's folder
//! at a commit, from its repo's mirror, into an empty folder
//! ([`pipeline::export`]); prints the commit (or `--json`).

use std::path::PathBuf;

use crate::commands::Context;
use crate::exit;
use crate::pipeline::{self, CommitChoice};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The site whose folder to export.
    pub site: String,
    /// Where to write the files: a new or empty folder.
    pub directory: PathBuf,
    /// A commit (full or at least 7 hex digits) or tag (default: the head of the site's branch).
    #[arg(long)]
    pub commit: Option<String>,
    /// Read the mirror as it is, without fetching (it must exist).
    #[arg(long)]
    pub offline: bool,
}

/// Prints the commit written (or, with `--json`, the site, commit, folder
/// and number of files).
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let config = context.view()?;
    let selected = pipeline::select(&config, std::slice::from_ref(&args.site), None)?;
    let choice = args.commit.map_or(CommitChoice::BranchHead, CommitChoice::Exact);
    let exported = pipeline::export::export_site(
        &config,
        selected[0],
        choice,
        args.offline,
        &args.directory,
        context.printer,
    )
    .await?;
    if context.settings.json {
        let body = serde_json::json!({
            "site": args.site,
            "commit": exported.commit.id,
            "directory": args.directory.display().to_string(),
            "files": exported.files,
        });
        context
            .printer
            .result(&context.document("berth.export/v1", "export", &body)?);
    } else {
        context.printer.result(&exported.commit.id);
    }
    Ok(exit::OK)
}
