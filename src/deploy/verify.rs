//! What berth checks after Kubernetes calls a rollout complete, as pure decisions
//! tested on fixtures. A rollout is done only when these pass as well:
//!
//! 1. [`pod_images`]: every ready pod of the new ReplicaSet runs the digest berth
//!    pushed, as its container status reports it (`imageID`). A mutating webhook,
//!    an image-policy controller or a node cache that pins images shows here.
//! 2. [`selecting_services`] and [`service_target`]: the Services whose selector
//!    picks the Deployment's pods, and the port and path to ask each for.
//! 3. [`endpoint_revisions`]: which pods the Service's EndpointSlices send
//!    traffic to. Once its ready endpoints among the Deployment's pods are all of
//!    the new revision, a request through the Service (the API server's Service
//!    proxy picks one of those endpoints) is served by the new revision.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::preflight::resolve_port;
use crate::reference;

/// What berth checked after a rollout, for the report and `--json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// The replicas the Deployment asks for; with none, nothing serves and
    /// there is nothing to check.
    pub replicas: i32,
    /// The digest every ready pod must run (`sha256:...`); none when the image
    /// berth set names no digest (a rollback to a reference by tag).
    pub digest: Option<String>,
    /// Each ready pod of the new ReplicaSet and what it runs.
    pub pods: Vec<PodImage>,
    /// One request through each Service that selects the pods.
    pub services: Vec<ServiceCheck>,
}

/// A ready pod of the new ReplicaSet and the image its container runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodImage {
    pub pod: String,
    /// `status.containerStatuses[].imageID`, as the node reports it.
    pub image_id: Option<String>,
    /// True when `image_id` names the expected digest.
    pub matches: bool,
}

/// A request through one Service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceCheck {
    pub service: String,
    /// The Service port asked (its name, or its number).
    pub port: String,
    pub path: String,
    /// The HTTP status of the answer; none when there was no answer.
    pub status: Option<u16>,
    /// The ready endpoints (pods of the new revision) that could have served it.
    pub endpoints: Vec<String>,
    /// `passed`, `failed`, or `skipped` (the detail says why).
    pub outcome: CheckOutcome,
    pub detail: String,
}

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckOutcome {
    Passed,
    Failed,
    /// Not checked: berth may not read Services, or the Service targets no port
    /// of the container. Never fails the rollout.
    Skipped,
}

impl Verification {
    /// The first thing that fails the rollout, in words.
    pub fn failure(&self) -> Option<String> {
        if self.pods.is_empty() && self.replicas > 0 {
            return Some("no ready pod of the new ReplicaSet to check".into());
        }
        let wrong: Vec<String> = self
            .pods
            .iter()
            .filter(|pod| !pod.matches)
            .map(|pod| {
                format!(
                    "pod {} runs {}",
                    pod.pod,
                    pod.image_id
                        .as_deref()
                        .unwrap_or("an image the node did not report")
                )
            })
            .collect();
        if !wrong.is_empty() {
            return Some(format!(
                "not the pushed image {}: {}",
                self.digest.as_deref().unwrap_or("-"),
                wrong.join(", ")
            ));
        }
        self.services
            .iter()
            .find(|check| check.outcome == CheckOutcome::Failed)
            .map(|check| {
                format!(
                    "a request through Service {} (port {}, {}) {}",
                    check.service, check.port, check.path, check.detail
                )
            })
    }

    /// One line for the deploy stage: what passed.
    pub fn summary(&self) -> String {
        if self.replicas == 0 {
            return "0 replicas: nothing serves, nothing to check".into();
        }
        let mut text = format!("{} ready pods run ", self.pods.len());
        text.push_str(self.digest.as_deref().map_or("the image set", short_digest));
        for check in &self.services {
            match check.outcome {
                CheckOutcome::Passed => text.push_str(&format!(
                    "; Service {} answered {} on {}",
                    check.service,
                    check.status.unwrap_or(0),
                    check.path
                )),
                CheckOutcome::Skipped => {
                    text.push_str(&format!(
                        "; Service {} not checked: {}",
                        check.service, check.detail
                    ));
                }
                CheckOutcome::Failed => {}
            }
        }
        if self.services.is_empty() {
            text.push_str("; no Service selects the pods");
        }
        text
    }
}

fn short_digest(digest: &str) -> &str {
    &digest[..digest.len().min("sha256:".len() + 12)]
}

/// The ready pods among `pods` and whether `container` in each runs `digest`.
/// Pods that are not ready are left out: they serve nothing.
pub fn pod_images(pods: &[Pod], container: &str, digest: Option<&str>) -> Vec<PodImage> {
    let mut images: Vec<PodImage> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let status = pod
                .status
                .as_ref()?
                .container_statuses
                .iter()
                .flatten()
                .find(|status| status.name == container)?;
            if !status.ready {
                return None;
            }
            let image_id = Some(status.image_id.clone()).filter(|id| !id.is_empty());
            let matches = match digest {
                Some(digest) => image_id.as_deref().and_then(reference::digest) == Some(digest),
                None => true,
            };
            Some(PodImage {
                pod: pod.metadata.name.clone().unwrap_or_default(),
                image_id,
                matches,
            })
        })
        .collect();
    images.sort_by(|a, b| a.pod.cmp(&b.pod));
    images
}

/// The Services whose (non-empty) selector matches every one of `labels`, the
/// labels of the Deployment's pod template.
pub fn selecting_services<'a>(
    services: &'a [Service],
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Service> {
    services
        .iter()
        .filter(|service| {
            let selector = service.spec.as_ref().and_then(|spec| spec.selector.as_ref());
            selector.is_some_and(|selector| {
                !selector.is_empty() && selector.iter().all(|(key, value)| labels.get(key) == Some(value))
            })
        })
        .collect()
}

/// Where to send the request through `service`: the port (name or number, as
/// the Service proxy takes it) and the path. The port is the one that targets
/// the container's readiness probe port, else the first that targets a port
/// the container declares; the path is the readiness probe's HTTP path, else `/`.
/// `None` when no Service port targets the container.
pub fn service_target(service: &Service, container: &Container) -> Option<(String, String)> {
    let ports = service.spec.as_ref()?.ports.as_ref()?;
    let http_get = container
        .readiness_probe
        .as_ref()
        .and_then(|probe| probe.http_get.as_ref());
    let probe_port = http_get.and_then(|get| resolve_port(container, &get.port));
    // Each Service port with the container port it reaches (an unset
    // targetPort is the port itself).
    let targets: Vec<(&k8s_openapi::api::core::v1::ServicePort, Option<i32>)> = ports
        .iter()
        .map(|port| {
            let target = port.target_port.clone().unwrap_or(IntOrString::Int(port.port));
            (port, resolve_port(container, &target))
        })
        .collect();
    let declared = |number: i32| {
        container
            .ports
            .iter()
            .flatten()
            .any(|p| p.container_port == number)
    };
    let chosen = targets
        .iter()
        .find(|(_, target)| target.is_some() && *target == probe_port)
        .or_else(|| targets.iter().find(|(_, target)| target.is_some_and(declared)))?;
    let port = chosen.0.name.clone().unwrap_or_else(|| chosen.0.port.to_string());
    let path = http_get
        .filter(|_| chosen.1 == probe_port)
        .and_then(|get| get.path.clone())
        .filter(|path| path.starts_with('/'))
        .unwrap_or_else(|| "/".into());
    Some((port, path))
}

/// The ready endpoints of a Service among the Deployment's pods, by revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointRevisions {
    /// Ready endpoints that are pods of the new ReplicaSet.
    pub new: BTreeSet<String>,
    /// Ready endpoints that are pods of the Deployment's older ReplicaSets.
    pub old: BTreeSet<String>,
    /// Ready endpoints that are not the Deployment's pods (another workload the
    /// Service also selects).
    pub other: usize,
}

impl EndpointRevisions {
    /// A request through the Service can only reach the new revision (of this
    /// Deployment's pods), and at least one such pod is there to answer it.
    pub fn settled(&self) -> bool {
        !self.new.is_empty() && self.old.is_empty()
    }
}

/// Sorts the ready endpoints of `slices` into the new revision's pods
/// (`new_pods`), the Deployment's other pods (`deployment_pods`), and the rest.
pub fn endpoint_revisions(
    slices: &[EndpointSlice],
    new_pods: &BTreeSet<String>,
    deployment_pods: &BTreeSet<String>,
) -> EndpointRevisions {
    let mut revisions = EndpointRevisions::default();
    for endpoint in slices.iter().flat_map(|slice| slice.endpoints.iter().flatten()) {
        // Kubernetes reads an unset `ready` as ready.
        let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        if !ready {
            continue;
        }
        let pod = endpoint
            .target_ref
            .as_ref()
            .filter(|target| target.kind.as_deref() == Some("Pod"))
            .and_then(|target| target.name.clone());
        match pod {
            Some(pod) if new_pods.contains(&pod) => {
                revisions.new.insert(pod);
            }
            Some(pod) if deployment_pods.contains(&pod) => {
                revisions.old.insert(pod);
            }
            _ => revisions.other += 1,
        }
    }
    revisions
}

#[cfg(test)]
#[expect(clippy::needless_pass_by_value, reason = "fixtures built from json! values")]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ready: bool, image_id: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"containerStatuses": [{
                "name": "web", "ready": ready, "restartCount": 0,
                "image": "127.0.0.1:5000/site:abc@sha256:aaaa", "imageID": image_id
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn every_ready_pod_must_run_the_pushed_digest() {
        let pods = [
            pod("web-2", true, "127.0.0.1:5000/site@sha256:aaaa"),
            pod("web-1", true, "127.0.0.1:5000/site@sha256:aaaa"),
            pod("web-3", false, ""),
        ];
        let images = pod_images(&pods, "web", Some("sha256:aaaa"));
        assert_eq!(
            images.iter().map(|p| p.pod.as_str()).collect::<Vec<_>>(),
            ["web-1", "web-2"]
        );
        let verification = Verification {
            replicas: 2,
            digest: Some("sha256:aaaa".into()),
            pods: images,
            services: vec![],
        };
        assert_eq!(verification.failure(), None);

        // A webhook pinned another image on one pod: named, with what it runs.
        let pods = [
            pod("web-1", true, "127.0.0.1:5000/site@sha256:aaaa"),
            pod("web-2", true, "127.0.0.1:5000/pinned@sha256:bbbb"),
        ];
        let verification = Verification {
            replicas: 2,
            digest: Some("sha256:aaaa".into()),
            pods: pod_images(&pods, "web", Some("sha256:aaaa")),
            services: vec![],
        };
        let failure = verification.failure().unwrap();
        assert!(
            failure.contains("pod web-2 runs 127.0.0.1:5000/pinned@sha256:bbbb"),
            "{failure}"
        );
        assert!(!failure.contains("web-1"), "{failure}");

        // No image id reported is no proof.
        let pods = [pod("web-1", true, "")];
        let images = pod_images(&pods, "web", Some("sha256:aaaa"));
        assert!(!images[0].matches);
        // No ready pod at all fails too.
        let verification = Verification {
            replicas: 2,
            digest: Some("sha256:aaaa".into()),
            pods: pod_images(&[pod("web-1", false, "")], "web", Some("sha256:aaaa")),
            services: vec![],
        };
        assert!(verification.failure().unwrap().contains("no ready pod"));
        // A Deployment scaled to zero serves nothing: nothing to fail.
        let verification = Verification {
            replicas: 0,
            ..Verification::default()
        };
        assert_eq!(verification.failure(), None);
    }

    #[test]
    fn a_failed_service_request_fails_and_a_skipped_one_does_not() {
        let check = |outcome| ServiceCheck {
            service: "www".into(),
            port: "http".into(),
            path: "/".into(),
            status: Some(503),
            endpoints: vec![],
            outcome,
            detail: "answered 503".into(),
        };
        let mut verification = Verification {
            replicas: 1,
            digest: None,
            pods: pod_images(&[pod("web-1", true, "x@sha256:aaaa")], "web", None),
            services: vec![check(CheckOutcome::Skipped)],
        };
        assert_eq!(verification.failure(), None);
        verification.services.push(check(CheckOutcome::Failed));
        assert_eq!(
            verification.failure().unwrap(),
            "a request through Service www (port http, /) answered 503"
        );
    }

    fn service(selector: serde_json::Value, ports: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "www"}, "spec": {"selector": selector, "ports": ports}}),
        )
        .unwrap()
    }

    #[test]
    fn services_select_by_a_subset_of_the_template_labels() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "www".to_string()),
            ("tier".into(), "web".into()),
        ]
        .into();
        let services = [
            service(json!({"app": "www"}), json!([{"port": 80}])),
            service(json!({"app": "www", "tier": "web"}), json!([{"port": 80}])),
            service(json!({"app": "other"}), json!([{"port": 80}])),
            service(json!({"app": "www", "track": "canary"}), json!([{"port": 80}])),
            service(json!({}), json!([{"port": 80}])),
        ];
        assert_eq!(selecting_services(&services, &labels).len(), 2);
    }

    fn container(probe_port: serde_json::Value, path: &str) -> Container {
        serde_json::from_value(json!({
            "name": "web",
            "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 9090, "name": "metrics"}],
            "readinessProbe": {"httpGet": {"path": path, "port": probe_port}}
        }))
        .unwrap()
    }

    #[test]
    fn the_service_port_is_the_one_that_reaches_the_probed_port() {
        let web = container(json!("http"), "/healthz.html");
        let two_ports = service(
            json!({"app": "www"}),
            json!([{"name": "metrics", "port": 9090}, {"name": "web", "port": 80, "targetPort": "http"}]),
        );
        assert_eq!(
            service_target(&two_ports, &web),
            Some(("web".into(), "/healthz.html".into()))
        );
        // By number, unnamed: the number is the proxy's port.
        let numbered = service(json!({"app": "www"}), json!([{"port": 80, "targetPort": 8080}]));
        assert_eq!(
            service_target(&numbered, &web),
            Some(("80".into(), "/healthz.html".into()))
        );
        // Only a port the probe does not use: its path is not the probe's.
        let metrics = service(json!({"app": "www"}), json!([{"port": 9090}]));
        assert_eq!(service_target(&metrics, &web), Some(("9090".into(), "/".into())));
        // A Service port that targets nothing the container declares.
        let elsewhere = service(json!({"app": "www"}), json!([{"port": 80, "targetPort": 7000}]));
        assert_eq!(service_target(&elsewhere, &web), None);
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({"addressType": "IPv4", "endpoints": endpoints})).unwrap()
    }

    fn endpoint(pod: &str, ready: bool) -> serde_json::Value {
        json!({"addresses": ["10.246.0.9"], "conditions": {"ready": ready},
               "targetRef": {"kind": "Pod", "name": pod}})
    }

    #[test]
    fn endpoints_settle_when_only_the_new_revision_is_ready() {
        let new: BTreeSet<String> = ["web-new-1".to_string(), "web-new-2".into()].into();
        let all: BTreeSet<String> = ["web-new-1".to_string(), "web-new-2".into(), "web-old-1".into()].into();
        let during = [slice(json!([
            endpoint("web-new-1", true),
            endpoint("web-old-1", true)
        ]))];
        let revisions = endpoint_revisions(&during, &new, &all);
        assert!(!revisions.settled());
        assert_eq!(revisions.old.len(), 1);

        // The old pod is terminating (not ready), a new one not yet ready,
        // and another workload's pod is ready too.
        let after = [
            slice(json!([endpoint("web-new-1", true), endpoint("web-old-1", false)])),
            slice(json!([endpoint("web-new-2", false), endpoint("other-1", true)])),
        ];
        let revisions = endpoint_revisions(&after, &new, &all);
        assert!(revisions.settled());
        assert_eq!(revisions.new.len(), 1);
        assert_eq!(revisions.other, 1);

        assert!(!endpoint_revisions(&[], &new, &all).settled());
    }
}
