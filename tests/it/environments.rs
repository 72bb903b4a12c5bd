//! Environments on the stack: staging is the test's namespace, reached as the
//! stack's admin, with the open registry; production is a second namespace,
//! reached through the stack's second kubeconfig context (its own user, whom
//! RBAC lets into that namespace only), with the registry that wants a
//! password. A site is shipped to staging and promoted to production, where
//! the real node pulls it from the other registry by the same digest.

use std::process::{Command, Output};

use kube::api::Api;
use serde_json::{Value, json};

use crate::support::{
    Berth, Credentials, EnvironmentSpec, Notify, Pipeline, Registry, SiteEnvironmentSpec, World, exit,
    http_receiver, image_of, kube_client, text, validate_against,
};

const GOOD: &str = "FROM berth-base:busybox\nCOPY . /www/\n";
const CRASHING: &str = "FROM berth-base:busybox\nCOPY . /www/\nENTRYPOINT [\"/bin/sh\", \"-c\", \"echo 'landing: broken on purpose' >&2; exit 3\"]\n";

/// The `landing` site with two environments, each with Deployment `web`.
struct Environments {
    world: World,
    url: String,
    production: String,
    /// The pipeline file written, to change and write again.
    pipeline: Pipeline,
}

fn stack_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} (run `eval \"$(scripts/stack env)\"`)"))
}

fn kubectl(args: &[&str]) -> Output {
    Command::new(stack_env("BERTH_STACK_KUBECTL"))
        .args(args)
        .output()
        .expect("run kubectl")
}

impl Environments {
    /// `real_node`: the Deployments run on the real node (else on kwok).
    async fn new(test: &str, real_node: bool) -> Self {
        let world = World::new(test).await;
        let url = world.copy_repo("landing");
        world.commit(&url, "main", &[("Dockerfile", GOOD)], "Serve it our way");
        let production = format!("{}-prod", world.namespace);
        for args in [
            vec!["create", "namespace", &production],
            vec!["label", "namespace", &production, "berth.dev/test=true"],
        ] {
            let output = kubectl(&args);
            assert!(output.status.success(), "{}", text(&output));
        }
        let role = stack_env("BERTH_STACK_CLUSTER_ROLE");
        let user = stack_env("BERTH_STACK_PRODUCTION_USER");
        let server = format!("--docker-server={}", world.stack.auth_registry);
        let username = format!("--docker-username={}", world.stack.auth_username);
        let password = format!("--docker-password={}", world.stack.auth_password);
        for args in [
            vec![
                "-n",
                &production,
                "create",
                "rolebinding",
                "berth",
                "--clusterrole",
                &role,
                "--user",
                &user,
            ],
            vec![
                "-n",
                &production,
                "create",
                "secret",
                "docker-registry",
                "auth-registry",
                &server,
                &username,
                &password,
            ],
        ] {
            let output = kubectl(&args);
            assert!(output.status.success(), "{}", text(&output));
        }
        let web = if real_node {
            world.real_node_deployment("web", &world.stack.placeholder_image)
        } else {
            world.kwok_deployment("web", &world.busybox())
        };
        web.clone().create().await;
        web.in_namespace(&production)
            .pull_secret("auth-registry")
            .create()
            .await;

        let mut pipeline = world.landing_pipeline().with_rollout_timeout("90s");
        pipeline.site_mut("landing").dockerfile = Some("Dockerfile".into());
        pipeline.environments = vec![
            EnvironmentSpec {
                name: "staging".into(),
                context: Some(stack_env("BERTH_STACK_CONTEXT")),
                namespace: Some(world.namespace.clone()),
                ..EnvironmentSpec::default()
            },
            EnvironmentSpec {
                name: "production".into(),
                context: Some(stack_env("BERTH_STACK_PRODUCTION_CONTEXT")),
                namespace: Some(production.clone()),
                promote_from: Some("staging".into()),
                registry: Some(Registry {
                    address: world.stack.auth_registry.clone(),
                    credentials: Credentials::Env {
                        username_env: "PRODUCTION_REGISTRY_USER".into(),
                        password_env: "PRODUCTION_REGISTRY_PASSWORD".into(),
                    },
                    keep_last: None,
                    keep_days: None,
                }),
                ..EnvironmentSpec::default()
            },
        ];
        world.write_pipeline(&pipeline);
        Self {
            world,
            url,
            production,
            pipeline,
        }
    }

    /// Writes the pipeline again after `change`.
    fn rewrite(&mut self, change: impl FnOnce(&mut Pipeline)) {
        change(&mut self.pipeline);
        self.world.write_pipeline(&self.pipeline);
    }

    /// `berth ARGS...` with the production registry's credentials.
    fn berth<const N: usize>(&self, args: [&str; N]) -> Berth {
        self.world
            .berth(args)
            .env("PRODUCTION_REGISTRY_USER", &self.world.stack.auth_username)
            .env("PRODUCTION_REGISTRY_PASSWORD", &self.world.stack.auth_password)
    }

    async fn production_image(&self) -> String {
        let api: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(kube_client().await, &self.production);
        image_of(&api.get("web").await.unwrap())
    }

    async fn staging_image(&self) -> String {
        image_of(&self.world.deployment("web").await)
    }
}

impl Drop for Environments {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.production, "--wait=false"]);
    }
}

/// Runs `berth` to success; its `--json` report, checked against its schema.
fn succeeded(berth: Berth) -> Value {
    let report = berth.json();
    validate_against("report.schema.json", &report);
    report
}

#[tokio::test(flavor = "multi_thread")]
#[expect(clippy::too_many_lines, reason = "one scenario: ship, promote, refuse, show")]
async fn staging_is_promoted_to_production_by_digest_and_a_commit_that_failed_in_staging_is_refused() {
    let stage = Environments::new("env-promote", true).await;
    let good = stage.world.head(&stage.url, "main");

    // Shipped to the default environment: staging.
    let shipped = succeeded(stage.berth(["ship", "landing", "--commit", &good, "--json"]));
    assert_eq!(shipped["environment"], "staging", "{shipped:#}");
    assert_eq!(shipped["sites"][0]["action"], "deployed", "{shipped:#}");
    let staging_image = stage.staging_image().await;
    let digest = staging_image.rsplit_once('@').unwrap().1.to_string();
    assert!(
        staging_image.starts_with(&stage.world.stack.registry),
        "{staging_image}"
    );

    // Promoted: copied to the other registry by digest, rolled out there.
    let promoted = succeeded(stage.berth(["promote", "landing", "--to", "production", "--json"]));
    assert_eq!(promoted["environment"], "production", "{promoted:#}");
    let site = &promoted["sites"][0];
    assert_eq!(site["action"], "deployed", "{promoted:#}");
    assert_eq!(site["commit"], good.as_str(), "{promoted:#}");
    let promotion = &site["promotion"];
    assert_eq!(promotion["from"], "staging");
    assert_eq!(promotion["source_image"], staging_image.as_str(), "{promotion:#}");
    assert_eq!(promotion["source_digest"], digest.as_str(), "{promotion:#}");
    assert_eq!(promotion["target_digest"], digest.as_str(), "{promotion:#}");
    assert_eq!(promotion["same_digest"], true);
    assert_eq!(promotion["copied"], true);
    assert!(promotion["blobs_copied"].as_u64().unwrap() > 0, "{promotion:#}");
    let production_image = stage.production_image().await;
    assert_eq!(promotion["target_image"], production_image.as_str());
    assert!(
        production_image.starts_with(&format!("{}/", stage.world.stack.auth_registry))
            && production_image.ends_with(&format!("@{digest}")),
        "{production_image}"
    );
    // The real node pulled those bytes from the registry behind a password,
    // and berth checked that every ready pod runs that digest.
    let verification = &site["verification"];
    assert_eq!(verification["digest"], digest.as_str(), "{verification:#}");
    let pods = verification["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 1, "the one replica was checked: {verification:#}");
    assert!(pods.iter().all(|pod| pod["matches"] == true), "{verification:#}");
    // The production user may not touch staging: the environments are apart.
    let output = kubectl(&[
        "--context",
        &stack_env("BERTH_STACK_PRODUCTION_CONTEXT"),
        "-n",
        &stage.world.namespace,
        "auth",
        "can-i",
        "patch",
        "deployments",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "no",
        "{}",
        text(&output)
    );

    // Again: nothing to do, nothing copied.
    let again = succeeded(stage.berth(["promote", "landing", "--to", "production", "--json"]));
    assert_eq!(again["sites"][0]["action"], "up-to-date", "{again:#}");
    assert_eq!(again["sites"][0]["promotion"]["blobs_copied"], 0, "{again:#}");

    // A commit whose rollout fails in staging is rolled back there...
    let broken = stage
        .world
        .commit(&stage.url, "main", &[("Dockerfile", CRASHING)], "Break it");
    stage
        .berth(["ship", "landing", "--commit", &broken, "--json"])
        .fails_with(exit::SITE_FAILED);
    assert_eq!(stage.staging_image().await, staging_image);
    // ...and never promoted: it did not pass there.
    let report = stage
        .berth([
            "promote",
            "landing",
            "--to",
            "production",
            "--commit",
            &broken,
            "--json",
        ])
        .fails_with(exit::SITE_FAILED)
        .json();
    validate_against("report.schema.json", &report);
    let error = report["sites"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("did not pass berth's verification") && error.contains(&broken),
        "{error}"
    );
    assert_eq!(
        stage.production_image().await,
        production_image,
        "production was not touched"
    );

    // plan and status show both environments side by side.
    let status = stage.berth(["status", "--json"]).json();
    validate_against("status.schema.json", &status);
    let entries = status["sites"].as_array().unwrap();
    let entry = |environment: &str| {
        entries
            .iter()
            .find(|e| e["environment"] == environment)
            .unwrap_or_else(|| panic!("no {environment} entry: {status:#}"))
    };
    assert_eq!(entry("staging")["deployed_commit"], good.as_str(), "{status:#}");
    assert_eq!(
        entry("production")["deployed_commit"],
        good.as_str(),
        "{status:#}"
    );
    assert_eq!(entry("production")["promote"]["change"], "same", "{status:#}");
    stage
        .berth(["plan"])
        .succeeds()
        .stdout_has("ENV")
        .stdout_has("production")
        .stdout_has("same as staging");

    // History per environment: the promotion is production's, the failed ship staging's.
    let history = stage.berth(["history", "landing", "--json"]).json();
    validate_against("history.schema.json", &history);
    let environments = history["environments"].as_array().unwrap();
    let runs = |environment: &str| -> Vec<String> {
        environments
            .iter()
            .find(|h| h["environment"] == environment)
            .unwrap()["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| {
                format!(
                    "{} {}",
                    run["command"].as_str().unwrap(),
                    run["action"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(runs("staging"), ["ship deployed", "ship failed"], "{history:#}");
    assert_eq!(
        runs("production"),
        ["promote deployed", "promote up-to-date", "promote failed"],
        "{history:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_held_in_production_makes_a_promote_wait_but_not_a_ship_to_staging() {
    let stage = Environments::new("env-locks", false).await;
    let first = stage.world.head(&stage.url, "main");
    succeeded(stage.berth(["ship", "landing", "--commit", &first, "--json"]));
    // Someone else holds production's lease (a promote on another machine).
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "berth-web", "namespace": stage.production},
        "spec": {
            "holderIdentity": "berth promoting on another machine",
            "leaseDurationSeconds": 120,
            "renewTime": micro_time_now(),
            "acquireTime": micro_time_now()
        }
    });
    let file = stage.world.dir.path().join("lease.json");
    std::fs::write(&file, lease.to_string()).unwrap();
    let output = kubectl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));

    let before = stage.production_image().await;
    stage
        .berth(["promote", "landing", "--to", "production", "--lock-wait", "3s"])
        .fails_with(exit::SITE_FAILED)
        .has("berth promoting on another machine");
    assert_eq!(
        stage.production_image().await,
        before,
        "production was not touched"
    );

    // Staging's lease is another one: a ship there does not wait.
    let second = stage
        .world
        .commit(&stage.url, "main", &[("news.html", "<p>News</p>\n")], "Add news");
    let started = std::time::Instant::now();
    let shipped = succeeded(stage.berth([
        "ship",
        "landing",
        "--commit",
        &second,
        "--lock-wait",
        "3s",
        "--json",
    ]));
    assert_eq!(shipped["sites"][0]["action"], "deployed", "{shipped:#}");
    // Staging runs the new commit.
    stage
        .berth(["status", "--env", "staging"])
        .succeeds()
        .has(&second[..12]);
    eprintln!(
        "shipped to staging in {:.1}s while production was locked",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_commit_that_passed_in_staging_is_promoted_and_going_back_is_refused() {
    let stage = Environments::new("env-passed", false).await;
    let first = stage.world.head(&stage.url, "main");
    succeeded(stage.berth(["ship", "landing", "--commit", &first, "--json"]));
    let first_image = stage.staging_image().await;
    let second = stage
        .world
        .commit(&stage.url, "main", &[("news.html", "<p>News</p>\n")], "Add news");
    succeeded(stage.berth(["ship", "landing", "--commit", &second, "--json"]));
    let second_image = stage.staging_image().await;
    let digest = |image: &str| image.rsplit_once('@').unwrap().1.to_string();

    // Staging runs the second commit; the first passed there before.
    let promoted = succeeded(stage.berth([
        "promote",
        "landing",
        "--to",
        "production",
        "--commit",
        &first[..10],
        "--json",
    ]));
    assert_eq!(promoted["sites"][0]["commit"], first.as_str(), "{promoted:#}");
    assert_eq!(
        promoted["sites"][0]["promotion"]["source_image"],
        first_image.as_str(),
        "{promoted:#}"
    );
    assert!(
        stage
            .production_image()
            .await
            .ends_with(&format!("@{}", digest(&first_image)))
    );

    // What staging runs now.
    let promoted = succeeded(stage.berth(["promote", "landing", "--to", "production", "--json"]));
    assert_eq!(promoted["sites"][0]["commit"], second.as_str(), "{promoted:#}");
    assert!(
        stage
            .production_image()
            .await
            .ends_with(&format!("@{}", digest(&second_image)))
    );

    // Back to the first: an older commit than production runs, refused...
    stage
        .berth(["promote", "landing", "--to", "production", "--commit", &first])
        .fails_with(exit::SITE_FAILED)
        .has("is older than the deployed");
    assert!(
        stage
            .production_image()
            .await
            .ends_with(&format!("@{}", digest(&second_image)))
    );
    // ...unless asked for.
    succeeded(stage.berth([
        "promote",
        "landing",
        "--to",
        "production",
        "--commit",
        &first,
        "--allow-older",
        "--json",
    ]));
    assert!(
        stage
            .production_image()
            .await
            .ends_with(&format!("@{}", digest(&first_image)))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_environments_webhook_and_a_sites_own_one_there_hear_of_a_promote_and_a_ship_to_staging_tells_neither()
 {
    let mut stage = Environments::new("env-hooks", false).await;
    let always = |webhook_env: &str| Notify {
        webhook_env: webhook_env.into(),
        on: Some("always".into()),
    };
    stage.rewrite(|pipeline| {
        pipeline.environments[1].notify = Some(always("PRODUCTION_WEBHOOK"));
        pipeline.site_mut("landing").environment.insert(
            "production".into(),
            SiteEnvironmentSpec {
                notify: Some(always("LANDING_TEAM_WEBHOOK")),
                ..SiteEnvironmentSpec::default()
            },
        );
    });
    let ok: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (production_port, production_hook) = http_receiver(1, ok);
    let (team_port, team_hook) = http_receiver(1, ok);
    let hooks = [
        (
            "PRODUCTION_WEBHOOK",
            format!("http://127.0.0.1:{production_port}/hook"),
        ),
        (
            "LANDING_TEAM_WEBHOOK",
            format!("http://127.0.0.1:{team_port}/hook"),
        ),
        (
            "PRODUCTION_REGISTRY_USER",
            stage.world.stack.auth_username.clone(),
        ),
        (
            "PRODUCTION_REGISTRY_PASSWORD",
            stage.world.stack.auth_password.clone(),
        ),
    ];
    let wait = std::time::Duration::from_secs(10);

    // A ship to staging tells neither of production's webhooks.
    let head = stage.world.head(&stage.url, "main");
    succeeded(
        stage
            .world
            .berth(["ship", "landing", "--commit", &head, "--json"])
            .envs(hooks.clone()),
    );
    assert!(
        production_hook
            .recv_timeout(std::time::Duration::from_secs(2))
            .is_err(),
        "staging's ship reached production's webhook"
    );
    assert!(
        team_hook.try_recv().is_err(),
        "staging's ship reached the site's production webhook"
    );

    // A promote to production tells both: the environment's and the site's own.
    succeeded(
        stage
            .world
            .berth(["promote", "landing", "--to", "production", "--json"])
            .envs(hooks),
    );
    for (name, hook) in [("production's", &production_hook), ("the site's", &team_hook)] {
        let request = hook
            .recv_timeout(wait)
            .unwrap_or_else(|_| panic!("{name} webhook heard nothing"));
        let body: Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(
            body["text"], "berth promote: 1 deployed, 0 unchanged, 0 up to date, 0 failed",
            "{name}: {body:#}"
        );
        validate_against("report.schema.json", &body["berth"]);
        assert_eq!(body["berth"]["environment"], "production", "{name}: {body:#}");
        let sites = body["berth"]["sites"].as_array().unwrap();
        assert_eq!(sites.len(), 1, "{name}: {body:#}");
        assert_eq!(sites[0]["site"], "landing", "{name}: {body:#}");
    }
}

/// Now, as a Kubernetes `MicroTime` (RFC 3339 with microseconds).
fn micro_time_now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_cleans_each_environments_registry_and_keeps_what_any_environment_runs() {
    let mut stage = Environments::new("env-gc", false).await;
    stage.rewrite(|pipeline| {
        let site = pipeline.site_mut("landing");
        site.keep_last = Some(1);
        site.keep_days = Some(0);
    });
    // No old ReplicaSet kept: only what runs and the policy keep images.
    let no_history = json!({"spec": {"revisionHistoryLimit": 0}});
    for namespace in [&stage.world.namespace, &stage.production] {
        let api: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(kube_client().await, namespace);
        api.patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&no_history),
        )
        .await
        .unwrap();
    }
    let url = stage.url.clone();
    let ship = |page: &str| {
        let commit = stage.world.commit(&url, "main", &[("index.html", page)], page);
        succeeded(stage.berth(["ship", "landing", "--commit", &commit, "--json"]));
        commit
    };
    let one = ship("<h1>one</h1>");
    succeeded(stage.berth(["promote", "landing", "--to", "production", "--json"]));
    let two = ship("<h1>two</h1>");
    // Staging runs two; production still runs one (promoted), so one stays in staging's registry too.
    let dry = stage.berth(["gc", "--json"]).json();
    validate_against("gc.schema.json", &dry);
    let by_environment = |document: &Value, environment: &str| -> Value {
        document["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|site| site["environments"] == json!([environment]))
            .unwrap_or_else(|| panic!("no {environment} in {document:#}"))
            .clone()
    };
    let staging = by_environment(&dry, "staging");
    let image = |site: &Value, commit: &str| -> Value {
        site["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["commit"] == commit)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(image(&staging, &one)["action"], "keep", "{dry:#}");
    assert!(
        image(&staging, &one)["reasons"]
            .to_string()
            .contains("running in production"),
        "{dry:#}"
    );
    assert_eq!(
        by_environment(&dry, "production")["registry"],
        stage.world.stack.auth_registry.as_str()
    );

    let three = ship("<h1>three</h1>");
    succeeded(stage.berth(["promote", "landing", "--to", "production", "--json"]));
    // --env narrows the registries, not what is needed.
    let production_only = stage.berth(["gc", "--env", "production", "--json"]).json();
    assert_eq!(
        production_only["sites"].as_array().unwrap().len(),
        1,
        "{production_only:#}"
    );
    let done = stage.berth(["gc", "--delete", "--json"]).json();
    let deleted = |site: &Value| -> Vec<String> {
        site["images"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["action"] == "deleted")
            .map(|i| i["commit"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        deleted(&by_environment(&done, "staging")),
        [two, one.clone()],
        "{done:#}"
    );
    assert_eq!(deleted(&by_environment(&done, "production")), [one], "{done:#}");
    // Read again, through the auth registry's login: only three is left in each.
    let after = stage.berth(["gc", "--json"]).json();
    for environment in ["staging", "production"] {
        let site = by_environment(&after, environment);
        let commits: Vec<&str> = site["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["commit"].as_str().unwrap())
            .collect();
        assert_eq!(commits, [three.as_str()], "{environment}: {after:#}");
    }
}
