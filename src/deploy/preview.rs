//! A pull request's preview in the cluster: a Deployment `<deployment>-pr-<N>`
//! made from the site's own (its pod template, probes and preStop, one
//! replica, labels of its own so no production Service selects its pods), a
//! Service in front of it, and with `[preview] host` an Ingress. The Service
//! and the Ingress are owned by the preview's Deployment, so deleting it takes
//! them too. Every object carries the `berth.dev/preview` labels, by which
//! `berth pr list`, `close` and `gc` find them. The objects are pure functions
//! of the site's Deployment ([`objects`]); this module also writes, lists and
//! deletes them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};

use crate::deploy::{DeployError, Deployer, api_error};

/// The label every object of a preview carries: its name.
pub const PREVIEW_LABEL: &str = "berth.dev/preview";
/// The label naming the site a preview is of.
pub const SITE_LABEL: &str = "berth.dev/preview-site";
/// The label naming the pull request's number.
pub const NUMBER_LABEL: &str = "berth.dev/preview-number";
/// The annotation saying when an idle preview expires (RFC 3339).
pub const EXPIRES_ANNOTATION: &str = "berth.dev/preview-expires";
/// The annotation naming the preview's address.
pub const URL_ANNOTATION: &str = "berth.dev/preview-url";
/// The annotation naming the pull request's repo (`[[repo]]`).
pub const REPO_ANNOTATION: &str = "berth.dev/preview-repo";
/// berth's field manager for the objects it writes.
const FIELD_MANAGER: &str = "berth";

/// The name of pull request `number`'s preview of Deployment `deployment`:
/// `<deployment>-pr-<number>`, the Deployment's part cut so the whole is a
/// valid Service name (a DNS label: at most 63 characters, no `-` at an end).
pub fn name(deployment: &str, number: u64) -> String {
    let suffix = format!("-pr-{number}");
    let room = 63usize.saturating_sub(suffix.len());
    let head: String = deployment.chars().take(room).collect();
    format!("{}{suffix}", head.trim_end_matches('-'))
}

/// What a preview is made of, besides the site's Deployment.
#[derive(Debug, Clone)]
pub struct Spec {
    pub site: String,
    pub number: u64,
    /// The `[[repo]]` of the pull request.
    pub repo: String,
    /// The container the site's image goes into.
    pub container: String,
    /// The host of its Ingress, when `[preview] host` names one.
    pub host: Option<String>,
    pub ingress_class: Option<String>,
    /// When it expires unless pushed to again (RFC 3339).
    pub expires: String,
}

/// The preview's three objects (the Ingress only with a host), from the
/// site's Deployment `source`. The Service and Ingress get their owner
/// reference once the Deployment exists ([`owned_by`]).
pub fn objects(source: &Deployment, spec: &Spec) -> (Deployment, Service, Option<Ingress>) {
    let source_name = source.metadata.name.clone().unwrap_or_default();
    let name = name(&source_name, spec.number);
    let namespace = source.metadata.namespace.clone();
    let labels = BTreeMap::from([
        (PREVIEW_LABEL.to_string(), name.clone()),
        (SITE_LABEL.to_string(), spec.site.clone()),
        (NUMBER_LABEL.to_string(), spec.number.to_string()),
    ]);
    let selector = BTreeMap::from([(PREVIEW_LABEL.to_string(), name.clone())]);
    let meta = |annotations: Option<BTreeMap<String, String>>| ObjectMeta {
        name: Some(name.clone()),
        namespace: namespace.clone(),
        labels: Some(labels.clone()),
        annotations,
        ..ObjectMeta::default()
    };
    let source_spec = source.spec.clone();
    let mut template = source_spec.template.clone();
    let mut template_meta = template.metadata.take().unwrap_or_default();
    // Only the preview's own labels: a production Service selecting the
    // site's labels must never send traffic to a preview pod.
    template_meta.labels = Some(labels.clone());
    template.metadata = Some(template_meta);
    let annotations = BTreeMap::from([
        (EXPIRES_ANNOTATION.to_string(), spec.expires.clone()),
        (REPO_ANNOTATION.to_string(), spec.repo.clone()),
    ]);
    let deployment = Deployment {
        metadata: meta(Some(annotations)),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template,
            strategy: source_spec.strategy,
            min_ready_seconds: source_spec.min_ready_seconds,
            progress_deadline_seconds: source_spec.progress_deadline_seconds,
            revision_history_limit: Some(2),
            paused: None,
        },
        status: None,
    };
    let port = served_port(source, &spec.container);
    let service = Service {
        metadata: meta(None),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(port),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    let ingress = spec.host.as_ref().map(|host| Ingress {
        metadata: meta(None),
        spec: Some(IngressSpec {
            ingress_class_name: spec.ingress_class.clone(),
            rules: Some(vec![IngressRule {
                host: Some(host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: name.clone(),
                                port: Some(ServiceBackendPort {
                                    number: Some(80),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        status: None,
    });
    (deployment, service, ingress)
}

/// The port the site's container serves: its first declared one (by name
/// when it has one), else 8080.
fn served_port(source: &Deployment, container: &str) -> IntOrString {
    source
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|pod| pod.containers.iter().find(|c| c.name == container))
        .and_then(|container| container.ports.as_ref()?.first().cloned())
        .map_or(IntOrString::Int(8080), |port| match port.name {
            Some(name) => IntOrString::String(name),
            None => IntOrString::Int(port.container_port),
        })
}

/// `meta` owned by the Deployment `owner`: deleting it takes the object too.
pub fn owned_by(meta: &mut ObjectMeta, owner: &Deployment) {
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: owner.metadata.name.clone().unwrap_or_default(),
        uid: owner.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
}

/// A preview as the cluster holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    pub name: String,
    pub namespace: String,
    pub site: String,
    pub number: u64,
    pub repo: Option<String>,
    /// The commit it serves (`berth.dev/commit`), once berth shipped it.
    pub commit: Option<String>,
    pub image: Option<String>,
    pub url: Option<String>,
    pub expires: Option<String>,
}

impl Deployer {
    /// Creates the preview's objects from the site's Deployment, or renews
    /// the expiry of those that exist; the Deployment is returned (a new one
    /// runs the site's current image until berth sets the preview's).
    pub async fn ensure_preview(&self, source: &Deployment, spec: &Spec) -> Result<Deployment, DeployError> {
        let (deployment, mut service, ingress) = objects(source, spec);
        let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
        let error = |operation: &'static str, kind: &'static str| {
            let (namespace, name) = (namespace.clone(), name.clone());
            move |error: kube::Error| api_error(error, operation, kind, &namespace, &name)
        };
        let deployment = match api.get_opt(&name).await.map_err(error("get", "deployments"))? {
            Some(existing) => {
                let patch =
                    serde_json::json!({"metadata": {"annotations": {EXPIRES_ANNOTATION: spec.expires}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(error("patch", "deployments"))?;
                existing
            }
            None => api
                .create(
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..PostParams::default()
                    },
                    &deployment,
                )
                .await
                .map_err(error("create", "deployments"))?,
        };
        let services: Api<Service> = Api::namespaced(self.client.clone(), &namespace);
        if services
            .get_opt(&name)
            .await
            .map_err(error("get", "services"))?
            .is_none()
        {
            owned_by(&mut service.metadata, &deployment);
            services
                .create(&PostParams::default(), &service)
                .await
                .map_err(error("create", "services"))?;
        }
        if let Some(mut ingress) = ingress {
            let ingresses: Api<Ingress> = Api::namespaced(self.client.clone(), &namespace);
            if ingresses
                .get_opt(&name)
                .await
                .map_err(error("get", "ingresses"))?
                .is_none()
            {
                owned_by(&mut ingress.metadata, &deployment);
                ingresses
                    .create(&PostParams::default(), &ingress)
                    .await
                    .map_err(error("create", "ingresses"))?;
            }
        }
        Ok(deployment)
    }

    /// The ClusterIP of the preview's Service.
    pub async fn preview_address(&self, namespace: &str, name: &str) -> Result<Option<String>, DeployError> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let service = services
            .get_opt(name)
            .await
            .map_err(|error| api_error(error, "get", "services", namespace, name))?;
        Ok(service
            .and_then(|service| service.spec?.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None"))
    }

    /// Records the preview's address on its Deployment.
    pub async fn annotate_preview(&self, namespace: &str, name: &str, url: &str) -> Result<(), DeployError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({"metadata": {"annotations": {URL_ANNOTATION: url}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|error| api_error(error, "patch", "deployments", namespace, name))
    }

    /// Every preview in `namespace` (of `site` when given). One already
    /// being deleted (its pods still in their grace period) is gone as far
    /// as berth is concerned: not listed, so not swept twice.
    pub async fn previews(&self, namespace: &str, site: Option<&str>) -> Result<Vec<Found>, DeployError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let selector = match site {
            Some(site) => format!("{PREVIEW_LABEL},{SITE_LABEL}={site}"),
            None => PREVIEW_LABEL.to_string(),
        };
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|error| api_error(error, "list", "deployments", namespace, "(previews)"))?;
        Ok(list
            .items
            .into_iter()
            .filter(|deployment| deployment.metadata.deletion_timestamp.is_none())
            .map(|deployment| {
                let labels = deployment.metadata.labels.clone().unwrap_or_default();
                let annotations = deployment.metadata.annotations.clone().unwrap_or_default();
                let image = deployment
                    .spec
                    .template
                    .spec
                    .as_ref()
                    .and_then(|pod| pod.containers.first())
                    .and_then(|container| container.image.clone());
                Found {
                    name: deployment.metadata.name.clone().unwrap_or_default(),
                    namespace: namespace.to_string(),
                    site: labels.get(SITE_LABEL).cloned().unwrap_or_default(),
                    number: labels
                        .get(NUMBER_LABEL)
                        .and_then(|number| number.parse().ok())
                        .unwrap_or(0),
                    repo: annotations.get(REPO_ANNOTATION).cloned(),
                    commit: annotations.get(super::COMMIT_ANNOTATION).cloned(),
                    image,
                    url: annotations.get(URL_ANNOTATION).cloned(),
                    expires: annotations.get(EXPIRES_ANNOTATION).cloned(),
                }
            })
            .collect())
    }

    /// Deletes a preview: its Deployment, and with it (owner references,
    /// foreground deletion) its pods, Service and Ingress. `false` when
    /// there was none.
    pub async fn delete_preview(&self, namespace: &str, name: &str) -> Result<bool, DeployError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(response)) if response.code == 404 => Ok(false),
            Err(error) => Err(api_error(error, "delete", "deployments", namespace, name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "www", "namespace": "web", "labels": {"app": "www"}, "uid": "u-1",
                         "resourceVersion": "7", "annotations": {"berth.dev/commit": "abc"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "www"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": {"app": "www", "tier": "web"}},
                    "spec": {"containers": [{
                        "name": "web", "image": "registry/www:abc@sha256:1",
                        "ports": [{"containerPort": 8080, "name": "http"}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}
                    }]}
                }
            }
        }))
        .unwrap()
    }

    fn spec(host: Option<&str>) -> Spec {
        Spec {
            site: "www".into(),
            number: 12,
            repo: "website".into(),
            container: "web".into(),
            host: host.map(String::from),
            ingress_class: Some("nginx".into()),
            expires: "2026-12-13T10:00:00Z".into(),
        }
    }

    #[test]
    fn the_name_is_the_deployments_and_the_number_cut_to_a_dns_label() {
        assert_eq!(name("www", 12), "www-pr-12");
        let long = "a".repeat(70);
        let cut = name(&long, 123);
        assert_eq!(cut.len(), 63);
        assert!(cut.ends_with("-pr-123"));
        // A cut that ends on a `-` drops it.
        assert_eq!(
            name(&format!("{}-bbb", "a".repeat(57)), 1),
            format!("{}-pr-1", "a".repeat(57))
        );
    }

    #[test]
    fn a_preview_is_the_sites_pod_template_with_one_replica_and_labels_of_its_own() {
        let (deployment, service, ingress) = objects(&source(), &spec(None));
        assert_eq!(deployment.metadata.name.as_deref(), Some("www-pr-12"));
        assert_eq!(deployment.metadata.namespace.as_deref(), Some("web"));
        assert!(deployment.metadata.uid.is_none() && deployment.metadata.resource_version.is_none());
        let labels = deployment.metadata.labels.clone().unwrap();
        assert_eq!(labels[PREVIEW_LABEL], "www-pr-12");
        assert_eq!(labels[SITE_LABEL], "www");
        assert_eq!(labels[NUMBER_LABEL], "12");
        let spec_of = deployment.spec.clone();
        assert_eq!(spec_of.replicas, Some(1));
        let pod_labels = spec_of.template.metadata.clone().unwrap().labels.unwrap();
        assert!(
            !pod_labels.contains_key("app"),
            "no production Service may select it: {pod_labels:?}"
        );
        let container = &spec_of.template.spec.unwrap().containers[0];
        assert!(
            container.readiness_probe.is_some() && container.lifecycle.is_some(),
            "probes and preStop kept"
        );
        assert_eq!(
            deployment.metadata.annotations.unwrap()[EXPIRES_ANNOTATION],
            "2026-12-13T10:00:00Z"
        );
        let service_spec = service.spec.unwrap();
        assert_eq!(service_spec.selector.unwrap()[PREVIEW_LABEL], "www-pr-12");
        assert_eq!(
            service_spec.ports.unwrap()[0].target_port,
            Some(IntOrString::String("http".into()))
        );
        assert!(ingress.is_none(), "no host, no Ingress");
    }

    #[test]
    fn with_a_host_an_ingress_leads_to_the_service_and_both_are_owned_by_the_deployment() {
        let (mut deployment, mut service, ingress) =
            objects(&source(), &spec(Some("pr-12.www.preview.example.com")));
        let mut ingress = ingress.expect("an Ingress");
        let rule = &ingress.spec.as_ref().unwrap().rules.as_ref().unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("pr-12.www.preview.example.com"));
        let backend = rule.http.as_ref().unwrap().paths[0]
            .backend
            .service
            .as_ref()
            .unwrap();
        assert_eq!(backend.name, "www-pr-12");
        assert_eq!(
            ingress.spec.as_ref().unwrap().ingress_class_name.as_deref(),
            Some("nginx")
        );
        deployment.metadata.uid = Some("u-9".into());
        owned_by(&mut service.metadata, &deployment);
        owned_by(&mut ingress.metadata, &deployment);
        for meta in [&service.metadata, &ingress.metadata] {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("Deployment", "www-pr-12", "u-9")
            );
        }
    }
}
