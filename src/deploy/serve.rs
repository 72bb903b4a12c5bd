//! What is served once Kubernetes calls a rollout complete: the ready pods'
//! digests, and a request through each Service that selects the pods (the
//! API server's Service proxy). The decisions are [`super::verify`]'s; this
//! is the reading.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use verify::{CheckOutcome, ServiceCheck, Verification};

use crate::config::DeploymentTarget;
use crate::deploy::{Deployer, ENDPOINTS_SETTLE, SERVICE_REQUEST_TIMEOUT, not_read, selector_of, verify};

/// Why a request through the API server's Service proxy got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request could not be formed (a path the Service names that is no URI).
    #[error(transparent)]
    Request(#[from] http::Error),
    /// Nothing answered in time.
    #[error("no answer within {0:?}")]
    NoAnswer(std::time::Duration),
    /// The API server refused or the connection failed.
    #[error(transparent)]
    Send(#[from] kube::Error),
}

impl Deployer {
    /// Checks what the completed rollout serves (see [`verify`]): the ready pods
    /// of the newest ReplicaSet run `digest`, and each Service that selects the
    /// pods answers 2xx through the API server's Service proxy once its ready
    /// endpoints are all of the new revision.
    pub(super) async fn verify(
        &self,
        target: &DeploymentTarget,
        deployment: &Deployment,
        digest: Option<&str>,
    ) -> Verification {
        let mut verification = Verification {
            replicas: deployment.spec.replicas.unwrap_or(1),
            digest: digest.map(str::to_string),
            ..Verification::default()
        };
        if verification.replicas == 0 {
            return verification;
        }
        let pods = self.newest_pods(target, deployment).await.unwrap_or_default();
        verification.pods = verify::pod_images(&pods, &target.container, digest);
        if verification.failure().is_some() {
            return verification;
        }
        let template = &deployment.spec.template;
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let Some(container) = template
            .spec
            .as_ref()
            .and_then(|spec| spec.containers.iter().find(|c| c.name == target.container))
        else {
            return verification;
        };
        let services: Api<Service> = Api::namespaced(self.client.clone(), &target.namespace);
        let list = match services.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(error) => {
                verification
                    .services
                    .push(skipped("*", &not_read(&error, "list services")));
                return verification;
            }
        };
        let new_pods = verification.pods.iter().map(|p| p.pod.clone()).collect();
        for service in verify::selecting_services(&list, &labels) {
            let check = self
                .check_service(target, deployment, service, container, &new_pods)
                .await;
            verification.services.push(check);
        }
        verification
    }

    /// One request through `service`, once its ready endpoints among the
    /// Deployment's pods are all in `new_pods`.
    pub(super) async fn check_service(
        &self,
        target: &DeploymentTarget,
        deployment: &Deployment,
        service: &Service,
        container: &k8s_openapi::api::core::v1::Container,
        new_pods: &std::collections::BTreeSet<String>,
    ) -> ServiceCheck {
        let name = service.metadata.name.clone().unwrap_or_default();
        let Some((port, path)) = verify::service_target(service, container) else {
            return skipped(
                &name,
                &format!(
                    "no port of it targets a port that container `{}` declares",
                    target.container
                ),
            );
        };
        let mut check = ServiceCheck {
            service: name.clone(),
            port: port.clone(),
            path: path.clone(),
            status: None,
            endpoints: Vec::new(),
            outcome: CheckOutcome::Failed,
            detail: String::new(),
        };
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &target.namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let selector = selector_of(deployment).unwrap_or_default();
        let started = Instant::now();
        let revisions = loop {
            let listed = slices
                .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
                .await;
            let slices = match listed {
                Ok(list) => list.items,
                Err(error) => return skipped(&name, &not_read(&error, "list endpointslices")),
            };
            let deployment_pods = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map(|list| {
                    list.items
                        .into_iter()
                        .filter_map(|pod| pod.metadata.name)
                        .collect()
                })
                .unwrap_or_default();
            let revisions = verify::endpoint_revisions(&slices, new_pods, &deployment_pods);
            if revisions.settled() {
                break revisions;
            }
            if started.elapsed() >= ENDPOINTS_SETTLE {
                check.detail = if revisions.old.is_empty() {
                    format!("has no ready endpoint of the new revision after {ENDPOINTS_SETTLE:?}")
                } else {
                    format!(
                        "still sends traffic to pods of an older revision after {ENDPOINTS_SETTLE:?}: {}",
                        revisions.old.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
                return check;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        check.endpoints = revisions.new.iter().cloned().collect();
        // The proxy may answer 503 for a moment after the endpoints settle; a
        // few tries, a second apart.
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match self.proxy_get(&target.namespace, &name, &port, &path).await {
                Ok((status, _)) if (200..300).contains(&status) => {
                    check.status = Some(status);
                    check.outcome = CheckOutcome::Passed;
                    check.detail = format!("answered {status}");
                    if revisions.other > 0 {
                        // A Service shared with another workload: its pods may have answered.
                        check.detail.push_str(&format!(
                            "; the Service also sends traffic to {} ready pods that are not this Deployment's",
                            revisions.other
                        ));
                    }
                    return check;
                }
                Ok((status, body)) => {
                    check.status = Some(status);
                    check.detail = format!("answered {status}{body}");
                }
                Err(error) => {
                    check.status = None;
                    check.detail = format!("got no answer: {error}");
                }
            }
        }
        check
    }

    /// GET `path` through the API server's proxy to Service `name` on `port`;
    /// returns the status and, for an error, the start of the body.
    pub(super) async fn proxy_get(
        &self,
        namespace: &str,
        name: &str,
        port: &str,
        path: &str,
    ) -> Result<(u16, String), ProxyError> {
        let uri = format!("/api/v1/namespaces/{namespace}/services/{name}:{port}/proxy{path}");
        let request = http::Request::get(uri).body(kube::client::Body::empty())?;
        let response = tokio::time::timeout(SERVICE_REQUEST_TIMEOUT, self.proxy_client.send(request))
            .await
            .map_err(|_| ProxyError::NoAnswer(SERVICE_REQUEST_TIMEOUT))??;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok((status, String::new()));
        }
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        // The API server's own refusals are a Status object; a pod's page is text.
        let status_message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|value| value.get("message")?.as_str().map(str::to_string));
        let text = status_message.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        let excerpt: String = first.chars().take(200).collect();
        Ok((
            status,
            if excerpt.is_empty() {
                String::new()
            } else {
                format!(": {excerpt}")
            },
        ))
    }
}

/// A Service check that was not made, and why.
pub(super) fn skipped(service: &str, detail: &str) -> ServiceCheck {
    ServiceCheck {
        service: service.to_string(),
        port: String::new(),
        path: String::new(),
        status: None,
        endpoints: Vec::new(),
        outcome: CheckOutcome::Skipped,
        detail: detail.to_string(),
    }
}
