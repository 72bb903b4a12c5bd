//! The pipeline's decisions, as pure functions of what berth read: is this
//! site unchanged, is its commit older than the deployed one, does the running
//! image already serve its files, which tag does its image get, and what is
//! its source digest. `run` and `plan` both decide through these, so they
//! cannot disagree; the tests below pin each decision on fixtures.

use sha2::{Digest, Sha256};

use crate::config::{ImageSource, Site};
use crate::deploy::Deployed;
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

/// Why the site is up to date, when the running image, as berth set it,
/// serves exactly `content_digest` (the files of the commit's image, times
/// left out); `None` when it does not, and the image must be rolled out.
pub fn same_files(deployed: &Deployed, content_digest: &str) -> Option<String> {
    deployed
        .serves_files(content_digest)
        .then(|| same_files_reason(deployed))
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
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
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
            same_files(&deployed, "files-1").as_deref(),
            Some("same files as the running image, built at `0123456789ab`")
        );
        assert_eq!(same_files(&deployed, "files-2"), None);
        assert_eq!(same_files(&running("source-1", None), "files-1"), None);
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
}
