//! The deploy stage through the real binary, on the stack's control plane; kwok's
//! stages make pods fail by image name (`broken-…`, `crash-…`, `notready-…`).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

use crate::support::{World, kube_client, text};

/// A world with the `landing` example shipped to Deployment `web` (3 replicas
/// on the busybox base, or `deployment` when given), the rollout timeout 90 s.
/// `image_name` is the last path part of the site's image; a name starting
/// with `broken`, `crash` or `notready` makes its pods fail that way.
async fn one_site(test: &str, image_name: &str, deployment: Option<serde_json::Value>) -> World {
    let world = World::new(test).await;
    world.copy_repo("landing");
    let base = world.busybox();
    match deployment {
        Some(body) => world.create_deployment_json(body).await,
        // A short progress deadline for the image that never gets ready.
        None if image_name.starts_with("notready") => {
            world.create_deployment_with_deadline("web", 3, &base, 20).await;
        }
        None => world.create_deployment("web", 3, &base).await,
    }
    let mut pipeline = world.landing_pipeline().with_rollout_timeout("90s");
    pipeline.site_mut("landing").image = world.image(image_name);
    world.write_pipeline(&pipeline);
    world
}

fn deployment_body(strategy: &serde_json::Value, probe: bool, base: &str) -> serde_json::Value {
    let mut container =
        json!({"name": "web", "image": base, "ports": [{"containerPort": 8080, "name": "http"}]});
    if probe {
        container["readinessProbe"] = json!({"httpGet": {"path": "/", "port": "http"}});
    }
    json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "strategy": strategy.clone(),
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}}
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_roll_out_and_rollback_returns_to_the_previous_image() {
    let world = one_site("deploy-three", "web", None).await;
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    let head = world.repo_head("landing");
    assert!(world.image_of("web").await.contains(&format!(":{head}@sha256:")));
    let status = world.deployment("web").await.status.unwrap();
    assert_eq!(
        (status.updated_replicas, status.available_replicas),
        (Some(3), Some(3))
    );

    let output = world.berth(&["rollback", "landing"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(world.image_of("web").await, world.busybox());
    let output = world.berth(&["rollback", "landing", "--to", &head[..10]]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(world.image_of("web").await.contains(&head));
}

async fn assert_fails_and_rolls_back(world: &World, expected: &[&str]) {
    let before = world.image_of("web").await;
    let started = std::time::Instant::now();
    let output = world.berth(&["run"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    for needle in expected {
        assert!(all.contains(needle), "output lacks {needle:?}:\n{all}");
    }
    assert!(all.contains("rolled back: the previous version"), "{all}");
    assert_eq!(
        world.image_of("web").await,
        before,
        "the Deployment runs its previous image again"
    );
    let deployment = world.deployment("web").await;
    assert_eq!(
        crate::support::rollout_state(&deployment),
        crate::support::RolloutState::Complete
    );
    assert!(
        started.elapsed() < Duration::from_secs(80),
        "failed fast: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_image_is_diagnosed_and_rolled_back() {
    let world = one_site("deploy-broken", "broken-web", None).await;
    let image_prefix = format!("{}/{}/broken-web:", world.stack.registry, world.prefix);
    assert_fails_and_rolls_back(&world, &["ImagePullBackOff", &image_prefix]).await;
    // The only earlier revision is the failed one: rollback says so and
    // touches nothing.
    let generation = world.generation("web").await;
    let output = world.berth(&["rollback", "landing"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("no earlier revision is known to be good")
            && all.contains("its rollout failed and was rolled back")
            && all.contains("--to COMMIT"),
        "{all}"
    );
    assert_eq!(world.generation("web").await, generation);
    assert_eq!(world.image_of("web").await, world.busybox());
}

/// A good ship, another, then one the cluster cannot pull (rolled back):
/// `berth rollback` goes past the failed revision to the good one before
/// it, naming what it skipped and why; `--to` still tries the failed one;
/// and a machine whose run log knows nothing skips it by the lease alone.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_goes_past_a_revision_that_failed_to_the_newest_good_one() {
    let world = one_site("deploy-rollback-skip", "web", None).await;
    let url = world.url("landing");
    let page = |text: &str| world.commit(&url, "main", &[("index.html", text)], text);
    let first = world.repo_head("landing");
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    let second = page("<h1>second</h1>\n");
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    let broken = page("<h1>broken</h1>\n");
    let mut pipeline = world.landing_pipeline().with_rollout_timeout("90s");
    pipeline.site_mut("landing").image = world.image("broken-web");
    world.write_pipeline(&pipeline);
    assert_fails_and_rolls_back(&world, &["ImagePullBackOff"]).await;
    assert!(world.image_of("web").await.contains(&second));

    // Revisions: 1 busybox, 2 first, 4 broken, 5 second (current, was 3).
    let output = world.berth(&["rollback", "landing", "--json"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        world.image_of("web").await.contains(&format!(":{first}@sha256:")),
        "the good revision before the failed one runs:\n{all}"
    );
    let skipped = format!(
        "skipped revision 4 (commit {}…): its rollout failed and was rolled back",
        &broken[..12]
    );
    assert!(all.contains("rollback ok   to revision 2 ("), "{all}");
    assert!(all.contains(&skipped), "output lacks {skipped:?}:\n{all}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    crate::support::validate_against("report.schema.json", &report);
    let rollback = &report["sites"][0]["rollback"];
    assert_eq!(
        (&rollback["revision"], &rollback["basis"]),
        (&json!(2), &json!("passed")),
        "{report:#}"
    );
    assert_eq!(rollback["skipped"][0]["reason"], "failed", "{report:#}");
    assert_eq!(rollback["skipped"][0]["commit"], broken.as_str(), "{report:#}");

    // `--to` names any revision: the failed one is tried again, and fails again.
    let output = world.berth(&["rollback", "landing", "--to", &broken[..10]]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("rollback warn revision 4 (commit") && all.contains("trying it, as --to asks"),
        "{all}"
    );
    assert!(all.contains("ImagePullBackOff"), "{all}");
    assert!(world.image_of("web").await.contains(&format!(":{first}@sha256:")));

    // Another machine (its own state dir, no run log): the lease's passed
    // record alone says berth shipped the broken image and it never passed.
    let output = world.berth(&["rollback", "landing", "--state-dir", "other-machine"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        world
            .image_of("web")
            .await
            .contains(&format!(":{second}@sha256:")),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "(commit {}…): berth shipped it, but it never passed",
            &broken[..12]
        )),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loop_is_diagnosed_and_rolled_back() {
    let world = one_site("deploy-crash", "crash-web", None).await;
    assert_fails_and_rolls_back(&world, &["CrashLoopBackOff", "restarted"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_that_never_gets_ready_fails_at_the_progress_deadline_and_is_rolled_back() {
    let world = one_site("deploy-notready", "notready-web", None).await;
    assert_fails_and_rolls_back(&world, &["exceeded its progress deadline", "NotReady"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_warns_about_recreate_and_missing_probes_and_strict_refuses() {
    let world_body = |base: &str| deployment_body(&json!({"type": "Recreate"}), false, base);
    let base = format!(
        "{}/berth/base:busybox",
        crate::support::Stack::from_env().registry
    );
    let world = one_site("deploy-preflight", "web", Some(world_body(&base))).await;

    world
        .assert_strict_refuses(&[
            "strategy Recreate",
            "set spec.strategy.type: RollingUpdate",
            "no readiness probe",
            "add a readinessProbe",
        ])
        .await;

    let output = world.berth(&["run"]);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("preflight warn") && all.contains("strategy Recreate"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_strategy_that_drops_every_pod_is_flagged() {
    let base = format!(
        "{}/berth/base:busybox",
        crate::support::Stack::from_env().registry
    );
    let body = deployment_body(
        &json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%", "maxSurge": 0}}),
        true,
        &base,
    );
    let world = one_site("deploy-drop", "web", Some(body)).await;
    let output = world.berth(&["run", "--strict"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("may take every ready pod away") && all.contains("maxUnavailable: 0"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_commit_is_refused_unless_allowed() {
    let world = one_site("deploy-older", "web", None).await;
    let older = world.repo_head("landing");
    let newer = world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>newer</h1>\n")],
        "Newer page",
    );
    let output = world.berth(&["ship", "landing", "--commit", &newer]);
    assert!(output.status.success(), "{}", text(&output));

    let output = world.berth(&["ship", "landing", "--commit", &older[..9]]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("is older than the deployed") && all.contains("--allow-older"),
        "{all}"
    );
    assert!(world.image_of("web").await.contains(&newer));

    let output = world.berth(&["ship", "landing", "--commit", &older, "--allow-older"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(world.image_of("web").await.contains(&older));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lease_makes_berth_wait_then_fail_naming_the_holder_and_a_freed_one_is_taken() {
    let world = one_site("deploy-lease", "web", None).await;
    world.hold_lease("nightly-runner on build-host", 0).await;
    let generation = world.generation("web").await;
    let output = world.berth(&["run", "--lock-wait", "3s"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("is being deployed by nightly-runner on build-host"),
        "{all}"
    );
    assert_eq!(world.generation("web").await, generation);

    // Freed (as berth's release does): taken at once. A crashed holder's
    // lease expires by berth's clock (`lease::` tests).
    world.free_lease().await;
    let output = world.berth(&["run", "--lock-wait", "3s"]);
    assert!(output.status.success(), "{}", text(&output));
    // Released afterwards: no holder left.
    let api: Api<Lease> = Api::namespaced(kube_client().await, &world.namespace);
    let lease = api.get("berth-web").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_ships_never_interleave_and_the_newer_commit_wins() {
    let world = one_site("deploy-concurrent", "web", None).await;
    let older = world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>one</h1>\n")],
        "One",
    );
    let newer = world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>two</h1>\n")],
        "Two",
    );
    let first = world.spawn_berth(&["ship", "landing", "--commit", &newer]);
    let second = world.spawn_berth(&["ship", "landing", "--commit", &older]);
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    // The older one either deployed before the newer (then the newer followed) or was refused.
    let second_text = text(&second);
    assert!(
        second.status.success() || second_text.contains("is older than the deployed"),
        "{second_text}"
    );
    assert!(
        world.image_of("web").await.contains(&newer),
        "the newer commit runs at the end"
    );
}

fn token_kubeconfig(world: &World, account: &str) -> std::path::PathBuf {
    let token = world.kubectl(&["create", "token", account, "--duration", "10m"]);
    assert!(token.status.success(), "{}", text(&token));
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let admin = std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap()).unwrap();
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .unwrap()
        .to_string();
    let path = world.dir.path().join(format!("{account}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_rbac_suffices_and_a_missing_verb_is_named() {
    let world = one_site("deploy-rbac", "web", None).await;
    let rbac = crate::support::repo_root().join("docs/rbac.yaml");
    let applied = world.kubectl(&["apply", "-f", rbac.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied));
    let kubeconfig = token_kubeconfig(&world, "berth");
    let output = world.berth_with_env(&["run"], &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    assert!(
        output.status.success(),
        "the documented RBAC suffices: {}",
        text(&output)
    );

    // The same role without `patch` on deployments.
    let without_patch = std::fs::read_to_string(&rbac)
        .unwrap()
        .replace(
            "verbs: [\"get\", \"list\", \"watch\", \"patch\"]",
            "verbs: [\"get\", \"list\", \"watch\"]",
        )
        .replace("name: berth\n", "name: berth-no-patch\n");
    let path = world.dir.path().join("rbac-no-patch.yaml");
    std::fs::write(&path, without_patch).unwrap();
    let applied = world.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied));
    world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>again</h1>\n")],
        "Again",
    );
    let kubeconfig = token_kubeconfig(&world, "berth-no-patch");
    let output = world.berth_with_env(&["run"], &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("permission missing: berth may not `patch` deployments in namespace"),
        "{all}"
    );
    assert!(all.contains("docs/rbac.yaml"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_scaled_to_zero_ships_with_nothing_to_check() {
    let base = format!(
        "{}/berth/base:busybox",
        crate::support::Stack::from_env().registry
    );
    let mut body = deployment_body(
        &json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
        true,
        &base,
    );
    body["spec"]["replicas"] = json!(0);
    let world = one_site("deploy-zero", "web", Some(body)).await;
    let output = world.berth(&["run", "--json"]);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("0 replicas: nothing serves, nothing to check"),
        "{all}"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    crate::support::validate_against("report.schema.json", &report);
    assert_eq!(report["sites"][0]["verification"]["replicas"], 0, "{report:#}");
    assert!(world.image_of("web").await.contains(&world.repo_head("landing")));
}

/// An image set behind berth's back (`kubectl set image`, a manual rollback)
/// leaves berth's annotations describing another image: plan and ship both
/// see that the source is not what runs, and ship sets it again.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_set_behind_berths_back_is_shipped_again_not_called_unchanged() {
    let world = one_site("deploy-set-image", "web", None).await;
    let first = world.repo_head("landing");
    let output = world.berth(&["ship", "landing", "--commit", &first]);
    assert!(output.status.success(), "{}", text(&output));
    let first_image = world.image_of("web").await;
    let second = world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>second</h1>\n")],
        "Second page",
    );
    let output = world.berth(&["ship", "landing", "--commit", &second]);
    assert!(output.status.success(), "{}", text(&output));
    let second_image = world.image_of("web").await;

    let set = world.kubectl(&["set", "image", "deployment/web", &format!("web={first_image}")]);
    assert!(set.status.success(), "{}", text(&set));
    let plan = world.berth(&["plan", "--json"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let entry = &crate::support::json_of(&plan)["sites"][0];
    assert_eq!(entry["action"], "deploy", "{entry}");
    // kubectl's `Update` owns the image now, but nothing applies it again.
    assert!(!entry["preflight"].to_string().contains("helm"), "{entry}");

    let output = world.berth(&["ship", "landing", "--commit", &second]);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(!all.contains("unchanged"), "{all}");
    assert_eq!(world.image_of("web").await, second_image, "{all}");
}
