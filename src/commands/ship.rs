//! `berth ship SITE --commit SHA`: per-commit CI, exactly that commit of that
//! site, through the pipeline; its result printed, logged and sent to the
//! webhooks ([`Context::finish_run`]).

use crate::commands::{Context, DeployArgs};
use crate::pipeline::{self, CommitChoice, interrupt};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The site to ship.
    pub site: String,
    /// The commit (full or at least 7 hex digits) or tag to ship.
    #[arg(long)]
    pub commit: String,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

/// One site at exactly the commit asked for.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let config = context.view()?;
    let selected = pipeline::select(&config, std::slice::from_ref(&args.site), None)?;
    let choice = CommitChoice::Exact(args.commit);
    let interrupted = interrupt::watch(context.printer);
    let options = args.deploy.options();
    let report = pipeline::run(
        &config,
        &selected,
        choice,
        1,
        &options,
        interrupted,
        context.printer,
    )
    .await?;
    context.finish_run(&config, "ship", &report).await
}
