//! `berth history`: a site's past deployments, from its Deployment's
//! ReplicaSet revisions and from berth's own run log
//! (`<state_dir>/runs.jsonl`), which every run, ship, rollback and promote
//! appends to. In a file with environments, each line names its environment,
//! and without `--env` every environment the site ships to is shown.

use std::io::Write as _;

use crate::commands::{json_document, selected_in};
use crate::config::{Config, Site};
use crate::deploy;
use crate::exit;
use crate::pipeline::{self, RunReport};
use crate::reference;
use crate::settings::Settings;
use crate::ui::{Printer, table};

/// `berth history`: one site's history in each of `views` (one per
/// environment) that it ships to, as tables or `--json` (`{"site",
/// "environments": [...]}`, one entry in a file without environments).
pub async fn command(
    settings: &Settings,
    views: &[Config],
    site: &str,
    printer: &Printer,
    started: std::time::SystemTime,
) -> anyhow::Result<u8> {
    let mut histories = Vec::new();
    for (config, sites) in selected_in(views, &[site.to_string()], None)? {
        if let Some(site) = sites.first() {
            histories.push(history(config, site).await?);
        }
    }
    if settings.json {
        let body = serde_json::json!({"site": site, "environments": histories});
        printer.result(&json_document("berth.history/v1", "history", started, &body)?);
    } else {
        let texts: Vec<String> = histories
            .iter()
            .map(|history| match &history.environment {
                Some(environment) if histories.len() > 1 => {
                    format!("{environment}:\n{}", history_text(history))
                }
                _ => history_text(history),
            })
            .collect();
        printer.result(&texts.join("\n"));
    }
    Ok(exit::OK)
}

/// A line of berth's run log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LogEntry {
    pub time: String,
    pub command: String,
    /// The environment (absent in a file without environments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub site: String,
    pub commit: Option<String>,
    pub image: Option<String>,
    pub action: String,
    pub error: Option<String>,
}

/// Appends one line per site of `report` to `<state_dir>/runs.jsonl`.
pub fn append_log(config: &Config, command: &str, report: &RunReport) -> std::io::Result<()> {
    std::fs::create_dir_all(&config.state_dir)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.state_dir.join("runs.jsonl"))?;
    let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut text = String::new();
    for site in &report.sites {
        let entry = LogEntry {
            time: time.clone(),
            command: command.to_string(),
            environment: report.environment.clone(),
            site: site.site.clone(),
            commit: site.commit.clone(),
            image: site.image.clone(),
            action: serde_json::to_value(site.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            error: site
                .error
                .as_ref()
                .map(|e| e.lines().next().unwrap_or_default().to_string()),
        };
        text.push_str(&serde_json::to_string(&entry).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    file.write_all(text.as_bytes())
}

/// The run log's lines about `site` in `config`'s environment, oldest first.
pub(crate) fn read_log(config: &Config, site: &str) -> Vec<LogEntry> {
    let Ok(text) = std::fs::read_to_string(config.state_dir.join("runs.jsonl")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<LogEntry>(line).ok())
        .filter(|entry| entry.site == site && entry.environment == config.environment)
        .collect()
}

/// A site's history: the Deployment's revisions and berth's run log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct History {
    pub site: String,
    pub environment: Option<String>,
    pub revisions: Vec<deploy::Revision>,
    pub runs: Vec<LogEntry>,
}

pub async fn history(config: &Config, site: &Site) -> anyhow::Result<History> {
    let deployer = pipeline::connect_cluster(config).await?;
    let revisions = deployer.history(&site.deployment).await?;
    Ok(History {
        site: site.name.clone(),
        environment: config.environment.clone(),
        revisions,
        runs: read_log(config, &site.name),
    })
}

pub fn history_text(history: &History) -> String {
    let rows: Vec<Vec<String>> = history
        .revisions
        .iter()
        .map(|r| {
            vec![
                format!("{}{}", r.revision, if r.current { " *" } else { "" }),
                r.commit.as_deref().map_or("-", reference::short).to_string(),
                r.created.clone().unwrap_or_else(|| "-".into()),
                r.change_cause.clone().unwrap_or_else(|| "-".into()),
                r.image.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut text = table(&["REVISION", "COMMIT", "CREATED", "CAUSE", "IMAGE"], &rows);
    if !history.runs.is_empty() {
        text.push('\n');
        let rows: Vec<Vec<String>> = history
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.time.clone(),
                    r.command.clone(),
                    r.commit.as_deref().map_or("-", reference::short).to_string(),
                    r.action.clone(),
                    r.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        text.push_str(&table(&["RUN", "COMMAND", "COMMIT", "RESULT", "ERROR"], &rows));
    }
    text
}
