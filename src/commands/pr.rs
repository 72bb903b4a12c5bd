//! `berth pr deploy|close|list|gc`: pull requests' previews from the command
//! line, as CI drives them ([`pipeline::preview`]); `berth serve` drives the
//! same from the forge's `pull_request` webhooks. Without `[forge]` a preview
//! is deployed and closed all the same, and the report says that no comment
//! or status was written.

use crate::commands::{Context, DeployArgs};
use crate::exit;
use crate::pipeline::preview::{self, PreviewAction, PreviewReport, Request};
use crate::pipeline::{self, Connections};
use crate::reference;
use crate::ui::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Build, deploy and check a pull request's preview of a site, and say so on the pull request.
    Deploy(DeployPreview),
    /// Delete a pull request's preview of a site (its Deployment, Service and Ingress).
    Close(ClosePreview),
    /// List the previews in the cluster.
    List,
    /// Delete the previews whose pull request is closed (the forge says) or that sat idle past [preview] ttl.
    Gc,
}

#[derive(Debug, clap::Args)]
pub struct DeployPreview {
    /// The site.
    pub site: String,
    /// The pull (or merge) request's number.
    #[arg(long)]
    pub number: u64,
    /// Its head commit (default: what the forge says).
    #[arg(long)]
    pub commit: Option<String>,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

#[derive(Debug, clap::Args)]
pub struct ClosePreview {
    /// The site.
    pub site: String,
    /// The pull (or merge) request's number.
    #[arg(long)]
    pub number: u64,
}

/// Runs the `pr` action asked for.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let config = context.view()?;
    let printer = context.printer;
    match args.action {
        Action::Deploy(deploy) => {
            let commit = match deploy.commit {
                Some(commit) => commit,
                None => preview::head_commit(&config, &deploy.site, deploy.number).await?,
            };
            let connections = Connections::open(&config).await?;
            let interrupted = pipeline::interrupt::watch(printer);
            let report = preview::deploy(
                &config,
                &connections,
                &Request {
                    site: &deploy.site,
                    number: deploy.number,
                    commit: &commit,
                },
                &deploy.deploy.options(),
                interrupted,
                printer,
            )
            .await;
            print_reports(context, "deploy", std::slice::from_ref(&report))
        }
        Action::Close(close) => {
            let report = preview::close(
                &config,
                &close.site,
                close.number,
                "closed by `berth pr close`",
                printer,
            )
            .await?;
            print_reports(context, "close", std::slice::from_ref(&report))
        }
        Action::List => {
            let found = preview::list(&config).await?;
            if context.settings.json {
                let body = serde_json::json!({ "previews": found });
                printer.result(&context.document("berth.pr-list/v1", "pr list", &body)?);
            } else {
                let rows: Vec<Vec<String>> = found
                    .iter()
                    .map(|preview| {
                        vec![
                            preview.site.clone(),
                            format!("#{}", preview.number),
                            preview
                                .commit
                                .as_deref()
                                .map_or("-", reference::short)
                                .to_string(),
                            preview.url.clone().unwrap_or_else(|| "-".into()),
                            preview.expires.clone().unwrap_or_else(|| "-".into()),
                            format!("{}/{}", preview.namespace, preview.name),
                        ]
                    })
                    .collect();
                printer.result(&table(
                    &["SITE", "PR", "COMMIT", "URL", "EXPIRES", "DEPLOYMENT"],
                    &rows,
                ));
            }
            Ok(exit::OK)
        }
        Action::Gc => {
            let reports = preview::sweep(&config, printer).await?;
            print_reports(context, "gc", &reports)
        }
    }
}

/// The reports as a table or `--json` (`berth.pr/v1`); exit 1 when one failed
/// or was refused.
fn print_reports(context: &Context<'_>, action: &str, reports: &[PreviewReport]) -> anyhow::Result<u8> {
    if context.settings.json {
        let body = serde_json::json!({ "action": action, "previews": reports });
        context
            .printer
            .result(&context.document("berth.pr/v1", &format!("pr {action}"), &body)?);
    } else {
        let rows: Vec<Vec<String>> = reports
            .iter()
            .map(|report| {
                vec![
                    report.site.clone(),
                    format!("#{}", report.number),
                    serde_json::to_value(report.action)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    report.url.clone().unwrap_or_else(|| "-".into()),
                    report.comment.clone(),
                    report
                        .reason
                        .clone()
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ]
            })
            .collect();
        context
            .printer
            .result(&table(&["SITE", "PR", "RESULT", "URL", "COMMENT", "WHY"], &rows));
    }
    Ok(exit::of_failures(reports.iter().map(|report| {
        matches!(report.action, PreviewAction::Failed | PreviewAction::Refused)
    })))
}
