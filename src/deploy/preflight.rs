//! Preflight: can this Deployment roll without downtime? Pure, tested on fixtures.
//!
//! 1. The strategy is `RollingUpdate`.
//! 2. With its replicas, maxUnavailable (rounded down) and maxSurge (rounded up),
//!    as Kubernetes resolves them, at least one ready pod keeps serving.
//! 3. The named container exists and has a readiness probe.
//! 4. The Deployment is not paused.
//! 5. No other field manager owns the container's image (its next apply would
//!    undo berth's change), and no Helm release manages the Deployment
//!    ([`super::helm`]: its next `helm upgrade` would).
//! 6. The container has a preStop delay ([`stop_delay`]): without one, a pod
//!    whose server exits at SIGTERM refuses requests that Services still send
//!    it while its endpoint is being removed everywhere; and the grace period
//!    covers that delay plus the server's drain.
//! 7. Its probes name ports it declares; after the build, [`probe_ports`]
//!    checks them against the ports the image serves (`EXPOSE`).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::helm;
use crate::config::HelmValues;

/// How long berth allows a server, after its preStop delay, to finish the
/// requests it has before the kubelet kills it.
pub const DRAIN_SECONDS: i64 = 5;
/// The preStop delay berth recommends: longer than the endpoints take to drop
/// a pod here (kube-proxy's one-second sync, the EndpointSlice controller).
pub const RECOMMENDED_STOP_DELAY: i64 = 5;
/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// One problem found before touching the cluster; `fix` says what to change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub problem: String,
    pub fix: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}; {}", self.problem, self.fix)
    }
}

/// Resolves an int-or-percent against `total` as Kubernetes does
/// (`intstr.GetScaledValueFromIntOrPercent`): percentages round up for maxSurge
/// and down for maxUnavailable.
pub fn scaled(value: Option<&IntOrString>, total: i32, default_percent: i32, round_up: bool) -> i32 {
    let percent = match value {
        Some(IntOrString::Int(value)) => return *value,
        Some(IntOrString::String(text)) => text
            .trim_end_matches('%')
            .parse::<i32>()
            .unwrap_or(default_percent),
        None => default_percent,
    };
    let product = i64::from(percent) * i64::from(total);
    let result = if round_up {
        (product + 99) / 100
    } else {
        product / 100
    };
    i32::try_from(result).unwrap_or(i32::MAX)
}

/// Checks `deployment` for a rollout of `container` without downtime, and
/// for a Helm release that would undo it (its fix named in `helm`'s values
/// keys).
pub fn preflight(deployment: &Deployment, container: &str, helm: &HelmValues) -> Vec<Finding> {
    let mut findings = Vec::new();
    let spec = &deployment.spec;
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.as_ref();
    let kind = strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate");
    if kind == "Recreate" {
        findings.push(Finding {
            problem: "strategy Recreate stops every pod before new ones start, so the site is down during each rollout".into(),
            fix: "set spec.strategy.type: RollingUpdate".into(),
        });
    } else if replicas == 0 {
        findings.push(Finding {
            problem: "the Deployment is scaled to 0 replicas, so nothing serves the site".into(),
            fix: "set spec.replicas to 2 or more".into(),
        });
    } else {
        let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
        let surge = scaled(rolling.and_then(|r| r.max_surge.as_ref()), replicas, 25, true);
        let mut unavailable = scaled(
            rolling.and_then(|r| r.max_unavailable.as_ref()),
            replicas,
            25,
            false,
        );
        if surge == 0 && unavailable == 0 {
            // Kubernetes' fencepost: both zero means one may be unavailable.
            unavailable = 1;
        }
        let serving = replicas - unavailable.min(replicas);
        if serving < 1 {
            findings.push(Finding {
                problem: format!(
                    "with {replicas} replica(s) and maxUnavailable resolving to {unavailable}, a rollout may take every ready pod away"
                ),
                fix: "set spec.strategy.rollingUpdate.maxUnavailable: 0 and maxSurge: 1 (or run 2 or more replicas)".into(),
            });
        }
    }
    let containers = spec
        .template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let grace = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    if let Some(found) = containers.iter().find(|c| c.name == container) {
        if found.readiness_probe.is_none() {
            findings.push(Finding {
                problem: format!(
                    "container `{container}` has no readiness probe, so a pod counts as ready before it serves"
                ),
                fix: format!(
                    "add a readinessProbe (for example httpGet on the served port) to container `{container}`"
                ),
            });
        }
        findings.extend(stop_findings(found, grace));
        findings.extend(probe_name_findings(found));
    }
    if spec.paused == Some(true) {
        findings.push(Finding {
            problem: "the Deployment is paused, so the rollout would not start".into(),
            fix: "resume it (kubectl rollout resume) or set spec.paused: false".into(),
        });
    }
    if let Some(release) = helm::release(deployment) {
        findings.push(Finding {
            problem: release.problem(container),
            fix: release.fix(helm),
        });
    }
    if let Some(manager) = image_owner(deployment, container) {
        findings.push(Finding {
            problem: format!("the image of container `{container}` is also managed by `{manager}`; its next apply will set the image back"),
            fix: "leave `image` out of that manifest (berth owns it), or stop shipping this Deployment with berth".into(),
        });
    }
    findings
}

/// How a container waits before it is sent SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopDelay {
    /// No preStop hook: SIGTERM comes as soon as the pod is deleted.
    None,
    /// A preStop sleep of this many seconds (the sleep action, or an exec of `sleep N`).
    Sleep(i64),
    /// A preStop hook berth cannot time (an HTTP call, another command).
    Other,
}

/// The preStop delay of `container`.
pub fn stop_delay(container: &Container) -> StopDelay {
    let Some(pre_stop) = container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return StopDelay::None;
    };
    if let Some(sleep) = &pre_stop.sleep {
        return StopDelay::Sleep(sleep.seconds);
    }
    let command = pre_stop
        .exec
        .as_ref()
        .and_then(|exec| exec.command.clone())
        .unwrap_or_default();
    // `sleep N`, `/bin/sleep N`, or `sh -c "sleep N"`.
    let words: Vec<&str> = match command.as_slice() {
        [shell, flag, script] if shell.ends_with("sh") && flag == "-c" => script.split_whitespace().collect(),
        _ => command.iter().map(String::as_str).collect(),
    };
    match words.as_slice() {
        [program, seconds] if program.rsplit('/').next() == Some("sleep") => {
            seconds.parse().map_or(StopDelay::Other, StopDelay::Sleep)
        }
        _ => StopDelay::Other,
    }
}

fn stop_findings(container: &Container, grace: i64) -> Vec<Finding> {
    let name = &container.name;
    match stop_delay(container) {
        StopDelay::None => vec![Finding {
            problem: format!(
                "container `{name}` has no preStop delay: a stopping pod gets SIGTERM at once, and a server that exits then (nginx does) refuses the requests Services still send it until every node has dropped its endpoint"
            ),
            fix: format!(
                "add `lifecycle: {{preStop: {{sleep: {{seconds: {RECOMMENDED_STOP_DELAY}}}}}}}` to container `{name}` (Kubernetes 1.30 and later; before that, an exec of `sleep {RECOMMENDED_STOP_DELAY}` if the image has sleep)"
            ),
        }],
        StopDelay::Sleep(delay) if grace < delay + DRAIN_SECONDS => vec![Finding {
            problem: format!(
                "terminationGracePeriodSeconds {grace} is shorter than the preStop delay ({delay} s) plus {DRAIN_SECONDS} s for the server to finish its requests, so the kubelet may kill it mid-request"
            ),
            fix: format!(
                "set spec.template.spec.terminationGracePeriodSeconds to {} or more",
                delay + DRAIN_SECONDS
            ),
        }],
        StopDelay::Sleep(_) | StopDelay::Other => Vec::new(),
    }
}

/// The container's probes, with their kind.
fn probes(container: &Container) -> impl Iterator<Item = (&'static str, &Probe)> {
    [
        ("readinessProbe", container.readiness_probe.as_ref()),
        ("livenessProbe", container.liveness_probe.as_ref()),
        ("startupProbe", container.startup_probe.as_ref()),
    ]
    .into_iter()
    .filter_map(|(kind, probe)| probe.map(|probe| (kind, probe)))
}

/// The port a probe connects to (HTTP GET or TCP), as it names it.
fn probe_port(probe: &Probe) -> Option<&IntOrString> {
    probe
        .http_get
        .as_ref()
        .map(|get| &get.port)
        .or_else(|| probe.tcp_socket.as_ref().map(|tcp| &tcp.port))
}

/// The port number `port` resolves to in `container`: a number is itself, a
/// name is the declared port of that name.
pub fn resolve_port(container: &Container, port: &IntOrString) -> Option<i32> {
    match port {
        IntOrString::Int(number) => Some(*number),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// Probes that name a port the container does not declare: the kubelet cannot
/// resolve them, and they never pass.
fn probe_name_findings(container: &Container) -> Vec<Finding> {
    probes(container)
        .filter_map(|(kind, probe)| {
            let port = probe_port(probe)?;
            let IntOrString::String(name) = port else { return None };
            resolve_port(container, port).is_none().then(|| Finding {
                problem: format!(
                    "the {kind} of container `{}` asks for port `{name}`, which the container does not declare, so it can never pass",
                    container.name
                ),
                fix: format!(
                    "declare `ports: [{{name: {name}, containerPort: <the served port>}}]` in container `{}`, or give the probe the port's number",
                    container.name
                ),
            })
        })
        .collect()
}

/// After the build: probes of `container` (in `deployment`) on a port that the
/// image does not serve. `exposed` are the image's `EXPOSE` ports (from its
/// base for a template); with none declared, nothing can be said.
pub fn probe_ports(deployment: &Deployment, container: &str, exposed: &[i32]) -> Vec<Finding> {
    let Some(found) = deployment
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.iter().find(|c| c.name == container))
    else {
        return Vec::new();
    };
    if exposed.is_empty() {
        return Vec::new();
    }
    let served = exposed
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    probes(found)
        .filter_map(|(kind, probe)| {
            let port = resolve_port(found, probe_port(probe)?)?;
            (!exposed.contains(&port)).then(|| Finding {
                problem: format!(
                    "the {kind} of container `{container}` asks port {port}, but the image serves {served} (its EXPOSE), so it can never pass"
                ),
                fix: format!("set the probe's port (or the containerPort it names) to {}", exposed[0]),
            })
        })
        .collect()
}

/// A field manager other than berth that applied this container's image: a
/// server-side-apply manager, or `kubectl apply` (its last-applied annotation).
/// Helm's manager is left to [`helm::release`], whose finding says more.
fn image_owner(deployment: &Deployment, container: &str) -> Option<String> {
    let last_applied = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/last-applied-configuration"))
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
    if let Some(applied) = last_applied {
        let declares_image = applied
            .pointer("/spec/template/spec/containers")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|containers| {
                containers
                    .iter()
                    .any(|c| c["name"] == container && c.get("image").is_some())
            });
        if declares_image {
            return Some("kubectl apply (client-side)".into());
        }
    }
    let key = format!("k:{{\"name\":\"{container}\"}}");
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find_map(|entry| {
            let manager = entry.manager.as_deref().unwrap_or_default();
            if [super::FIELD_MANAGER, helm::FIELD_MANAGER].contains(&manager)
                || entry.operation.as_deref() != Some("Apply")
            {
                return None;
            }
            let fields = &entry.fields_v1.as_ref()?.0;
            let owns = fields
                .pointer("/f:spec/f:template/f:spec/f:containers")
                .and_then(|containers| containers.get(&key))
                .and_then(|c| c.get("f:image"))
                .is_some();
            owns.then(|| manager.to_string())
        })
}

/// Preflight findings on `site`'s Deployment: warnings on `printer`, or with
/// `strict` the error that stops the site before anything changes.
pub fn verdict(
    site: &crate::config::Site,
    findings: Vec<Finding>,
    strict: bool,
    printer: &crate::ui::Printer,
) -> Result<(), super::DeployError> {
    if findings.is_empty() {
        return Ok(());
    }
    if strict {
        return Err(super::DeployError::Preflight {
            namespace: site.deployment.namespace.clone(),
            name: site.deployment.name.clone(),
            findings,
        });
    }
    for finding in &findings {
        printer.stage(
            &site.name,
            "preflight",
            crate::ui::Status::Warning,
            &finding.to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(json: serde_json::Value) -> Deployment {
        let mut base = serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web", "image": "x",
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                    "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}]}}
            }
        });
        merge(&mut base, json);
        serde_json::from_value(base).unwrap()
    }

    fn check(deployment: &Deployment, container: &str) -> Vec<Finding> {
        preflight(deployment, container, &HelmValues::default())
    }

    fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
        match (base, patch) {
            (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
                for (key, value) in patch {
                    merge(base.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (base, patch) => *base = patch,
        }
    }

    #[test]
    fn an_image_in_the_last_applied_manifest_is_flagged() {
        let applied = r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1"}]}}}}"#;
        let spec = serde_json::json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}}});
        let findings = check(&deployment(spec), "web");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].problem.contains("kubectl apply"));
    }

    #[test]
    fn kubernetes_rounding() {
        let percent = IntOrString::String("25%".into());
        assert_eq!(scaled(Some(&percent), 1, 25, true), 1);
        assert_eq!(scaled(Some(&percent), 1, 25, false), 0);
        assert_eq!(scaled(Some(&percent), 10, 25, true), 3);
        assert_eq!(scaled(Some(&percent), 10, 25, false), 2);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 10, 25, false), 2);
        assert_eq!(scaled(None, 4, 25, false), 1);
    }

    #[test]
    fn a_sound_deployment_has_no_findings() {
        assert_eq!(check(&deployment(serde_json::json!({})), "web"), vec![]);
        // One replica with the defaults: maxUnavailable 25% of 1 rounds down to 0.
        assert_eq!(
            check(&deployment(serde_json::json!({"spec": {"replicas": 1}})), "web"),
            vec![]
        );
    }

    #[test]
    fn recreate_is_flagged() {
        let findings = check(
            &deployment(serde_json::json!({"spec": {"strategy": {"type": "Recreate"}}})),
            "web",
        );
        assert_eq!(findings.len(), 1);
        assert!(findings[0].fix.contains("RollingUpdate"));
    }

    #[test]
    fn a_strategy_that_drops_every_pod_is_flagged() {
        let spec = serde_json::json!({"spec": {"replicas": 2, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%", "maxSurge": 0}}}});
        let findings = check(&deployment(spec), "web");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].problem.contains("every ready pod"));
    }

    #[test]
    fn both_zero_means_one_unavailable() {
        let spec = serde_json::json!({"spec": {"replicas": 1, "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}}});
        assert_eq!(check(&deployment(spec), "web").len(), 1);
    }

    fn container(json: serde_json::Value) -> Container {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_missing_prestop_delay_is_flagged_with_the_manifest_to_add() {
        let spec = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "x",
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}, "lifecycle": null}]}}}});
        let findings = check(&deployment(spec), "web");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].problem.contains("no preStop delay"), "{findings:?}");
        assert!(
            findings[0]
                .fix
                .contains("lifecycle: {preStop: {sleep: {seconds: 5}}}"),
            "{}",
            findings[0].fix
        );
    }

    #[test]
    fn stop_delays_are_read_from_the_sleep_action_and_exec_sleeps() {
        let with = |pre_stop: serde_json::Value| {
            stop_delay(&container(
                serde_json::json!({"name": "web", "lifecycle": {"preStop": pre_stop}}),
            ))
        };
        assert_eq!(
            stop_delay(&container(serde_json::json!({"name": "web"}))),
            StopDelay::None
        );
        assert_eq!(
            with(serde_json::json!({"sleep": {"seconds": 3}})),
            StopDelay::Sleep(3)
        );
        assert_eq!(
            with(serde_json::json!({"exec": {"command": ["sleep", "4"]}})),
            StopDelay::Sleep(4)
        );
        assert_eq!(
            with(serde_json::json!({"exec": {"command": ["/bin/sleep", "6"]}})),
            StopDelay::Sleep(6)
        );
        assert_eq!(
            with(serde_json::json!({"exec": {"command": ["/bin/sh", "-c", "sleep 7"]}})),
            StopDelay::Sleep(7)
        );
        assert_eq!(
            with(serde_json::json!({"exec": {"command": ["nginx", "-s", "quit"]}})),
            StopDelay::Other
        );
        assert_eq!(
            with(serde_json::json!({"httpGet": {"path": "/drain", "port": 8080}})),
            StopDelay::Other
        );
    }

    #[test]
    fn a_grace_period_shorter_than_the_delay_and_drain_is_flagged() {
        let spec = |grace: i64| {
            serde_json::json!({"spec": {"template": {"spec": {"terminationGracePeriodSeconds": grace,
                "containers": [{"name": "web", "image": "x", "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                    "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}]}}}})
        };
        let findings = check(&deployment(spec(8)), "web");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0].problem.contains("terminationGracePeriodSeconds 8"),
            "{findings:?}"
        );
        assert!(findings[0].fix.contains("to 10 or more"), "{findings:?}");
        assert_eq!(check(&deployment(spec(10)), "web"), vec![]);
    }

    #[test]
    fn a_probe_on_an_undeclared_port_name_is_flagged() {
        let spec = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "x",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "web"}},
            "livenessProbe": {"tcpSocket": {"port": "http"}},
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}]}}}});
        let findings = check(&deployment(spec), "web");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].problem.contains("readinessProbe") && findings[0].problem.contains("`web`"));
    }

    #[test]
    fn after_the_build_a_probe_on_a_port_the_image_does_not_serve_is_flagged() {
        let spec = |port: serde_json::Value| {
            serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "x",
                "ports": [{"name": "http", "containerPort": 80}],
                "readinessProbe": {"httpGet": {"path": "/", "port": port}}}]}}}})
        };
        // A named port that resolves to 80, and a plain 80, while the image serves 8080.
        for port in [serde_json::json!("http"), serde_json::json!(80)] {
            let findings = probe_ports(&deployment(spec(port)), "web", &[8080]);
            assert_eq!(findings.len(), 1, "{findings:?}");
            assert!(
                findings[0]
                    .problem
                    .contains("asks port 80, but the image serves 8080"),
                "{findings:?}"
            );
        }
        assert_eq!(
            probe_ports(&deployment(spec(serde_json::json!(8080))), "web", &[8080]),
            vec![]
        );
        // An image that declares no port: nothing to say.
        assert_eq!(
            probe_ports(&deployment(spec(serde_json::json!(80))), "web", &[]),
            vec![]
        );
    }

    #[test]
    fn missing_probe_paused_and_foreign_owner_are_flagged() {
        let spec = serde_json::json!({
            "metadata": {"managedFields": [{
                "manager": "argocd-controller", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}}}
            }]},
            "spec": {"paused": true, "template": {"spec": {"containers": [{"name": "web", "image": "x",
                "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}]}}}
        });
        let findings = check(&deployment(spec), "web");
        let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert_eq!(findings.len(), 3, "{text:?}");
        assert!(text[0].contains("readiness probe"));
        assert!(text[1].contains("paused"));
        assert!(text[2].contains("argocd-controller"));
    }

    /// Helm's managedFields entry: an `Update` that owns container `web`'s image.
    fn helm_update() -> serde_json::Value {
        serde_json::json!({
            "manager": "helm", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}}}
        })
    }

    #[test]
    fn a_deployment_as_helm_install_leaves_it_is_flagged_once_with_helms_fix() {
        let installed = serde_json::json!({"metadata": {
            "namespace": "site-a",
            "labels": {"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "web-0.1.0"},
            "annotations": {"meta.helm.sh/release-name": "web", "meta.helm.sh/release-namespace": "site-a"},
            "managedFields": [helm_update()]
        }});
        let findings = check(&deployment(installed), "web");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0].problem.starts_with(
                "Helm release `web` (namespace `site-a`) manages this Deployment: the next `helm upgrade` sets container `web`'s image back"
            ),
            "{findings:?}"
        );
        assert!(
            findings[0].fix.contains(
                "`helm upgrade web CHART --namespace site-a --reuse-values --set-string image.repository=<repository> --set-string image.tag=<tag>@sha256:<digest>`"
            ),
            "{findings:?}"
        );
        // Helm 4's server-side apply: the same one finding, not the generic one too.
        let mut applied = helm_update();
        applied["operation"] = serde_json::json!("Apply");
        let findings = check(
            &deployment(serde_json::json!({"metadata": {"managedFields": [applied]}})),
            "web",
        );
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0].problem.contains("field manager `helm`"),
            "{findings:?}"
        );
    }

    #[test]
    fn after_berths_patch_took_the_image_helms_labels_still_flag_it() {
        // berth's Update took f:image from Helm's entry; the release's marks stay.
        let mut helm = helm_update();
        helm["fieldsV1"]["f:spec"] = serde_json::json!({"f:replicas": {}});
        let shipped = serde_json::json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": "web", "meta.helm.sh/release-namespace": "site-a"},
            "managedFields": [helm, {
                "manager": "berth", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}}}
            }]
        }});
        let findings = check(&deployment(shipped), "web");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].problem.contains("Helm release `web`"), "{findings:?}");
    }

    #[test]
    fn an_image_set_by_kubectl_set_image_is_not_flagged() {
        let set_image = serde_json::json!({"metadata": {"managedFields": [{
            "manager": "kubectl-set", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}}}
        }]}});
        assert_eq!(check(&deployment(set_image), "web"), vec![]);
    }
}
