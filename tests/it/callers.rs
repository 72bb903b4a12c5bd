//! The three callers through the real binary: nightly runs, per-commit ships,
//! a developer's local build; plan, status, history; JSON reports; shards;
//! notifications; signals; the CronJob manifests and berth's own image.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use crate::support::{
    Notify, RolloutState, SITES, World, exit, free_port, http_get, http_receiver, image_of, kube_client,
    rollout_state, text, validate_against,
};

/// Each site of a `--json` document with the values of `fields`, by site
/// name: compared whole, so a site missing (or all of them) shows.
fn by_site(document: &Value, fields: &[&str]) -> Vec<(String, Vec<Value>)> {
    let mut sites: Vec<(String, Vec<Value>)> = document["sites"]
        .as_array()
        .unwrap_or_else(|| panic!("no sites in {document:#}"))
        .iter()
        .map(|site| {
            (
                site["site"].as_str().unwrap().to_string(),
                fields.iter().map(|field| site[*field].clone()).collect(),
            )
        })
        .collect();
    sites.sort_by(|a, b| a.0.cmp(&b.0));
    sites
}

/// Every example site, with `values`, sorted as [`by_site`] sorts them.
fn every_site(values: &[Value]) -> Vec<(String, Vec<Value>)> {
    let mut sites: Vec<(String, Vec<Value>)> = SITES
        .iter()
        .map(|(site, _)| ((*site).to_string(), values.to_vec()))
        .collect();
    sites.sort_by(|a, b| a.0.cmp(&b.0));
    sites
}

/// Red when a report, plan or status lists fewer sites than the four (an
/// empty list included), or any with another action or state.
#[tokio::test(flavor = "multi_thread")]
async fn a_nightly_run_twice_reports_json_and_the_second_run_writes_nothing() {
    let world = World::example("nightly").await;
    let first = world.berth(["run", "--json"]).json();
    validate_against("report.schema.json", &first);
    assert_eq!(
        by_site(&first, &["action"]),
        every_site(&[json!("deployed")]),
        "{first:#}"
    );

    let versions_before = resource_versions(&world).await;
    let leases_before = leases(&world).await;
    assert_eq!(
        leases_before.len(),
        4,
        "the first run took one lease per Deployment: {leases_before:?}"
    );
    let second = world.berth(["run", "--json"]).json();
    validate_against("report.schema.json", &second);
    assert_eq!(
        by_site(&second, &["action"]),
        every_site(&[json!("unchanged")]),
        "{second:#}"
    );
    assert_eq!(
        resource_versions(&world).await,
        versions_before,
        "no write to any Deployment"
    );
    assert_eq!(
        leases(&world).await,
        leases_before,
        "no new lease, no lease taken or renewed"
    );

    // plan and status agree, as JSON documents valid against their schemas.
    let plan = world.berth(["plan", "--json"]).json();
    validate_against("plan.schema.json", &plan);
    assert_eq!(
        by_site(&plan, &["action", "image_present"]),
        every_site(&[json!("unchanged"), json!(true)]),
        "{plan:#}"
    );
    let status = world.berth(["status", "--json"]).json();
    validate_against("status.schema.json", &status);
    assert_eq!(
        by_site(&status, &["rollout", "up_to_date"]),
        every_site(&[json!("complete"), json!(true)]),
        "{status:#}"
    );
}

/// Each Lease of the test's namespace with its resourceVersion: any write changes it.
async fn leases(world: &World) -> Vec<(String, String)> {
    let api: Api<Lease> = Api::namespaced(kube_client().await, &world.namespace);
    let mut leases: Vec<(String, String)> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|lease| {
            (
                lease.metadata.name.unwrap(),
                lease.metadata.resource_version.unwrap(),
            )
        })
        .collect();
    leases.sort();
    leases
}

async fn resource_versions(world: &World) -> Vec<String> {
    let mut versions = Vec::new();
    for (site, _) in SITES {
        versions.push(world.deployment(site).await.metadata.resource_version.unwrap());
    }
    versions
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_status_and_history_print_what_they_should() {
    let world = World::example("views").await;
    let _filters = world.snapshot_settings().bind_to_scope();
    insta::assert_snapshot!("plan_before", world.berth(["plan"]).succeeds().stdout());

    world.berth(["run", "landing"]).succeeds();
    insta::assert_snapshot!("status_after_one", world.berth(["status"]).succeeds().stdout());
    insta::assert_snapshot!(
        "history_landing",
        world.berth(["history", "landing"]).succeeds().stdout()
    );
    // The same as JSON: one environment entry (the file declares none), the run logged.
    let history = world.berth(["history", "landing", "--json"]).json();
    validate_against("history.schema.json", &history);
    let only = &history["environments"][0];
    assert!(only["environment"].is_null(), "{history:#}");
    assert_eq!(only["runs"][0]["command"], "run", "{history:#}");
    assert!(
        only["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["current"] == true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_cover_every_site_exactly_once() {
    let world = World::example("shards").await;
    for count in [1, 2, 3, 5] {
        let mut seen = Vec::new();
        for index in 1..=count {
            let plan = world
                .berth(["plan", "--json", "--shard", &format!("{index}/{count}")])
                .json();
            for site in plan["sites"].as_array().unwrap() {
                seen.push(site["site"].as_str().unwrap().to_string());
            }
        }
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), 4, "{count} shards: {seen:?}");
        assert_eq!(unique.len(), 4, "{count} shards: {seen:?}");
    }
    // Sites built by one generator run stay together.
    for count in 2..=5 {
        let mut together = false;
        for index in 1..=count {
            let plan = world
                .berth(["plan", "--json", "--shard", &format!("{index}/{count}")])
                .json();
            let sites: Vec<String> = plan["sites"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["site"].as_str().unwrap().to_string())
                .collect();
            together |= sites.contains(&"www-en".to_string()) && sites.contains(&"www-de".to_string());
        }
        assert!(together, "www-en and www-de share a shard of {count}");
    }
    world.berth(["plan", "--shard", "4/3"]).fails_with(exit::USAGE);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_build_of_a_dirty_tree_is_tagged_dirty_and_preview_serves_it() {
    let world = World::new("local").await;
    let url = world.copy_repo("landing");
    let checkout = world.clone_of(&url);
    std::fs::write(checkout.join("index.html"), "<h1>work in progress</h1>\n").unwrap();
    std::fs::write(checkout.join("draft.html"), "untracked draft\n").unwrap();
    std::fs::write(checkout.join(".gitignore"), "secret.txt\n").unwrap();
    std::fs::write(checkout.join("secret.txt"), "must not ship\n").unwrap();
    // A `!` line makes the walk enter excluded folders: `.git` must stay out all the same.
    std::fs::create_dir(checkout.join("drafts")).unwrap();
    std::fs::write(checkout.join("drafts/keep.html"), "kept\n").unwrap();
    std::fs::write(checkout.join(".dockerignore"), "drafts\n!drafts/keep.html\n").unwrap();
    world.write_pipeline(&world.landing_pipeline());
    let tag = world
        .berth(["build", "landing", "--source"])
        .arg(&checkout)
        .succeeds()
        .stdout()
        .trim()
        .to_string();
    let head = world.head(&url, "main");
    assert!(tag.contains(&format!(":{}-dirty-", &head[..12])), "{tag}");
    let docker = crate::support::docker().await;
    let image = docker
        .inspect_image(&tag)
        .await
        .expect("the image is in the local Engine");
    assert_eq!(image.config.unwrap().labels.unwrap()["dev.berth.dirty"], "true");
    assert!(
        crate::support::image_has(&tag, "/www/drafts/keep.html"),
        "a `!` line takes a file back"
    );
    assert!(
        !crate::support::image_has(&tag, "/www/.git"),
        "nothing of .git ships"
    );
    assert!(
        !crate::support::image_has(&tag, "/www/.git/config"),
        "nothing of .git ships"
    );
    // --json names the same build.
    let built = world
        .berth(["build", "landing", "--json", "--source"])
        .arg(&checkout)
        .json();
    validate_against("build.schema.json", &built);
    assert_eq!(
        (built["site"].as_str(), built["tag"].as_str()),
        (Some("landing"), Some(tag.as_str()))
    );
    // Not pushed.
    let port: u16 = world.stack.registry_port();
    let (status, _) = http_get(port, &format!("/v2/{}/landing/tags/list", world.prefix)).unwrap();
    assert_eq!(status, 404);

    // With --json the URL comes in a document (the plain URL is its one line otherwise).
    let mut preview = world
        .berth(["preview", "landing", "--json", "--source"])
        .arg(&checkout)
        .spawn();
    // The document's last line: a closing brace alone.
    preview.wait_for_stdout("}\n", crate::support::SPAWN_DEADLINE);
    let document = preview.stdout_so_far();
    let serving: serde_json::Value =
        serde_json::from_str(&document).unwrap_or_else(|error| panic!("{error}:\n{}", preview.so_far()));
    validate_against("preview.schema.json", &serving);
    let line = serving["url"].as_str().unwrap();
    let preview_port: u16 = line
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("{line}"));
    let mut page = None;
    for _ in 0..50 {
        if let Ok((200, body)) = http_get(preview_port, "/") {
            page = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = page.expect("the preview answers");
    assert!(page.contains("work in progress"), "{page}");
    assert_eq!(
        http_get(preview_port, "/draft.html").unwrap().0,
        200,
        "untracked files are included"
    );
    assert_eq!(
        http_get(preview_port, "/secret.txt").unwrap().0,
        404,
        "ignored files are left out"
    );
    preview.interrupt();
    preview.wait().exited(exit::OK);
    assert!(http_get(preview_port, "/").is_err(), "the container is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_hears_about_the_run_and_one_that_is_down_does_not_fail_it() {
    let world = World::example("webhook").await;
    let mut pipeline = world.example_pipeline();
    pipeline.notify = Some(Notify {
        webhook_env: "TEST_WEBHOOK".into(),
        on: Some("always".into()),
    });
    world.write_pipeline(&pipeline);
    let (port, requests) = http_receiver(1, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    world
        .berth(["run", "landing"])
        .env("TEST_WEBHOOK", format!("http://127.0.0.1:{port}/hook"))
        .succeeds();
    let body: serde_json::Value =
        serde_json::from_str(&requests.recv_timeout(Duration::from_secs(10)).unwrap().body).unwrap();
    assert_eq!(
        body["text"],
        "berth run: 1 deployed, 0 unchanged, 0 up to date, 0 failed"
    );
    validate_against("report.schema.json", &body["berth"]);

    // Nothing listens on this port: retried, then a warning; the run still succeeds.
    let closed = free_port();
    world
        .berth(["run", "landing"])
        .env(
            "TEST_WEBHOOK",
            format!("http://127.0.0.1:{closed}/hook?token=s3cret"),
        )
        .succeeds()
        .has("the webhook in TEST_WEBHOOK did not take the notification")
        // The webhook URL never shows.
        .lacks("s3cret");
}

/// The first Ctrl-C while a rollout is under way: berth sees that rollout
/// through, starts nothing more, and exits 130. Red when berth exits before
/// the rollout in flight is complete, when it touches another site after the
/// interrupt, or when a lease is left held. The Deployments' own first
/// rollouts are complete before berth starts, so what is not whole after it
/// is berth's doing (a loaded machine once caught one of those still going).
#[tokio::test(flavor = "multi_thread")]
async fn sigint_mid_run_leaves_every_deployment_whole_and_no_lease_held() {
    let world = World::example("sigint").await;
    let mut before = std::collections::BTreeMap::new();
    for (site, _) in SITES {
        world.wait_until_rolled_out(site).await;
        let deployment = world.deployment(site).await;
        before.insert(site, (image_of(&deployment), deployment.metadata.generation));
    }
    let mut run = world.berth(["-v", "run", "--jobs", "1"]).spawn();
    // A site's image is set, and berth waits for its rollout: interrupt now.
    let waiting = run.wait_for("Waiting for deployment", crate::support::SPAWN_DEADLINE);
    let in_flight = waiting
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no site in {waiting:?}"))
        .to_string();
    run.interrupt();
    let ran = run
        .wait()
        .exited(exit::INTERRUPTED)
        .has("interrupted: no new work starts")
        .has(&format!("{in_flight:<14} deploy   ok"));
    let mut untouched = 0;
    for (site, repo) in SITES {
        let deployment = world.deployment(site).await;
        let image = image_of(&deployment);
        let state = rollout_state(&deployment);
        if image.contains(&world.repo_head(repo)) {
            // Shipped: whole, the moment berth returned.
            assert_eq!(state, RolloutState::Complete, "{site} runs {image}:\n{ran}");
        } else {
            assert_ne!(
                site,
                in_flight.as_str(),
                "the rollout in flight was undone:\n{ran}"
            );
            assert_eq!(
                (image, deployment.metadata.generation),
                before[site].clone(),
                "{site} was written to, but not shipped:\n{ran}"
            );
            untouched += 1;
        }
    }
    assert_eq!(world.leases_held().await, 0, "no lease held:\n{ran}");
    assert!(untouched > 0, "the interrupt stopped nothing:\n{ran}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cronjob_manifests_pass_a_server_side_dry_run_and_berths_image_runs() {
    let world = World::new("cronjob").await;
    let root = crate::support::repo_root();
    let output = world.kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        root.join("docs/rbac.yaml").to_str().unwrap(),
        "-f",
        root.join("docs/cronjob/berth.yaml").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let all = text(&output);
    assert!(
        all.contains("cronjob.batch/berth-nightly created (server dry run)"),
        "{all}"
    );

    let tag = format!("berth-test/{}:1", world.prefix);
    crate::support::build_berth_image(&tag);
    let output = std::process::Command::new("docker")
        .args(["run", "--rm", &tag, "--version"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("berth "));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_engine_over_tcp_with_tls_builds_and_pushes() {
    let world = World::example("remote-engine").await;
    let host = std::env::var("BERTH_STACK_DOCKER_TLS_HOST").expect("the stack's TLS endpoint");
    let certs = std::env::var("BERTH_STACK_DOCKER_CERT_PATH").expect("the stack's client certificates");
    world
        .berth(["run", "landing"])
        .env("DOCKER_HOST", &host)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &certs)
        .succeeds();
    assert!(image_of(&world.deployment("landing").await).contains(&world.repo_head("landing")));
    // Without the client certificate the Engine is not reachable: an environment error.
    world
        .berth(["run", "docs"])
        .env("DOCKER_HOST", &host)
        .env("DOCKER_TLS_VERIFY", "")
        .fails_with(exit::ENVIRONMENT);
}
