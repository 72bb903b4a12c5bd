//! Deploy stage: set one container's image, wait for the rollout, roll back on failure.
//!
//! 1. Preflight ([`preflight`]): read the Deployment and check it can roll without
//!    downtime; problems are warnings, or errors with `--strict`.
//! 2. Lock ([`lease`]): hold the Deployment's Lease so two callers never interleave.
//! 3. Change ([`patch`]): patch only the named container's image, merged by container name
//!    (a strategic-merge patch with berth's field manager and the read
//!    `resourceVersion` as a precondition: a concurrent write gives 409, and berth
//!    reads again and decides again, never overwrites), and record the commit,
//!    the source digest and `kubernetes.io/change-cause` in annotations.
//! 4. Wait ([`wait`]): watch the Deployment and decide as `kubectl rollout status` does
//!    ([`rollout::rollout_state`]) under berth's own timeout, showing progress;
//!    meanwhile look at the new `ReplicaSet`'s pods and fail fast on states that
//!    will not recover.
//! 5. Check what is served ([`serve`], deciding by [`verify`]): every ready pod of the new ReplicaSet
//!    runs the pushed digest, and a request through each Service that selects
//!    the pods (the API server's Service proxy) answers 2xx from the new
//!    revision. A failed check fails the rollout like a failed wait. When a
//!    Helm release manages the Deployment ([`helm`]), say which `helm
//!    upgrade` keeps the image (the next one would set the chart's back).
//! 6. Roll back on failure: patch the previous image and annotations back, wait
//!    for that rollout, check it, report both. [`revisions`] serves `berth
//!    history` and `berth rollback`.
//!
//! Why a strategic-merge patch rather than server-side apply: berth changes one
//! field of an object that someone else's manifest declares. A merge patch
//! keyed on the container name touches exactly that field, needs no knowledge of
//! the rest of the object, and with the `resourceVersion` precondition never
//! overwrites a concurrent change. Ownership by another server-side-apply manager
//! is detected in preflight and reported (an error with `--strict`), not taken
//! over silently.

pub mod helm;
pub mod lease;
pub mod patch;
pub mod preflight;
pub mod preview;
pub mod revisions;
pub mod rollout;
pub mod serve;
pub mod verify;
pub mod wait;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

use crate::config::{DeploymentTarget, HelmValues};
use crate::reference;
use verify::Verification;

/// Annotation holding the full commit id of what the Deployment runs.
pub const COMMIT_ANNOTATION: &str = "berth.dev/commit";
/// Annotation holding the source digest of what the Deployment runs.
pub const SOURCE_DIGEST_ANNOTATION: &str = "berth.dev/source-digest";
/// Annotation holding the image berth set: a container image other than it was
/// set by someone else (`kubectl set image`), and the other annotations no
/// longer describe what runs.
pub const IMAGE_ANNOTATION: &str = "berth.dev/image";
/// Annotation holding the content digest of the image berth set: what it
/// serves, times left out (`image::content_digest`).
pub const CONTENT_DIGEST_ANNOTATION: &str = "berth.dev/content-digest";
/// Annotation on a Deployment's lease: the images that rolled out there and
/// passed berth's verification, newest first ([`Passed`]), which `berth promote`
/// may take to another environment.
pub const PASSED_ANNOTATION: &str = "berth.dev/passed";
/// How many passed images a lease remembers.
const PASSED_KEPT: usize = 20;
/// Annotation `kubectl rollout history` shows.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";
/// Field manager of berth's writes.
pub const FIELD_MANAGER: &str = "berth";
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// How long a pod may sit in a state that will not recover before berth fails the rollout.
const FATAL_GRACE: Duration = Duration::from_secs(8);
/// How long a Service's endpoints may take to hold only the new revision's pods
/// (the EndpointSlice controller's and the proxies' lag) before berth gives up.
const ENDPOINTS_SETTLE: Duration = Duration::from_secs(30);
/// How long one request through the Service proxy may take.
const SERVICE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong while deploying.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The Deployment does not exist.
    #[error("Deployment {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    /// The Deployment has no container of that name.
    #[error("Deployment {namespace}/{name} has no container `{container}` (it has: {existing})")]
    NoContainer {
        namespace: String,
        name: String,
        container: String,
        existing: String,
    },
    /// The API server refused a request; the message says which verb on which resource.
    #[error("{verb} {resource} {namespace}/{name} was refused: {message}")]
    Refused {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
    /// Another writer changed the object since berth read it (409: the
    /// `resourceVersion` berth sent is not the current one), or kept changing it.
    #[error("{verb} {resource} {namespace}/{name} conflicted with another change: {message}")]
    Conflict {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
    /// berth's credentials lack a permission (403).
    #[error(
        "permission missing: berth may not `{verb}` {resource} in namespace {namespace}; grant it as docs/rbac.yaml does ({message})"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        message: String,
    },
    /// Another caller holds the Deployment's lease for longer than berth waits.
    #[error(
        "Deployment {namespace}/{name} is being deployed by {holder} (waited {waited:.0?}); try again later or raise --lock-wait"
    )]
    Locked {
        namespace: String,
        name: String,
        holder: String,
        waited: Duration,
    },
    /// berth lost the Deployment's lease while it held it (another caller took
    /// it, or berth could not renew it in time): it stopped acting on the
    /// Deployment there, with no further patch and no rollback (the Deployment
    /// may be another caller's now). `set` is the image berth had set before.
    #[error(
        "berth lost the lock on Deployment {namespace}/{name} ({loss}) and touched it no more after that{}",
        set.as_ref().map(|image| format!(": it had set {image}, and leaves it (no rollback of what another caller may own now)")).unwrap_or_default()
    )]
    LostLock {
        namespace: String,
        name: String,
        loss: lease::Loss,
        set: Option<String>,
    },
    /// Preflight found problems and `--strict` turns them into errors.
    #[error(
        "Deployment {namespace}/{name} cannot roll without downtime (--strict):\n{}",
        list(findings)
    )]
    Preflight {
        namespace: String,
        name: String,
        findings: Vec<preflight::Finding>,
    },
    /// The commit is an ancestor of the deployed one (an out-of-order CI job).
    #[error(
        "commit {commit} is older than the deployed {deployed} (an ancestor of it); refusing to go back (pass --allow-older to deploy it anyway)"
    )]
    Older { commit: String, deployed: String },
    /// No revision to roll back to.
    #[error("no revision of Deployment {namespace}/{name} to roll back to: {detail}")]
    NoRevision {
        namespace: String,
        name: String,
        detail: String,
    },
    /// The API server could not be reached.
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(ClusterUnreachable),
    /// The rollout failed, or what it serves failed berth's verification; the
    /// Deployment was rolled back (or not, as said).
    #[error("rollout of {image} failed: {reason}{}", rollback_text(rolled_back.as_ref()))]
    RolloutFailed {
        image: String,
        reason: RolloutReason,
        rolled_back: Option<Result<RolledBack, patch::RollbackFailure>>,
        /// What berth checked, when Kubernetes called the rollout complete.
        verification: Option<Box<Verification>>,
    },
}

impl DeployError {
    /// What berth checked before a rollout failed, when Kubernetes had called
    /// it complete.
    pub fn verification(&self) -> Option<Verification> {
        match self {
            Self::RolloutFailed { verification, .. } => verification.as_deref().cloned(),
            _ => None,
        }
    }

    /// The cluster unreachable is the environment's failure (exit 3); every
    /// other is the site's.
    pub fn kind(&self) -> crate::exit::Kind {
        match self {
            Self::Unreachable(_) => crate::exit::Kind::Environment,
            _ => crate::exit::Kind::Site,
        }
    }
}

/// Why a rollout failed, for [`DeployError::RolloutFailed`].
#[derive(Debug, thiserror::Error)]
pub enum RolloutReason {
    /// Kubernetes did not complete it, or berth stopped waiting.
    #[error(transparent)]
    Wait(Box<wait::RolloutFailure>),
    /// Kubernetes called it complete, and berth's verification of what it serves
    /// failed, as the check says it.
    #[error("Kubernetes calls it complete, but berth's verification failed: {0}")]
    Check(String),
}

/// Why berth cannot talk to the Kubernetes API server, for
/// [`DeployError::Unreachable`]: kube's errors, in kube's words.
#[derive(Debug, thiserror::Error)]
pub enum ClusterUnreachable {
    /// The kubeconfig file named could not be read.
    #[error("cannot read the kubeconfig {}: {error}", path.display())]
    ReadKubeconfig {
        path: std::path::PathBuf,
        error: kube::config::KubeconfigError,
    },
    /// The kubeconfig (the file named, or the default one) gives no
    /// configuration for the context.
    #[error(
        "cannot load the kubeconfig{}: {error}",
        path.as_ref().map(|path| format!(" {}", path.display())).unwrap_or_default()
    )]
    LoadKubeconfig {
        path: Option<std::path::PathBuf>,
        error: kube::config::KubeconfigError,
    },
    /// No kubeconfig, and no in-cluster service account.
    #[error("no cluster configuration: {0}")]
    Infer(kube::config::InferConfigError),
    /// The client could not be made, or a request did not reach the server.
    #[error("{0}")]
    Kube(kube::Error),
}

fn list(findings: &[preflight::Finding]) -> String {
    findings
        .iter()
        .map(|finding| format!("  - {finding}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The previous image runs again after a failed rollout.
#[derive(Debug, Clone)]
pub struct RolledBack {
    pub image: String,
    /// Why berth's verification of the previous version failed too, if it did (a
    /// Service that answers nothing answers nothing for either version).
    pub check_failure: Option<String>,
}

fn rollback_text(rolled_back: Option<&Result<RolledBack, patch::RollbackFailure>>) -> String {
    match rolled_back {
        None => String::new(),
        Some(Ok(RolledBack {
            image,
            check_failure: None,
        })) => format!("\nrolled back: the previous version ({image}) serves again"),
        Some(Ok(RolledBack {
            image,
            check_failure: Some(failure),
        })) => format!(
            "\nrolled back: the previous version ({image}) runs again, but berth's verification of it failed too: {failure}"
        ),
        Some(Err(error)) => format!("\nrolling back failed too: {error}"),
    }
}

/// What the Deployment runs now, as berth sees it.
#[derive(Debug, Clone, Default)]
pub struct Deployed {
    pub image: Option<String>,
    pub commit: Option<String>,
    pub source_digest: Option<String>,
    /// The image berth set ([`IMAGE_ANNOTATION`]); absent where berth shipped before it wrote one.
    pub shipped_image: Option<String>,
    /// What that image serves ([`CONTENT_DIGEST_ANNOTATION`]).
    pub content_digest: Option<String>,
    pub generation: i64,
    pub annotations: BTreeMap<String, String>,
}

impl Deployed {
    /// Whether shipping `source_digest` to this Deployment would change
    /// nothing: it runs an image of `repository`, pinned by digest, that berth
    /// set from that source, and nobody has set another image since.
    pub fn runs_source(&self, repository: &str, source_digest: &str) -> bool {
        let Some(image) = self.image.as_deref() else {
            return false;
        };
        let pinned = self.in_repository(repository) && image.contains("@sha256:");
        let as_shipped = self
            .shipped_image
            .as_deref()
            .is_none_or(|shipped| shipped == image);
        self.source_digest.as_deref() == Some(source_digest) && pinned && as_shipped
    }

    /// Whether the running image is in `repository` (`<registry>/<path>`):
    /// the one the site's configuration names now, in the registry of the
    /// environment shipped to.
    pub fn in_repository(&self, repository: &str) -> bool {
        self.image
            .as_deref()
            .is_some_and(|image| reference::repository(image) == repository)
    }

    /// This state with berth's record from the Deployment's lease applied:
    /// the newest commit (and its source digest) shipped as the same files as
    /// the image it names ([`Deployer::record`]). A record about another image
    /// than the one that runs, as berth set it, is stale and changes nothing.
    #[must_use]
    pub fn with_record(mut self, record: &BTreeMap<String, String>) -> Self {
        if self.runs_what_berth_set() && record.get(IMAGE_ANNOTATION) == self.image.as_ref() {
            self.commit = record.get(COMMIT_ANNOTATION).cloned().or(self.commit);
            self.source_digest = record
                .get(SOURCE_DIGEST_ANNOTATION)
                .cloned()
                .or(self.source_digest);
        }
        self
    }

    /// Whether the Deployment runs, as berth set it, an image of `repository`
    /// that serves the files of `content_digest`: a new commit with those
    /// files needs no image and no rollout. An image in another repository
    /// (the site's `image` or registry changed) does not count: the site
    /// must move there.
    pub fn serves_files(&self, repository: &str, content_digest: &str) -> bool {
        self.content_digest.as_deref() == Some(content_digest)
            && self.runs_what_berth_set()
            && self.in_repository(repository)
    }

    /// Whether the container runs the image berth recorded setting (nobody
    /// set another since).
    pub fn runs_what_berth_set(&self) -> bool {
        self.shipped_image.is_some() && self.image == self.shipped_image
    }
}

/// An image that rolled out on a Deployment and passed berth's verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Passed {
    pub commit: String,
    /// Full reference, pinned by digest.
    pub image: String,
    pub source_digest: Option<String>,
    pub content_digest: Option<String>,
    /// When it passed (RFC 3339).
    pub at: String,
}

/// The passed images a lease records, newest first; an unreadable record is none.
pub fn passed_of(annotations: &BTreeMap<String, String>) -> Vec<Passed> {
    annotations
        .get(PASSED_ANNOTATION)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// The change berth makes.
#[derive(Debug, Clone)]
pub struct Change {
    /// Full reference, `<registry>/<image>:<tag>@sha256:<digest>`.
    pub image: String,
    pub commit: String,
    pub source_digest: String,
    /// What the image serves, when berth knows it (it built the image, or read
    /// the image's label); none removes the annotation.
    pub content_digest: Option<String>,
    pub change_cause: String,
    /// How the chart's values name the image, for the `helm upgrade` berth
    /// prints after a rollout when a Helm release manages the Deployment.
    pub helm: HelmValues,
}

/// What the deploy stage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    UpToDate,
    /// Rolled out, and what is served passed berth's verification.
    RolledOut(Verification),
}

/// One entry of a Deployment's history, from its ReplicaSets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Revision {
    pub revision: i64,
    pub image: Option<String>,
    pub commit: Option<String>,
    pub source_digest: Option<String>,
    pub content_digest: Option<String>,
    pub change_cause: Option<String>,
    pub created: Option<String>,
    pub current: bool,
}

impl Revision {
    /// What the Deployment ran at this revision, as [`deployed_of`] reads it
    /// from the Deployment: what a rollback to it sets back.
    pub fn deployed(&self) -> Deployed {
        let annotations: BTreeMap<String, String> = [
            (COMMIT_ANNOTATION, &self.commit),
            (SOURCE_DIGEST_ANNOTATION, &self.source_digest),
            (IMAGE_ANNOTATION, &self.image),
            (CONTENT_DIGEST_ANNOTATION, &self.content_digest),
            (CHANGE_CAUSE_ANNOTATION, &self.change_cause),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_string(), value.clone()?)))
        .collect();
        Deployed {
            image: self.image.clone(),
            commit: self.commit.clone(),
            source_digest: self.source_digest.clone(),
            shipped_image: self.image.clone(),
            content_digest: self.content_digest.clone(),
            generation: 0,
            annotations,
        }
    }
}

/// Talks to one cluster.
#[derive(Clone)]
pub struct Deployer {
    client: kube::Client,
    /// The same cluster without kube's retries of 429/503/504: through the
    /// Service proxy a 503 is the answer (the pod refused), to report at once.
    proxy_client: kube::Client,
    /// The same cluster, for watches only. A watch's connection closes when
    /// berth stops reading it; on `client`, the next request then opened a
    /// new one, and its first answer came 40 ms late (a resumed TLS session,
    /// and kube's connections leave Nagle's algorithm on: 47 ms against 3 ms
    /// for the ReplicaSets read after each rollout). Watching on a client of
    /// its own leaves `client`'s connection open. A kubeconfig whose user
    /// runs a command for its credentials (`exec`, `auth-provider`) shares
    /// `client`: each client runs that command itself, which costs more.
    watch_client: kube::Client,
    timeout: Duration,
}

impl Deployer {
    /// Connects with the kubeconfig (`KUBECONFIG` or `~/.kube/config`) and `context`.
    pub async fn connect(
        context: Option<&str>,
        kubeconfig: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Self, DeployError> {
        // A named context or kubeconfig file needs a kubeconfig; without
        // either, berth infers the configuration as kubectl does: KUBECONFIG,
        // ~/.kube/config, or the in-cluster service account (the nightly CronJob).
        let options = kube::config::KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let config = match (kubeconfig, context) {
            (Some(path), _) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|error| {
                    DeployError::Unreachable(ClusterUnreachable::ReadKubeconfig {
                        path: path.to_path_buf(),
                        error,
                    })
                })?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|error| {
                        DeployError::Unreachable(ClusterUnreachable::LoadKubeconfig {
                            path: Some(path.to_path_buf()),
                            error,
                        })
                    })?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options).await.map_err(|error| {
                DeployError::Unreachable(ClusterUnreachable::LoadKubeconfig { path: None, error })
            })?,
            (None, None) => kube::Config::infer()
                .await
                .map_err(|error| DeployError::Unreachable(ClusterUnreachable::Infer(error)))?,
        };
        let mut proxy_config = config.clone();
        proxy_config.default_retry = false;
        let unreachable = |error| DeployError::Unreachable(ClusterUnreachable::Kube(error));
        let runs_a_command = config.auth_info.exec.is_some() || config.auth_info.auth_provider.is_some();
        let client = kube::Client::try_from(config.clone()).map_err(unreachable)?;
        let watch_client = if runs_a_command {
            client.clone()
        } else {
            kube::Client::try_from(config).map_err(unreachable)?
        };
        let proxy_client = kube::Client::try_from(proxy_config).map_err(unreachable)?;
        Ok(Self {
            client,
            proxy_client,
            watch_client,
            timeout,
        })
    }

    fn deployments(&self, namespace: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Reads what the Deployment's container runs now.
    pub async fn deployed(&self, target: &DeploymentTarget) -> Result<Deployed, DeployError> {
        let deployment = self.read(target).await?;
        self.deployed_of(&deployment, target).await
    }

    /// Reads the Deployment.
    pub async fn read(&self, target: &DeploymentTarget) -> Result<Deployment, DeployError> {
        self.deployments(&target.namespace)
            .get(&target.name)
            .await
            .map_err(|error| match &error {
                kube::Error::Api(response) if response.code == 404 => DeployError::NotFound {
                    namespace: target.namespace.clone(),
                    name: target.name.clone(),
                },
                _ => target_error(error, "get", "deployments", target),
            })
    }

    /// Takes the Deployment's lease, waiting at most `wait`.
    pub async fn lock(
        &self,
        target: &DeploymentTarget,
        identity: &str,
        wait: Duration,
        on_wait: &(dyn Fn(&lease::Holder) + Sync),
    ) -> Result<lease::LeaseLock, DeployError> {
        lease::acquire(&self.client, target, identity, wait, on_wait).await
    }

    /// Takes `site`'s Deployment lease for `purpose`, saying on `printer`
    /// whom it waits for.
    pub async fn lock_site(
        &self,
        site: &crate::config::Site,
        purpose: &str,
        wait: Duration,
        printer: &crate::ui::Printer,
    ) -> Result<lease::LeaseLock, DeployError> {
        let identity = lease::identity(&format!("{purpose} {}", site.name));
        let on_wait = |holder: &lease::Holder| {
            printer.stage(
                &site.name,
                "lock",
                crate::ui::Status::Warning,
                &format!(
                    "waiting for {} (lease expires in {}s at most)",
                    holder.identity,
                    holder.expires_in.as_secs()
                ),
            );
        };
        self.lock(&site.deployment, &identity, wait, &on_wait).await
    }

    /// What `deployment` runs, as berth sees it: its annotations, then berth's
    /// record on its lease ([`Deployed::with_record`]).
    pub async fn deployed_of(
        &self,
        deployment: &Deployment,
        target: &DeploymentTarget,
    ) -> Result<Deployed, DeployError> {
        let record = lease::annotations_of(&self.client, target).await?;
        Ok(deployed_of(deployment, target)?.with_record(&record))
    }

    /// Records `commit`, whose image would serve the files that `deployed`'s
    /// image serves, on the Deployment's lease (held as `lock`). Nothing of
    /// the Deployment changes: not its pod template, not even its generation
    /// (which a Deployment's annotations would bump). The record names that
    /// image, so a later change of the image (any rollout, a `kubectl set
    /// image`) makes it stale.
    pub async fn record(
        &self,
        lock: &lease::LeaseLock,
        deployed: &Deployed,
        commit: &str,
        source_digest: &str,
    ) -> Result<(), DeployError> {
        let mut record = BTreeMap::new();
        record.insert(COMMIT_ANNOTATION.to_string(), commit.to_string());
        record.insert(SOURCE_DIGEST_ANNOTATION.to_string(), source_digest.to_string());
        record.insert(
            IMAGE_ANNOTATION.to_string(),
            deployed.image.clone().unwrap_or_default(),
        );
        lock.annotate(&record).await
    }
}

impl Deployer {
    /// What `deployment` runs, as [`Self::deployed_of`] says, and the
    /// images that passed on it, newest first: one read of its lease.
    pub async fn deployed_and_passed(
        &self,
        deployment: &Deployment,
        target: &DeploymentTarget,
    ) -> Result<(Deployed, Vec<Passed>), DeployError> {
        let record = lease::annotations_of(&self.client, target).await?;
        Ok((
            deployed_of(deployment, target)?.with_record(&record),
            passed_of(&record),
        ))
    }
}

impl Passed {
    /// `change`, passed now.
    pub(crate) fn of(change: &Change) -> Self {
        Self {
            commit: change.commit.clone(),
            image: change.image.clone(),
            source_digest: Some(change.source_digest.clone()).filter(|d| !d.is_empty()),
            content_digest: change.content_digest.clone(),
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }
}

/// `annotations` with `passed` first in their passed record, keeping the
/// newest [`PASSED_KEPT`].
fn add_passed(annotations: &mut BTreeMap<String, String>, passed: Passed) {
    let mut list = passed_of(annotations);
    list.retain(|p| p.image != passed.image);
    list.insert(0, passed);
    list.truncate(PASSED_KEPT);
    let text = serde_json::to_string(&list).expect("plain strings serialise");
    annotations.insert(PASSED_ANNOTATION.to_string(), text);
}

/// Why berth could not read what a Service check needs.
pub(super) fn not_read(error: &kube::Error, what: &str) -> String {
    match error {
        kube::Error::Api(response) if response.code == 403 => {
            format!("berth may not {what} (grant it as docs/rbac.yaml does)")
        }
        other => format!("cannot {what}: {other}"),
    }
}

pub(super) fn selector_of(deployment: &Deployment) -> Option<String> {
    let labels = deployment.spec.selector.match_labels.as_ref()?;
    Some(
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// What the named container of `deployment` runs.
pub fn deployed_of(deployment: &Deployment, target: &DeploymentTarget) -> Result<Deployed, DeployError> {
    let containers = deployment
        .spec
        .template
        .spec
        .as_ref()
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default();
    let container = containers
        .iter()
        .find(|c| c.name == target.container)
        .ok_or_else(|| DeployError::NoContainer {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            container: target.container.clone(),
            existing: containers
                .iter()
                .map(|c| format!("`{}`", c.name))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let annotations = deployment.metadata.annotations.clone().unwrap_or_default();
    Ok(Deployed {
        image: container.image.clone(),
        commit: annotations.get(COMMIT_ANNOTATION).cloned(),
        source_digest: annotations.get(SOURCE_DIGEST_ANNOTATION).cloned(),
        shipped_image: annotations.get(IMAGE_ANNOTATION).cloned(),
        content_digest: annotations.get(CONTENT_DIGEST_ANNOTATION).cloned(),
        generation: deployment.metadata.generation.unwrap_or(0),
        annotations,
    })
}

fn api_error(
    error: kube::Error,
    verb: &'static str,
    resource: &'static str,
    namespace: &str,
    name: &str,
) -> DeployError {
    match error {
        kube::Error::Api(response) if response.code == 403 => DeployError::Forbidden {
            verb,
            resource,
            namespace: namespace.to_string(),
            message: response.message,
        },
        kube::Error::Api(response) if response.code == 409 => DeployError::Conflict {
            verb,
            resource,
            namespace: namespace.to_string(),
            name: name.to_string(),
            message: response.message,
        },
        kube::Error::Api(response) => DeployError::Refused {
            verb,
            resource,
            namespace: namespace.to_string(),
            name: name.to_string(),
            message: format!("{} ({} {})", response.message, response.code, response.reason),
        },
        other => DeployError::Unreachable(ClusterUnreachable::Kube(other)),
    }
}

fn target_error(
    error: kube::Error,
    verb: &'static str,
    resource: &'static str,
    target: &DeploymentTarget,
) -> DeployError {
    api_error(error, verb, resource, &target.namespace, &target.name)
}

#[cfg(test)]
mod tests {
    use super::{DeployError, Deployed};

    #[test]
    fn the_api_servers_code_decides_the_kind_of_refusal_not_its_words() {
        let refusal = |code: u16, message: &str| {
            let status = kube::core::Status::failure(message, "Reason").with_code(code);
            super::api_error(
                kube::Error::Api(status.boxed()),
                "patch",
                "deployments",
                "ns",
                "web",
            )
        };
        assert!(matches!(
            refusal(409, "the object has been modified"),
            DeployError::Conflict { .. }
        ));
        assert!(matches!(refusal(403, "forbidden"), DeployError::Forbidden { .. }));
        // A message that mentions 409 is not a conflict.
        assert!(matches!(
            refusal(422, "port 409 is invalid"),
            DeployError::Refused { .. }
        ));
    }

    const REPOSITORY: &str = "127.0.0.1:5000/sites/www";
    const IMAGE: &str = "127.0.0.1:5000/sites/www:abc123@sha256:1111";

    fn shipped(image: &str, shipped_image: Option<&str>) -> Deployed {
        Deployed {
            image: Some(image.into()),
            source_digest: Some("source-1".into()),
            shipped_image: shipped_image.map(Into::into),
            ..Deployed::default()
        }
    }

    #[test]
    fn what_berth_shipped_from_the_same_source_is_unchanged() {
        assert!(shipped(IMAGE, Some(IMAGE)).runs_source(REPOSITORY, "source-1"));
        // Shipped before berth wrote the image annotation.
        assert!(shipped(IMAGE, None).runs_source(REPOSITORY, "source-1"));
    }

    #[test]
    fn another_source_another_repository_or_a_tag_without_digest_is_changed() {
        assert!(!shipped(IMAGE, Some(IMAGE)).runs_source(REPOSITORY, "source-2"));
        assert!(!shipped(IMAGE, Some(IMAGE)).runs_source("127.0.0.1:5000/sites/docs", "source-1"));
        let tag_only = "127.0.0.1:5000/sites/www:abc123";
        assert!(!shipped(tag_only, Some(tag_only)).runs_source(REPOSITORY, "source-1"));
        assert!(!Deployed::default().runs_source(REPOSITORY, "source-1"));
    }

    #[test]
    fn the_same_files_are_served_only_by_the_image_berth_set_with_them() {
        let deployed = Deployed {
            content_digest: Some("files-1".into()),
            ..shipped(IMAGE, Some(IMAGE))
        };
        assert!(deployed.serves_files(REPOSITORY, "files-1"));
        assert!(!deployed.serves_files(REPOSITORY, "files-2"));
        let behind_our_back = Deployed {
            image: Some("127.0.0.1:5000/sites/www:def456@sha256:2222".into()),
            ..deployed.clone()
        };
        assert!(!behind_our_back.serves_files(REPOSITORY, "files-1"));
        let before_the_annotation = Deployed {
            shipped_image: None,
            ..deployed
        };
        assert!(!before_the_annotation.serves_files(REPOSITORY, "files-1"));
    }

    #[test]
    fn the_same_files_in_another_repository_or_registry_are_not_served() {
        let deployed = Deployed {
            content_digest: Some("files-1".into()),
            ..shipped(IMAGE, Some(IMAGE))
        };
        // The site's `image` renamed; its `[registry]` moved; a repository
        // whose name only starts like the running one.
        for repository in [
            "127.0.0.1:5000/sites/web",
            "127.0.0.1:5001/sites/www",
            "127.0.0.1:5000/sites/www-en",
            "127.0.0.1:5000/sites",
        ] {
            assert!(!deployed.serves_files(repository, "files-1"), "{repository}");
            assert!(!deployed.runs_source(repository, "source-1"), "{repository}");
        }
        assert!(deployed.in_repository(REPOSITORY));
    }

    #[test]
    fn a_record_of_the_running_image_names_its_newest_commit_and_a_stale_one_is_ignored() {
        let record = |image: &str| {
            std::collections::BTreeMap::from([
                (super::COMMIT_ANNOTATION.to_string(), "commit-2".to_string()),
                (
                    super::SOURCE_DIGEST_ANNOTATION.to_string(),
                    "source-2".to_string(),
                ),
                (super::IMAGE_ANNOTATION.to_string(), image.to_string()),
            ])
        };
        let deployed = Deployed {
            commit: Some("commit-1".into()),
            ..shipped(IMAGE, Some(IMAGE))
        };
        let recorded = deployed.clone().with_record(&record(IMAGE));
        assert_eq!(recorded.commit.as_deref(), Some("commit-2"));
        assert!(recorded.runs_source(REPOSITORY, "source-2"));
        // A record about another image (the site shipped since, or rolled back).
        let stale = deployed
            .clone()
            .with_record(&record("127.0.0.1:5000/sites/www:def456@sha256:2222"));
        assert_eq!(stale.commit.as_deref(), Some("commit-1"));
        assert!(stale.runs_source(REPOSITORY, "source-1"));
        // The image was set behind berth's back to the recorded one's: not berth's.
        let behind = Deployed {
            shipped_image: Some("127.0.0.1:5000/sites/www:def456@sha256:2222".into()),
            ..deployed.clone()
        };
        assert_eq!(
            behind.with_record(&record(IMAGE)).commit.as_deref(),
            Some("commit-1")
        );
        assert_eq!(
            deployed
                .clone()
                .with_record(&std::collections::BTreeMap::default())
                .commit,
            deployed.commit
        );
    }

    #[test]
    fn an_image_set_behind_berths_back_is_changed_even_from_the_same_repository() {
        let other = "127.0.0.1:5000/sites/www:def456@sha256:2222";
        assert!(!shipped(other, Some(IMAGE)).runs_source(REPOSITORY, "source-1"));
    }
}
