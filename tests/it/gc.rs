//! `berth gc` on the stack's registries: a site shipped past its keep
//! policy, with a rollback, a Git tag and other tools' tags in the same
//! repository; a dry run lists exactly what goes, `--delete` deletes it, what
//! stays still pulls and rolls back; a registry that refuses deletes is an
//! error that leaves everything as it was.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::support::{DeploymentBuilder, OwnRegistry, Probe, World, exit, git, text, validate_against};

/// A Deployment `web` on kwok's node, on the busybox base, that keeps
/// `history` old ReplicaSets (so that old images are not all revisions).
fn deployment(world: &World, history: i32) -> DeploymentBuilder {
    world
        .kwok_deployment("web", &world.busybox())
        .revision_history_limit(history)
        .readiness(Probe::http("/").every(1))
        .pre_stop(1)
}

/// The tags of `repository` in the registry at `registry` (`host:port`), over HTTP.
fn tags(registry: &str, repository: &str) -> BTreeSet<String> {
    let port: u16 = registry.rsplit_once(':').unwrap().1.parse().unwrap();
    let (status, body) = crate::support::http_get(port, &format!("/v2/{repository}/tags/list")).unwrap();
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    listed["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn docker(args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

/// Waits until Deployment `web` has at most `count` ReplicaSets (the
/// controller prunes old ones to `revisionHistoryLimit` after a rollout).
async fn wait_for_replica_sets(world: &World, count: usize) {
    let api: Api<ReplicaSet> = Api::namespaced(crate::support::kube_client().await, &world.namespace);
    for _ in 0..120 {
        let listed = api.list(&ListParams::default().labels("app=web")).await.unwrap();
        if listed.items.len() <= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Deployment web still has more than {count} ReplicaSets");
}

/// Ships one commit of `landing` per page text, each with its own image.
fn ship_commits(world: &World, url: &str, pages: &[&str]) -> Vec<String> {
    pages
        .iter()
        .map(|page| {
            let commit = world.commit(url, "main", &[("index.html", page)], page);
            world.berth(["ship", "landing", "--commit", &commit]).succeeds();
            commit
        })
        .collect()
}

/// The images of a `gc --json` site entry whose action is `action`, by commit.
fn with_action(site: &serde_json::Value, action: &str) -> BTreeSet<String> {
    site["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|image| image["action"] == action)
        .map(|image| image["commit"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_keeps_what_may_be_needed_and_deletes_only_the_rest() {
    let world = World::new("gc-policy").await;
    let url = world.copy_repo("landing");
    deployment(&world, 1).create().await;
    let mut pipeline = world.landing_pipeline();
    pipeline.site_mut("landing").keep_last = Some(2);
    pipeline.site_mut("landing").keep_days = Some(0);
    world.write_pipeline(&pipeline);
    let commits = ship_commits(
        &world,
        &url,
        &[
            "<h1>one</h1>",
            "<h1>two</h1>",
            "<h1>three</h1>",
            "<h1>four</h1>",
            "<h1>five</h1>",
            "<h1>six</h1>",
        ],
    );
    // Back to five: six stays a revision (the one old ReplicaSet kept).
    world.berth(["rollback", "landing"]).succeeds();
    assert!(world.image_of("web").await.contains(&commits[4]));
    wait_for_replica_sets(&world, 2).await;
    // A Git tag on two; another tool's tags: `stable` on one's image, `latest` on its own image.
    git(&world.repo_path(&url), &["tag", "v1", &commits[1]]);
    let repository = format!("{}/{}", world.stack.registry, world.image("landing"));
    let one = format!("{repository}:{}", commits[0]);
    for (source, tag) in [(one.as_str(), "stable"), (world.busybox().as_str(), "latest")] {
        assert!(docker(&["pull", "-q", source]).status.success());
        assert!(
            docker(&["tag", source, &format!("{repository}:{tag}")])
                .status
                .success()
        );
        let pushed = docker(&["push", "-q", &format!("{repository}:{tag}")]);
        assert!(pushed.status.success(), "{}", text(&pushed));
    }
    let path = world.image("landing");
    let before = tags(&world.stack.registry, &path);
    assert_eq!(before.len(), 8, "{before:?}");

    // The dry run: six images of the site; three and four go, and why each other stays.
    let dry = world.berth(["gc", "--json"]).json();
    validate_against("gc.schema.json", &dry);
    assert_eq!(dry["delete"], false);
    let site = &dry["sites"][0];
    assert_eq!(site["images"].as_array().unwrap().len(), 6, "{dry:#}");
    let expected: BTreeSet<String> = [commits[2].clone(), commits[3].clone()].into();
    assert_eq!(with_action(site, "delete"), expected, "{dry:#}");
    let reasons = |commit: &str| -> String {
        let image = site["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["commit"] == commit)
            .unwrap();
        image["reasons"].to_string()
    };
    assert!(reasons(&commits[0]).contains("also tagged stable"), "{dry:#}");
    assert!(reasons(&commits[1]).contains("tag v1"), "{dry:#}");
    assert!(reasons(&commits[4]).contains("running"), "{dry:#}");
    assert!(reasons(&commits[5]).contains("revision"), "{dry:#}");
    assert!(reasons(&commits[5]).contains("newest 1 of 2"), "{dry:#}");
    assert_eq!(site["other_tags"], json!(["latest"]), "{dry:#}");
    assert_eq!(
        tags(&world.stack.registry, &path),
        before,
        "a dry run deletes nothing"
    );
    world.berth(["gc"]).succeeds().has("dry run: nothing was deleted");

    // A deploy holds the lease: gc waits for it, then gives up, deleting nothing.
    world.hold_lease("berth ship on ci-runner", 0).await;
    world
        .berth(["gc", "--delete", "--lock-wait", "2s"])
        .fails_with(exit::SITE_FAILED)
        .has("berth ship on ci-runner");
    assert_eq!(
        tags(&world.stack.registry, &path),
        before,
        "nothing deleted while the lease is held"
    );
    world.free_lease().await;

    // --delete: exactly those two go; other tools' tags and the kept images stay.
    let done = world.berth(["gc", "--delete", "--json"]).json();
    validate_against("gc.schema.json", &done);
    assert_eq!(with_action(&done["sites"][0], "deleted"), expected, "{done:#}");
    let after = tags(&world.stack.registry, &path);
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(gone, expected, "{after:?}");
    assert!(after.contains("latest") && after.contains("stable"), "{after:?}");
    assert_eq!(world.leases_held().await, 0, "gc frees its leases");

    assert_kept_ones_pull_and_roll_back(&world, &repository, &commits, &expected).await;

    // Nothing more to delete.
    let again = world.berth(["gc", "--delete", "--json"]).json();
    assert_eq!(again["sites"][0]["deleted"], 0, "{again:#}");
}

/// What stays pulls (from the registry, not this Engine's copy) and what
/// went (`deleted`) does not; `berth rollback` still reaches the kept
/// revision (six) and goes back to what ran (five).
async fn assert_kept_ones_pull_and_roll_back(
    world: &World,
    repository: &str,
    commits: &[String],
    deleted: &BTreeSet<String>,
) {
    for (index, commit) in commits.iter().enumerate() {
        let reference = format!("{repository}:{commit}");
        let _ = docker(&["rmi", "-f", &reference]);
        let pulled = docker(&["pull", "-q", &reference]).status.success();
        assert_eq!(
            pulled,
            !deleted.contains(commit),
            "image {} ({commit})",
            index + 1
        );
    }
    // berth rollback still reaches every kept revision.
    world.berth(["rollback", "landing"]).succeeds();
    assert!(world.image_of("web").await.contains(&commits[5]));
    world
        .berth(["rollback", "landing", "--to", &commits[4]])
        .succeeds();
    assert!(world.image_of("web").await.contains(&commits[4]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_refuses_deletes_is_an_error_and_nothing_is_deleted() {
    let registry = OwnRegistry::start(false);
    let world = World::new("gc-refused").await;
    let url = world.copy_repo("landing");
    deployment(&world, 0).create().await;
    let mut pipeline = world.landing_pipeline();
    // The policy of the registry this time: one image, whatever its age.
    pipeline.registry.address.clone_from(&registry.address);
    pipeline.registry.keep_last = Some(1);
    pipeline.registry.keep_days = Some(0);
    world.write_pipeline(&pipeline);
    ship_commits(&world, &url, &["<h1>a</h1>", "<h1>b</h1>", "<h1>c</h1>"]);
    wait_for_replica_sets(&world, 1).await;
    let path = world.image("landing");
    let before = tags(&registry.address, &path);
    assert_eq!(before.len(), 3);

    let dry = world.berth(["gc", "--json"]).json();
    assert_eq!(
        dry["sites"][0]["deleted"], 2,
        "a and b (c runs, and is the newest): {dry:#}"
    );
    world
        .berth(["gc", "--delete"])
        .fails_with(exit::SITE_FAILED)
        .has("does not allow deletes")
        .has("storage.delete.enabled");
    assert_eq!(tags(&registry.address, &path), before, "nothing was deleted");
    assert_eq!(world.leases_held().await, 0, "no lease left held");
    world
        .berth(["gc", "no-such-site"])
        .fails_with(exit::USAGE)
        .has("no site named `no-such-site`");
}

/// The digest the registry at `registry` holds for `repository:tag` (curl's HEAD).
fn tag_digest(registry: &str, repository: &str, tag: &str) -> String {
    let output = std::process::Command::new("curl")
        .args([
            "-sfI",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            &format!("http://{registry}/v2/{repository}/manifests/{tag}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("docker-content-digest")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no digest for {repository}:{tag}: {}", text(&output)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ship_whose_image_is_deleted_while_it_waits_for_the_lease_touches_nothing() {
    let world = World::new("gc-race").await;
    let url = world.copy_repo("landing");
    deployment(&world, 1).create().await;
    world.write_pipeline(&world.landing_pipeline());
    let commits = ship_commits(&world, &url, &["<h1>old</h1>", "<h1>new</h1>"]);
    let running = world.image_of("web").await;
    // Shipping the old commit again finds its image in the registry and
    // waits for the lease a gc (here: the test) holds while it deletes that image.
    world.hold_lease("berth gc on nightly-runner", 0).await;
    let ship = world
        .berth([
            "ship",
            "landing",
            "--commit",
            &commits[0],
            "--allow-older",
            "--lock-wait",
            "60s",
        ])
        .spawn_until("waiting for berth gc on nightly-runner");
    let path = world.image("landing");
    let digest = tag_digest(&world.stack.registry, &path, &commits[0]);
    let deleted = std::process::Command::new("curl")
        .args([
            "-sf",
            "-X",
            "DELETE",
            &format!("http://{}/v2/{path}/manifests/{digest}", world.stack.registry),
        ])
        .status()
        .unwrap();
    assert!(deleted.success());
    world.free_lease().await;
    ship.wait()
        .exited(exit::SITE_FAILED)
        .has("is no longer in the registry");
    assert_eq!(
        world.image_of("web").await,
        running,
        "the Deployment was not touched"
    );
    assert_eq!(world.leases_held().await, 0);
}
