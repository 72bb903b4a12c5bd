//! Notifications: the webhooks told about a run's result ([`tell`]): the
//! environment's `[notify]` hears of every site, a site's own `notify` of
//! that site only.
//!
//! 1. Decide from `[notify].on` whether this result is worth a message.
//! 2. POST one JSON body, Slack-compatible (`text`) with the whole report under
//!    `berth`, to the URL read from the environment variable the pipeline names
//!    (webhook URLs are secrets: never in the file, never printed).
//! 3. Retry transient failures with backoff; a webhook that stays down is a
//!    warning, never a failed run.

use std::time::Duration;

use http_body_util::{BodyExt, Full};

use crate::config::{Config, Notify, NotifyOn};
use crate::http::{self, HttpClient};
use crate::pipeline::{RunReport, SiteAction};
use crate::ui::Printer;

const ATTEMPTS: u32 = 3;

/// Why a webhook did not take a notification. No variant holds the URL,
/// which may carry a token.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The variable's value is not a URL berth can post to.
    #[error("the webhook URL is not a valid URL")]
    InvalidUrl,
    /// Nothing answered within the time allowed.
    #[error("no answer within 10s")]
    Timeout,
    /// The connection failed; its innermost cause is what people read.
    #[error("{}", http::connection_error(.0))]
    Connection(hyper_util::client::legacy::Error),
    /// The webhook answered, but not with success.
    #[error("HTTP {0}")]
    Status(hyper::StatusCode),
}

/// Tells the webhooks of `config` about `report` (its `--json` `document`):
/// the environment's `[notify]` about every site, and each site's own
/// `notify` in this environment about that site only. Never fails the run.
pub async fn tell(
    config: &Config,
    command: &str,
    report: &RunReport,
    document: &serde_json::Value,
    started: std::time::SystemTime,
    printer: &Printer,
) {
    if let Some(webhook) = &config.notify {
        send(webhook, command, report, document.clone(), printer).await;
    }
    for site in &report.sites {
        if let Some(webhook) = config.site(&site.site).and_then(|s| s.notify.as_ref()) {
            let own = RunReport {
                environment: report.environment.clone(),
                sites: vec![site.clone()],
                interrupted: report.interrupted,
            };
            let document = own.document(command, started, own.exit_code());
            send(webhook, command, &own, document, printer).await;
        }
    }
}

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
    let failed = report.exit_code() != crate::exit::OK;
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
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        match post(&client, &url, &body).await {
            Ok(()) => return,
            Err(error) => {
                last = Some(error);
                if attempt < ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt * attempt))).await;
                }
            }
        }
    }
    // The URL itself may hold a token: name the variable, not the URL.
    printer.warning(&format!(
        "the webhook in {} did not take the notification after {ATTEMPTS} attempts: {}",
        notify.webhook_env,
        last.map(|error| error.to_string()).unwrap_or_default()
    ));
}

async fn post(client: &HttpClient<Full<bytes::Bytes>>, url: &str, body: &str) -> Result<(), NotifyError> {
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", http::USER_AGENT)
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .map_err(|_| NotifyError::InvalidUrl)?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| NotifyError::Timeout)?
        .map_err(NotifyError::Connection)?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(NotifyError::Status(status))
    }
}
