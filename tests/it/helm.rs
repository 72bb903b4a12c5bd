//! A Deployment that a Helm release manages, shaped as `helm install` leaves
//! it (the chart's labels, Helm's release annotations, and the field manager
//! `helm` with an `Update` owning the image), created through the stack's API
//! server: preflight says what the next `helm upgrade` does, `--strict`
//! refuses, and after a rollout berth prints the `helm upgrade` that keeps
//! its image.

use k8s_openapi::api::apps::v1::Deployment;

use crate::support::{HelmSpec, World, validate_against};

/// The `helm install web ./chart` of `helm create`'s chart, in the world's
/// namespace, on `image`: written as Helm writes it (the chart's labels, the
/// release's annotations), by the field manager `helm`.
async fn install_as_helm(world: &World, image: &str) {
    world
        .kwok_deployment("web", image)
        .replicas(2)
        .pre_stop(5)
        .label("app.kubernetes.io/managed-by", "Helm")
        .label("app.kubernetes.io/instance", "web")
        .label("app.kubernetes.io/name", "web")
        .label("helm.sh/chart", "web-0.1.0")
        .annotation("meta.helm.sh/release-name", "web")
        .annotation("meta.helm.sh/release-namespace", &world.namespace)
        .field_manager("helm")
        .create()
        .await;
}

/// Whether the field manager `manager` owns container `web`'s image.
fn owns_image(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some(manager))
        .any(|entry| {
            entry.fields_v1.as_ref().is_some_and(|fields| {
                fields
                    .0
                    .pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/f:image")
                    .is_some()
            })
        })
}

/// Red when preflight looks only at `Apply` managers (Helm 3 writes an
/// `Update`), when `plan` does not ask the same preflight as `run`, when
/// `--strict` lets the Helm finding through, when no `helm upgrade` line
/// follows the rollout or it names other values than the image that runs,
/// when the site's values keys and chart are not followed, and when the
/// finding relies on Helm owning the image (berth's first patch takes it).
#[tokio::test(flavor = "multi_thread")]
async fn a_helm_release_is_flagged_and_the_upgrade_that_keeps_berths_image_is_printed() {
    let world = World::new("helm").await;
    world.copy_repo("landing");
    install_as_helm(&world, &world.busybox()).await;
    let installed = world.deployment("web").await;
    let helm_entry = installed
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|entry| entry.manager.as_deref() == Some("helm"))
        .expect("Helm's managedFields entry");
    assert_eq!(helm_entry.operation.as_deref(), Some("Update"));
    assert!(owns_image(&installed, "helm"));
    let mut pipeline = world.landing_pipeline().with_rollout_timeout("90s");
    world.write_pipeline(&pipeline);
    let namespace = &world.namespace;
    let problem = format!(
        "Helm release `web` (namespace `{namespace}`) manages this Deployment: the next `helm upgrade` sets container `web`'s image back to the chart's value"
    );

    // plan says what run's preflight says.
    let plan = world.berth(["plan", "--json"]).json();
    validate_against("plan.schema.json", &plan);
    let findings = plan["sites"][0]["preflight"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{plan:#}");
    assert!(
        findings[0]["problem"].as_str().unwrap().starts_with(&problem),
        "{plan:#}"
    );

    world.assert_strict_refuses(&[&problem]).await;

    let ran = world
        .berth(["run"])
        .succeeds()
        .has("preflight warn")
        .has(&problem);
    let image = world.image_of("web").await;
    let (named, digest) = image.split_once('@').unwrap();
    let repository = format!("{}/{}", world.stack.registry, world.image("landing"));
    let tag = named.strip_prefix(&format!("{repository}:")).unwrap();
    assert_eq!(tag, world.repo_head("landing"));
    let keep = format!(
        "helm upgrade web CHART --namespace {namespace} --reuse-values --set-string image.repository={repository} --set-string image.tag={tag}@{digest}"
    );
    ran.has(&format!("to keep this one: {keep}\n"));

    // berth's patch took the image from Helm's entry; the release's marks
    // still say Helm. The site's own values keys and chart are followed.
    let shipped = world.deployment("web").await;
    assert!(owns_image(&shipped, "berth") && !owns_image(&shipped, "helm"));
    pipeline.site_mut("landing").helm = Some(HelmSpec {
        chart: Some("./charts/web".into()),
        digest: Some("image.digest".into()),
        ..HelmSpec::default()
    });
    world.write_pipeline(&pipeline);
    let second = world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>second</h1>\n")],
        "Second page",
    );
    let ran = world.berth(["run"]).succeeds().has(&problem);
    let image = world.image_of("web").await;
    let digest = image.split_once('@').unwrap().1;
    let keep = format!(
        "helm upgrade web ./charts/web --namespace {namespace} --reuse-values --set-string image.repository={repository} --set-string image.tag={second} --set-string image.digest={digest}"
    );
    ran.has(&format!("to keep this one: {keep}\n"));
}
