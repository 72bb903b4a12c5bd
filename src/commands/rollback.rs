//! `berth rollback SITE [--to COMMIT]`: the site's Deployment back to the
//! newest earlier revision not known to have failed, or to one that ran
//! COMMIT ([`pipeline::rollback`]); its result printed, logged and sent to the
//! webhooks, as `run`'s is.

use crate::commands::{Context, DeployArgs};
use crate::pipeline;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The site whose Deployment to roll back.
    pub site: String,
    /// A commit (or its prefix) the Deployment ran before, failed or not; default: the newest
    /// earlier revision not known to have failed.
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

/// Rolls back in the environment worked in, then ends as `run` does.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let config = context.view()?;
    let options = args.deploy.options();
    let report =
        pipeline::rollback::rollback(&config, &args.site, args.to.as_deref(), &options, context.printer)
            .await?;
    context.finish_run(&config, "rollback", &report).await
}
