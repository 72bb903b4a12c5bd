//! Preflight: can this Deployment roll without downtime? Pure, tested on fixtures.
//!
//! 1. The strategy is `RollingUpdate`.
//! 2. With its replicas, maxUnavailable (rounded down) and maxSurge (rounded up),
//!    as Kubernetes resolves them, at least one ready pod keeps serving.
//! 3. The named container exists and has a readiness probe.
//! 4. The Deployment is not paused.
//! 5. No other field manager owns the container's image (its next apply would
//!    undo berth's change).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// One problem found before touching the cluster; `fix` says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Checks `deployment` for a rollout of `container` without downtime.
pub fn preflight(deployment: &Deployment, container: &str) -> Vec<Finding> {
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
    if let Some(found) = containers.iter().find(|c| c.name == container)
        && found.readiness_probe.is_none()
    {
        findings.push(Finding {
            problem: format!(
                "container `{container}` has no readiness probe, so a pod counts as ready before it serves"
            ),
            fix: format!(
                "add a readinessProbe (for example httpGet on the served port) to container `{container}`"
            ),
        });
    }
    if spec.paused == Some(true) {
        findings.push(Finding {
            problem: "the Deployment is paused, so the rollout would not start".into(),
            fix: "resume it (kubectl rollout resume) or set spec.paused: false".into(),
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

/// A field manager other than berth that applied this container's image: a
/// server-side-apply manager, or `kubectl apply` (its last-applied annotation).
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
            if manager == super::FIELD_MANAGER || entry.operation.as_deref() != Some("Apply") {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(json: serde_json::Value) -> Deployment {
        let mut base = serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web", "image": "x", "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}]}}
            }
        });
        merge(&mut base, json);
        serde_json::from_value(base).unwrap()
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
        let findings = preflight(&deployment(spec), "web");
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
        assert_eq!(preflight(&deployment(serde_json::json!({})), "web"), vec![]);
        // One replica with the defaults: maxUnavailable 25% of 1 rounds down to 0.
        assert_eq!(
            preflight(&deployment(serde_json::json!({"spec": {"replicas": 1}})), "web"),
            vec![]
        );
    }

    #[test]
    fn recreate_is_flagged() {
        let findings = preflight(
            &deployment(serde_json::json!({"spec": {"strategy": {"type": "Recreate"}}})),
            "web",
        );
        assert_eq!(findings.len(), 1);
        assert!(findings[0].fix.contains("RollingUpdate"));
    }

    #[test]
    fn a_strategy_that_drops_every_pod_is_flagged() {
        let spec = serde_json::json!({"spec": {"replicas": 2, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%", "maxSurge": 0}}}});
        let findings = preflight(&deployment(spec), "web");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].problem.contains("every ready pod"));
    }

    #[test]
    fn both_zero_means_one_unavailable() {
        let spec = serde_json::json!({"spec": {"replicas": 1, "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}}});
        assert_eq!(preflight(&deployment(spec), "web").len(), 1);
    }

    #[test]
    fn missing_probe_paused_and_foreign_owner_are_flagged() {
        let spec = serde_json::json!({
            "metadata": {"managedFields": [{
                "manager": "argocd-controller", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}}}
            }]},
            "spec": {"paused": true, "template": {"spec": {"containers": [{"name": "web", "image": "x"}]}}}
        });
        let findings = preflight(&deployment(spec), "web");
        let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert_eq!(findings.len(), 3, "{text:?}");
        assert!(text[0].contains("readiness probe"));
        assert!(text[1].contains("paused"));
        assert!(text[2].contains("argocd-controller"));
    }
}
