//! The pipeline's decisions, as pure functions of what berth read: is this
//! site unchanged, is its commit older than the deployed one, does the running
//! image already serve its files, which tag does its image get, what is its
//! source digest, may an environment's image be promoted, and what would a
//! promotion change. `run`, `promote`, `plan` and `status` decide through
//! these, so they cannot disagree; the tests below pin each decision on
//! fixtures.

use sha2::{Digest, Sha256};

use crate::config::{ImageSource, Site};
use crate::deploy::rollout::RolloutState;
use crate::deploy::{Deployed, Passed};
use crate::reference;

/// What the check stage found, before anything is built or pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The Deployment runs an image berth built from this source: nothing to do.
    Unchanged,
    /// The commit is an ancestor of the deployed one (an out-of-order CI job):
    /// refused unless `--allow-older`.
    Older { deployed_commit: String },
    /// Go on: find or build the image, and deploy it.
    Proceed,
}

/// Whether an unchanged site still has its rollout to be seen through: the
/// Deployment runs this source, but a run before set it and stopped before
/// Kubernetes rolled it out (`run` waits for it, and rolls back on failure).
pub fn unfinished(check: &Check, rollout: &crate::deploy::rollout::RolloutState) -> bool {
    *check == Check::Unchanged && *rollout != crate::deploy::rollout::RolloutState::Complete
}

/// The check of a site whose Deployment is `deployed`, for an image of
/// `repository` built from `source_digest`. `older` gives the deployed commit
/// when the commit to ship is its ancestor ([`super::Synced::older_than`]);
/// it reads the mirror, so it is asked only when the answer matters: not for
/// an unchanged site (most of a nightly run), nor with `--allow-older`.
pub async fn check(
    deployed: &Deployed,
    repository: &str,
    source_digest: &str,
    allow_older: bool,
    older: impl AsyncFnOnce() -> Option<String>,
) -> Check {
    if deployed.runs_source(repository, source_digest) {
        return Check::Unchanged;
    }
    if allow_older {
        return Check::Proceed;
    }
    match older().await {
        Some(deployed_commit) => Check::Older { deployed_commit },
        None => Check::Proceed,
    }
}

/// The image `berth promote` takes from the source environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotable {
    /// Full reference, pinned by digest.
    pub image: String,
    pub digest: String,
    pub commit: String,
    pub source_digest: Option<String>,
    pub content_digest: Option<String>,
    /// It is what the source runs now (not an earlier image that passed there).
    pub current: bool,
}

/// Why `berth promote` will not take the source environment's image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromoteRefusal {
    /// The source's rollout is failed or still going: what runs has not passed.
    #[error(
        "{environment}: the rollout of {deployment} is {state}; berth promotes only what rolled out and passed"
    )]
    NotHealthy {
        environment: String,
        deployment: String,
        state: String,
    },
    /// The source runs an image berth did not set (no commit recorded, or set
    /// by someone else since).
    #[error(
        "{environment}: {deployment} runs {image}, which berth did not ship there; ship a commit to {environment} first"
    )]
    NotShipped {
        environment: String,
        deployment: String,
        image: String,
    },
    /// The source runs an image by tag only: its bytes are not pinned.
    #[error(
        "{environment}: {deployment} runs {image}, a tag without a digest; berth promotes images pinned by digest only"
    )]
    NotPinned {
        environment: String,
        deployment: String,
        image: String,
    },
    /// The commit asked for neither runs in the source nor passed there.
    #[error(
        "{environment}: commit {commit} {history}, and {deployment} runs {running}; berth promotes what runs there, or an image that passed there"
    )]
    CommitNotPassed {
        environment: String,
        deployment: String,
        commit: String,
        /// What the source's history says of it, in words.
        history: String,
        running: String,
    },
}

/// What the source of a promotion runs and ran: its Deployment as berth
/// sees it, its rollout's state, the images that passed there (newest
/// first), and the commits of its ReplicaSet revisions.
pub struct Source<'a> {
    pub environment: &'a str,
    pub deployment: &'a str,
    pub deployed: &'a Deployed,
    pub rollout: &'a RolloutState,
    pub passed: &'a [Passed],
    pub revisions: &'a [String],
}

/// The image to promote from `source`: what it runs (its rollout complete,
/// the image pinned and set by berth), or with `commit` (a full id or a
/// prefix) that commit's image if it runs there or passed there before.
pub fn promotable(source: &Source<'_>, commit: Option<&str>) -> Result<Promotable, PromoteRefusal> {
    let deployed = source.deployed;
    let running = deployed.image.clone().unwrap_or_else(|| "no image".into());
    let matches = |full: &str| commit.is_none_or(|asked| !asked.is_empty() && full.starts_with(asked));
    let current = deployed
        .commit
        .as_deref()
        .filter(|full| matches(full) && deployed.runs_what_berth_set());
    if let (Some(full), RolloutState::Complete) = (current, source.rollout) {
        let Some(digest) = verify_digest(&running) else {
            return Err(PromoteRefusal::NotPinned {
                environment: source.environment.into(),
                deployment: source.deployment.into(),
                image: running,
            });
        };
        return Ok(Promotable {
            image: running,
            digest,
            commit: full.to_string(),
            source_digest: deployed.source_digest.clone(),
            content_digest: deployed.content_digest.clone(),
            current: true,
        });
    }
    if commit.is_some()
        && let Some(passed) = source.passed.iter().find(|p| matches(&p.commit))
        && let Some(digest) = verify_digest(&passed.image)
    {
        let current = deployed.image.as_deref() == Some(passed.image.as_str());
        if !current || matches!(source.rollout, RolloutState::Complete) {
            return Ok(Promotable {
                image: passed.image.clone(),
                digest,
                commit: passed.commit.clone(),
                source_digest: passed.source_digest.clone(),
                content_digest: passed.content_digest.clone(),
                current,
            });
        }
    }
    let environment = source.environment.to_string();
    let deployment = source.deployment.to_string();
    match (commit, source.rollout) {
        (_, RolloutState::Progressing(message) | RolloutState::Failed(message))
            if commit.is_none() || current.is_some() =>
        {
            let word = if matches!(source.rollout, RolloutState::Failed(_)) {
                "failed"
            } else {
                "not complete"
            };
            Err(PromoteRefusal::NotHealthy {
                environment,
                deployment,
                state: format!("{word} ({message})"),
            })
        }
        (None, _) => Err(PromoteRefusal::NotShipped {
            environment,
            deployment,
            image: running,
        }),
        (Some(asked), _) => Err(PromoteRefusal::CommitNotPassed {
            environment,
            deployment,
            commit: asked.to_string(),
            history: if source.revisions.iter().any(|r| matches(r)) {
                "ran there but did not pass berth's verification (its rollout failed or was rolled back)"
                    .into()
            } else {
                "never ran there".into()
            },
            running: match &deployed.commit {
                Some(full) => format!("{} ({running})", reference::short(full)),
                None => running,
            },
        }),
    }
}

/// The digest a pinned image reference names.
fn verify_digest(image: &str) -> Option<String> {
    reference::digest(image)
        .filter(|digest| digest.starts_with("sha256:"))
        .map(str::to_string)
}

/// What `berth promote` would change in an environment, from its source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum PromoteChange {
    /// The source runs nothing berth could promote.
    Nothing { from: String },
    /// The environment runs the image the source runs (the same digest).
    Same { from: String },
    /// Promote would deploy the source's commit; the environment runs `current`.
    Deploy {
        from: String,
        commit: Option<String>,
        current: Option<String>,
    },
}

impl std::fmt::Display for PromoteChange {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |commit: &Option<String>| commit.as_deref().map_or("-", reference::short).to_string();
        match self {
            Self::Nothing { from } => write!(formatter, "nothing in {from}"),
            Self::Same { from } => write!(formatter, "same as {from}"),
            Self::Deploy {
                from,
                commit,
                current,
            } => {
                write!(
                    formatter,
                    "{} from {from} (replaces {})",
                    short(commit),
                    short(current)
                )
            }
        }
    }
}

/// What promoting from `from` would change: the source runs `source` (image,
/// commit), the target `target`. Images compare by digest, since another
/// registry holds the same bytes under another name.
pub fn promote_change(
    from: &str,
    source: (Option<&str>, Option<&str>),
    target: (Option<&str>, Option<&str>),
) -> PromoteChange {
    let from = from.to_string();
    let Some(source_digest) = source.0.and_then(verify_digest) else {
        return PromoteChange::Nothing { from };
    };
    if target.0.and_then(verify_digest).as_deref() == Some(source_digest.as_str()) {
        return PromoteChange::Same { from };
    }
    PromoteChange::Deploy {
        from,
        commit: source.1.map(str::to_string),
        current: target.1.map(str::to_string),
    }
}

/// Why the site is up to date, when the running image, as berth set it, is
/// in `repository` and serves exactly `content_digest` (the files of the
/// commit's image, times left out); `None` when it does not, and an image
/// must be rolled out.
pub fn same_files(deployed: &Deployed, repository: &str, content_digest: &str) -> Option<String> {
    deployed
        .serves_files(repository, content_digest)
        .then(|| same_files_reason(deployed))
}

/// Why the site ships although its files may be the same: the image berth
/// set runs from another repository than `repository`, the one the site's
/// `image` and registry name now ("image moved from A to B"). `None` when
/// it runs from `repository`, or runs an image berth did not set (a first
/// ship is no move).
pub fn moved(deployed: &Deployed, repository: &str) -> Option<String> {
    let image = deployed.image.as_deref()?;
    let set_by_berth = deployed.runs_what_berth_set()
        || (deployed.shipped_image.is_none() && deployed.source_digest.is_some());
    (set_by_berth && !deployed.in_repository(repository)).then(|| {
        format!(
            "image moved from {} to {repository}",
            reference::repository(image)
        )
    })
}

/// Why a site whose files the running image serves is up to date, naming the
/// commit that image was built from (`run` and `plan` say it alike).
pub fn same_files_reason(deployed: &Deployed) -> String {
    let built_at = deployed
        .image
        .as_deref()
        .and_then(reference::built_commit)
        .map_or_else(
            || "an earlier commit".to_string(),
            |c| format!("`{}`", reference::short(c)),
        );
    format!("same files as the running image, built at {built_at}")
}

/// What the image stage does, given what the registry holds under the
/// commit's tag ([`existing`]) and what the Deployment runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageChoice {
    /// The registry's image serves the same files as the running one, which
    /// berth set in this repository: record the commit, roll nothing out.
    SameFiles(String),
    /// Deploy the registry's image, built from this source, without building.
    Reuse {
        digest: String,
        content_digest: Option<String>,
    },
    /// Nothing usable there: find what the commit's image would serve, and
    /// build it unless the running image serves that already.
    Build,
}

/// The image stage's choice for an image of `repository` when the registry
/// holds `existing` under the commit's tag and the Deployment runs `deployed`.
pub fn image_choice(existing: Option<&Existing>, deployed: &Deployed, repository: &str) -> ImageChoice {
    match existing {
        Some(Existing::Same {
            digest,
            content_digest,
        }) => match content_digest
            .as_deref()
            .filter(|content| deployed.serves_files(repository, content))
        {
            Some(content) => ImageChoice::SameFiles(content.to_string()),
            None => ImageChoice::Reuse {
                digest: digest.clone(),
                content_digest: content_digest.clone(),
            },
        },
        Some(Existing::Different) | None => ImageChoice::Build,
    }
}

/// What the registry holds under a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// An image built from this source digest: its manifest digest, and what
    /// it serves (its content-digest label, from berth versions that write it).
    Same {
        digest: String,
        content_digest: Option<String>,
    },
    /// An image built from other inputs.
    Different,
}

/// The tag for a commit's image: the commit itself, unless the registry holds
/// an image of other build inputs (a changed template or build args) under
/// it. Tags never move, so that image keeps its tag and this one gets a
/// variant of it, `<commit>-<source digest, 12>`.
pub fn tag(commit: &str, at_commit_tag: Option<&Existing>, source_digest: &str) -> String {
    let commit_tag = reference::commit_tag(commit);
    match at_commit_tag {
        Some(Existing::Different) => reference::variant_tag(&commit_tag, source_digest),
        _ => commit_tag,
    }
}

/// Image label holding the source digest.
pub const SOURCE_DIGEST_LABEL: &str = "dev.berth.source-digest";
/// Image label holding what the image serves, times left out (`image::content_digest`).
pub const CONTENT_DIGEST_LABEL: &str = "dev.berth.content-digest";

/// What an image whose labels are `labels` is to a build from `source_digest`.
pub fn existing<S: std::hash::BuildHasher>(
    labels: &std::collections::HashMap<String, String, S>,
    digest: String,
    source_digest: &str,
) -> Existing {
    if labels.get(SOURCE_DIGEST_LABEL).map(String::as_str) == Some(source_digest) {
        Existing::Same {
            digest,
            content_digest: labels.get(CONTENT_DIGEST_LABEL).cloned(),
        }
    } else {
        Existing::Different
    }
}

/// The site's source digest: SHA-256 over the Git tree id of its folder and every
/// input of its build that is not in that folder (command, output folder,
/// Dockerfile, build args). Equal digests mean the same image. `template` is
/// the template's Dockerfile, for a site built from one.
pub fn source_digest(site: &Site, template: Option<&[u8]>, tree: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"berth-source-v1\n");
    hasher.update(format!(
        "tree {tree}\nbuild {}\noutput {}\n",
        site.build.as_deref().unwrap_or("-"),
        site.output.as_deref().unwrap_or("-")
    ));
    match &site.image_source {
        ImageSource::Template(_) => {
            hasher.update(b"template ");
            hasher.update(Sha256::digest(template.unwrap_or_default()));
            hasher.update(b"\n");
        }
        ImageSource::Dockerfile(path) => hasher.update(format!("dockerfile {path}\n")),
    }
    for (key, value) in &site.build_args {
        hasher.update(format!("arg {key}={value}\n"));
    }
    // Only a preview has these: every other site's digest is as before.
    for (key, value) in &site.generator_env {
        hasher.update(format!("env {key}={value}\n"));
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unchanged_site_not_rolled_out_is_unfinished() {
        use crate::deploy::rollout::RolloutState;
        assert!(!unfinished(&Check::Unchanged, &RolloutState::Complete));
        assert!(unfinished(
            &Check::Unchanged,
            &RolloutState::Progressing("1 of 2".into())
        ));
        assert!(unfinished(
            &Check::Unchanged,
            &RolloutState::Failed("deadline".into())
        ));
        assert!(!unfinished(
            &Check::Proceed,
            &RolloutState::Progressing("1 of 2".into())
        ));
    }

    use std::collections::HashMap;

    use super::*;

    const REPOSITORY: &str = "127.0.0.1:5000/sites/blog";
    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn running(source_digest: &str, content_digest: Option<&str>) -> Deployed {
        let image = format!("{REPOSITORY}:{COMMIT}@sha256:{}", "a".repeat(64));
        Deployed {
            image: Some(image.clone()),
            commit: Some(COMMIT.into()),
            source_digest: Some(source_digest.into()),
            shipped_image: Some(image),
            content_digest: content_digest.map(String::from),
            ..Deployed::default()
        }
    }

    /// `check` in `repository`, with no older commit deployed.
    async fn checked_in(deployed: &Deployed, repository: &str, source: &str) -> (Check, bool) {
        let asked = std::cell::Cell::new(false);
        let check = check(deployed, repository, source, false, async || {
            asked.set(true);
            None
        })
        .await;
        (check, asked.get())
    }

    /// `check` with `older` answering `answer`; and whether it was asked.
    async fn checked(
        deployed: &Deployed,
        source: &str,
        allow_older: bool,
        answer: Option<&str>,
    ) -> (Check, bool) {
        let asked = std::cell::Cell::new(false);
        let check = check(deployed, REPOSITORY, source, allow_older, async || {
            asked.set(true);
            answer.map(String::from)
        })
        .await;
        (check, asked.get())
    }

    #[tokio::test]
    async fn a_site_running_its_source_is_unchanged_and_the_mirror_is_not_asked() {
        let deployed = running("source-1", None);
        let newer = "f".repeat(40);
        assert_eq!(
            checked(&deployed, "source-1", false, Some(&newer)).await,
            (Check::Unchanged, false)
        );
        assert_eq!(
            checked(&deployed, "source-2", false, Some(&newer)).await,
            (
                Check::Older {
                    deployed_commit: newer.clone()
                },
                true
            )
        );
        assert_eq!(
            checked(&deployed, "source-2", true, Some(&newer)).await,
            (Check::Proceed, false),
            "--allow-older needs no answer"
        );
        assert_eq!(
            checked(&deployed, "source-2", false, None).await,
            (Check::Proceed, true)
        );
        assert_eq!(
            checked(&Deployed::default(), "source-1", false, None).await,
            (Check::Proceed, true)
        );
    }

    #[test]
    fn same_files_names_the_commit_the_running_image_was_built_at() {
        let deployed = running("source-1", Some("files-1"));
        assert_eq!(
            same_files(&deployed, REPOSITORY, "files-1").as_deref(),
            Some("same files as the running image, built at `0123456789ab`")
        );
        assert_eq!(same_files(&deployed, REPOSITORY, "files-2"), None);
        assert_eq!(
            same_files(&running("source-1", None), REPOSITORY, "files-1"),
            None
        );
    }

    #[tokio::test]
    async fn a_site_whose_image_moved_ships_with_the_same_source_and_files() {
        let deployed = running("source-1", Some("files-1"));
        assert_eq!(moved(&deployed, REPOSITORY), None);
        for (repository, why) in [
            ("127.0.0.1:5000/sites/www", "its `image` renamed"),
            ("127.0.0.1:5001/sites/blog", "its `[registry] address` moved"),
            ("registry.example.com/sites/blog", "an environment's own registry"),
        ] {
            assert_eq!(
                moved(&deployed, repository).as_deref(),
                Some(format!("image moved from {REPOSITORY} to {repository}").as_str()),
                "{why}"
            );
            assert_eq!(same_files(&deployed, repository, "files-1"), None, "{why}");
            let (check, _) = checked_in(&deployed, repository, "source-1").await;
            assert_eq!(check, Check::Proceed, "{why}");
        }
        // A first ship over an image berth never set is no move.
        let placeholder = Deployed {
            image: Some("127.0.0.1:5000/berth/placeholder:2".into()),
            ..Deployed::default()
        };
        assert_eq!(moved(&placeholder, REPOSITORY), None);
        // Set behind berth's back: berth ships, but calls it no move of its own.
        let behind = Deployed {
            image: Some("127.0.0.1:5000/elsewhere:1@sha256:2".into()),
            ..deployed.clone()
        };
        assert_eq!(moved(&behind, REPOSITORY), None);
        // Shipped by a berth older than the image annotation: berth's own.
        let older_berth = Deployed {
            shipped_image: None,
            ..deployed
        };
        assert!(moved(&older_berth, "127.0.0.1:5000/sites/www").is_some());
    }

    #[test]
    fn the_registrys_image_is_reused_unless_the_running_one_serves_its_files() {
        let deployed = running("source-1", Some("files-1"));
        let same = |content: Option<&str>| Existing::Same {
            digest: "sha256:2".into(),
            content_digest: content.map(String::from),
        };
        assert_eq!(
            image_choice(Some(&same(Some("files-1"))), &deployed, REPOSITORY),
            ImageChoice::SameFiles("files-1".into())
        );
        assert_eq!(
            image_choice(Some(&same(Some("files-2"))), &deployed, REPOSITORY),
            ImageChoice::Reuse {
                digest: "sha256:2".into(),
                content_digest: Some("files-2".into())
            }
        );
        // An image from before berth wrote the label: reused, whatever it serves.
        assert!(matches!(
            image_choice(Some(&same(None)), &deployed, REPOSITORY),
            ImageChoice::Reuse {
                content_digest: None,
                ..
            }
        ));
        // The same files, but the site moved to another repository: its copy there is deployed.
        assert!(matches!(
            image_choice(
                Some(&same(Some("files-1"))),
                &deployed,
                "127.0.0.1:5001/sites/blog"
            ),
            ImageChoice::Reuse { .. }
        ));
        assert_eq!(
            image_choice(Some(&Existing::Different), &deployed, REPOSITORY),
            ImageChoice::Build
        );
        assert_eq!(image_choice(None, &deployed, REPOSITORY), ImageChoice::Build);
    }

    #[test]
    fn the_commit_tag_is_kept_unless_it_holds_other_inputs() {
        let same = Existing::Same {
            digest: "sha256:1".into(),
            content_digest: None,
        };
        let source = "abcdef0123456789".repeat(4);
        assert_eq!(tag(COMMIT, None, &source), COMMIT);
        assert_eq!(tag(COMMIT, Some(&same), &source), COMMIT);
        assert_eq!(
            tag(COMMIT, Some(&Existing::Different), &source),
            format!("{COMMIT}-abcdef012345")
        );
        assert_eq!(tag(&COMMIT.to_uppercase(), None, &source), COMMIT);
    }

    #[test]
    fn an_image_is_the_same_only_with_the_same_source_label() {
        let labels = HashMap::from([
            (SOURCE_DIGEST_LABEL.to_string(), "source-1".to_string()),
            (CONTENT_DIGEST_LABEL.to_string(), "files-1".to_string()),
        ]);
        assert_eq!(
            existing(&labels, "sha256:1".into(), "source-1"),
            Existing::Same {
                digest: "sha256:1".into(),
                content_digest: Some("files-1".into())
            }
        );
        assert_eq!(
            existing(&labels, "sha256:1".into(), "source-2"),
            Existing::Different
        );
        assert_eq!(
            existing(&HashMap::new(), "sha256:1".into(), "source-1"),
            Existing::Different
        );
    }

    fn source<'a>(
        deployed: &'a Deployed,
        rollout: &'a RolloutState,
        passed: &'a [Passed],
        revisions: &'a [String],
    ) -> Source<'a> {
        Source {
            environment: "staging",
            deployment: "web/blog",
            deployed,
            rollout,
            passed,
            revisions,
        }
    }

    fn passed(commit: &str, hex: char) -> Passed {
        Passed {
            commit: commit.into(),
            image: format!("{REPOSITORY}:{commit}@sha256:{}", hex.to_string().repeat(64)),
            source_digest: Some(format!("source-{commit}")),
            content_digest: None,
            at: "2026-12-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn what_runs_and_rolled_out_is_promotable_by_its_digest() {
        let deployed = running("source-1", Some("files-1"));
        let chosen = promotable(&source(&deployed, &RolloutState::Complete, &[], &[]), None).unwrap();
        assert!(chosen.current);
        assert_eq!(chosen.commit, COMMIT);
        assert_eq!(chosen.digest, format!("sha256:{}", "a".repeat(64)));
        assert_eq!(chosen.content_digest.as_deref(), Some("files-1"));
        // Asked by a prefix of the commit it runs.
        assert!(
            promotable(
                &source(&deployed, &RolloutState::Complete, &[], &[]),
                Some("0123456")
            )
            .is_ok()
        );
    }

    #[test]
    fn an_unfinished_or_failed_rollout_is_refused() {
        let deployed = running("source-1", None);
        for rollout in [
            RolloutState::Progressing("1 of 2 updated".into()),
            RolloutState::Failed("ProgressDeadlineExceeded".into()),
        ] {
            let refused = promotable(&source(&deployed, &rollout, &[], &[]), None).unwrap_err();
            assert!(matches!(refused, PromoteRefusal::NotHealthy { .. }), "{refused}");
        }
    }

    #[test]
    fn an_image_berth_did_not_set_or_not_pinned_is_refused() {
        let behind = Deployed {
            image: Some(format!("{REPOSITORY}:other@sha256:{}", "b".repeat(64))),
            ..running("source-1", None)
        };
        let refused = promotable(&source(&behind, &RolloutState::Complete, &[], &[]), None).unwrap_err();
        assert!(matches!(refused, PromoteRefusal::NotShipped { .. }), "{refused}");
        let tag_only = format!("{REPOSITORY}:{COMMIT}");
        let unpinned = Deployed {
            image: Some(tag_only.clone()),
            shipped_image: Some(tag_only),
            ..running("source-1", None)
        };
        let refused = promotable(&source(&unpinned, &RolloutState::Complete, &[], &[]), None).unwrap_err();
        assert!(matches!(refused, PromoteRefusal::NotPinned { .. }), "{refused}");
    }

    #[test]
    fn an_earlier_commit_is_promotable_only_if_it_passed_there() {
        let deployed = running("source-1", None);
        let earlier = passed("fedcba9876543210fedcba9876543210fedcba98", 'c');
        let passed_list = [earlier.clone()];
        let chosen = promotable(
            &source(&deployed, &RolloutState::Complete, &passed_list, &[]),
            Some("fedcba9"),
        )
        .unwrap();
        assert!(!chosen.current);
        assert_eq!(chosen.image, earlier.image);
        // A commit that ran (a revision) but never passed: its rollout failed.
        let failed = "9999999999999999999999999999999999999999".to_string();
        let revisions = [failed.clone()];
        let refused = promotable(
            &source(&deployed, &RolloutState::Complete, &passed_list, &revisions),
            Some(&failed),
        )
        .unwrap_err();
        let PromoteRefusal::CommitNotPassed { history, .. } = &refused else {
            panic!("{refused}")
        };
        assert!(history.contains("did not pass"), "{history}");
        let refused = promotable(
            &source(&deployed, &RolloutState::Complete, &passed_list, &[]),
            Some("7777777"),
        )
        .unwrap_err();
        assert!(refused.to_string().contains("never ran there"), "{refused}");
    }

    #[test]
    fn promote_changes_compare_digests_not_registries() {
        let staging = format!("127.0.0.1:5000/sites/blog:c1@sha256:{}", "a".repeat(64));
        let production_same = format!("127.0.0.1:5001/sites/blog:c1@sha256:{}", "a".repeat(64));
        let production_old = format!("127.0.0.1:5001/sites/blog:c0@sha256:{}", "b".repeat(64));
        assert_eq!(
            promote_change(
                "staging",
                (Some(&staging), Some("c1")),
                (Some(&production_same), Some("c1"))
            ),
            PromoteChange::Same {
                from: "staging".into()
            }
        );
        assert_eq!(
            promote_change(
                "staging",
                (Some(&staging), Some("c1")),
                (Some(&production_old), Some("c0"))
            ),
            PromoteChange::Deploy {
                from: "staging".into(),
                commit: Some("c1".into()),
                current: Some("c0".into())
            }
        );
        assert_eq!(
            promote_change("staging", (None, None), (Some(&production_old), Some("c0"))),
            PromoteChange::Nothing {
                from: "staging".into()
            }
        );
    }
}
