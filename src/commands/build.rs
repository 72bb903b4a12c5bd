//! `berth build SITE [--source DIR]`: a developer's local build of a working
//! tree, uncommitted files included ([`pipeline::local::build`]); prints its
//! tag (or `--json`). It stays in the local Engine, never pushed.

use std::path::PathBuf;

use crate::commands::Context;
use crate::exit;
use crate::pipeline;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The site to build.
    pub site: String,
    /// A working tree of the site's repo (default: the current folder).
    #[arg(long, default_value = ".")]
    pub source: PathBuf,
}

/// Builds the named site from the working tree around `--source`.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let config = context.view()?;
    let site = pipeline::select(&config, std::slice::from_ref(&args.site), None)?[0];
    let built = pipeline::local::build(&config, site, &args.source, context.printer).await?;
    if context.settings.json {
        context
            .printer
            .result(&context.document("berth.build/v1", "build", &built)?);
    } else {
        context.printer.result(&built.tag);
    }
    Ok(exit::OK)
}
