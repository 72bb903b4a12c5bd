//! The Deployments the tests ship to, as typed values: one builder,
//! [`DeploymentBuilder`], started by [`super::World::kwok_deployment`] or
//! [`super::World::real_node_deployment`], changed field by field (replicas,
//! image, probes, preStop, grace, strategy, progress deadline, pull
//! secrets...), then created in the world's namespace (or another).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, Lifecycle, LifecycleHandler, LocalObjectReference, PodSpec,
    PodTemplateSpec, Probe as PodProbe, SleepAction, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};

/// An HTTP GET probe of the container: a path on a port (its name or number),
/// every so many seconds.
#[derive(Debug, Clone)]
pub struct Probe {
    path: String,
    port: IntOrString,
    period_seconds: Option<i32>,
}

impl Probe {
    /// GET `path` on the port named `http`, Kubernetes' default period (10 s).
    pub fn http(path: &str) -> Self {
        Self {
            path: path.into(),
            port: IntOrString::String("http".into()),
            period_seconds: None,
        }
    }

    /// The same on port `port` (a number), whatever the container names.
    pub fn on_port(mut self, port: i32) -> Self {
        self.port = IntOrString::Int(port);
        self
    }

    /// Asked every `seconds`.
    pub fn every(mut self, seconds: i32) -> Self {
        self.period_seconds = Some(seconds);
        self
    }

    fn to_pod_probe(&self) -> PodProbe {
        PodProbe {
            http_get: Some(HTTPGetAction {
                path: Some(self.path.clone()),
                port: self.port.clone(),
                ..HTTPGetAction::default()
            }),
            period_seconds: self.period_seconds,
            ..PodProbe::default()
        }
    }
}

/// How a Deployment replaces its pods.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// `RollingUpdate` with these bounds.
    RollingUpdate {
        max_unavailable: IntOrString,
        max_surge: IntOrString,
    },
    /// `Recreate`: every old pod goes before a new one starts.
    Recreate,
}

impl Strategy {
    /// `RollingUpdate` with `maxUnavailable: 0, maxSurge: 1`: a ready pod is
    /// never taken away before its replacement is ready.
    pub fn one_at_a_time() -> Self {
        Self::RollingUpdate {
            max_unavailable: IntOrString::Int(0),
            max_surge: IntOrString::Int(1),
        }
    }

    fn to_deployment_strategy(&self) -> DeploymentStrategy {
        match self {
            Self::RollingUpdate {
                max_unavailable,
                max_surge,
            } => DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(max_unavailable.clone()),
                    max_surge: Some(max_surge.clone()),
                }),
            },
            Self::Recreate => DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            },
        }
    }
}

/// A Deployment `name` whose pods carry `app: <name>` and run one container
/// (`web` unless changed) serving port 8080 (`http`).
#[must_use = "a DeploymentBuilder makes nothing until .create()"]
#[derive(Debug, Clone)]
pub struct DeploymentBuilder {
    name: String,
    namespace: String,
    replicas: i32,
    image: String,
    container: String,
    ports: Vec<(i32, String)>,
    readiness: Option<Probe>,
    liveness: Option<Probe>,
    pre_stop_seconds: Option<i64>,
    grace_seconds: Option<i64>,
    strategy: Strategy,
    progress_deadline_seconds: Option<i32>,
    min_ready_seconds: Option<i32>,
    revision_history_limit: Option<i32>,
    pull_secrets: Vec<String>,
    pull_policy: Option<String>,
    node_selector: BTreeMap<String, String>,
    tolerations: Vec<Toleration>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    field_manager: Option<String>,
}

impl DeploymentBuilder {
    /// The kwok shape: 1 replica of `image` in `namespace`, port 8080
    /// (`http`) probed on / every 5 s, one pod at a time, a progress deadline
    /// of 120 s (a loaded 2-core machine needs slack).
    pub(super) fn kwok(namespace: &str, name: &str, image: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            replicas: 1,
            image: image.into(),
            container: "web".into(),
            ports: vec![(8080, "http".into())],
            readiness: Some(Probe::http("/").every(5)),
            liveness: None,
            pre_stop_seconds: None,
            grace_seconds: None,
            strategy: Strategy::one_at_a_time(),
            progress_deadline_seconds: Some(120),
            min_ready_seconds: None,
            revision_history_limit: None,
            pull_secrets: Vec::new(),
            pull_policy: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            field_manager: None,
        }
    }

    /// The same placed on the real node (`selector`, `tolerations`), probed
    /// every second, a grace period of 5 s.
    pub(super) fn real_node(
        namespace: &str,
        name: &str,
        image: &str,
        selector: BTreeMap<String, String>,
        tolerations: Vec<Toleration>,
    ) -> Self {
        Self {
            readiness: Some(Probe::http("/").every(1)),
            grace_seconds: Some(5),
            node_selector: selector,
            tolerations,
            ..Self::kwok(namespace, name, image)
        }
    }

    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = replicas;
        self
    }

    /// The container's name (berth sets the image of the one a site names).
    pub fn container(mut self, name: &str) -> Self {
        self.container = name.into();
        self
    }

    /// The ports the container declares: (number, name).
    pub fn ports(mut self, ports: &[(i32, &str)]) -> Self {
        self.ports = ports
            .iter()
            .map(|(port, name)| (*port, (*name).to_string()))
            .collect();
        self
    }

    pub fn readiness(mut self, probe: Probe) -> Self {
        self.readiness = Some(probe);
        self
    }

    /// No readiness probe at all.
    pub fn without_readiness(mut self) -> Self {
        self.readiness = None;
        self
    }

    pub fn liveness(mut self, probe: Probe) -> Self {
        self.liveness = Some(probe);
        self
    }

    /// A preStop `sleep` of `seconds`: a stopping pod keeps serving that long.
    pub fn pre_stop(mut self, seconds: i64) -> Self {
        self.pre_stop_seconds = Some(seconds);
        self
    }

    /// `terminationGracePeriodSeconds`.
    pub fn grace(mut self, seconds: i64) -> Self {
        self.grace_seconds = Some(seconds);
        self
    }

    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// `progressDeadlineSeconds`.
    pub fn progress_deadline(mut self, seconds: i32) -> Self {
        self.progress_deadline_seconds = Some(seconds);
        self
    }

    /// `minReadySeconds`: how long a new pod must be ready before it counts
    /// as available (a rollout takes at least that long).
    pub fn min_ready_seconds(mut self, seconds: i32) -> Self {
        self.min_ready_seconds = Some(seconds);
        self
    }

    /// `revisionHistoryLimit`: how many old ReplicaSets the controller keeps.
    pub fn revision_history_limit(mut self, limit: i32) -> Self {
        self.revision_history_limit = Some(limit);
        self
    }

    /// One more `imagePullSecrets` entry.
    pub fn pull_secret(mut self, name: &str) -> Self {
        self.pull_secrets.push(name.into());
        self
    }

    /// The container's `imagePullPolicy` (`Always`, `IfNotPresent`...).
    pub fn pull_policy(mut self, policy: &str) -> Self {
        self.pull_policy = Some(policy.into());
        self
    }

    /// Created in `namespace` instead of the world's.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// A label on the Deployment itself (not its pods).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// An annotation on the Deployment itself.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Created by this field manager (as Helm creates its objects).
    pub fn field_manager(mut self, manager: &str) -> Self {
        self.field_manager = Some(manager.into());
        self
    }

    /// The Deployment as the API server gets it.
    pub fn build(&self) -> Deployment {
        let app = BTreeMap::from([("app".to_string(), self.name.clone())]);
        let lifecycle = self.pre_stop_seconds.map(|seconds| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        });
        let ports = self
            .ports
            .iter()
            .map(|(port, name)| ContainerPort {
                container_port: *port,
                name: Some(name.clone()),
                ..ContainerPort::default()
            })
            .collect::<Vec<_>>();
        let container = Container {
            name: self.container.clone(),
            image: Some(self.image.clone()),
            image_pull_policy: self.pull_policy.clone(),
            ports: (!ports.is_empty()).then_some(ports),
            readiness_probe: self.readiness.as_ref().map(Probe::to_pod_probe),
            liveness_probe: self.liveness.as_ref().map(Probe::to_pod_probe),
            lifecycle,
            ..Container::default()
        };
        let pull_secrets = self
            .pull_secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect::<Vec<_>>();
        let pod = PodSpec {
            containers: vec![container],
            node_selector: (!self.node_selector.is_empty()).then(|| self.node_selector.clone()),
            tolerations: (!self.tolerations.is_empty()).then(|| self.tolerations.clone()),
            termination_grace_period_seconds: self.grace_seconds,
            image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
            ..PodSpec::default()
        };
        Deployment {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
                annotations: (!self.annotations.is_empty()).then(|| self.annotations.clone()),
                ..ObjectMeta::default()
            },
            spec: DeploymentSpec {
                replicas: Some(self.replicas),
                progress_deadline_seconds: self.progress_deadline_seconds,
                min_ready_seconds: self.min_ready_seconds,
                revision_history_limit: self.revision_history_limit,
                strategy: Some(self.strategy.to_deployment_strategy()),
                selector: LabelSelector {
                    match_labels: Some(app.clone()),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(app),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(pod),
                },
                ..DeploymentSpec::default()
            },
            status: None,
        }
    }

    /// Creates it; returns it as the API server stored it.
    pub async fn create(self) -> Deployment {
        let api: Api<Deployment> = Api::namespaced(super::kube_client().await, &self.namespace);
        let params = PostParams {
            field_manager: self.field_manager.clone(),
            ..PostParams::default()
        };
        api.create(&params, &self.build())
            .await
            .unwrap_or_else(|error| panic!("create Deployment {}/{}: {error}", self.namespace, self.name))
    }
}
