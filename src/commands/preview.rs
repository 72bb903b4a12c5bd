//! `berth preview SITE [--source DIR] [--port N]`: a local build
//! ([`pipeline::local::build`]) served on a loopback port
//! ([`pipeline::local::serve`]); prints the URL (or `--json`), and removes the
//! container on Ctrl-C.

use std::path::PathBuf;

use crate::commands::Context;
use crate::exit;
use crate::pipeline;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The site to preview.
    pub site: String,
    /// A working tree of the site's repo (default: the current folder).
    #[arg(long, default_value = ".")]
    pub source: PathBuf,
    /// Loopback port to serve on (default: a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

/// Builds, serves until Ctrl-C (or SIGTERM), then removes the container.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let config = context.view()?;
    let site = pipeline::select(&config, std::slice::from_ref(&args.site), None)?[0];
    let built = pipeline::local::build(&config, site, &args.source, context.printer).await?;
    let serving = pipeline::local::serve(&built, args.port).await?;
    let printed = if context.settings.json {
        let body = serde_json::json!({"site": built.site, "tag": built.tag, "url": serving.url});
        context.document("berth.preview/v1", "preview", &body)
    } else {
        Ok(serving.url.clone())
    };
    let printed = match printed {
        Ok(text) => text,
        Err(error) => {
            serving.stop().await?;
            return Err(error);
        }
    };
    context.printer.result(&printed);
    context.printer.note(&format!(
        "serving {} (container port {}); Ctrl-C stops it",
        built.tag, serving.container_port
    ));
    serving.until_stopped().await?;
    context.printer.note("preview stopped; container removed");
    Ok(exit::OK)
}
