//! Pure decisions about a rollout, tested on Deployment and Pod fixtures.
//!
//! 1. [`rollout_state`]: `kubectl rollout status`'s rule, in its order.
//! 2. [`pod_problem`]: pod states that will not recover without a new image,
//!    and [`failure_family`]: which of them are one failure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    /// Still going; the text says what it waits for, in kubectl's words.
    Progressing(String),
    /// Finished: every replica updated and available, no old ones left.
    Complete,
    /// Failed for good (the progress deadline passed).
    Failed(String),
}

/// Decides as `kubectl rollout status` does (kubectl's `DeploymentStatusViewer`):
/// 1. the controller has not observed the latest generation: waiting;
/// 2. a `Progressing` condition with reason `ProgressDeadlineExceeded`: failed,
///    unless berth wrote the Deployment since (its field manager's time, on
///    the API server's clock, not before the condition's last update): then
///    the condition is the previous rollout's, which the controller has not
///    replaced yet (seen after an API server restart, when berth rolled
///    back), and berth waits;
/// 3. updated replicas < desired: waiting;
/// 4. more replicas than updated ones (old ones terminating): waiting;
/// 5. available < updated: waiting;
/// 6. otherwise complete.
pub fn rollout_state(deployment: &Deployment) -> RolloutState {
    let name = deployment.metadata.name.as_deref().unwrap_or("deployment");
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = &deployment.status else {
        return RolloutState::Progressing("Waiting for deployment spec update to be observed...".into());
    };
    if generation > status.observed_generation.unwrap_or(0) {
        return RolloutState::Progressing("Waiting for deployment spec update to be observed...".into());
    }
    let berth_wrote = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some(super::FIELD_MANAGER))
        .filter_map(|entry| entry.time.as_ref().map(|time| time.0))
        .max();
    let exceeded = status.conditions.iter().flatten().find(|condition| {
        condition.type_.as_deref() == Some("Progressing")
            && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(condition) = exceeded {
        let updated = condition.last_update_time.as_ref().map(|time| time.0);
        let stale = matches!((updated, berth_wrote), (Some(updated), Some(wrote)) if updated <= wrote);
        if !stale {
            return RolloutState::Failed(format!("deployment {name:?} exceeded its progress deadline"));
        }
        return RolloutState::Progressing(
            "Waiting for the controller to replace the last rollout's ProgressDeadlineExceeded...".into(),
        );
    }
    let desired = deployment.spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return RolloutState::Progressing(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {desired} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return RolloutState::Progressing(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return RolloutState::Progressing(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    RolloutState::Complete
}

/// A pod problem that will not go away by waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProblem {
    pub pod: String,
    pub reason: String,
    pub message: String,
    /// True when only a new image or manifest fixes it (pull errors, crash loops).
    pub fatal: bool,
}

const FATAL_WAITING_REASONS: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "ErrImageNeverPull",
];

/// The failure a waiting reason belongs to, for how long it has lasted: a pull
/// that keeps failing shows `ErrImagePull` and `ImagePullBackOff` in turn, and
/// that is one failure, not a new one at each flip.
pub fn failure_family(reason: &str) -> &str {
    match reason {
        "ErrImagePull" | "ImagePullBackOff" => "image pull",
        other => other,
    }
}

/// The first problem of `container` in `pod`, if any: a waiting reason that will
/// not recover, a scheduling failure, or a running container that is not ready.
pub fn pod_problem(pod: &Pod, container: &str) -> Option<PodProblem> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
        {
            return Some(PodProblem {
                pod: name,
                reason: "FailedScheduling".into(),
                message: condition.message.clone().unwrap_or_default(),
                fatal: false,
            });
        }
    }
    let container_status = status
        .container_statuses
        .iter()
        .flatten()
        .find(|s| s.name == container)?;
    let state = container_status.state.as_ref()?;
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.clone().unwrap_or_default();
        if FATAL_WAITING_REASONS.contains(&reason.as_str()) {
            let mut message = waiting.message.clone().unwrap_or_default();
            if reason == "CrashLoopBackOff" {
                message = format!("{message} (restarted {} times)", container_status.restart_count);
                if let Some(terminated) = container_status
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                {
                    message.push_str(&format!("; last exit code {}", terminated.exit_code));
                }
            }
            return Some(PodProblem {
                pod: name,
                reason,
                message: message.trim().to_string(),
                fatal: true,
            });
        }
    }
    if state.running.is_some() && !container_status.ready {
        return Some(PodProblem {
            pod: name,
            reason: "NotReady".into(),
            message: "running but not ready (readiness probe failing)".into(),
            fatal: false,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_deadline_exceeded_before_berths_last_write_is_the_last_rollouts_and_waits() {
        let deployment = |condition_time: &str, berth_time: &str| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "generation": 4, "managedFields": [
                    {"manager": "berth", "operation": "Apply", "time": berth_time},
                    {"manager": "kube-controller-manager", "operation": "Update", "time": "2026-12-01T10:00:59Z"}
                ]},
                "spec": {"replicas": 1, "selector": {}, "template": {}},
                "status": {"observedGeneration": 4, "replicas": 2, "updatedReplicas": 1, "conditions": [
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                     "lastUpdateTime": condition_time, "lastTransitionTime": condition_time}
                ]}
            }))
            .unwrap()
        };
        // The rollout berth set at 10:00:00 failed at 10:00:40: failed.
        assert!(matches!(
            rollout_state(&deployment("2026-12-01T10:00:40Z", "2026-12-01T10:00:00Z")),
            RolloutState::Failed(_)
        ));
        // berth rolled back at 10:00:41: that condition is the old rollout's.
        assert!(matches!(
            rollout_state(&deployment("2026-12-01T10:00:40Z", "2026-12-01T10:00:41Z")),
            RolloutState::Progressing(_)
        ));
        // In the same second as berth's write: stale too.
        assert!(matches!(
            rollout_state(&deployment("2026-12-01T10:00:41Z", "2026-12-01T10:00:41Z")),
            RolloutState::Progressing(_)
        ));
    }

    use super::*;

    fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn generation_not_observed_waits() {
        let deployment: Deployment = fixture("deployments/not-observed.json");
        assert_eq!(
            rollout_state(&deployment),
            RolloutState::Progressing("Waiting for deployment spec update to be observed...".into())
        );
    }

    #[test]
    fn deadline_exceeded_fails_even_with_old_replicas_available() {
        let deployment: Deployment = fixture("deployments/deadline-exceeded.json");
        assert!(matches!(rollout_state(&deployment), RolloutState::Failed(_)));
    }

    #[test]
    fn updated_fewer_than_desired_waits() {
        let deployment: Deployment = fixture("deployments/updating.json");
        assert_eq!(
            rollout_state(&deployment),
            RolloutState::Progressing("Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...".into())
        );
    }

    #[test]
    fn old_replicas_pending_termination_wait() {
        let deployment: Deployment = fixture("deployments/old-terminating.json");
        assert_eq!(
            rollout_state(&deployment),
            RolloutState::Progressing(
                "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
                    .into()
            )
        );
    }

    #[test]
    fn unavailable_updated_replicas_wait() {
        let deployment: Deployment = fixture("deployments/not-available.json");
        assert_eq!(
            rollout_state(&deployment),
            RolloutState::Progressing(
                "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available..."
                    .into()
            )
        );
    }

    #[test]
    fn complete_when_all_updated_and_available() {
        let deployment: Deployment = fixture("deployments/complete.json");
        assert_eq!(rollout_state(&deployment), RolloutState::Complete);
    }

    #[test]
    fn previous_rollouts_status_is_not_mistaken_for_completion() {
        // The trap in kube-runtime's is_deployment_completed: right after a patch the
        // status still says NewReplicaSetAvailable from the previous rollout.
        let deployment: Deployment = fixture("deployments/stale-complete.json");
        assert!(matches!(rollout_state(&deployment), RolloutState::Progressing(_)));
    }

    #[test]
    fn a_pull_failure_is_one_failure_through_its_back_off() {
        assert_eq!(failure_family("ErrImagePull"), failure_family("ImagePullBackOff"));
        assert_ne!(failure_family("ErrImagePull"), failure_family("CrashLoopBackOff"));
        assert_eq!(failure_family("CrashLoopBackOff"), "CrashLoopBackOff");
    }

    #[test]
    fn pod_problems() {
        let pull: Pod = fixture("pods/image-pull-backoff.json");
        let problem = pod_problem(&pull, "web").unwrap();
        assert_eq!(problem.reason, "ImagePullBackOff");
        assert!(problem.fatal);
        assert!(problem.message.contains("broken"), "{}", problem.message);

        let crash: Pod = fixture("pods/crash-loop.json");
        let problem = pod_problem(&crash, "web").unwrap();
        assert_eq!(problem.reason, "CrashLoopBackOff");
        assert!(
            problem.message.contains("restarted 4 times"),
            "{}",
            problem.message
        );

        let not_ready: Pod = fixture("pods/not-ready.json");
        assert_eq!(pod_problem(&not_ready, "web").unwrap().reason, "NotReady");

        let unschedulable: Pod = fixture("pods/unschedulable.json");
        let problem = pod_problem(&unschedulable, "web").unwrap();
        assert_eq!(problem.reason, "FailedScheduling");
        assert!(problem.message.contains("didn't match"), "{}", problem.message);
        assert!(!problem.fatal);

        let ready: Pod = fixture("pods/ready.json");
        assert_eq!(pod_problem(&ready, "web"), None);
    }
}
