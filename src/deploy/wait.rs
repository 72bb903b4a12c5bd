//! The wait for a rollout: the Deployment watched and decided as `kubectl
//! rollout status` does, under berth's own timeout, while the new
//! ReplicaSet's pods are looked at to fail fast on states that will not
//! recover, and explained (events, probe failures, logs) when they fail.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::{WatchStreamExt, watcher};
use rollout::{RolloutState, failure_family, pod_problem, rollout_state};

use crate::config::DeploymentTarget;
use crate::deploy::{Deployer, FATAL_GRACE, REVISION_ANNOTATION, rollout, selector_of};
use crate::ui::Printer;

/// Why a rollout did not complete, as berth explains it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RolloutFailure {
    /// berth's own timeout passed first; the last progress message, and what
    /// the pods show.
    #[error("timed out after {timeout:?} ({last_message}){detail}")]
    TimedOut {
        timeout: Duration,
        last_message: String,
        detail: String,
    },
    /// Kubernetes called the rollout failed (its progress deadline passed).
    #[error("{reason}{detail}")]
    Failed { reason: String, detail: String },
    /// A pod has been in a state that will not recover for longer than the grace.
    #[error("{0}")]
    Pod(rollout::PodProblem),
    /// The watch on the Deployment ended.
    #[error("the watch on the Deployment ended")]
    WatchEnded,
}

impl Deployer {
    /// Waits for the rollout by kubectl's rule; fails fast on pods that will not
    /// recover. Returns the Deployment as it was when complete.
    pub(super) async fn wait(
        &self,
        site: &str,
        target: &DeploymentTarget,
        printer: &Printer,
    ) -> Result<Deployment, RolloutFailure> {
        let started = Instant::now();
        let api: Api<Deployment> = Api::namespaced(self.watch_client.clone(), &target.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", target.name));
        let mut stream = watcher(api, config).applied_objects().boxed();
        let mut last_message = String::new();
        let mut problem_since: Option<(String, Instant)> = None;
        let mut check = tokio::time::interval(Duration::from_secs(2));
        // The newest Deployment the watch delivered: diagnostics start from it
        // rather than reading it again every tick.
        let mut latest: Option<Deployment> = None;
        let result = loop {
            let remaining = self.timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                let detail = match &latest {
                    Some(deployment) => self
                        .diagnose(target, deployment)
                        .await
                        .map(|p| format!("; {p}"))
                        .unwrap_or_default(),
                    None => String::new(),
                };
                break Err(RolloutFailure::TimedOut {
                    timeout: self.timeout,
                    last_message,
                    detail,
                });
            }
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(deployment)) => {
                        match rollout_state(&deployment) {
                            RolloutState::Complete => break Ok(deployment),
                            RolloutState::Failed(reason) => {
                                let detail = self.diagnose(target, &deployment).await.map(|p| format!("; {p}")).unwrap_or_default();
                                break Err(RolloutFailure::Failed { reason, detail });
                            }
                            RolloutState::Progressing(message) => {
                                if message != last_message {
                                    printer.progress(site, "deploy", &message);
                                    last_message = message;
                                }
                            }
                        }
                        latest = Some(deployment);
                    }
                    Some(Err(error)) => tracing::debug!("watch error (the watcher retries): {error}"),
                    None => break Err(RolloutFailure::WatchEnded),
                },
                _ = check.tick() => {
                    let Some(deployment) = &latest else { continue };
                    if let Some(problem) = self.diagnose(target, deployment).await {
                        if problem.fatal {
                            let since = match &problem_since {
                                Some((reason, since)) if failure_family(reason) == failure_family(&problem.reason) => *since,
                                _ => {
                                    problem_since = Some((problem.reason.clone(), Instant::now()));
                                    Instant::now()
                                }
                            };
                            if since.elapsed() >= FATAL_GRACE {
                                break Err(RolloutFailure::Pod(problem));
                            }
                        }
                    } else {
                        problem_since = None;
                    }
                },
                () = tokio::time::sleep(remaining) => {}
            }
        };
        printer.clear_progress(site);
        result
    }

    /// The pods of the Deployment's newest ReplicaSet (by revision).
    pub(super) async fn newest_pods(
        &self,
        target: &DeploymentTarget,
        deployment: &Deployment,
    ) -> Option<Vec<Pod>> {
        let revision = deployment
            .metadata
            .annotations
            .as_ref()?
            .get(REVISION_ANNOTATION)?
            .clone();
        let labels = selector_of(deployment)?;
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
                    .and_then(|a| a.get(REVISION_ANNOTATION))
                    == Some(&revision)
            })?;
        let hash = newest.metadata.labels.as_ref()?.get("pod-template-hash")?.clone();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        Some(
            pods.list(&ListParams::default().labels(&format!("{labels},pod-template-hash={hash}")))
                .await
                .ok()?
                .items,
        )
    }

    /// The first problem among the newest pods, with the last log lines of a
    /// crash-looping container where the cluster has them.
    pub(super) async fn diagnose(
        &self,
        target: &DeploymentTarget,
        deployment: &Deployment,
    ) -> Option<rollout::PodProblem> {
        let pods = self.newest_pods(target, deployment).await?;
        let mut problem = pods.iter().find_map(|pod| pod_problem(pod, &target.container))?;
        if problem.reason == "NotReady"
            && let Some(message) = self.last_probe_failure(&target.namespace, &problem.pod).await
        {
            problem.message = format!("running but not ready: {message}");
        }
        if problem.reason == "CrashLoopBackOff" {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
            let params = LogParams {
                container: Some(target.container.clone()),
                previous: true,
                tail_lines: Some(10),
                ..Default::default()
            };
            if let Ok(logs) = api.logs(&problem.pod, &params).await
                && !logs.trim().is_empty()
            {
                problem.message.push_str("; its last log lines:\n");
                problem.message.push_str(
                    &logs
                        .lines()
                        .map(|l| format!("  | {l}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
            }
        }
        Some(problem)
    }

    /// The newest `Unhealthy` event of `pod` (the kubelet's "Readiness probe
    /// failed: ..."), where the cluster keeps events.
    pub(super) async fn last_probe_failure(&self, namespace: &str, pod: &str) -> Option<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let params =
            ListParams::default().fields(&format!("involvedObject.kind=Pod,involvedObject.name={pod}"));
        let list = events.list(&params).await.ok()?;
        list.items
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("Unhealthy"))
            .max_by_key(|event| {
                event
                    .last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or_else(|| event.event_time.as_ref().map(|t| t.0))
            })
            .and_then(|event| event.message)
            .map(|message| message.trim().to_string())
    }
}

impl std::fmt::Display for rollout::PodProblem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "pod {} is in {}: {}",
            self.pod, self.reason, self.message
        )
    }
}
