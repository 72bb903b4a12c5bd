//! berth's run log, `<state_dir>/runs.jsonl`: one JSON line per site of
//! every `run`, `ship`, `rollback` and `promote`, naming its environment.
//! `history` shows it beside the Deployment's revisions, and `rollback`
//! reads from it which images failed ([`failed_runs`]).

use std::io::Write as _;

use crate::config::Config;
use crate::deploy::revisions::FailedRun;
use crate::pipeline::{RunReport, SiteAction};

/// The run log's file in a state folder.
const FILE: &str = "runs.jsonl";

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

/// Appends one line per site of `report` to the run log of `config`'s state folder.
pub fn append(config: &Config, command: &str, report: &RunReport) -> std::io::Result<()> {
    std::fs::create_dir_all(&config.state_dir)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.state_dir.join(FILE))?;
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
            action: action_word(site.action),
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
pub fn read(config: &Config, site: &str) -> Vec<LogEntry> {
    let Ok(text) = std::fs::read_to_string(config.state_dir.join(FILE)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<LogEntry>(line).ok())
        .filter(|entry| entry.site == site && entry.environment == config.environment)
        .collect()
}

/// The runs of `site` that the run log (this state folder's) records as
/// failed, with the image each set, oldest first.
pub fn failed_runs(config: &Config, site: &str) -> Vec<FailedRun> {
    let failed = action_word(SiteAction::Failed);
    read(config, site)
        .into_iter()
        .filter(|entry| entry.action == failed)
        .filter_map(|entry| {
            Some(FailedRun {
                image: entry.image?,
                time: entry.time,
            })
        })
        .collect()
}

/// An action as the report's JSON spells it (`up-to-date`).
fn action_word(action: SiteAction) -> String {
    serde_json::to_value(action)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::SiteReport;

    /// A pipeline file of one site, its state folder `state_dir`, seen in `environment`.
    fn config(state_dir: &std::path::Path, environment: Option<&str>) -> Config {
        let text = r#"
[registry]
address = "127.0.0.1:5000"
credentials = "none"
[[repo]]
name = "www"
url = "http://127.0.0.1:8480/git/www.git"
[[site]]
name = "www"
repo = "www"
image = "sites/www"
deployment = { name = "www", container = "web" }
"#;
        // Beside the repo's own pipeline file, whose templates it names.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.toml");
        let mut config = Config::parse(&path, text).unwrap();
        config.state_dir = state_dir.to_path_buf();
        config.environment = environment.map(str::to_string);
        config
    }

    #[test]
    fn a_run_is_logged_per_site_and_read_back_by_site_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let staging = config(dir.path(), Some("staging"));
        let production = config(dir.path(), Some("production"));
        let failed = SiteReport {
            image: Some("registry/www:1@sha256:1".into()),
            error: Some("rollout failed\nmore".into()),
            ..SiteReport::new("www")
        };
        let deployed = SiteReport {
            action: SiteAction::Deployed,
            image: Some("registry/www:2@sha256:2".into()),
            ..SiteReport::new("www")
        };
        let report = |sites: Vec<SiteReport>, environment: &str| RunReport {
            environment: Some(environment.into()),
            sites,
            interrupted: false,
        };
        append(&staging, "ship", &report(vec![failed], "staging")).unwrap();
        append(&staging, "ship", &report(vec![deployed.clone()], "staging")).unwrap();
        append(&production, "promote", &report(vec![deployed], "production")).unwrap();
        let lines = read(&staging, "www");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].action, "failed");
        assert_eq!(
            lines[0].error.as_deref(),
            Some("rollout failed"),
            "the first line only"
        );
        assert_eq!(lines[1].action, "deployed");
        assert_eq!(read(&production, "www").len(), 1);
        assert!(read(&staging, "other").is_empty());
        let failed = failed_runs(&staging, "www");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].image, "registry/www:1@sha256:1");
        assert!(failed_runs(&production, "www").is_empty());
    }
}
