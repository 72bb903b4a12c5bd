//! Which of a site's images `berth gc` keeps, and why each one stays or
//! goes: a pure decision over what the registry holds and what may still
//! need it, tested on fixtures.
//!
//! An image stays when any of these holds (each is a [`Reason`]):
//! 1. a Deployment of the pipeline runs it now, in any environment, or a
//!    pull request's preview of the site does;
//! 2. one of a Deployment's ReplicaSet revisions names it (what `berth
//!    rollback` can go back to);
//! 3. its commit is a branch head or a tag of the repo's mirror;
//! 4. it is among the newest `keep_last` by build time;
//! 5. it was built less than `keep_days` ago, or berth cannot tell when;
//! 6. a tag that is not berth's (another tool's) names it too: deleting the
//!    manifest would take that tag with it.
//!
//! An image that passed in an environment long ago (the lease's record of
//! the last 20) is not kept for that alone: `berth promote --commit` of it
//! needs the keep policy to cover it.
//!
//! Everything else is deleted (with `--delete`). Images whose labels do not
//! name the site are never candidates: the caller leaves them out.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::config::Retention;
use crate::reference;

/// One image of the site in the registry: a manifest and the tags naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub digest: String,
    pub tags: Vec<String>,
    /// The commit it was built from (`org.opencontainers.image.revision`).
    pub commit: Option<String>,
    /// When it was built (its config's `created`).
    pub built: Option<SystemTime>,
    /// The blobs its manifest names, with their sizes.
    pub blobs: Vec<(String, u64)>,
}

impl Candidate {
    /// Its config's and layers' bytes, shared layers included.
    pub fn bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, size)| size).sum()
    }
}

/// What may still need an image, gathered from the clusters and the mirror.
#[derive(Debug, Clone, Default)]
pub struct Needed {
    /// `(environment or "", image reference)` each Deployment runs.
    pub running: Vec<(String, String)>,
    /// `(environment or "", revision number, image reference)` of each
    /// ReplicaSet revision Kubernetes keeps.
    pub revisions: Vec<(String, i64, String)>,
    /// `(ref name, commit)` of each branch head and tag.
    pub refs: Vec<(String, String)>,
    /// `(pull request number, image reference)` each preview runs.
    pub previews: Vec<(u64, String)>,
}

/// Why an image stays.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Reason {
    /// A Deployment runs it.
    Running { environment: String },
    /// A ReplicaSet revision names it.
    Revision { environment: String, revision: i64 },
    /// Its commit is this branch head or tag.
    Ref { name: String },
    /// The preview of this pull request runs it.
    Preview { number: u64 },
    /// It is the `rank`-th newest (1 is the newest) of `keep_last`.
    Newest { rank: usize, keep_last: u32 },
    /// It is younger than `keep_days`.
    Young { days: u64, keep_days: u32 },
    /// Its config says nothing of when it was built.
    NoBuildTime,
    /// A tag that is not berth's names it too.
    OtherTag { tag: String },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = |environment: &str| {
            if environment.is_empty() {
                String::new()
            } else {
                format!(" in {environment}")
            }
        };
        match self {
            Self::Running { environment } => write!(formatter, "running{}", place(environment)),
            Self::Revision {
                environment,
                revision,
            } => write!(formatter, "revision {revision}{}", place(environment)),
            Self::Ref { name } => write!(
                formatter,
                "{}",
                name.strip_prefix("refs/heads/")
                    .map(|branch| format!("head of {branch}"))
                    .or_else(|| name.strip_prefix("refs/tags/").map(|tag| format!("tag {tag}")))
                    .unwrap_or_else(|| name.clone())
            ),
            Self::Preview { number } => write!(formatter, "preview of #{number}"),
            Self::Newest { rank, keep_last } => write!(formatter, "newest {rank} of {keep_last}"),
            Self::Young { days, keep_days } => {
                write!(formatter, "{days} days old, under keep_days {keep_days}")
            }
            Self::NoBuildTime => write!(formatter, "no build time"),
            Self::OtherTag { tag } => write!(formatter, "also tagged {tag} (not berth's)"),
        }
    }
}

/// One image's verdict: kept for `reasons`, or deleted when there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub candidate: Candidate,
    pub reasons: Vec<Reason>,
}

impl Verdict {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The bytes the images `verdicts` let go free once the registry collects
/// its garbage: each blob they name that no kept image, and none of
/// `others` (blobs of images gc does not consider), names; once each.
pub fn freed<S: std::hash::BuildHasher>(verdicts: &[Verdict], others: &HashSet<String, S>) -> u64 {
    let kept: HashSet<&str> = verdicts
        .iter()
        .filter(|v| v.keep())
        .flat_map(|v| v.candidate.blobs.iter().map(|(blob, _)| blob.as_str()))
        .collect();
    let mut counted = HashSet::new();
    verdicts
        .iter()
        .filter(|v| !v.keep())
        .flat_map(|v| v.candidate.blobs.iter())
        .filter(|(blob, _)| {
            !kept.contains(blob.as_str()) && !others.contains(blob) && counted.insert(blob.as_str())
        })
        .map(|(_, size)| size)
        .sum()
}

/// Whether `tag` is one berth gives an image: a commit id (40 or 64 hex
/// digits), optionally with `-<12 hex digits>` of a source digest.
pub fn is_berth_tag(tag: &str) -> bool {
    let hex = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let (commit, variant) = tag.split_once('-').map_or((tag, None), |(c, v)| (c, Some(v)));
    hex(commit) && matches!(commit.len(), 40 | 64) && variant.is_none_or(|v| v.len() == 12 && hex(v))
}

/// Whether the image reference `image` names `candidate` in `repository`
/// (`registry/path`): by digest in any repository (the same bytes), or by
/// one of its tags in this one.
fn names(image: &str, candidate: &Candidate, repository: &str) -> bool {
    if let Some(digest) = reference::digest(image) {
        return digest == candidate.digest;
    }
    reference::repository(image) == repository
        && reference::tag(image).is_some_and(|tag| candidate.tags.iter().any(|t| t == tag))
}

/// The verdict on each of `candidates` (images of one site in
/// `repository`), newest first, as of `now`.
pub fn verdicts(
    candidates: &[Candidate],
    repository: &str,
    needed: &Needed,
    policy: Retention,
    now: SystemTime,
) -> Vec<Verdict> {
    let mut ordered: Vec<&Candidate> = candidates.iter().collect();
    // Newest first; without a build time, last (it is kept anyway).
    ordered.sort_by(|a, b| b.built.cmp(&a.built).then_with(|| a.digest.cmp(&b.digest)));
    let refs: HashSet<&str> = needed.refs.iter().map(|(_, commit)| commit.as_str()).collect();
    let mut dated = 0;
    ordered
        .into_iter()
        .map(|candidate| {
            let mut reasons = Vec::new();
            for (environment, image) in &needed.running {
                if names(image, candidate, repository) {
                    reasons.push(Reason::Running {
                        environment: environment.clone(),
                    });
                }
            }
            for (number, image) in &needed.previews {
                if names(image, candidate, repository) {
                    reasons.push(Reason::Preview { number: *number });
                }
            }
            for (environment, revision, image) in &needed.revisions {
                if names(image, candidate, repository) {
                    reasons.push(Reason::Revision {
                        environment: environment.clone(),
                        revision: *revision,
                    });
                }
            }
            if let Some(commit) = candidate.commit.as_deref().filter(|c| refs.contains(c)) {
                reasons.extend(
                    needed
                        .refs
                        .iter()
                        .filter(|(_, at)| at == commit)
                        .map(|(name, _)| Reason::Ref { name: name.clone() }),
                );
            }
            match candidate.built {
                Some(built) => {
                    dated += 1;
                    if dated <= policy.last as usize {
                        reasons.push(Reason::Newest {
                            rank: dated,
                            keep_last: policy.last,
                        });
                    }
                    let age = now.duration_since(built).unwrap_or_default();
                    let days = age.as_secs() / 86_400;
                    if age < Duration::from_secs(u64::from(policy.days) * 86_400) {
                        reasons.push(Reason::Young {
                            days,
                            keep_days: policy.days,
                        });
                    }
                }
                None => reasons.push(Reason::NoBuildTime),
            }
            reasons.extend(
                candidate
                    .tags
                    .iter()
                    .filter(|tag| !is_berth_tag(tag))
                    .map(|tag| Reason::OtherTag { tag: tag.clone() }),
            );
            // A Deployment names an image twice (what it runs, what berth set).
            reasons.dedup();
            Verdict {
                candidate: candidate.clone(),
                reasons,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPOSITORY: &str = "127.0.0.1:5000/sites/www";
    const DAY: u64 = 86_400;

    fn commit(n: u8) -> String {
        format!("{n:02x}").repeat(20)
    }

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 * DAY)
    }

    /// Image `n`, built `days` days before [`now`], tagged with its commit.
    fn image(n: u8, days: u64) -> Candidate {
        Candidate {
            digest: digest(n),
            tags: vec![commit(n)],
            commit: Some(commit(n)),
            built: Some(now() - Duration::from_secs(days * DAY)),
            // Its own layer, and a base layer every image shares.
            blobs: vec![(format!("layer-{n}"), 1000), ("base".into(), 5000)],
        }
    }

    fn kept(verdicts: &[Verdict]) -> Vec<String> {
        verdicts
            .iter()
            .filter(|v| v.keep())
            .map(|v| {
                format!(
                    "{} {}",
                    &v.candidate.digest[7..9],
                    v.reasons
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect()
    }

    #[test]
    fn the_newest_and_the_young_stay_and_the_rest_goes() {
        let candidates: Vec<Candidate> = (1..=6).map(|n| image(n, u64::from(60 - n * 10))).collect();
        let policy = Retention { last: 2, days: 25 };
        let verdicts = verdicts(&candidates, REPOSITORY, &Needed::default(), policy, now());
        assert_eq!(
            kept(&verdicts),
            [
                "06 newest 1 of 2, 0 days old, under keep_days 25",
                "05 newest 2 of 2, 10 days old, under keep_days 25",
                "04 20 days old, under keep_days 25",
            ]
        );
        let gone: Vec<&str> = verdicts
            .iter()
            .filter(|v| !v.keep())
            .map(|v| &v.candidate.digest[7..9])
            .collect();
        assert_eq!(gone, ["03", "02", "01"], "newest first");
    }

    #[test]
    fn running_revisions_refs_and_previews_keep_old_images() {
        let candidates: Vec<Candidate> = (1..=7).map(|n| image(n, 100 + u64::from(n))).collect();
        let needed = Needed {
            running: vec![
                (
                    "production".into(),
                    format!("{REPOSITORY}:{}@{}", commit(1), digest(1)),
                ),
                // By digest in another registry (a promoted copy): the same bytes.
                ("staging".into(), format!("elsewhere/sites/www@{}", digest(5))),
            ],
            revisions: vec![
                (
                    String::new(),
                    3,
                    format!("{REPOSITORY}:{}@{}", commit(2), digest(2)),
                ),
                // By tag only, in this repository: names it.
                (String::new(), 2, format!("{REPOSITORY}:{}", commit(3))),
                // The same tag in another repository: not this image.
                (String::new(), 1, format!("127.0.0.1:5000/other:{}", commit(4))),
            ],
            refs: vec![
                ("refs/heads/main".into(), commit(6)),
                ("refs/tags/v1".into(), commit(6)),
            ],
            // A pull request's preview runs an old image of this repository.
            previews: vec![(7, format!("{REPOSITORY}:{}@{}", commit(7), digest(7)))],
        };
        let policy = Retention { last: 1, days: 0 };
        let verdicts = verdicts(&candidates, REPOSITORY, &needed, policy, now());
        assert_eq!(
            kept(&verdicts),
            [
                // Image 1 is the newest: built 101 days ago.
                "01 running in production, newest 1 of 1",
                "02 revision 3",
                "03 revision 2",
                "05 running in staging",
                "06 head of main, tag v1",
                "07 preview of #7",
            ]
        );
        assert!(
            !verdicts
                .iter()
                .find(|v| v.candidate.digest == digest(4))
                .unwrap()
                .keep()
        );
    }

    #[test]
    fn another_tools_tag_and_an_unknown_build_time_keep_an_image() {
        let mut tagged = image(1, 400);
        tagged.tags.push("latest".into());
        let mut undated = image(2, 400);
        undated.built = None;
        let verdicts = verdicts(
            &[tagged, undated, image(3, 1), image(4, 400)],
            REPOSITORY,
            &Needed::default(),
            Retention { last: 1, days: 0 },
            now(),
        );
        assert_eq!(
            kept(&verdicts),
            [
                "03 newest 1 of 1",
                "01 also tagged latest (not berth's)",
                "02 no build time"
            ]
        );
    }

    #[test]
    fn freed_bytes_count_each_blob_only_deleted_images_name_once() {
        let candidates: Vec<Candidate> = (1..=4).map(|n| image(n, u64::from(n) * 100)).collect();
        let policy = Retention { last: 1, days: 0 };
        let verdicts = verdicts(&candidates, REPOSITORY, &Needed::default(), policy, now());
        // Three go: their own layers (the base stays with the kept one).
        assert_eq!(freed(&verdicts, &HashSet::new()), 3000);
        // Another tool's image names layer 2.
        assert_eq!(freed(&verdicts, &HashSet::from(["layer-2".to_string()])), 2000);
        let all_go = verdicts
            .iter()
            .map(|v| Verdict {
                reasons: Vec::new(),
                ..v.clone()
            })
            .collect::<Vec<_>>();
        assert_eq!(freed(&all_go, &HashSet::new()), 9000, "the base once");
    }

    #[test]
    fn berths_tags_are_commits_or_commit_variants() {
        assert!(is_berth_tag(&commit(7)));
        assert!(is_berth_tag(&format!("{}-{}", commit(7), "0123456789ab")));
        assert!(is_berth_tag(&"ab".repeat(32)));
        for other in [
            "latest",
            "v1.2",
            &commit(7)[..39],
            &format!("{}-dirty-x", commit(7)),
            &commit(0xab).to_uppercase(),
        ] {
            assert!(!is_berth_tag(other), "{other}");
        }
    }
}
