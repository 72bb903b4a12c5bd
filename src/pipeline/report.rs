//! What a run did, per site: the report behind the summary table, the run
//! log and the `--json` document (schema: docs/schema/report.schema.json).

use std::collections::BTreeMap;

use crate::deploy;
use crate::exit::{self, Kind};
use crate::reference;
use crate::ui::{Printer, Status, table};

/// What happened to one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteAction {
    /// Built (or found in the registry), pushed and rolled out.
    Deployed,
    /// The Deployment already runs this source digest: nothing was done.
    Unchanged,
    /// The Deployment already ran exactly this image.
    UpToDate,
    /// Something failed; `error` says what.
    Failed,
    /// berth was interrupted before this site's next stage; its Deployment was not touched.
    Interrupted,
}

/// The result of one site.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteReport {
    pub site: String,
    pub commit: Option<String>,
    pub source_digest: Option<String>,
    /// SHA-256 of the build context berth sent to the Engine (when it built).
    pub context_digest: Option<String>,
    /// What the site's image serves, times left out (when berth knows it).
    pub content_digest: Option<String>,
    /// Why the site is unchanged or up to date, in words.
    pub reason: Option<String>,
    pub image: Option<String>,
    pub digest: Option<String>,
    pub action: SiteAction,
    /// Seconds per stage.
    pub durations: BTreeMap<String, f64>,
    pub error: Option<String>,
    /// Why it failed: `site`, `environment` (or `interrupted`).
    pub failure: Option<Kind>,
    /// What berth checked after a rollout Kubernetes called complete: the
    /// digest each ready pod runs, and a request through each Service.
    pub verification: Option<deploy::verify::Verification>,
    /// `berth promote`: where the image came from and what it is in each
    /// environment.
    pub promotion: Option<Promotion>,
    /// `berth rollback`: the revision it went to, why, and the earlier ones
    /// it passed over.
    pub rollback: Option<deploy::revisions::RollbackChoice>,
}

/// What `berth promote` took from one environment and deployed to another.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Promotion {
    pub from: String,
    pub to: String,
    /// The image as the source environment runs (or ran) it.
    pub source_image: String,
    pub source_digest: String,
    /// The image as the target environment's registry holds it.
    pub target_image: String,
    pub target_digest: String,
    /// The two digests are the same: the target runs the bytes that passed.
    pub same_digest: bool,
    /// The image was copied to the target's registry (another registry).
    pub copied: bool,
    /// Blobs the copy uploaded, and their bytes; blobs the target already held.
    pub blobs_copied: usize,
    pub bytes_copied: u64,
    pub blobs_present: usize,
}

impl SiteReport {
    /// A report that says "failed" until a stage says otherwise.
    pub fn new(site: &str) -> Self {
        Self {
            site: site.to_string(),
            commit: None,
            source_digest: None,
            context_digest: None,
            content_digest: None,
            reason: None,
            image: None,
            digest: None,
            action: SiteAction::Failed,
            durations: BTreeMap::new(),
            error: None,
            failure: None,
            verification: None,
            promotion: None,
            rollback: None,
        }
    }

    /// The site failed (or was interrupted) with `error`, said on `printer`.
    pub fn fail(&mut self, kind: Kind, error: &anyhow::Error, printer: &Printer) {
        let message = format!("{error:#}");
        printer.stage(&self.site, "result", Status::Failed, &message);
        self.error = Some(message);
        self.failure = Some(kind);
        self.action = if kind == Kind::Interrupted {
            SiteAction::Interrupted
        } else {
            SiteAction::Failed
        };
    }
}

impl SiteReport {
    /// What the site failed with, for the exit code; none when it did not fail.
    pub fn failed_with(&self) -> Option<Kind> {
        match self.action {
            SiteAction::Failed => Some(self.failure.unwrap_or(Kind::Site)),
            SiteAction::Interrupted => Some(Kind::Interrupted),
            SiteAction::Deployed | SiteAction::Unchanged | SiteAction::UpToDate => None,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    /// The environment it worked in (`None` in a file without environments).
    pub environment: Option<String>,
    pub sites: Vec<SiteReport>,
    /// berth was interrupted (Ctrl-C, SIGTERM) during the run: sites not
    /// started then were left alone.
    pub interrupted: bool,
}

impl RunReport {
    /// The run's exit code: interrupted when berth was interrupted during it
    /// (the sites in flight then finished or rolled back), else the worst
    /// kind a site failed with ([`exit::code`]).
    pub fn exit_code(&self) -> u8 {
        let interrupted = self.interrupted.then_some(Kind::Interrupted);
        exit::code(
            self.sites
                .iter()
                .filter_map(SiteReport::failed_with)
                .chain(interrupted),
        )
    }

    /// The `--json` document of run, ship and rollback (schema: docs/schema/report.schema.json).
    pub fn document(
        &self,
        command: &str,
        started: std::time::SystemTime,
        exit_code: u8,
    ) -> serde_json::Value {
        serde_json::json!({
            "schema": "berth.report/v1",
            "command": command,
            "started_at": humantime::format_rfc3339_seconds(started).to_string(),
            "duration_seconds": started.elapsed().unwrap_or_default().as_secs_f64(),
            "exit_code": exit_code,
            "environment": self.environment,
            "interrupted": self.interrupted,
            "sites": self.sites,
        })
    }

    pub fn summary(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .sites
            .iter()
            .map(|site| {
                let total = site.durations.values().fold(0.0, |sum, seconds| sum + seconds);
                vec![
                    site.site.clone(),
                    site.commit.as_deref().map_or("-", reference::short).to_string(),
                    format!("{:?}", site.action)
                        .to_lowercase()
                        .replace("uptodate", "up-to-date"),
                    site.image.as_deref().map_or_else(|| "-".into(), short_image),
                    format!("{total:.1}s"),
                ]
            })
            .collect();
        table(&["SITE", "COMMIT", "RESULT", "IMAGE", "TIME"], &rows)
    }
}
/// `registry/repo:<12 hex>@sha256:<12 hex>` for tables; JSON keeps the full reference.
fn short_image(image: &str) -> String {
    let (name, digest) = image.split_once('@').unwrap_or((image, ""));
    let (repository, tag) = name
        .rsplit_once(':')
        .filter(|(r, _)| !r.ends_with(']'))
        .unwrap_or((name, ""));
    let mut text = repository.to_string();
    if !tag.is_empty() {
        text.push(':');
        text.push_str(&tag[..tag.len().min(12)]);
    }
    if let Some(hex) = digest.strip_prefix("sha256:") {
        text.push_str("@sha256:");
        text.push_str(&hex[..hex.len().min(12)]);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(actions: &[(SiteAction, Option<Kind>)], interrupted: bool) -> RunReport {
        RunReport {
            environment: None,
            sites: actions
                .iter()
                .map(|(action, failure)| SiteReport {
                    action: *action,
                    failure: *failure,
                    ..SiteReport::new("www")
                })
                .collect(),
            interrupted,
        }
    }

    #[test]
    fn an_interrupted_run_exits_130_whatever_its_sites_did() {
        let deployed = (SiteAction::Deployed, None);
        let failed = (SiteAction::Failed, Some(Kind::Environment));
        let skipped = (SiteAction::Interrupted, Some(Kind::Interrupted));
        assert_eq!(report(&[deployed], false).exit_code(), exit::OK);
        assert_eq!(
            report(&[deployed], true).exit_code(),
            exit::INTERRUPTED,
            "in flight, then done"
        );
        assert_eq!(report(&[deployed, skipped], false).exit_code(), exit::INTERRUPTED);
        assert_eq!(report(&[failed, skipped], true).exit_code(), exit::INTERRUPTED);
        assert_eq!(report(&[failed], false).exit_code(), exit::ENVIRONMENT);
        assert_eq!(
            report(&[(SiteAction::Failed, Some(Kind::Site))], false).exit_code(),
            exit::SITE_FAILED
        );
        // A failure whose kind was never said is the site's.
        assert_eq!(
            report(&[(SiteAction::Failed, None)], false).exit_code(),
            exit::SITE_FAILED
        );
    }
}
