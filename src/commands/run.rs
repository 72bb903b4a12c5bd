//! `berth run`: the nightly job, every site (or the named ones, or a shard
//! of them) at its branch head, through the pipeline; its result printed,
//! logged and sent to the webhooks ([`Context::finish_run`]).

use crate::commands::{Context, DeployArgs};
use crate::pipeline::select::Shard;
use crate::pipeline::{self, CommitChoice, interrupt};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sites to run (default: all).
    pub sites: Vec<String>,
    /// How many sites to work on at once.
    #[arg(long, short = 'j', default_value_t = 2)]
    pub jobs: usize,
    /// Only this shard of the sites, `I/N` (1-based); shards split sites deterministically.
    #[arg(long)]
    pub shard: Option<Shard>,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

/// The named sites (all when none), narrowed to the shard, at their branch heads.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let config = context.view()?;
    let selected = pipeline::select(&config, &args.sites, args.shard)?;
    let interrupted = interrupt::watch(context.printer);
    let options = args.deploy.options();
    let choice = CommitChoice::BranchHead;
    let report = pipeline::run(
        &config,
        &selected,
        choice,
        args.jobs.max(1),
        &options,
        interrupted,
        context.printer,
    )
    .await?;
    context.finish_run(&config, "run", &report).await
}
