//! Build and push through the real Engine and registries: what the image holds
//! and serves, reproducibility, refusals, credentials, a registry that goes away.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use crate::support::{
    BuildError, ContextBody, Credentials, ImageBuild, Pipeline, Printer, Registry, SiteSpec, Verbosity,
    World, build_image, http_get, image_of, text,
};

/// A world with a copy of `landing` and Deployment `web` (2 replicas on the
/// busybox base); the tests write their own pipelines, from
/// [`World::landing_pipeline`].
pub(crate) async fn landing_world(test: &str) -> World {
    let world = World::new(test).await;
    world.copy_repo("landing");
    world.create_deployment("web", 2, &world.busybox()).await;
    world
}

/// The `landing` pipeline pushing to `registry` with `credentials`.
pub(crate) fn pushing_to(world: &World, registry: &str, credentials: Credentials) -> Pipeline {
    let mut pipeline = world.landing_pipeline();
    pipeline.registry = Registry {
        address: registry.into(),
        credentials,
        keep_last: None,
        keep_days: None,
    };
    pipeline
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_serves_the_site_honours_dockerignore_and_two_builds_give_the_same_layers() {
    let world = landing_world("image-serve").await;
    world.commit(
        &world.url("landing"),
        "main",
        &[
            (".dockerignore", "drafts\n*.psd\n"),
            ("drafts/next.html", "not yet\n"),
            ("art.psd", "layers\n"),
            ("über uns.html", "<p>unicode</p>\n"),
        ],
        "Drafts stay out",
    );
    world.write_pipeline(&world.landing_pipeline());
    let output = world.berth(&["run", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let context_digest = |output: &std::process::Output| {
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        report["sites"][0]["context_digest"].as_str().unwrap().to_string()
    };
    let first_context = context_digest(&output);
    assert_eq!(first_context.len(), 64, "{first_context}");
    let image = image_of(&world.deployment("web").await);

    let docker = crate::support::docker().await;
    let (container, port) = crate::support::serve(&docker, &image).await;
    let (status, page) = http_get(port, "/").unwrap();
    let (draft, _) = http_get(port, "/drafts/next.html").unwrap();
    let (psd, _) = http_get(port, "/art.psd").unwrap();
    let (unicode, _) = http_get(port, "/%C3%BCber%20uns.html").unwrap();
    crate::support::remove_container(&docker, &container).await;
    assert_eq!(status, 200);
    assert!(page.contains("generator-check"), "{page}");
    assert_eq!((draft, psd), (404, 404), ".dockerignore keeps drafts out");
    assert_eq!(unicode, 200, "unusual names are kept");

    // Labels say where the image came from.
    let inspect = docker.inspect_image(&image).await.unwrap();
    let labels = inspect.config.unwrap().labels.unwrap();
    let head = world.repo_head("landing");
    assert_eq!(labels["org.opencontainers.image.revision"], head);
    assert_eq!(labels["org.opencontainers.image.source"], world.url("landing"));
    assert!(labels["org.opencontainers.image.created"].ends_with('Z'));

    // The same commit built again, without the build cache, gives the same context
    // digest and the same site layers. The second build stands on a copy of the
    // base with one more layer: BuildKit keys each step's cache on the layers below
    // it, so nothing is reused. (`docker builder prune` while other tests build
    // crashed the 20.10 Engine's BuildKit once.)
    let variant = format!("berth-base:variant-{}", world.namespace);
    let base_context = world.dir.path().join("variant-base");
    std::fs::create_dir_all(&base_context).unwrap();
    std::fs::write(base_context.join("variant"), "variant\n").unwrap();
    std::fs::write(
        base_context.join("Dockerfile"),
        format!(
            "FROM {}\nCOPY variant /etc/berth-variant\n",
            world.stack.base_image
        ),
    )
    .unwrap();
    let output = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &variant])
        .arg(&base_context)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    world.create_deployment_json(serde_json::json!({
        "metadata": {"name": "web2"},
        "spec": {"selector": {"matchLabels": {"app": "web2"}}, "template": {"metadata": {"labels": {"app": "web2"}},
            "spec": {"containers": [{"name": "extra0", "image": "x", "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}]}}}
    }))
    .await;
    let mut pipeline = world.landing_pipeline();
    let mut again = SiteSpec::new("again", "landing", &world.image("again"), "web2");
    again.deployment.container = "extra0".into();
    again.build_arg("BASE_IMAGE", &variant);
    pipeline.sites.push(again);
    world.write_pipeline(&pipeline);
    let output = world.berth(&["run", "again", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let again = docker
        .inspect_image(&image_of(&world.deployment("web2").await))
        .await
        .unwrap();
    assert_eq!(context_digest(&output), first_context);
    let (again, first) = (
        again.root_fs.unwrap().layers.unwrap(),
        inspect.root_fs.unwrap().layers.unwrap(),
    );
    assert_eq!(
        again.len(),
        first.len() + 1,
        "the variant base has one more layer"
    );
    assert_eq!(
        again[again.len() - 2..],
        first[first.len() - 2..],
        "same site layers"
    );
    let output = std::process::Command::new("docker")
        .args(["image", "rm", "-f", &variant])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_out_of_the_site_is_refused_and_nothing_is_pushed() {
    let world = landing_world("image-symlink").await;
    let work = world.clone_of(&world.url("landing"));
    std::os::unix::fs::symlink("../../../../../../etc/passwd", work.join("passwd.html")).unwrap();
    crate::support::git(&work, &["add", "-A"]);
    crate::support::git_commit(&work, &["-q", "-m", "Sneaky link"]);
    crate::support::git(&work, &["push", "-q", "origin", "main"]);
    world.write_pipeline(&world.landing_pipeline());
    let output = world.berth(&["run"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("symlink `passwd.html` points outside the site"),
        "{all}"
    );
    let port = world.stack.registry_port();
    assert_eq!(
        http_get(port, &format!("/v2/{}/landing/tags/list", world.prefix))
            .unwrap()
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
#[expect(
    clippy::too_many_lines,
    reason = "four credential sources against one registry, read as one story"
)]
async fn the_auth_registry_takes_docker_config_and_helper_credentials_and_names_a_wrong_password() {
    let world = landing_world("image-auth").await;
    let stack = &world.stack;
    let mut pipeline = pushing_to(&world, &stack.auth_registry, Credentials::DockerConfig);
    world.write_pipeline(&pipeline);
    let docker_config = std::env::var("BERTH_STACK_AUTH_DOCKER_CONFIG").unwrap();
    let output = world.berth_with_env(&["run"], &[("DOCKER_CONFIG", &docker_config)]);
    assert!(output.status.success(), "config.json auths: {}", text(&output));
    assert!(image_of(&world.deployment("web").await).starts_with(&stack.auth_registry));

    // A credential helper, as `credHelpers` in config.json names it.
    let helper_dir = world.dir.path().join("helper");
    std::fs::create_dir_all(helper_dir.join("bin")).unwrap();
    let helper = helper_dir.join("bin/docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{}\",\"Secret\":\"{}\"}}' \"$server\"\n", stack.auth_username, stack.auth_password),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", helper.to_str().unwrap()])
        .status()
        .unwrap();
    std::fs::write(
        helper_dir.join("config.json"),
        format!(
            "{{\"credHelpers\":{{\"{}\":\"berthtest\"}}}}",
            stack.auth_registry
        ),
    )
    .unwrap();
    world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>helper</h1>\n")],
        "Helper round",
    );
    let path = format!(
        "{}:{}",
        helper_dir.join("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let output = world.berth_with_env(
        &["run"],
        &[("DOCKER_CONFIG", helper_dir.to_str().unwrap()), ("PATH", &path)],
    );
    assert!(output.status.success(), "credential helper: {}", text(&output));

    // A private base image: the build pulls it from the auth registry with the same credentials.
    let private_base = format!("{}/{}/base", stack.auth_registry, world.prefix);
    let push = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker tag {base} {private_base}:1 && DOCKER_CONFIG={config} docker push -q {private_base}:1 && docker rmi {private_base}:1",
            base = stack.base_image,
            config = docker_config,
        ))
        .output()
        .unwrap();
    assert!(push.status.success(), "{}", text(&push));
    pipeline
        .site_mut("landing")
        .build_arg("BASE_IMAGE", &format!("{private_base}:1"));
    world.write_pipeline(&pipeline);
    world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>private base</h1>\n")],
        "Private base round",
    );
    let output = world.berth_with_env(&["run"], &[("DOCKER_CONFIG", &docker_config)]);
    assert!(output.status.success(), "private base image: {}", text(&output));

    // A wrong password: refused at once, naming the registry and the source, never the secret.
    let credentials = Credentials::Env {
        username_env: "REG_USER".into(),
        password_env: "REG_PASSWORD".into(),
    };
    // A new pipeline: the private base of the round before is not in it.
    world.write_pipeline(&pushing_to(&world, &stack.auth_registry, credentials));
    world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>wrong</h1>\n")],
        "Wrong password round",
    );
    let started = std::time::Instant::now();
    let output = world.berth_with_env(
        &["run"],
        &[
            ("REG_USER", &stack.auth_username),
            ("REG_PASSWORD", "not-the-password-42"),
        ],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!("registry {} refused the push", stack.auth_registry)),
        "{all}"
    );
    assert!(
        all.contains("environment variables REG_USER and REG_PASSWORD"),
        "{all}"
    );
    assert!(
        !all.contains("not-the-password-42"),
        "the secret never shows: {all}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "not retried: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_goes_away_before_the_push_fails_cleanly_and_the_deployment_stays() {
    let world = landing_world("image-gone").await;
    // A registry of this test's own, to stop.
    let port = crate::support::free_port();
    let root = world.dir.path().join("registry");
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            root.join("data").display()
        ),
    )
    .unwrap();
    let mut registry = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if http_get(port, "/v2/").is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    world.write_pipeline(&pushing_to(
        &world,
        &format!("127.0.0.1:{port}"),
        Credentials::None,
    ));
    let before = image_of(&world.deployment("web").await);
    let mut child = world.spawn_berth(&["run"]);
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut collected = String::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains(" build ") && line.contains(" ok ") {
            registry.kill().unwrap();
            let _ = registry.wait();
        }
        collected.push_str(&line);
        collected.push('\n');
    }
    let status = child.wait().unwrap();
    let _ = registry.kill();
    let _ = registry.wait();
    assert_eq!(
        status.code(),
        Some(3),
        "an unreachable registry is an environment error: {collected}"
    );
    assert!(
        collected.contains("failed after 3 attempts"),
        "retried: {collected}"
    );
    assert_eq!(
        image_of(&world.deployment("web").await),
        before,
        "the Deployment was not touched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_with_its_own_dockerfile_ships_and_an_existing_image_is_not_built_again() {
    let world = landing_world("image-own").await;
    world.commit(
        &world.url("landing"),
        "main",
        &[
            (
                "Dockerfile",
                &format!("FROM {}\nCOPY . /www/\n", world.stack.base_image),
            ),
            (".dockerignore", "Dockerfile\n"),
        ],
        "Own Dockerfile",
    );
    let mut pipeline = world.landing_pipeline();
    pipeline.site_mut("landing").dockerfile = Some("Dockerfile".into());
    world.write_pipeline(&pipeline);
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    let image = image_of(&world.deployment("web").await);
    let docker = crate::support::docker().await;
    let (container, port) = crate::support::serve(&docker, &image).await;
    let (status, page) = http_get(port, "/index.html").unwrap();
    crate::support::remove_container(&docker, &container).await;
    assert_eq!(status, 200);
    assert!(page.contains("generator-check"), "{page}");

    // Rolled back and run again: the registry holds the image built from this source.
    let output = world.berth(&["rollback", "landing"]);
    assert!(output.status.success(), "{}", text(&output));
    let output = world.berth(&["run"]);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("build    skip exists:"), "{all}");
    assert!(!all.contains("context  ok"), "no context was written: {all}");
    assert_eq!(image_of(&world.deployment("web").await), image);
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_build_inputs_never_move_a_commit_tag() {
    let world = landing_world("image-variant").await;
    let mut pipeline = world.landing_pipeline();
    world.write_pipeline(&pipeline);
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    let first = image_of(&world.deployment("web").await);

    // Same commit, other build inputs: a build arg the template does not even use.
    pipeline.site_mut("landing").build_arg("UNUSED", "1");
    world.write_pipeline(&pipeline);
    let output = world.berth(&["run"]);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("the commit's tag holds an image of other build inputs"),
        "{all}"
    );
    let second = image_of(&world.deployment("web").await);
    let head = world.repo_head("landing");
    assert!(second.contains(&format!(":{head}-")), "{second}");

    // The commit's own tag still names the first image.
    let docker = crate::support::docker().await;
    let tag = first.split('@').next().unwrap();
    let inspect = docker.inspect_registry_image(tag, None).await.unwrap();
    assert_eq!(
        Some(first.split('@').nth(1).unwrap().to_string()),
        inspect.descriptor.digest
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_page_change_keeps_the_assets_layer_and_the_other_files_times() {
    let world = landing_world("image-times").await;
    world.write_pipeline(&world.landing_pipeline());
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    let before = image_of(&world.deployment("web").await);
    // A second later, so the new commit's time differs from the seeded ones.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let change = world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>New front page</h1>\n")],
        "One page",
    );
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    let after = image_of(&world.deployment("web").await);
    assert_ne!(before, after);

    let docker = crate::support::docker().await;
    let layers = |image: bollard::models::ImageInspect| image.root_fs.unwrap().layers.unwrap();
    let before_layers = layers(docker.inspect_image(&before).await.unwrap());
    let after_layers = layers(docker.inspect_image(&after).await.unwrap());
    let (last, shared) = after_layers.split_last().unwrap();
    assert_eq!(
        shared,
        &before_layers[..before_layers.len() - 1],
        "everything below the pages layer is unchanged, so the push sends only that"
    );
    assert_ne!(last, before_layers.last().unwrap());

    // Each file carries the time of the commit that wrote it.
    let bare = world.repo_path(&world.url("landing"));
    let commit_time = |args: &[&str]| {
        let mut all = vec!["log", "-1", "--format=%ct"];
        all.extend_from_slice(args);
        crate::support::git(&bare, &all).trim().to_string()
    };
    let stat = |path: &str| {
        let output = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--entrypoint",
                "/bin/busybox",
                &after,
                "stat",
                "-c",
                "%Y",
                path,
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(stat("/www/index.html"), commit_time(&[&change]));
    assert_eq!(stat("/www/style.css"), commit_time(&["main", "--", "style.css"]));
    assert_ne!(stat("/www/style.css"), stat("/www/index.html"));
}

/// Builds `tag` through berth's Engine client from the context that arrives in
/// `body`, as the pipeline streams it.
async fn build_streamed(
    docker: &bollard::Docker,
    body: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    tag: &str,
) -> Result<String, BuildError> {
    let printer = Printer::new(Verbosity::Quiet, false, false);
    let request = ImageBuild {
        context: ContextBody::Stream(body),
        dockerfile: "Dockerfile",
        tag,
        build_args: &std::collections::BTreeMap::new(),
        labels: &std::collections::BTreeMap::new(),
        credentials: std::collections::HashMap::new(),
    };
    build_image(docker, request, &printer).await
}

/// The context is streamed to the Engine while berth writes it; a failure half-way
/// (a blob that cannot be read) ends the request body with an error. The Engine
/// must then build nothing: no image, no tag, from the first half of a context.
#[tokio::test(flavor = "multi_thread")]
async fn a_context_that_fails_half_way_leaves_no_image() {
    let stack = crate::support::Stack::from_env();
    let docker = crate::support::docker().await;
    let mut tar = tar::Builder::new(Vec::new());
    let dockerfile = format!("FROM {}\nADD big.bin /\n", stack.base_image);
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
        .unwrap();
    let mut start = tar.into_inner().unwrap();
    // The header of a 4 MiB file, then only its first MiB.
    let mut header = tar::Header::new_gnu();
    header.set_path("big.bin").unwrap();
    header.set_size(4 << 20);
    header.set_mode(0o644);
    header.set_cksum();
    start.extend_from_slice(header.as_bytes());
    start.extend(std::iter::repeat_n(7u8, 1 << 20));

    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender.send(Ok(bytes::Bytes::from(start))).await.unwrap();
    sender
        .send(Err(std::io::Error::other("blob 1234 cannot be read")))
        .await
        .unwrap();
    drop(sender);
    let tag = format!("berth-test/{}", crate::support::unique("half-context"));
    let result = build_streamed(&docker, receiver, &tag).await;
    assert!(result.is_err(), "a build from half a context must fail");
    let inspect = docker.inspect_image(&tag).await;
    assert!(
        matches!(
            inspect,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
        ),
        "no image may be tagged: {inspect:?}"
    );
}

/// An Engine that refuses a build before it read the whole context closes the
/// request; the context writer must then stop (not wait forever on a full
/// channel), and the Engine's own words are the error.
#[tokio::test(flavor = "multi_thread")]
async fn an_engine_that_refuses_early_stops_the_context_writer() {
    let docker = crate::support::docker().await;
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    // A writer with more to send than any Engine would buffer (1 GiB).
    let writer = tokio::spawn(async move {
        let mut chunks = 0;
        while chunks < 4096
            && sender
                .send(Ok(bytes::Bytes::from(vec![0u8; 256 * 1024])))
                .await
                .is_ok()
        {
            chunks += 1;
        }
        chunks
    });
    let built = tokio::time::timeout(
        Duration::from_secs(60),
        build_streamed(&docker, receiver, "Not::A-Tag"),
    )
    .await
    .expect("the build answers");
    let error = built.expect_err("the Engine refuses the tag").to_string();
    assert!(error.contains("invalid reference format"), "{error}");
    let chunks = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer stops once the Engine closed the request")
        .unwrap();
    assert!(chunks < 4096, "the writer stopped early ({chunks} chunks sent)");
}
