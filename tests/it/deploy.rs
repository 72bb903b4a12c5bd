//! The deploy stage through the real binary, on the stack's control plane; kwok's
//! stages make pods fail by image name (`broken-…`, `crash-…`, `notready-…`).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

use crate::support::{
    DeploymentBuilder, IntOrString, Probe, RolloutState, Strategy, World, exit, kube_client, rollout_state,
    text,
};

/// A world with the `landing` example shipped to Deployment `web` (3 replicas
/// on the busybox base, changed by `shape`), the rollout timeout 90 s.
/// `image_name` is the last path part of the site's image; a name starting
/// with `broken`, `crash` or `notready` makes its pods fail that way.
async fn one_site(
    test: &str,
    image_name: &str,
    shape: impl FnOnce(DeploymentBuilder) -> DeploymentBuilder,
) -> World {
    let world = World::new(test).await;
    world.copy_repo("landing");
    let mut web = world.kwok_deployment("web", &world.busybox()).replicas(3);
    if image_name.starts_with("notready") {
        // A short progress deadline for the image that never gets ready.
        web = web.progress_deadline(20);
    }
    shape(web).create().await;
    let mut pipeline = world.landing_pipeline().with_rollout_timeout("90s");
    pipeline.site_mut("landing").image = world.image(image_name);
    world.write_pipeline(&pipeline);
    world
}

/// The Deployment as [`one_site`] makes it.
fn as_is(web: DeploymentBuilder) -> DeploymentBuilder {
    web
}

/// Two replicas, probed on / at Kubernetes' default period (or not at all),
/// replaced by `strategy`.
fn two_replicas(strategy: Strategy, probe: bool) -> impl FnOnce(DeploymentBuilder) -> DeploymentBuilder {
    move |web| {
        let web = web.replicas(2).strategy(strategy);
        if probe {
            web.readiness(Probe::http("/"))
        } else {
            web.without_readiness()
        }
    }
}

/// Asserts Deployment `web` has rolled out completely, all `replicas` of it
/// updated and available, by kubectl's rule, the moment berth returned.
async fn assert_rolled_out(world: &World, replicas: i32, what: &str) {
    let deployment = world.deployment("web").await;
    let status = deployment.status.clone().unwrap_or_default();
    assert_eq!(
        (
            rollout_state(&deployment),
            status.updated_replicas,
            status.available_replicas
        ),
        (RolloutState::Complete, Some(replicas), Some(replicas)),
        "{what}: {status:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_roll_out_and_rollback_returns_to_the_previous_image() {
    let world = one_site("deploy-three", "web", as_is).await;
    world.berth(["run"]).succeeds();
    let head = world.repo_head("landing");
    assert!(world.image_of("web").await.contains(&format!(":{head}@sha256:")));
    assert_rolled_out(&world, 3, "the first rollout").await;

    // Each rollback returns once its rollout is done: red when berth sets
    // the image and leaves without waiting.
    world.berth(["rollback", "landing"]).succeeds();
    assert_eq!(world.image_of("web").await, world.busybox());
    assert_rolled_out(&world, 3, "the rollback").await;
    world
        .berth(["rollback", "landing", "--to", &head[..10]])
        .succeeds();
    assert!(world.image_of("web").await.contains(&head));
    assert_rolled_out(&world, 3, "the rollback --to").await;
}

/// `berth run` fails naming each of `expected`, rolls back, and is done
/// with it within 80 s of setting the image (the deploy stage's own
/// duration in the report: the build before it does not count).
async fn assert_fails_and_rolls_back(world: &World, expected: &[&str]) {
    let before = world.image_of("web").await;
    let ran = world
        .berth(["run", "--json"])
        .fails_with(exit::SITE_FAILED)
        .has_all(expected)
        .has("rolled back: the previous version");
    assert_eq!(
        world.image_of("web").await,
        before,
        "the Deployment runs its previous image again"
    );
    let deployment = world.deployment("web").await;
    assert_eq!(rollout_state(&deployment), RolloutState::Complete);
    let deploy = ran.json()["sites"][0]["durations"]["deploy"]
        .as_f64()
        .unwrap_or_else(|| panic!("no deploy duration:\n{ran}"));
    assert!(
        deploy < 80.0,
        "failed fast: the deploy stage took {deploy:.1}s:\n{ran}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_image_is_diagnosed_and_rolled_back() {
    let world = one_site("deploy-broken", "broken-web", as_is).await;
    let image_prefix = format!("{}/{}/broken-web:", world.stack.registry, world.prefix);
    assert_fails_and_rolls_back(&world, &["ImagePullBackOff", &image_prefix]).await;
    // The only earlier revision is the failed one: rollback says so and
    // touches nothing.
    let generation = world.generation("web").await;
    world
        .berth(["rollback", "landing"])
        .fails_with(exit::SITE_FAILED)
        .has("no earlier revision is known to be good")
        .has("its rollout failed and was rolled back")
        .has("--to COMMIT");
    assert_eq!(world.generation("web").await, generation);
    assert_eq!(world.image_of("web").await, world.busybox());
}

/// A good ship, another, then one the cluster cannot pull (rolled back):
/// `berth rollback` goes past the failed revision to the good one before
/// it, naming what it skipped and why; `--to` still tries the failed one;
/// and a machine whose run log knows nothing skips it by the lease alone.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_goes_past_a_revision_that_failed_to_the_newest_good_one() {
    let world = one_site("deploy-rollback-skip", "web", as_is).await;
    let url = world.url("landing");
    let page = |text: &str| world.commit(&url, "main", &[("index.html", text)], text);
    let first = world.repo_head("landing");
    world.berth(["run"]).succeeds();
    let second = page("<h1>second</h1>\n");
    world.berth(["run"]).succeeds();
    let broken = page("<h1>broken</h1>\n");
    let mut pipeline = world.landing_pipeline().with_rollout_timeout("90s");
    pipeline.site_mut("landing").image = world.image("broken-web");
    world.write_pipeline(&pipeline);
    assert_fails_and_rolls_back(&world, &["ImagePullBackOff"]).await;
    assert!(world.image_of("web").await.contains(&second));

    // Revisions: 1 busybox, 2 first, 4 broken, 5 second (current, was 3).
    let skipped = format!(
        "skipped revision 4 (commit {}…): its rollout failed and was rolled back",
        &broken[..12]
    );
    let ran = world
        .berth(["rollback", "landing", "--json"])
        .succeeds()
        .has("rollback ok   to revision 2 (")
        .has(&skipped);
    assert!(
        world.image_of("web").await.contains(&format!(":{first}@sha256:")),
        "the good revision before the failed one runs:\n{ran}"
    );
    let report = ran.json();
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
    world
        .berth(["rollback", "landing", "--to", &broken[..10]])
        .fails_with(exit::SITE_FAILED)
        .has("rollback warn revision 4 (commit")
        .has("trying it, as --to asks")
        .has("ImagePullBackOff");
    assert!(world.image_of("web").await.contains(&format!(":{first}@sha256:")));

    // Another machine (its own state dir, no run log): the lease's passed
    // record alone says berth shipped the broken image and it never passed.
    let ran = world
        .berth(["rollback", "landing", "--state-dir", "other-machine"])
        .succeeds()
        .has(&format!(
            "(commit {}…): berth shipped it, but it never passed",
            &broken[..12]
        ));
    assert!(
        world
            .image_of("web")
            .await
            .contains(&format!(":{second}@sha256:")),
        "{ran}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loop_is_diagnosed_and_rolled_back() {
    let world = one_site("deploy-crash", "crash-web", as_is).await;
    assert_fails_and_rolls_back(&world, &["CrashLoopBackOff", "restarted"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_that_never_gets_ready_fails_at_the_progress_deadline_and_is_rolled_back() {
    let world = one_site("deploy-notready", "notready-web", as_is).await;
    assert_fails_and_rolls_back(&world, &["exceeded its progress deadline", "NotReady"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_warns_about_recreate_and_missing_probes_and_strict_refuses() {
    let world = one_site("deploy-preflight", "web", two_replicas(Strategy::Recreate, false)).await;

    world
        .assert_strict_refuses(&[
            "strategy Recreate",
            "set spec.strategy.type: RollingUpdate",
            "no readiness probe",
            "add a readinessProbe",
        ])
        .await;

    world
        .berth(["run"])
        .succeeds()
        .has("preflight warn")
        .has("strategy Recreate");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_strategy_that_drops_every_pod_is_flagged() {
    let every_pod = Strategy::RollingUpdate {
        max_unavailable: IntOrString::String("100%".into()),
        max_surge: IntOrString::Int(0),
    };
    let world = one_site("deploy-drop", "web", two_replicas(every_pod, true)).await;
    world
        .berth(["run", "--strict"])
        .fails_with(exit::SITE_FAILED)
        .has("may take every ready pod away")
        .has("maxUnavailable: 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_commit_is_refused_unless_allowed() {
    let world = one_site("deploy-older", "web", as_is).await;
    let older = world.repo_head("landing");
    let newer = world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>newer</h1>\n")],
        "Newer page",
    );
    world.berth(["ship", "landing", "--commit", &newer]).succeeds();

    world
        .berth(["ship", "landing", "--commit", &older[..9]])
        .fails_with(exit::SITE_FAILED)
        .has("is older than the deployed")
        .has("--allow-older");
    assert!(world.image_of("web").await.contains(&newer));

    world
        .berth(["ship", "landing", "--commit", &older, "--allow-older"])
        .succeeds();
    assert!(world.image_of("web").await.contains(&older));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lease_makes_berth_wait_then_fail_naming_the_holder_and_a_freed_one_is_taken() {
    let world = one_site("deploy-lease", "web", as_is).await;
    world.hold_lease("nightly-runner on build-host", 0).await;
    let generation = world.generation("web").await;
    world
        .berth(["run", "--lock-wait", "3s"])
        .fails_with(exit::SITE_FAILED)
        .has("is being deployed by nightly-runner on build-host");
    assert_eq!(world.generation("web").await, generation);

    // Freed (as berth's release does): taken at once. A crashed holder's
    // lease expires by berth's clock (`lease::` tests).
    world.free_lease().await;
    world.berth(["run", "--lock-wait", "3s"]).succeeds();
    // Released afterwards: no holder left.
    let api: Api<Lease> = Api::namespaced(kube_client().await, &world.namespace);
    let lease = api.get("berth-web").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None);
}

/// What happened to Deployment `web` and its lease.
#[derive(Debug, Clone)]
enum Happened {
    /// The lease, held by `holder` (empty: by nobody).
    Lease { holder: String },
    /// The Deployment, running `image`, its rollout in `state`.
    Deployment { image: String, state: RolloutState },
}

/// Deployment `web` and its lease, watched from the test: every version of
/// each in the API server's order (their resourceVersions, one etcd's
/// revisions, which grow with every write to either).
struct Timeline {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(u64, Happened)>>>,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Timeline {
    async fn watch(world: &World) -> Self {
        use futures_util::StreamExt as _;
        use kube::runtime::{WatchStreamExt as _, watcher};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let client = kube_client().await;
        let version = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| -> u64 {
            meta.resource_version.as_deref().unwrap().parse().unwrap()
        };
        let leases: Api<Lease> = Api::namespaced(client.clone(), &world.namespace);
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(client, &world.namespace);
        let record = seen.clone();
        let lease_watch = tokio::spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=berth-web");
            let mut stream = watcher(leases, config).applied_objects().boxed();
            while let Some(Ok(lease)) = stream.next().await {
                let holder = lease
                    .spec
                    .and_then(|spec| spec.holder_identity)
                    .unwrap_or_default();
                record
                    .lock()
                    .unwrap()
                    .push((version(&lease.metadata), Happened::Lease { holder }));
            }
        });
        let record = seen.clone();
        let deployment_watch = tokio::spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=web");
            let mut stream = watcher(deployments, config).applied_objects().boxed();
            while let Some(Ok(deployment)) = stream.next().await {
                let happened = Happened::Deployment {
                    image: crate::support::image_of(&deployment),
                    state: rollout_state(&deployment),
                };
                record
                    .lock()
                    .unwrap()
                    .push((version(&deployment.metadata), happened));
            }
        });
        Self {
            seen,
            watches: vec![lease_watch, deployment_watch],
        }
    }

    /// Everything seen, in the API server's order, each version once.
    fn stop(self) -> Vec<Happened> {
        for watch in &self.watches {
            watch.abort();
        }
        let mut seen = std::mem::take(&mut *self.seen.lock().unwrap());
        seen.sort_by_key(|(version, _)| *version);
        seen.dedup_by_key(|(version, _)| *version);
        seen.into_iter().map(|(_, happened)| happened).collect()
    }
}

/// Red when the two ships do not overlap (each must wait for the lease the
/// test holds before either may take it), when either sets the image
/// without holding the lease, when the lease passes on before the rollout
/// of its holder is complete, when one ship is not ordered after the other
/// by the lease (both must hold it, one after the other), and when the older
/// commit runs at the end.
#[tokio::test(flavor = "multi_thread")]
#[expect(
    clippy::too_many_lines,
    reason = "two ships, the lease and the Deployment followed from start to end, read as one story"
)]
async fn two_concurrent_ships_never_interleave_and_the_newer_commit_wins() {
    let world = one_site("deploy-concurrent", "web", as_is).await;
    world.wait_until_rolled_out("web").await;
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
    // The test holds the lease, renewed, until both ships wait for it: then
    // they overlap, and only the lease orders them.
    let test = "the test, until both ships wait";
    world.hold_lease(test, 0).await;
    let timeline = Timeline::watch(&world).await;
    // Two CI runners: each its own state folder (one folder's mirror lock
    // would make the second wait for the first's whole run).
    let ships = [
        world
            .berth(["ship", "landing", "--commit", &newer, "--state-dir", "runner-1"])
            .spawn(),
        world
            .berth(["ship", "landing", "--commit", &older, "--state-dir", "runner-2"])
            .spawn(),
    ];
    let waiting = tokio::task::spawn_blocking(move || {
        let mut ships = ships;
        for ship in &mut ships {
            ship.wait_for(&format!("waiting for {test}"), crate::support::SPAWN_DEADLINE);
        }
        ships
    });
    tokio::pin!(waiting);
    let ships = loop {
        tokio::select! {
            done = &mut waiting => {
                break done.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
            }
            () = tokio::time::sleep(Duration::from_secs(5)) => world.hold_lease(test, 0).await,
        }
    };
    let commits = [(ships[0].id(), newer.as_str()), (ships[1].id(), older.as_str())];
    world.free_lease().await;
    let [newer_ship, older_ship] = ships;
    newer_ship.wait().exited(exit::OK);
    // The older one deployed before the newer (then the newer followed), or
    // came second and was refused.
    let older_ran = older_ship.wait();
    if !older_ran.exit_is(exit::OK) {
        older_ran
            .exited(exit::SITE_FAILED)
            .has("is older than the deployed");
    }
    assert!(
        world.image_of("web").await.contains(&newer),
        "the newer commit runs at the end"
    );

    // The Deployment and its lease, from the first look to the end.
    let happened = timeline.stop();
    let ship_of = |holder: &str| {
        commits
            .iter()
            .find(|(pid, _)| holder.contains(&format!(", pid {pid} (")))
            .map(|(_, commit)| *commit)
    };
    let mut holder = String::new();
    let mut holders = Vec::new();
    let mut image: Option<&String> = None;
    // Set in the present holder's tenure: the image and its rollout's state since.
    let mut set: Option<(&String, &RolloutState)> = None;
    let passed_on = |holder: &str, set: Option<(&String, &RolloutState)>| {
        if let Some((image, state)) = set {
            assert_eq!(
                *state,
                RolloutState::Complete,
                "the lease of {holder} passed on while its rollout of {image} went on: {happened:#?}"
            );
        }
    };
    for event in &happened {
        match event {
            Happened::Lease { holder: next } if *next != holder => {
                passed_on(&holder, set.take());
                holder.clone_from(next);
                holders.push(holder.clone());
            }
            Happened::Lease { .. } => {}
            Happened::Deployment { image: now, state } => {
                if image.is_some_and(|before| before != now) {
                    let commit = ship_of(&holder).unwrap_or_else(|| {
                        panic!("{now} was set while {holder:?} held the lease: {happened:#?}")
                    });
                    assert!(
                        now.contains(commit),
                        "{holder} set {now}, not its commit {commit}: {happened:#?}"
                    );
                    set = Some((now, state));
                }
                if let Some((_, last)) = &mut set {
                    *last = state;
                }
                image = Some(now);
            }
        }
    }
    passed_on(&holder, set.take());
    let ships_holding: Vec<&str> = holders.iter().filter_map(|holder| ship_of(holder)).collect();
    assert_eq!(
        ships_holding.len(),
        2,
        "each ship held the lease once, one after the other: {holders:#?}"
    );
    assert_ne!(
        ships_holding[0], ships_holding[1],
        "the two tenures were the two ships, not one ship twice: {holders:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_rbac_suffices_and_a_missing_verb_is_named() {
    let world = one_site("deploy-rbac", "web", as_is).await;
    let rbac = crate::support::repo_root().join("docs/rbac.yaml");
    let applied = world.kubectl(&["apply", "-f", rbac.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied));
    let kubeconfig = world.token_kubeconfig("berth");
    // The documented RBAC suffices.
    world.berth(["run"]).env("KUBECONFIG", &kubeconfig).succeeds();

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
    let kubeconfig = world.token_kubeconfig("berth-no-patch");
    world
        .berth(["run"])
        .env("KUBECONFIG", &kubeconfig)
        .fails_with(exit::SITE_FAILED)
        .has("permission missing: berth may not `patch` deployments in namespace")
        .has("docs/rbac.yaml");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_scaled_to_zero_ships_with_nothing_to_check() {
    let world = one_site("deploy-zero", "web", |web| {
        two_replicas(Strategy::one_at_a_time(), true)(web).replicas(0)
    })
    .await;
    let report = world
        .berth(["run", "--json"])
        .succeeds()
        .has("0 replicas: nothing serves, nothing to check")
        .json();
    crate::support::validate_against("report.schema.json", &report);
    assert_eq!(report["sites"][0]["verification"]["replicas"], 0, "{report:#}");
    assert!(world.image_of("web").await.contains(&world.repo_head("landing")));
}

/// An image set behind berth's back (`kubectl set image`, a manual rollback)
/// leaves berth's annotations describing another image: plan and ship both
/// see that the source is not what runs, and ship sets it again.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_set_behind_berths_back_is_shipped_again_not_called_unchanged() {
    let world = one_site("deploy-set-image", "web", as_is).await;
    let first = world.repo_head("landing");
    world.berth(["ship", "landing", "--commit", &first]).succeeds();
    let first_image = world.image_of("web").await;
    let second = world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>second</h1>\n")],
        "Second page",
    );
    world.berth(["ship", "landing", "--commit", &second]).succeeds();
    let second_image = world.image_of("web").await;

    let set = world.kubectl(&["set", "image", "deployment/web", &format!("web={first_image}")]);
    assert!(set.status.success(), "{}", text(&set));
    let plan = world.berth(["plan", "--json"]).json();
    let entry = &plan["sites"][0];
    assert_eq!(entry["action"], "deploy", "{entry}");
    // kubectl's `Update` owns the image now, but nothing applies it again.
    assert!(!entry["preflight"].to_string().contains("helm"), "{entry}");

    let ran = world
        .berth(["ship", "landing", "--commit", &second])
        .succeeds()
        .lacks("unchanged");
    assert_eq!(world.image_of("web").await, second_image, "{ran}");
}
