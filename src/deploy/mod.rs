//! Deploy stage: set one container's image, wait for the rollout, roll back on failure.
//!
//! 1. Read the Deployment and the named container; if it already runs the image,
//!    there is nothing to do ("up to date").
//! 2. Patch only that container's image (a strategic-merge patch, merged by
//!    container name, with berth's field manager and the read `resourceVersion`
//!    as a precondition, so a concurrent write gives 409 and is re-read, never
//!    overwritten), and record commit, source digest and change-cause annotations.
//! 3. Watch the Deployment and decide as `kubectl rollout status` does
//!    ([`rollout::rollout_state`]), under berth's own timeout; meanwhile look at the
//!    new pods and fail fast on states that will not recover.
//! 4. On failure, patch the previous image and annotations back, wait for that
//!    rollout, and report both.

pub mod rollout;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::config::DeploymentTarget;
use crate::output::{Printer, Status};
use rollout::{RolloutState, pod_problem, rollout_state};

/// Annotation holding the full commit id of what the Deployment runs.
pub const COMMIT_ANNOTATION: &str = "berth.dev/commit";
/// Annotation holding the source digest of what the Deployment runs.
pub const SOURCE_DIGEST_ANNOTATION: &str = "berth.dev/source-digest";
/// Annotation `kubectl rollout history` shows.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";
/// Field manager of berth's writes.
pub const FIELD_MANAGER: &str = "berth";

/// How long a pod may sit in a state that will not recover before berth fails the rollout.
const FATAL_GRACE: Duration = Duration::from_secs(8);

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
    /// The API server could not be reached.
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(String),
    /// The rollout failed; the Deployment was rolled back (or not, as said).
    #[error("rollout of {image} failed: {reason}{}", rollback_text(.rolled_back.as_ref()))]
    RolloutFailed {
        image: String,
        reason: String,
        rolled_back: Option<Result<String, String>>,
    },
}

fn rollback_text(rolled_back: Option<&Result<String, String>>) -> String {
    match rolled_back {
        None => String::new(),
        Some(Ok(image)) => format!("\nrolled back: the previous version ({image}) serves again"),
        Some(Err(error)) => format!("\nrolling back failed too: {error}"),
    }
}

/// What the Deployment runs now, as berth sees it.
#[derive(Debug, Clone, Default)]
pub struct Deployed {
    pub image: Option<String>,
    pub commit: Option<String>,
    pub source_digest: Option<String>,
    pub generation: i64,
    pub annotations: BTreeMap<String, String>,
}

/// The change berth makes.
#[derive(Debug, Clone)]
pub struct Change {
    /// Full reference, `<registry>/<image>:<tag>@sha256:<digest>`.
    pub image: String,
    pub commit: String,
    pub source_digest: String,
    pub change_cause: String,
}

/// What the deploy stage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    UpToDate,
    RolledOut,
}

/// Talks to one cluster.
#[derive(Clone)]
pub struct Deployer {
    client: kube::Client,
    timeout: Duration,
}

impl Deployer {
    /// Connects with the kubeconfig (`KUBECONFIG` or `~/.kube/config`) and `context`.
    pub async fn connect(context: Option<&str>, timeout: Duration) -> Result<Self, DeployError> {
        let options = kube::config::KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let config = kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|error| DeployError::Unreachable(format!("cannot load the kubeconfig: {error}")))?;
        let client =
            kube::Client::try_from(config).map_err(|error| DeployError::Unreachable(error.to_string()))?;
        Ok(Self { client, timeout })
    }

    fn deployments(&self, namespace: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Reads what the Deployment's container runs now.
    pub async fn deployed(&self, target: &DeploymentTarget) -> Result<Deployed, DeployError> {
        let deployment = self.read(target).await?;
        deployed_of(&deployment, target)
    }

    async fn read(&self, target: &DeploymentTarget) -> Result<Deployment, DeployError> {
        self.deployments(&target.namespace)
            .get(&target.name)
            .await
            .map_err(|error| match &error {
                kube::Error::Api(response) if response.code == 404 => DeployError::NotFound {
                    namespace: target.namespace.clone(),
                    name: target.name.clone(),
                },
                _ => api_error(error, "get", "deployments", target),
            })
    }

    /// Sets the image, waits for the rollout, rolls back on failure.
    pub async fn deploy(
        &self,
        site: &str,
        target: &DeploymentTarget,
        change: &Change,
        printer: &Printer,
    ) -> Result<Outcome, DeployError> {
        let mut conflicts = 0;
        let previous = loop {
            let deployment = self.read(target).await?;
            let previous = deployed_of(&deployment, target)?;
            if previous.image.as_deref() == Some(change.image.as_str()) {
                return Ok(Outcome::UpToDate);
            }
            let resource_version = deployment.metadata.resource_version.clone().unwrap_or_default();
            match self
                .patch(target, &change.image, &annotations_of(change), &resource_version)
                .await
            {
                Ok(()) => break previous,
                Err(DeployError::Refused { message, .. })
                    if message.contains("409")
                        || message.contains("Conflict")
                        || message.contains("modified") =>
                {
                    conflicts += 1;
                    if conflicts > 5 {
                        return Err(DeployError::Refused {
                            verb: "patch",
                            resource: "deployments",
                            namespace: target.namespace.clone(),
                            name: target.name.clone(),
                            message,
                        });
                    }
                    printer.stage(
                        site,
                        "deploy",
                        Status::Warning,
                        "the Deployment changed while berth read it; reading it again",
                    );
                }
                Err(error) => return Err(error),
            }
        };
        match self.wait(site, target, printer).await {
            Ok(()) => Ok(Outcome::RolledOut),
            Err(reason) => {
                printer.stage(site, "deploy", Status::Failed, &format!("{reason}; rolling back"));
                let rolled_back = match &previous.image {
                    Some(image) => Some(
                        self.roll_back(site, target, image, &previous, printer)
                            .await
                            .map(|()| image.clone()),
                    ),
                    None => None,
                };
                Err(DeployError::RolloutFailed {
                    image: change.image.clone(),
                    reason,
                    rolled_back,
                })
            }
        }
    }

    async fn roll_back(
        &self,
        site: &str,
        target: &DeploymentTarget,
        image: &str,
        previous: &Deployed,
        printer: &Printer,
    ) -> Result<(), String> {
        let mut annotations = serde_json::Map::new();
        for key in [
            COMMIT_ANNOTATION,
            SOURCE_DIGEST_ANNOTATION,
            CHANGE_CAUSE_ANNOTATION,
        ] {
            annotations.insert(
                key.to_string(),
                previous
                    .annotations
                    .get(key)
                    .map_or(serde_json::Value::Null, |v| json!(v)),
            );
        }
        for _ in 0..5 {
            let deployment = self.read(target).await.map_err(|e| e.to_string())?;
            let resource_version = deployment.metadata.resource_version.clone().unwrap_or_default();
            match self.patch(target, image, &annotations, &resource_version).await {
                Ok(()) => return self.wait(site, target, printer).await,
                Err(DeployError::Refused { message, .. }) if message.contains("409") => {}
                Err(error) => return Err(error.to_string()),
            }
        }
        Err("the Deployment kept changing while berth rolled it back".into())
    }

    async fn patch(
        &self,
        target: &DeploymentTarget,
        image: &str,
        annotations: &serde_json::Map<String, serde_json::Value>,
        resource_version: &str,
    ) -> Result<(), DeployError> {
        let patch = json!({
            "metadata": { "annotations": annotations, "resourceVersion": resource_version },
            "spec": { "template": { "spec": { "containers": [ { "name": target.container, "image": image } ] } } }
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.deployments(&target.namespace)
            .patch(&target.name, &params, &Patch::Strategic(&patch))
            .await
            .map(|_| ())
            .map_err(|error| api_error(error, "patch", "deployments", target))
    }

    /// Waits for the rollout by kubectl's rule; fails fast on pods that will not recover.
    async fn wait(&self, site: &str, target: &DeploymentTarget, printer: &Printer) -> Result<(), String> {
        let started = Instant::now();
        let api = self.deployments(&target.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", target.name));
        let mut stream = watcher(api, config).applied_objects().boxed();
        let mut last_message = String::new();
        let mut problem_since: Option<(String, Instant)> = None;
        let mut check = tokio::time::interval(Duration::from_secs(2));
        loop {
            let remaining = self.timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                let detail = self
                    .diagnose(target)
                    .await
                    .map(|p| format!("; {}: {} {}", p.pod, p.reason, p.message))
                    .unwrap_or_default();
                return Err(format!(
                    "timed out after {:?} ({last_message}){detail}",
                    self.timeout
                ));
            }
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(deployment)) => match rollout_state(&deployment) {
                        RolloutState::Complete => return Ok(()),
                        RolloutState::Failed(reason) => {
                            let detail = self.diagnose(target).await.map(|p| format!("; {}: {} {}", p.pod, p.reason, p.message)).unwrap_or_default();
                            return Err(format!("{reason}{detail}"));
                        }
                        RolloutState::Progressing(message) => {
                            if message != last_message {
                                printer.stage(site, "deploy", Status::Started, &message);
                                last_message = message;
                            }
                        }
                    },
                    Some(Err(error)) => tracing::debug!("watch error (the watcher retries): {error}"),
                    None => return Err("the watch on the Deployment ended".into()),
                },
                _ = check.tick() => {
                    if let Some(problem) = self.diagnose(target).await {
                        if problem.fatal {
                            let since = match &problem_since {
                                Some((reason, since)) if *reason == problem.reason => *since,
                                _ => { problem_since = Some((problem.reason.clone(), Instant::now())); Instant::now() }
                            };
                            if since.elapsed() >= FATAL_GRACE {
                                return Err(format!("pod {} is in {}: {}", problem.pod, problem.reason, problem.message));
                            }
                        }
                    } else {
                        problem_since = None;
                    }
                },
                () = tokio::time::sleep(remaining) => {}
            }
        }
    }

    /// The first problem among the pods of the Deployment's newest `ReplicaSet`.
    async fn diagnose(&self, target: &DeploymentTarget) -> Option<rollout::PodProblem> {
        let deployment = self.read(target).await.ok()?;
        let revision = deployment
            .metadata
            .annotations
            .as_ref()?
            .get("deployment.kubernetes.io/revision")?
            .clone();
        let selector = deployment.spec.selector.match_labels.as_ref()?;
        let labels = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let replica_sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &target.namespace);
        let newest = replica_sets
            .list(&ListParams::default().labels(&labels))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|rs| {
                rs.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                    == Some(&revision)
            })?;
        let hash = newest.metadata.labels.as_ref()?.get("pod-template-hash")?.clone();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let pods = pods
            .list(&ListParams::default().labels(&format!("{labels},pod-template-hash={hash}")))
            .await
            .ok()?;
        pods.items
            .iter()
            .find_map(|pod| pod_problem(pod, &target.container))
    }
}

fn annotations_of(change: &Change) -> serde_json::Map<String, serde_json::Value> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(COMMIT_ANNOTATION.into(), json!(change.commit));
    annotations.insert(SOURCE_DIGEST_ANNOTATION.into(), json!(change.source_digest));
    annotations.insert(CHANGE_CAUSE_ANNOTATION.into(), json!(change.change_cause));
    annotations
}

fn deployed_of(deployment: &Deployment, target: &DeploymentTarget) -> Result<Deployed, DeployError> {
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
        generation: deployment.metadata.generation.unwrap_or(0),
        annotations,
    })
}

fn api_error(
    error: kube::Error,
    verb: &'static str,
    resource: &'static str,
    target: &DeploymentTarget,
) -> DeployError {
    match error {
        kube::Error::Api(response) => DeployError::Refused {
            verb,
            resource,
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            message: format!("{} ({} {})", response.message, response.code, response.reason),
        },
        other => DeployError::Unreachable(other.to_string()),
    }
}
