//! A site whose image moved: its `image` renamed, its `[registry] address`
//! changed, or an environment with a registry of its own. The running image
//! serves the same files, but from a repository the configuration no longer
//! names: berth ships to the new one (build and push, then a rollout), `plan`
//! and `status` say so first, and the next run is `unchanged`.

use serde_json::Value;

use crate::support::{Credentials, EnvironmentSpec, Pipeline, Registry, World, image_of};

const USER_ENV: &str = "MOVED_REGISTRY_USER";
const PASSWORD_ENV: &str = "MOVED_REGISTRY_PASSWORD";

/// The `landing` site on Deployment `web` (kwok), shipped once to the open
/// registry; returns the world, its pipeline and the head commit.
async fn shipped_once(test: &str) -> (World, Pipeline, String) {
    let world = World::new(test).await;
    world.copy_repo("landing");
    world.kwok_deployment("web", &world.busybox()).create().await;
    let pipeline = world.landing_pipeline();
    world.write_pipeline(&pipeline);
    let report = world.berth(["run", "--json"]).json();
    assert_eq!(report["sites"][0]["action"], "deployed", "{report:#}");
    let commit = world.repo_head("landing");
    (world, pipeline, commit)
}

/// The auth registry, with its credentials read from the environment.
fn auth_registry(world: &World) -> Registry {
    Registry {
        address: world.stack.auth_registry.clone(),
        credentials: Credentials::Env {
            username_env: USER_ENV.into(),
            password_env: PASSWORD_ENV.into(),
        },
        keep_last: None,
        keep_days: None,
    }
}

/// The tags of `repository` (`<registry>/<path>`) in the stack's open or auth registry.
fn tags(world: &World, repository: &str) -> Vec<String> {
    let (registry, path) = repository.split_once('/').unwrap();
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sS", &format!("http://{registry}/v2/{path}/tags/list")]);
    if registry == world.stack.auth_registry {
        curl.args([
            "-u",
            &format!("{}:{}", world.stack.auth_username, world.stack.auth_password),
        ]);
    }
    let output = curl.output().unwrap();
    let body: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    body["tags"]
        .as_array()
        .map(|tags| tags.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// With the pipeline file now `after`: `status` names the repository the site
/// ships to, `plan` says it moves and ships, `run` builds, pushes there and
/// rolls out, and the next `run` and `plan` say `unchanged`.
async fn ships_to_the_new_repository(
    world: &World,
    after: &Pipeline,
    args: &[&str],
    from: &str,
    to: &str,
    commit: &str,
) {
    world.write_pipeline(after);
    let berth = |verb: &str| {
        world
            .berth([verb])
            .args(args)
            .arg("--json")
            .env(USER_ENV, &world.stack.auth_username)
            .env(PASSWORD_ENV, &world.stack.auth_password)
    };
    let moved = format!("image moved from {from} to {to}");
    let before = world.deployment("web").await;
    assert!(
        image_of(&before).starts_with(&format!("{from}:")),
        "{}",
        image_of(&before)
    );
    assert!(tags(world, to).is_empty(), "{to} holds nothing yet");

    let status = berth("status").json();
    crate::support::validate_against("status.schema.json", &status);
    assert_eq!(status["sites"][0]["ships_to"], to, "{status:#}");

    let plan = berth("plan").json();
    crate::support::validate_against("plan.schema.json", &plan);
    assert_eq!(plan["sites"][0]["action"], "build-and-deploy", "{plan:#}");
    assert_eq!(plan["sites"][0]["reason"], moved.as_str(), "{plan:#}");

    let ran = berth("run")
        .succeeds()
        .has(&format!("{moved}: shipping it there"));
    let report = ran.json();
    crate::support::validate_against("report.schema.json", &report);
    let site = &report["sites"][0];
    assert_eq!(site["action"], "deployed", "{ran}");
    assert_eq!(site["reason"], moved.as_str(), "{ran}");
    let after_run = world.deployment("web").await;
    let image = image_of(&after_run);
    assert!(image.starts_with(&format!("{to}:{commit}@sha256:")), "{image}");
    assert!(
        after_run.metadata.generation > before.metadata.generation,
        "the image was set, so a rollout follows"
    );
    assert_eq!(tags(world, to), [commit.to_string()], "pushed to {to}");

    // Settled: the next run and plan see the site unchanged, and status names no move.
    let report = berth("run").json();
    assert_eq!(report["sites"][0]["action"], "unchanged", "{report:#}");
    let plan = berth("plan").json();
    assert_eq!(plan["sites"][0]["action"], "unchanged", "{plan:#}");
    let status = berth("status").json();
    assert_eq!(status["sites"][0]["ships_to"], Value::Null, "{status:#}");
    assert_eq!(image_of(&world.deployment("web").await), image, "nothing changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_image_is_shipped_to_its_new_name() {
    let (world, mut pipeline, commit) = shipped_once("moved-name").await;
    let from = format!("{}/{}", world.stack.registry, world.image("landing"));
    let renamed = world.image("landing-renamed");
    pipeline.site_mut("landing").image.clone_from(&renamed);
    let to = format!("{}/{renamed}", world.stack.registry);
    ships_to_the_new_repository(&world, &pipeline, &[], &from, &to, &commit).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_whose_registry_changed_is_shipped_to_the_new_registry() {
    let (world, mut pipeline, commit) = shipped_once("moved-registry").await;
    let from = format!("{}/{}", world.stack.registry, world.image("landing"));
    pipeline.registry = auth_registry(&world);
    let to = format!("{}/{}", world.stack.auth_registry, world.image("landing"));
    ships_to_the_new_repository(&world, &pipeline, &[], &from, &to, &commit).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_environment_with_a_registry_of_its_own_is_shipped_there() {
    let (world, mut pipeline, commit) = shipped_once("moved-environment").await;
    let from = format!("{}/{}", world.stack.registry, world.image("landing"));
    // The same Deployment, now the production environment's, whose images
    // live in the auth registry.
    pipeline.environments = vec![EnvironmentSpec {
        name: "production".into(),
        context: Some(std::env::var("BERTH_STACK_CONTEXT").unwrap()),
        namespace: Some(world.namespace.clone()),
        registry: Some(auth_registry(&world)),
        ..EnvironmentSpec::default()
    }];
    let to = format!("{}/{}", world.stack.auth_registry, world.image("landing"));
    ships_to_the_new_repository(&world, &pipeline, &["--env", "production"], &from, &to, &commit).await;
}
