//! The three callers through the real binary: nightly runs, per-commit ships,
//! a developer's local build; plan, status, history; JSON reports; shards;
//! notifications; signals; the CronJob manifests and berth's own image.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};

use crate::support::{
    Notify, SITES, World, free_port, http_get, http_receiver, image_of, json_of, kube_client, text,
    validate_against,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_nightly_run_twice_reports_json_and_the_second_run_writes_nothing() {
    let world = World::example("nightly").await;
    let output = world.berth(&["run", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let first = json_of(&output);
    validate_against("report.schema.json", &first);
    assert!(
        first["sites"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] == "deployed"),
        "{first:#}"
    );

    let versions_before = resource_versions(&world).await;
    let leases_before = leases(&world).await;
    assert_eq!(
        leases_before.len(),
        4,
        "the first run took one lease per Deployment: {leases_before:?}"
    );
    let output = world.berth(&["run", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let second = json_of(&output);
    validate_against("report.schema.json", &second);
    assert!(
        second["sites"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] == "unchanged"),
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
    let output = world.berth(&["plan", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let plan = json_of(&output);
    validate_against("plan.schema.json", &plan);
    assert!(
        plan["sites"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] == "unchanged" && s["image_present"] == true)
    );
    let output = world.berth(&["status", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let status = json_of(&output);
    validate_against("status.schema.json", &status);
    assert!(
        status["sites"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["rollout"] == "complete" && s["up_to_date"] == true)
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
    let output = world.berth(&["plan"]);
    assert!(output.status.success(), "{}", text(&output));
    insta::assert_snapshot!("plan_before", String::from_utf8_lossy(&output.stdout));

    let output = world.berth(&["run", "landing"]);
    assert!(output.status.success(), "{}", text(&output));
    let output = world.berth(&["status"]);
    assert!(output.status.success(), "{}", text(&output));
    insta::assert_snapshot!("status_after_one", String::from_utf8_lossy(&output.stdout));
    let output = world.berth(&["history", "landing"]);
    assert!(output.status.success(), "{}", text(&output));
    insta::assert_snapshot!("history_landing", String::from_utf8_lossy(&output.stdout));
    // The same as JSON: one environment entry (the file declares none), the run logged.
    let history = crate::support::json_of(&world.berth(&["history", "landing", "--json"]));
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
            let output = world.berth(&["plan", "--json", "--shard", &format!("{index}/{count}")]);
            assert!(output.status.success(), "{}", text(&output));
            for site in json_of(&output)["sites"].as_array().unwrap() {
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
            let output = world.berth(&["plan", "--json", "--shard", &format!("{index}/{count}")]);
            let sites: Vec<String> = json_of(&output)["sites"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["site"].as_str().unwrap().to_string())
                .collect();
            together |= sites.contains(&"www-en".to_string()) && sites.contains(&"www-de".to_string());
        }
        assert!(together, "www-en and www-de share a shard of {count}");
    }
    let output = world.berth(&["plan", "--shard", "4/3"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
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
    let output = world.berth(&["build", "landing", "--source", checkout.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    let tag = String::from_utf8(output.stdout.clone())
        .unwrap()
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
    let output = world.berth(&[
        "build",
        "landing",
        "--json",
        "--source",
        checkout.to_str().unwrap(),
    ]);
    let built = crate::support::json_of(&output);
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
    let source = checkout.to_str().unwrap();
    let mut child = world.spawn_berth(&["preview", "landing", "--json", "--source", source]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut document = String::new();
    loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "{document}");
        document.push_str(&line);
        if line == "}\n" {
            break;
        }
    }
    let serving: serde_json::Value = serde_json::from_str(&document).unwrap();
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
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
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
    let output = world.berth_with_env(
        &["run", "landing"],
        &[("TEST_WEBHOOK", &format!("http://127.0.0.1:{port}/hook"))],
    );
    assert!(output.status.success(), "{}", text(&output));
    let body: serde_json::Value =
        serde_json::from_str(&requests.recv_timeout(Duration::from_secs(10)).unwrap().body).unwrap();
    assert_eq!(
        body["text"],
        "berth run: 1 deployed, 0 unchanged, 0 up to date, 0 failed"
    );
    validate_against("report.schema.json", &body["berth"]);

    // Nothing listens on this port: retried, then a warning; the run still succeeds.
    let closed = free_port();
    let output = world.berth_with_env(
        &["run", "landing"],
        &[(
            "TEST_WEBHOOK",
            &format!("http://127.0.0.1:{closed}/hook?token=s3cret"),
        )],
    );
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("the webhook in TEST_WEBHOOK did not take the notification"),
        "{all}"
    );
    assert!(!all.contains("s3cret"), "the webhook URL never shows: {all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_mid_run_leaves_every_deployment_whole_and_no_lease_held() {
    let world = World::example("sigint").await;
    let before: Vec<String> = {
        let mut images = Vec::new();
        for (site, _) in SITES {
            images.push(image_of(&world.deployment(site).await));
        }
        images
    };
    let mut child = world.spawn_berth(&["run", "--jobs", "1"]);
    // Interrupt once the first site starts deploying.
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut collected = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains(" push ") {
                let _ = sender.send(());
            }
            collected.push_str(&line);
            collected.push('\n');
        }
        collected
    });
    receiver
        .recv_timeout(Duration::from_secs(120))
        .expect("a site reached push");
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "an interrupted run exits 130, as shells report SIGINT"
    );
    let stderr = reader.join().expect("the stderr reader");
    assert!(stderr.contains("interrupted: no new work starts"), "{stderr}");
    let mut untouched = 0;
    for (index, (site, repo)) in SITES.iter().enumerate() {
        let deployment = world.deployment(site).await;
        let image = image_of(&deployment);
        let new = image.contains(&world.repo_head(repo));
        assert!(image == before[index] || new, "{site} runs {image}");
        // A site berth did not finish runs exactly what it ran before.
        untouched += usize::from(!new);
        assert_eq!(
            crate::support::rollout_state(&deployment),
            crate::support::RolloutState::Complete,
            "{site}"
        );
    }
    assert_eq!(world.leases_held().await, 0, "no lease held");
    assert!(untouched > 0, "the interrupt stopped nothing: {stderr}");
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
    let output = world.berth_with_env(
        &["run", "landing"],
        &[
            ("DOCKER_HOST", &host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", &certs),
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(image_of(&world.deployment("landing").await).contains(&world.repo_head("landing")));
    // Without the client certificate the Engine is not reachable: an environment error.
    let output = world.berth_with_env(
        &["run", "docs"],
        &[("DOCKER_HOST", &host), ("DOCKER_TLS_VERIFY", "")],
    );
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
}
