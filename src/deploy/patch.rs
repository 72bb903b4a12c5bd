//! The change itself: one container's image set by a strategic-merge patch
//! (berth's field manager, the read `resourceVersion` as a precondition),
//! with berth's annotations; then the wait, the check, and on failure the
//! rollback to what ran before. All under the Deployment's lease: each patch
//! checks the lock first ([`LeaseLock::check`]) and each wait ends when it is
//! lost ([`LeaseLock::lost`]); then berth stops, and never rolls back.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::config::DeploymentTarget;
use crate::deploy::RolloutReason;
use crate::deploy::lease::{LeaseLock, Loss};
use crate::deploy::wait::RolloutFailure;
use crate::deploy::{
    CHANGE_CAUSE_ANNOTATION, COMMIT_ANNOTATION, CONTENT_DIGEST_ANNOTATION, Change, DeployError, Deployed,
    Deployer, FIELD_MANAGER, IMAGE_ANNOTATION, Outcome, Passed, RolledBack, SOURCE_DIGEST_ANNOTATION,
    deployed_of, helm, target_error,
};
use crate::reference;
use crate::ui::{Printer, Status};

/// Why rolling back after a failed rollout failed too.
#[derive(Debug, thiserror::Error)]
pub enum RollbackFailure {
    /// The previous image could not be set back.
    #[error(transparent)]
    Set(Box<DeployError>),
    /// The rollout back did not complete.
    #[error(transparent)]
    Wait(Box<RolloutFailure>),
    /// berth lost the lock while it rolled back ([`DeployError::LostLock`]),
    /// before setting the previous image back or while that rolled out.
    #[error(transparent)]
    Lost(Box<DeployError>),
}

impl Deployer {
    /// Sets the image, waits for the rollout, rolls back on failure; under
    /// the Deployment's lease `lock`, which records an image that rolled out
    /// and passed ([`Passed`]: what `berth promote` may take elsewhere).
    pub async fn apply(
        &self,
        site: &str,
        target: &DeploymentTarget,
        change: &Change,
        current: Option<Deployment>,
        lock: &LeaseLock,
        printer: &Printer,
    ) -> Result<Outcome, DeployError> {
        let Some(previous) = self
            .set(
                site,
                target,
                &change.image,
                &annotations_of(change),
                current,
                lock,
                printer,
            )
            .await?
        else {
            return Ok(Outcome::UpToDate);
        };
        self.see_through(site, target, change, Some(&previous), lock, printer)
            .await
    }

    /// The rollout of `change`, once its image is set: wait, check, and on
    /// failure roll back to `previous` (or fail without a rollback when there
    /// is none). [`Self::apply`] sets the image first; a run that finds a
    /// rollout a run before began and did not finish (killed, its machine
    /// gone) calls it with the revision before.
    pub async fn see_through(
        &self,
        site: &str,
        target: &DeploymentTarget,
        change: &Change,
        previous: Option<&Deployed>,
        lock: &LeaseLock,
        printer: &Printer,
    ) -> Result<Outcome, DeployError> {
        let digest = reference::digest(&change.image);
        let waited = self
            .wait_holding(site, target, lock, printer)
            .await
            .map_err(|loss| lock.lost_lock(loss, Some(change.image.clone())))?;
        let (reason, verification) = match waited {
            Ok(deployment) => {
                let verification = self.verify(target, &deployment, digest).await;
                match verification.failure() {
                    None => {
                        printer.stage(site, "verify", Status::Done, &verification.summary());
                        if let Some(release) = helm::release(&deployment) {
                            let keep = release.keep_image(&change.image, &change.helm);
                            printer.stage(site, "deploy", Status::Warning, &keep);
                        }
                        lock.record_passed_on_release(Passed::of(change));
                        return Ok(Outcome::RolledOut(verification));
                    }
                    Some(failure) => (RolloutReason::Check(failure), Some(Box::new(verification))),
                }
            }
            Err(failure) => (RolloutReason::Wait(Box::new(failure)), None),
        };
        printer.stage(site, "deploy", Status::Failed, &format!("{reason}; rolling back"));
        let rolled_back = match previous.and_then(|previous| Some((previous.image.as_ref()?, previous))) {
            Some((image, previous)) => Some(
                self.roll_back(site, target, image, previous, lock, printer)
                    .await
                    .map(|check_failure| RolledBack {
                        image: image.clone(),
                        check_failure,
                    }),
            ),
            None => None,
        };
        Err(DeployError::RolloutFailed {
            image: change.image.clone(),
            reason,
            rolled_back,
            verification,
        })
    }

    /// Patches image and annotations with the read `resourceVersion` as precondition,
    /// re-reading on 409. Returns what ran before, or `None` when the image was already set.
    /// `current` is the Deployment as the caller has just read it, if it has.
    /// Each patch is made only while berth holds `lock`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the change, where, and under which lock"
    )]
    pub(super) async fn set(
        &self,
        site: &str,
        target: &DeploymentTarget,
        image: &str,
        annotations: &serde_json::Map<String, serde_json::Value>,
        mut current: Option<Deployment>,
        lock: &LeaseLock,
        printer: &Printer,
    ) -> Result<Option<Deployed>, DeployError> {
        for _ in 0..5 {
            let deployment = match current.take() {
                Some(deployment) => deployment,
                None => self.read(target).await?,
            };
            let previous = deployed_of(&deployment, target)?;
            if previous.image.as_deref() == Some(image) {
                return Ok(None);
            }
            let resource_version = deployment.metadata.resource_version.clone().unwrap_or_default();
            lock.check()?;
            match self.patch(target, image, annotations, &resource_version).await {
                Ok(()) => return Ok(Some(previous)),
                Err(DeployError::Conflict { .. }) => {
                    printer.stage(
                        site,
                        "deploy",
                        Status::Warning,
                        "the Deployment changed while berth read it; reading it again",
                    );
                }
                Err(error) => return Err(error),
            }
        }
        Err(DeployError::Conflict {
            verb: "patch",
            resource: "deployments",
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            message: "the Deployment kept changing (5 conflicts in a row)".into(),
        })
    }

    /// Sets the previous image and annotations back and waits for that rollout;
    /// returns why berth's verification of it failed, if it did. A lost `lock`
    /// stops it (before the patch, or during the wait).
    pub(super) async fn roll_back(
        &self,
        site: &str,
        target: &DeploymentTarget,
        image: &str,
        previous: &Deployed,
        lock: &LeaseLock,
        printer: &Printer,
    ) -> Result<Option<String>, RollbackFailure> {
        let mut annotations = serde_json::Map::new();
        for key in [
            COMMIT_ANNOTATION,
            SOURCE_DIGEST_ANNOTATION,
            IMAGE_ANNOTATION,
            CONTENT_DIGEST_ANNOTATION,
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
        self.set(site, target, image, &annotations, None, lock, printer)
            .await
            .map_err(|error| match error {
                lost @ DeployError::LostLock { .. } => RollbackFailure::Lost(Box::new(lost)),
                other => RollbackFailure::Set(Box::new(other)),
            })?;
        let deployment = self
            .wait_holding(site, target, lock, printer)
            .await
            .map_err(|loss| RollbackFailure::Lost(Box::new(lock.lost_lock(loss, Some(image.to_string())))))?
            .map_err(|failure| RollbackFailure::Wait(Box::new(failure)))?;
        let verification = self.verify(target, &deployment, reference::digest(image)).await;
        Ok(verification.failure())
    }

    /// The wait for the rollout, ended early by the loss of `lock`.
    async fn wait_holding(
        &self,
        site: &str,
        target: &DeploymentTarget,
        lock: &LeaseLock,
        printer: &Printer,
    ) -> Result<Result<Deployment, RolloutFailure>, Loss> {
        tokio::select! {
            waited = self.wait(site, target, printer) => Ok(waited),
            loss = lock.lost() => {
                printer.clear_progress(site);
                Err(loss)
            }
        }
    }

    pub(super) async fn patch(
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
            .map_err(|error| target_error(error, "patch", "deployments", target))
    }
}

pub(super) fn annotations_of(change: &Change) -> serde_json::Map<String, serde_json::Value> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(COMMIT_ANNOTATION.into(), json!(change.commit));
    annotations.insert(SOURCE_DIGEST_ANNOTATION.into(), json!(change.source_digest));
    annotations.insert(IMAGE_ANNOTATION.into(), json!(change.image));
    annotations.insert(CONTENT_DIGEST_ANNOTATION.into(), json!(change.content_digest));
    annotations.insert(CHANGE_CAUSE_ANNOTATION.into(), json!(change.change_cause));
    annotations
}
