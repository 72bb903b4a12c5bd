//! `berth promote SITE --to ENV [--from ENV] [--commit C]`: the image a site
//! runs (or ran, and passed) in one environment, deployed to another by
//! digest ([`pipeline::promote`]); its result printed, logged in the target
//! environment and sent to the target's webhooks, as `run`'s is.

use crate::commands::{Context, DeployArgs};
use crate::config::OverrideError;
use crate::pipeline::{self, promote::Request};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The site to promote.
    pub site: String,
    /// The environment whose image to take (default: the target's `promote_from`, else the default environment).
    #[arg(long)]
    pub from: Option<String>,
    /// The environment to deploy it to.
    #[arg(long)]
    pub to: String,
    /// A commit (or its prefix) that runs, or ran and passed, in the source environment (default: what runs there).
    #[arg(long)]
    pub commit: Option<String>,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

/// Promotes, then ends as `run` does in the target environment.
/// `--context`, `--namespace` and `--kubeconfig` are refused (each
/// environment names its own cluster); `--timeout` is the target's.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let settings = context.settings;
    let given = settings.cluster.given();
    if !given.is_empty() {
        return Err(OverrideError::Promote {
            options: given.join(", "),
        }
        .into());
    }
    let options = args.deploy.options();
    let request = Request {
        site: &args.site,
        from: args.from.as_deref(),
        to: &args.to,
        commit: args.commit.as_deref(),
        options: &options,
        cluster: &settings.cluster,
    };
    let (target, report) = pipeline::promote::promote(context.declared()?, &request, context.printer).await?;
    context.finish_run(&target, "promote", &report).await
}
