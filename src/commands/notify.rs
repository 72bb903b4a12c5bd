//! Notifications: an optional webhook told about a run's result.
//!
//! 1. Decide from `[notify].on` whether this result is worth a message.
//! 2. POST one JSON body, Slack-compatible (`text`) with the whole report under
//!    `berth`, to the URL read from the environment variable the pipeline names
//!    (webhook URLs are secrets: never in the file, never printed).
//! 3. Retry transient failures with backoff; a webhook that stays down is a
//!    warning, never a failed run.

use std::time::Duration;

use http_body_util::{BodyExt, Full};

use crate::config::{Notify, NotifyOn};
use crate::http::{self, HttpClient};
use crate::pipeline::{RunReport, SiteAction};
use crate::ui::Printer;

const ATTEMPTS: u32 = 3;

/// The Slack-compatible one-line summary of a run.
pub fn summary_text(command: &str, report: &RunReport) -> String {
    let count = |action: SiteAction| report.sites.iter().filter(|s| s.action == action).count();
    let failed: Vec<&str> = report
        .sites
        .iter()
        .filter(|s| s.action == SiteAction::Failed)
        .map(|s| s.site.as_str())
        .collect();
    let mut text = format!(
        "berth {command}: {} deployed, {} unchanged, {} up to date, {} failed",
        count(SiteAction::Deployed),
        count(SiteAction::Unchanged),
        count(SiteAction::UpToDate),
        failed.len()
    );
    if !failed.is_empty() {
        text.push_str(&format!(" ({})", failed.join(", ")));
    }
    text
}

/// Sends the notification if the configuration asks for it. Never fails the run.
pub async fn send(
    notify: &Notify,
    command: &str,
    report: &RunReport,
    document: serde_json::Value,
    printer: &Printer,
) {
    // As the exit code says: an interrupted run is no success either.
    let failed = crate::exit::of_run(report) != crate::exit::OK;
    let wanted = match notify.on {
        NotifyOn::Always => true,
        NotifyOn::Failure => failed,
        NotifyOn::Success => !failed,
    };
    if !wanted {
        return;
    }
    let Ok(url) = std::env::var(&notify.webhook_env) else {
        printer.warning(&format!(
            "no notification sent: {} is not set",
            notify.webhook_env
        ));
        return;
    };
    let body = serde_json::json!({ "text": summary_text(command, report), "berth": document }).to_string();
    let client = match http::client(Duration::from_secs(10)) {
        Ok(client) => client,
        Err(error) => {
            printer.warning(&format!("no notification sent: {error}"));
            return;
        }
    };
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match post(&client, &url, &body).await {
            Ok(()) => return,
            Err(error) => {
                last = error;
                if attempt < ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt * attempt))).await;
                }
            }
        }
    }
    // The URL itself may hold a token: name the variable, not the URL.
    printer.warning(&format!(
        "the webhook in {} did not take the notification after {ATTEMPTS} attempts: {last}",
        notify.webhook_env
    ));
}

async fn post(client: &HttpClient<Full<bytes::Bytes>>, url: &str, body: &str) -> Result<(), String> {
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", http::USER_AGENT)
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .map_err(|_| "the webhook URL is not a valid URL".to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "no answer within 10s".to_string())?
        .map_err(|e| http::connection_error(&e))?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}
