//! A Deployment's past: its ReplicaSet revisions (image, commit, cause,
//! time) for `berth history`, and the revision `berth rollback` returns to.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams};

use crate::config::DeploymentTarget;
use crate::deploy::{
    CHANGE_CAUSE_ANNOTATION, COMMIT_ANNOTATION, CONTENT_DIGEST_ANNOTATION, DeployError, Deployer,
    REVISION_ANNOTATION, Revision, SOURCE_DIGEST_ANNOTATION, selector_of, target_error,
};

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
        let mut revisions: Vec<Revision> = list
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
                Some(Revision {
                    revision,
                    image,
                    commit: annotations.get(COMMIT_ANNOTATION).cloned(),
                    source_digest: annotations.get(SOURCE_DIGEST_ANNOTATION).cloned(),
                    content_digest: annotations.get(CONTENT_DIGEST_ANNOTATION).cloned(),
                    change_cause: annotations.get(CHANGE_CAUSE_ANNOTATION).cloned(),
                    created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
                    current: current.as_deref() == Some(revision.to_string().as_str()),
                })
            })
            .collect();
        revisions.sort_by_key(|revision| std::cmp::Reverse(revision.revision));
        Ok(revisions)
    }

    /// The revision to roll back to: the newest one before the current, or the
    /// newest whose commit starts with `to`.
    pub async fn revision(
        &self,
        target: &DeploymentTarget,
        to: Option<&str>,
    ) -> Result<Revision, DeployError> {
        let history = self.history(target).await?;
        let no_revision = |detail: String| DeployError::NoRevision {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            detail,
        };
        if let Some(commit) = to {
            return history
                .into_iter()
                .find(|r| !r.current && r.commit.as_deref().is_some_and(|c| c.starts_with(commit)))
                .ok_or_else(|| {
                    no_revision(format!(
                        "no earlier ReplicaSet ran commit {commit} (ship it with `berth ship --commit {commit} --allow-older`)"
                    ))
                });
        }
        let current = history.iter().find(|r| r.current).and_then(|r| r.image.clone());
        history
            .into_iter()
            .find(|r| !r.current && r.image.is_some() && r.image != current)
            .ok_or_else(|| no_revision("it has only one revision".into()))
    }
}
