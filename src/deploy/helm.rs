//! Helm: does a Helm release manage this Deployment, and which `helm
//! upgrade` keeps the image berth set? Pure, tested on fixtures; preflight
//! ([`super::preflight`]) and the deploy stage ([`super::patch`]) ask it.
//!
//! Helm 3's `helm upgrade` patches each object with a three-way merge of the
//! release's last manifest, the new one and the live object: a field the
//! chart declares (a container's image) is set back to the chart's value on
//! every upgrade, even one that changes nothing in the chart. So berth's
//! image lasts until the next upgrade unless the release's values carry it.
//! Helm writes its patches as an `Update` (not an `Apply`) with the field
//! manager `helm`, and berth's own patch takes the image's ownership from
//! it; what still says Helm after berth's first rollout are the release's
//! annotations (`meta.helm.sh/release-name`, `meta.helm.sh/release-namespace`)
//! and the label `app.kubernetes.io/managed-by: Helm`. A `kubectl set
//! image` is an `Update` too, but nothing applies it again: only Helm is
//! flagged, never every `Update` manager.

use k8s_openapi::api::apps::v1::Deployment;

use crate::config::{HelmImageKeys, HelmValues};
use crate::reference;

/// The label a chart sets to `{{ .Release.Service }}`, which is `Helm`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The annotation Helm (3.2 and later) writes with the release's name.
pub const RELEASE_NAME_ANNOTATION: &str = "meta.helm.sh/release-name";
/// The annotation Helm writes with the release's namespace.
pub const RELEASE_NAMESPACE_ANNOTATION: &str = "meta.helm.sh/release-namespace";
/// The field manager of the `helm` command (its program name).
pub const FIELD_MANAGER: &str = "helm";

/// A Helm release that manages a Deployment, as the Deployment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The release's name; `None` when no annotation names it (only the
    /// label or the field manager says Helm).
    pub name: Option<String>,
    /// The release's namespace: its annotation's, else the Deployment's.
    pub namespace: String,
    /// What says Helm, for a person: the annotation, the label, or the
    /// field manager.
    pub evidence: &'static str,
}

/// The Helm release that manages `deployment`, if one does: named by its
/// annotations, or known only by the label `app.kubernetes.io/managed-by:
/// Helm` or a field manager `helm` (of any operation: Helm 3 writes an
/// `Update`, Helm 4's server-side apply an `Apply`).
pub fn release(deployment: &Deployment) -> Option<Release> {
    let metadata = &deployment.metadata;
    let annotation = |key: &str| metadata.annotations.as_ref().and_then(|a| a.get(key)).cloned();
    let namespace = annotation(RELEASE_NAMESPACE_ANNOTATION)
        .or_else(|| metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    if let Some(name) = annotation(RELEASE_NAME_ANNOTATION) {
        return Some(Release {
            name: Some(name),
            namespace,
            evidence: "its annotation `meta.helm.sh/release-name`",
        });
    }
    let labelled = metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == "Helm");
    let managed = metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER));
    let evidence = if labelled {
        "its label `app.kubernetes.io/managed-by: Helm`"
    } else if managed {
        "its field manager `helm`"
    } else {
        return None;
    };
    Some(Release {
        name: None,
        namespace,
        evidence,
    })
}

impl Release {
    /// The release's name, or the placeholder `RELEASE` for a command.
    fn name_or_placeholder(&self) -> &str {
        self.name.as_deref().unwrap_or("RELEASE")
    }

    /// Who manages the Deployment, for the start of a sentence.
    fn who(&self) -> String {
        match &self.name {
            Some(name) => format!("Helm release `{name}` (namespace `{}`)", self.namespace),
            None => format!(
                "a Helm release ({}, but no `{RELEASE_NAME_ANNOTATION}` annotation names it)",
                self.evidence
            ),
        }
    }

    /// Preflight's problem: what the next `helm upgrade` does to `container`.
    pub fn problem(&self, container: &str) -> String {
        format!(
            "{} manages this Deployment: the next `helm upgrade` sets container `{container}`'s image back to the chart's value, even with the chart unchanged (Helm's three-way merge restores what the chart declares)",
            self.who()
        )
    }

    /// Preflight's fix: the values berth's image must be in, in Helm's terms.
    pub fn fix(&self, values: &HelmValues) -> String {
        format!(
            "make the release's values name the image berth ships: after each rollout berth prints the `{} {}` that does (or put the same values in the release's values file)",
            self.upgrade(values),
            values_flags(values, "<repository>", "<tag>", "sha256:<digest>").join(" ")
        )
    }

    /// `helm upgrade RELEASE CHART --namespace NS --reuse-values`.
    fn upgrade(&self, values: &HelmValues) -> String {
        format!(
            "helm upgrade {} {} --namespace {} --reuse-values",
            self.name_or_placeholder(),
            values.chart.as_deref().unwrap_or("CHART"),
            self.namespace
        )
    }

    /// After a rollout of `image` (`<repository>:<tag>@sha256:…`): the
    /// command that makes the release's values name it, so the next upgrade
    /// keeps it.
    pub fn keep_image(&self, image: &str, values: &HelmValues) -> String {
        let repository = reference::repository(image);
        let tag = reference::tag(image).unwrap_or_default();
        let digest = reference::digest(image).unwrap_or_default();
        format!(
            "the next `helm upgrade` of {} sets the chart's image back; to keep this one: {} {}",
            match &self.name {
                Some(name) => format!("release `{name}`"),
                None => "its release".into(),
            },
            self.upgrade(values),
            values_flags(values, repository, tag, digest).join(" ")
        )
    }
}

/// `--set-string KEY=VALUE` for each value that names the image; strings,
/// so a tag of digits stays a string.
fn values_flags(values: &HelmValues, repository: &str, tag: &str, digest: &str) -> Vec<String> {
    let pinned_tag = || {
        if digest.is_empty() {
            tag.to_string()
        } else {
            format!("{tag}@{digest}")
        }
    };
    let pairs: Vec<(&str, String)> = match &values.keys {
        HelmImageKeys::Reference(key) if tag.is_empty() => vec![(key, format!("{repository}@{digest}"))],
        HelmImageKeys::Reference(key) => vec![(key, format!("{repository}:{}", pinned_tag()))],
        HelmImageKeys::Parts {
            registry,
            repository: repository_key,
            tag: tag_key,
            digest: digest_key,
        } => {
            let mut pairs = Vec::new();
            match registry {
                Some(registry_key) => {
                    let (host, path) = repository.split_once('/').unwrap_or(("", repository));
                    pairs.push((registry_key.as_str(), host.to_string()));
                    pairs.push((repository_key.as_str(), path.to_string()));
                }
                None => pairs.push((repository_key.as_str(), repository.to_string())),
            }
            match digest_key {
                Some(digest_key) => {
                    pairs.push((tag_key.as_str(), tag.to_string()));
                    pairs.push((digest_key.as_str(), digest.to_string()));
                }
                None => pairs.push((tag_key.as_str(), pinned_tag())),
            }
            pairs
        }
    };
    pairs
        .into_iter()
        .map(|(key, value)| format!("--set-string {key}={value}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "127.0.0.1:5000/sites/www:0123456789abcdef0123456789abcdef01234567@sha256:feedface";

    /// A Deployment as `helm install web ./chart -n site-a` leaves it: the
    /// chart's label, Helm's annotations, and Helm's `Update` owning the image.
    fn installed_by_helm() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "site-a",
                "labels": {"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "web-0.1.0"},
                "annotations": {"meta.helm.sh/release-name": "web", "meta.helm.sh/release-namespace": "site-a"},
                "managedFields": [{
                    "manager": "helm", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}}}
                }]
            },
            "spec": {"selector": {}, "template": {}}
        }))
        .unwrap()
    }

    fn with_metadata(metadata: serde_json::Value) -> Deployment {
        let mut json = serde_json::json!({"metadata": {"name": "web", "namespace": "site-a"}, "spec": {"selector": {}, "template": {}}});
        let serde_json::Value::Object(metadata) = metadata else {
            panic!("metadata is an object")
        };
        for (key, value) in metadata {
            json["metadata"][key] = value;
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_release_is_named_by_helms_annotations() {
        let release = release(&installed_by_helm()).unwrap();
        assert_eq!(release.name.as_deref(), Some("web"));
        assert_eq!(release.namespace, "site-a");
        assert_eq!(
            release.problem("web"),
            "Helm release `web` (namespace `site-a`) manages this Deployment: the next `helm upgrade` sets container `web`'s image back to the chart's value, even with the chart unchanged (Helm's three-way merge restores what the chart declares)"
        );
    }

    #[test]
    fn the_label_or_helms_field_manager_alone_still_say_helm() {
        // After berth's patch took the image from Helm's entry, and without annotations.
        let labelled = with_metadata(serde_json::json!({"labels": {"app.kubernetes.io/managed-by": "Helm"}}));
        let release = release(&labelled).unwrap();
        assert_eq!(release.name, None);
        assert!(release.problem("web").starts_with("a Helm release (its label `app.kubernetes.io/managed-by: Helm`, but no `meta.helm.sh/release-name` annotation names it) manages"));
        assert!(
            release
                .fix(&HelmValues::default())
                .contains("helm upgrade RELEASE CHART --namespace site-a")
        );
        let managed = with_metadata(
            serde_json::json!({"managedFields": [{"manager": "helm", "operation": "Apply", "apiVersion": "apps/v1"}]}),
        );
        assert_eq!(
            super::release(&managed).unwrap().evidence,
            "its field manager `helm`"
        );
    }

    #[test]
    fn kubectl_set_image_and_other_labels_are_not_helm() {
        let set_image = with_metadata(serde_json::json!({
            "labels": {"app.kubernetes.io/managed-by": "kustomize"},
            "managedFields": [{
                "manager": "kubectl-set", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}}}
            }]
        }));
        assert_eq!(release(&set_image), None);
        assert_eq!(release(&with_metadata(serde_json::json!({}))), None);
    }

    #[test]
    fn the_upgrade_that_keeps_the_image_names_helm_creates_values_by_default() {
        let release = release(&installed_by_helm()).unwrap();
        assert_eq!(
            release.keep_image(IMAGE, &HelmValues::default()),
            "the next `helm upgrade` of release `web` sets the chart's image back; to keep this one: \
             helm upgrade web CHART --namespace site-a --reuse-values \
             --set-string image.repository=127.0.0.1:5000/sites/www \
             --set-string image.tag=0123456789abcdef0123456789abcdef01234567@sha256:feedface"
        );
    }

    #[test]
    fn the_upgrade_follows_the_sites_values_keys_and_chart() {
        let release = release(&installed_by_helm()).unwrap();
        let split = HelmValues {
            chart: Some("oci://charts.example.com/web".into()),
            keys: HelmImageKeys::Parts {
                registry: Some("image.registry".into()),
                repository: "image.repository".into(),
                tag: "image.tag".into(),
                digest: Some("image.digest".into()),
            },
        };
        assert!(release.keep_image(IMAGE, &split).ends_with(
            "helm upgrade web oci://charts.example.com/web --namespace site-a --reuse-values \
             --set-string image.registry=127.0.0.1:5000 --set-string image.repository=sites/www \
             --set-string image.tag=0123456789abcdef0123456789abcdef01234567 \
             --set-string image.digest=sha256:feedface"
        ));
        let whole = HelmValues {
            chart: None,
            keys: HelmImageKeys::Reference("web.image".into()),
        };
        assert!(
            release
                .keep_image(IMAGE, &whole)
                .ends_with(&format!("--reuse-values --set-string web.image={IMAGE}"))
        );
        assert!(release.fix(&whole).contains(
            "`helm upgrade web CHART --namespace site-a --reuse-values --set-string web.image=<repository>:<tag>@sha256:<digest>`"
        ));
    }
}
