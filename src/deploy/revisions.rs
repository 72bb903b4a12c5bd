//! A Deployment's past: its ReplicaSet revisions (image, commit, cause,
//! time) for `berth history`, and the revision `berth rollback` returns to.
//!
//! Which revision that is, is a pure decision ([`choose`], [`named`]) over
//! the revisions newest first, the images that passed berth's verification on the
//! Deployment (its lease's `berth.dev/passed` record) and the images berth's
//! run log records as failed. The lease decides what is good: it is shared by
//! every machine that ships the site, while the run log is one state dir's,
//! so the log only adds failures (and their time) that the lease does not
//! contradict.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};

use crate::config::DeploymentTarget;
use crate::deploy::{
    CHANGE_CAUSE_ANNOTATION, COMMIT_ANNOTATION, CONTENT_DIGEST_ANNOTATION, DeployError, Deployer,
    IMAGE_ANNOTATION, Passed, REVISION_ANNOTATION, Revision, SOURCE_DIGEST_ANNOTATION, selector_of,
    target_error,
};
use crate::reference;

/// One revision as `berth rollback` weighs it.
#[derive(Debug, Clone)]
pub struct Past {
    pub revision: Revision,
    /// The image berth's annotation on the ReplicaSet says berth set
    /// (`berth.dev/image`); berth set this revision only when it is the
    /// revision's image.
    pub shipped_image: Option<String>,
}

impl Past {
    fn set_by_berth(&self) -> bool {
        self.revision.image.is_some() && self.shipped_image == self.revision.image
    }
}

/// A run of the site that berth's run log records as failed, with the image
/// it set.
#[derive(Debug, Clone)]
pub struct FailedRun {
    pub image: String,
    /// When (RFC 3339), as the log says.
    pub time: String,
}

/// Why `berth rollback` passes over an earlier revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Skip {
    /// It runs the image that runs now: going there changes nothing.
    SameImage,
    /// Its ReplicaSet has no container of the target's name.
    NoImage,
    /// berth's run log records a failed run of its image, and the lease's
    /// passed record does not name it.
    Failed,
    /// berth set it after the lease's passed record began ([`record_since`]),
    /// and the record does not name its image: its rollout or its verification
    /// failed, on whichever machine shipped it.
    NeverPassed,
}

/// An earlier revision `berth rollback` passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub revision: i64,
    pub commit: Option<String>,
    pub image: Option<String>,
    pub reason: Skip,
    /// The reason in words: "its rollout failed and was rolled back (...)".
    pub message: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "revision {}", self.revision)?;
        match (&self.commit, &self.image) {
            (Some(commit), _) => write!(f, " (commit {}…)", reference::short(commit))?,
            (None, Some(image)) => write!(f, " ({image})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// Why `berth rollback` goes to the revision it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// Its image passed berth's verification on this Deployment.
    Passed,
    /// berth has no record of it (set before berth, or by someone else): a
    /// candidate, as `kubectl rollout undo` would take it.
    Unknown,
    /// `--to` named its commit.
    Named,
}

/// The revision `berth rollback` returns to, and what it passed over.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollbackChoice {
    #[serde(skip)]
    pub target: Revision,
    pub revision: i64,
    pub basis: Basis,
    /// When the target's image passed berth's verification, if the lease says it did.
    pub passed_at: Option<String>,
    /// With `--to`: what berth knows against the named revision, which it
    /// tries anyway.
    pub warning: Option<String>,
    /// The earlier revisions passed over, newest first.
    pub skipped: Vec<Skipped>,
}

impl RollbackChoice {
    /// The rollback line: the target, why, and each revision passed over.
    pub fn summary(&self) -> String {
        let image = self.target.image.as_deref().unwrap_or("-");
        let mut text = format!("to revision {} ({image})", self.revision);
        match (self.basis, &self.passed_at) {
            (Basis::Passed, Some(at)) => {
                text.push_str(&format!(", which passed berth's verification at {at}"));
            }
            (Basis::Unknown, _) => {
                text.push_str(", which berth has no record of (set before berth, or by someone else)");
            }
            _ => {}
        }
        if !self.skipped.is_empty() {
            let skipped: Vec<String> = self.skipped.iter().map(ToString::to_string).collect();
            text.push_str(&format!("; skipped {}", skipped.join("; ")));
        }
        text
    }
}

/// What berth knows of one earlier revision.
enum Verdict {
    Good { at: String },
    Unknown,
    Skip(Skip, String),
}

/// Two references name the same image: the same digest, or (without one)
/// the same reference.
fn same_image(a: &str, b: &str) -> bool {
    match (reference::digest(a), reference::digest(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// Since when the lease's passed record names every image that passed: its
/// oldest entry's time (an image that passed later is newer in the record,
/// which drops its oldest first); none without a record (no image passed
/// yet, the lease was lost, or a berth older than the record shipped).
fn record_since(passed: &[Passed]) -> Option<Timestamp> {
    passed.iter().filter_map(|p| p.at.parse::<Timestamp>().ok()).min()
}

/// The record speaks for `past`: its ReplicaSet was made after the record
/// began, so each time its image was set is too.
fn covered(past: &Past, since: Option<Timestamp>) -> bool {
    let created = past
        .revision
        .created
        .as_deref()
        .and_then(|c| c.parse::<Timestamp>().ok());
    matches!((created, since), (Some(created), Some(since)) if created >= since)
}

fn verdict(past: &Past, current_image: Option<&str>, passed: &[Passed], failed: &[FailedRun]) -> Verdict {
    let Some(image) = past.revision.image.as_deref() else {
        return Verdict::Skip(Skip::NoImage, "it has no container of that name".into());
    };
    if current_image.is_some_and(|current| same_image(current, image)) {
        return Verdict::Skip(Skip::SameImage, "it runs the image that runs now".into());
    }
    if let Some(passed) = passed.iter().find(|p| same_image(&p.image, image)) {
        return Verdict::Good {
            at: passed.at.clone(),
        };
    }
    if let Some(run) = failed.iter().rev().find(|run| same_image(&run.image, image)) {
        return Verdict::Skip(
            Skip::Failed,
            format!(
                "its rollout failed and was rolled back (berth's run log, {})",
                run.time
            ),
        );
    }
    if past.set_by_berth() && covered(past, record_since(passed)) {
        return Verdict::Skip(
            Skip::NeverPassed,
            "berth shipped it, but it never passed berth's verification (the Deployment's passed record does not name it)"
                .into(),
        );
    }
    Verdict::Unknown
}

fn skipped(past: &Past, reason: Skip, message: String) -> Skipped {
    Skipped {
        revision: past.revision.revision,
        commit: past.revision.commit.clone(),
        image: past.revision.image.clone(),
        reason,
        message,
    }
}

fn current_image(pasts: &[Past]) -> Option<&str> {
    pasts
        .iter()
        .find(|p| p.revision.current)
        .and_then(|p| p.revision.image.as_deref())
}

/// The revision `berth rollback` (without `--to`) returns to: the newest
/// earlier one whose image passed berth's verification, or that berth has no record
/// of; each newer one it passes over is said with why. `pasts` are the
/// Deployment's revisions newest first (the current one marked), `passed`
/// the lease's record, `failed` the run log's failed runs of the site, oldest
/// first. None good: the revisions passed over.
pub fn choose(
    pasts: &[Past],
    passed: &[Passed],
    failed: &[FailedRun],
) -> Result<RollbackChoice, Vec<Skipped>> {
    let current = current_image(pasts);
    let mut passed_over = Vec::new();
    for past in pasts.iter().filter(|p| !p.revision.current) {
        let (basis, passed_at) = match verdict(past, current, passed, failed) {
            Verdict::Good { at } => (Basis::Passed, Some(at)),
            Verdict::Unknown => (Basis::Unknown, None),
            Verdict::Skip(reason, message) => {
                passed_over.push(skipped(past, reason, message));
                continue;
            }
        };
        return Ok(RollbackChoice {
            target: past.revision.clone(),
            revision: past.revision.revision,
            basis,
            passed_at,
            warning: None,
            skipped: passed_over,
        });
    }
    Err(passed_over)
}

/// The revision `berth rollback --to COMMIT` returns to: the newest earlier
/// one whose commit starts with `commit`, failed or not; what berth knows
/// against it is its warning.
pub fn named(
    pasts: &[Past],
    commit: &str,
    passed: &[Passed],
    failed: &[FailedRun],
) -> Option<RollbackChoice> {
    let current = current_image(pasts);
    let past = pasts.iter().find(|p| {
        !p.revision.current
            && p.revision
                .commit
                .as_deref()
                .is_some_and(|c| c.starts_with(commit))
    })?;
    let (passed_at, warning) = match verdict(past, current, passed, failed) {
        Verdict::Good { at } => (Some(at), None),
        Verdict::Unknown | Verdict::Skip(Skip::SameImage, _) => (None, None),
        Verdict::Skip(reason, message) => (None, Some(skipped(past, reason, message).to_string())),
    };
    Some(RollbackChoice {
        target: past.revision.clone(),
        revision: past.revision.revision,
        basis: Basis::Named,
        passed_at,
        warning,
        skipped: Vec::new(),
    })
}

impl Deployer {
    /// The Deployment's revisions, newest first, from its ReplicaSets.
    pub async fn history(&self, target: &DeploymentTarget) -> Result<Vec<Revision>, DeployError> {
        let deployment = self.read(target).await?;
        self.history_of(&deployment, target).await
    }

    /// The revisions of `deployment` (just read), newest first.
    pub async fn history_of(
        &self,
        deployment: &Deployment,
        target: &DeploymentTarget,
    ) -> Result<Vec<Revision>, DeployError> {
        let pasts = self.pasts_of(deployment, target).await?;
        Ok(pasts.into_iter().map(|past| past.revision).collect())
    }

    /// The revisions of `deployment`, newest first, each with the image berth
    /// says it set there.
    async fn pasts_of(
        &self,
        deployment: &Deployment,
        target: &DeploymentTarget,
    ) -> Result<Vec<Past>, DeployError> {
        let current = deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .cloned();
        let labels = selector_of(deployment).unwrap_or_default();
        let replica_sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &target.namespace);
        let list = replica_sets
            .list(&ListParams::default().labels(&labels))
            .await
            .map_err(|e| target_error(e, "list", "replicasets", target))?;
        let uid = deployment.metadata.uid.clone();
        let mut pasts: Vec<Past> = list
            .items
            .iter()
            .filter(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|owner| Some(&owner.uid) == uid.as_ref())
            })
            .filter_map(|rs| {
                let annotations = rs.metadata.annotations.clone().unwrap_or_default();
                let revision = annotations.get(REVISION_ANNOTATION)?.parse().ok()?;
                let image = rs
                    .spec
                    .template
                    .as_ref()
                    .and_then(|template| template.spec.as_ref())
                    .and_then(|spec| spec.containers.iter().find(|c| c.name == target.container))
                    .and_then(|c| c.image.clone());
                Some(Past {
                    revision: Revision {
                        revision,
                        image,
                        commit: annotations.get(COMMIT_ANNOTATION).cloned(),
                        source_digest: annotations.get(SOURCE_DIGEST_ANNOTATION).cloned(),
                        content_digest: annotations.get(CONTENT_DIGEST_ANNOTATION).cloned(),
                        change_cause: annotations.get(CHANGE_CAUSE_ANNOTATION).cloned(),
                        created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
                        current: current.as_deref() == Some(revision.to_string().as_str()),
                    },
                    shipped_image: annotations.get(IMAGE_ANNOTATION).cloned(),
                })
            })
            .collect();
        pasts.sort_by_key(|past| std::cmp::Reverse(past.revision.revision));
        Ok(pasts)
    }

    /// The revision to roll back to ([`choose`]), or the newest whose commit
    /// starts with `to` ([`named`]); `failed` are the run log's failed runs
    /// of the site, oldest first.
    pub async fn rollback_choice(
        &self,
        target: &DeploymentTarget,
        to: Option<&str>,
        failed: &[FailedRun],
    ) -> Result<RollbackChoice, DeployError> {
        let deployment = self.read(target).await?;
        let pasts = self.pasts_of(&deployment, target).await?;
        let (_, passed) = self.deployed_and_passed(&deployment, target).await?;
        let no_revision = |detail: String| DeployError::NoRevision {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            detail,
        };
        if let Some(commit) = to {
            return named(&pasts, commit, &passed, failed).ok_or_else(|| {
                no_revision(format!(
                    "no earlier ReplicaSet ran commit {commit} (ship it with `berth ship --commit {commit} --allow-older`)"
                ))
            });
        }
        choose(&pasts, &passed, failed).map_err(|skipped| no_revision(none_good(&skipped)))
    }
}

/// Why no earlier revision will do, when [`choose`] passed over `skipped`.
fn none_good(skipped: &[Skipped]) -> String {
    if skipped.iter().all(|s| s.reason == Skip::SameImage) {
        return "it has only one revision".into();
    }
    let list: Vec<String> = skipped.iter().map(|s| format!("\n  - {s}")).collect();
    format!(
        "no earlier revision is known to be good; berth left the Deployment as it is:{}\nto roll back to one of them anyway, name its commit with `--to COMMIT`",
        list.concat()
    )
}

#[cfg(test)]
mod tests {
    use super::{Basis, FailedRun, Past, Skip, choose, named, none_good};
    use crate::deploy::{Passed, Revision};

    const REPO: &str = "127.0.0.1:5000/sites/www";

    fn image(n: u8) -> String {
        format!("{REPO}:c{n}@sha256:{}", format!("{n}").repeat(64))
    }

    /// Revision `n` ran `image` (commit `c<n>`), set by berth at `1<n>:30`,
    /// after the fixtures' passes (10:00).
    fn berths(n: i64, image: &str) -> Past {
        Past {
            revision: Revision {
                revision: n,
                image: Some(image.to_string()),
                commit: Some(format!("c{n}")),
                source_digest: None,
                content_digest: None,
                change_cause: None,
                created: Some(format!("2026-12-01T1{n}:30:00Z")),
                current: false,
            },
            shipped_image: Some(image.to_string()),
        }
    }

    /// Revision `n` ran `image`, set by someone else (no berth annotation).
    fn foreign(n: i64, image: &str) -> Past {
        let mut past = berths(n, image);
        past.revision.commit = None;
        past.shipped_image = None;
        past
    }

    fn current(mut past: Past) -> Past {
        past.revision.current = true;
        past
    }

    fn passed(image: &str) -> Passed {
        Passed {
            commit: String::new(),
            image: image.to_string(),
            source_digest: None,
            content_digest: None,
            at: "2026-12-01T10:00:00Z".into(),
        }
    }

    fn failed(image: &str) -> FailedRun {
        FailedRun {
            image: image.to_string(),
            time: "2026-12-01T11:00:00Z".into(),
        }
    }

    /// A good ship (2), a ship that failed and was rolled back (3, the
    /// rollback made the good one revision 4), over a Deployment someone
    /// else created (1).
    fn after_a_failed_ship() -> Vec<Past> {
        vec![
            current(berths(4, &image(2))),
            berths(3, &image(3)),
            berths(2, &image(1)),
            foreign(1, "busybox:1.36"),
        ]
    }

    #[test]
    fn rollback_goes_past_a_failed_revision_to_the_newest_that_passed_and_says_why() {
        let pasts = after_a_failed_ship();
        let passed = [passed(&image(2)), passed(&image(1))];
        let choice = choose(&pasts, &passed, &[failed(&image(3))]).unwrap();
        assert_eq!((choice.revision, choice.basis), (2, Basis::Passed));
        assert_eq!(choice.passed_at.as_deref(), Some("2026-12-01T10:00:00Z"));
        assert_eq!(choice.skipped.len(), 1);
        assert_eq!(choice.skipped[0].reason, Skip::Failed);
        assert_eq!(
            choice.skipped[0].to_string(),
            "revision 3 (commit c3…): its rollout failed and was rolled back (berth's run log, 2026-12-01T11:00:00Z)"
        );
        let summary = choice.summary();
        assert!(
            summary.starts_with(&format!("to revision 2 ({})", image(1))),
            "{summary}"
        );
        assert!(summary.contains("; skipped revision 3 (commit c3…)"), "{summary}");
    }

    #[test]
    fn without_the_run_log_the_leases_passed_record_alone_skips_what_berth_shipped_and_never_passed() {
        // Another machine shipped the failed image: this state dir logged nothing.
        let choice = choose(
            &after_a_failed_ship(),
            &[passed(&image(2)), passed(&image(1))],
            &[],
        )
        .unwrap();
        assert_eq!(choice.revision, 2);
        assert_eq!(choice.skipped[0].reason, Skip::NeverPassed);
        assert!(
            choice.skipped[0].message.contains("never passed"),
            "{:?}",
            choice.skipped
        );
    }

    #[test]
    fn the_leases_passed_record_wins_over_a_failure_in_the_local_log() {
        // Image 3 failed once here, then passed (on this or another machine).
        let passed = [passed(&image(2)), passed(&image(3))];
        let choice = choose(&after_a_failed_ship(), &passed, &[failed(&image(3))]).unwrap();
        assert_eq!((choice.revision, choice.basis), (3, Basis::Passed));
        assert!(choice.skipped.is_empty());
    }

    #[test]
    fn passed_is_by_digest_whatever_the_tag_or_registry() {
        let copy = image(1).replace("127.0.0.1:5000/sites/www:c1", "registry.example.com/www:other");
        let choice = choose(&after_a_failed_ship(), &[passed(&copy)], &[failed(&image(3))]).unwrap();
        assert_eq!((choice.revision, choice.basis), (2, Basis::Passed));
    }

    #[test]
    fn a_revision_berth_has_no_record_of_is_a_candidate_said_as_such() {
        // Only the good ship's image passed; the one before it was never berth's.
        let pasts = vec![
            current(berths(3, &image(2))),
            berths(2, &image(3)),
            foreign(1, "busybox:1.36"),
        ];
        let choice = choose(&pasts, &[passed(&image(2))], &[]).unwrap();
        assert_eq!((choice.revision, choice.basis), (1, Basis::Unknown));
        assert!(choice.summary().contains("no record of"), "{}", choice.summary());
        assert_eq!(choice.skipped[0].reason, Skip::NeverPassed);
    }

    #[test]
    fn an_image_set_behind_berths_back_under_its_stale_annotations_is_not_berths() {
        // `kubectl set image` after a berth ship: the ReplicaSet inherits
        // berth's annotations, which name another image.
        let mut behind = berths(2, "nginx:1.27");
        behind.shipped_image = Some(image(1));
        let pasts = vec![current(berths(3, &image(2))), behind];
        let choice = choose(&pasts, &[passed(&image(2))], &[]).unwrap();
        assert_eq!((choice.revision, choice.basis), (2, Basis::Unknown));
    }

    #[test]
    fn the_passed_record_speaks_only_for_what_berth_set_after_it_began() {
        // Revision 2 was shipped by a berth older than the passed record (or
        // the lease was lost): berth knows nothing of it.
        let mut before = berths(2, &image(3));
        before.revision.created = Some("2026-12-01T09:00:00Z".into());
        let pasts = vec![current(berths(3, &image(2))), before.clone()];
        let choice = choose(&pasts, &[passed(&image(2))], &[]).unwrap();
        assert_eq!((choice.revision, choice.basis), (2, Basis::Unknown));
        // No record at all: the same, unless the run log says it failed.
        let choice = choose(&after_a_failed_ship(), &[], &[]).unwrap();
        assert_eq!((choice.revision, choice.basis), (3, Basis::Unknown));
        let choice = choose(&after_a_failed_ship(), &[], &[failed(&image(3))]).unwrap();
        assert_eq!((choice.revision, choice.basis), (2, Basis::Unknown));
        assert_eq!(choice.skipped[0].reason, Skip::Failed);
        // A ReplicaSet without a creation time is not known to be covered.
        before.revision.created = None;
        let pasts = vec![current(berths(3, &image(2))), before];
        let choice = choose(&pasts, &[passed(&image(2))], &[]).unwrap();
        assert_eq!(choice.basis, Basis::Unknown);
    }

    #[test]
    fn no_good_revision_is_an_error_listing_each_and_suggesting_to() {
        let pasts = vec![
            current(berths(5, &image(2))),
            berths(4, &image(4)),
            berths(3, &image(3)),
            berths(2, &image(2).replace("@sha256:", "-x@sha256:")),
        ];
        let skipped = choose(&pasts, &[passed(&image(2))], &[failed(&image(4))]).unwrap_err();
        let reasons: Vec<(i64, Skip)> = skipped.iter().map(|s| (s.revision, s.reason)).collect();
        assert_eq!(
            reasons,
            [(4, Skip::Failed), (3, Skip::NeverPassed), (2, Skip::SameImage)]
        );
        let text = none_good(&skipped);
        assert!(
            text.contains("\n  - revision 4 (commit c4…): its rollout failed"),
            "{text}"
        );
        assert!(text.contains("--to COMMIT"), "{text}");
    }

    #[test]
    fn one_revision_only_says_so() {
        let pasts = vec![current(berths(1, &image(1)))];
        let skipped = choose(&pasts, &[passed(&image(1))], &[]).unwrap_err();
        assert_eq!(none_good(&skipped), "it has only one revision");
    }

    #[test]
    fn to_names_any_earlier_revision_and_warns_about_a_failed_one() {
        let pasts = after_a_failed_ship();
        let passed = [passed(&image(2)), passed(&image(1))];
        let log = [failed(&image(3))];
        let choice = named(&pasts, "c3", &passed, &log).unwrap();
        assert_eq!((choice.revision, choice.basis), (3, Basis::Named));
        let warning = choice.warning.unwrap();
        assert!(
            warning.starts_with("revision 3 (commit c3…): its rollout failed"),
            "{warning}"
        );
        let good = named(&pasts, "c2", &passed, &log).unwrap();
        assert_eq!((good.revision, good.warning), (2, None));
        assert!(good.passed_at.is_some());
        // The current revision is not earlier.
        assert!(named(&pasts, "c4", &passed, &log).is_none());
    }
}
