//! Build and push through the real Engine and registries: what the image holds
//! and serves, reproducibility, refusals, credentials, a registry that goes away.

use std::time::Duration;

use crate::support::{
    BuildError, ContextBody, Credentials, FlakyRegistry, ImageBuild, OwnRegistry, Pipeline, Printer, Probe,
    Registry, SiteSpec, Verbosity, World, build_image, exit, http_get, image_of, text,
};

/// A world with a copy of `landing` and Deployment `web` (2 replicas on the
/// busybox base); the tests write their own pipelines, from
/// [`World::landing_pipeline`].
pub(crate) async fn landing_world(test: &str) -> World {
    let world = World::new(test).await;
    world.copy_repo("landing");
    world
        .kwok_deployment("web", &world.busybox())
        .replicas(2)
        .create()
        .await;
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
    let context_digest = |report: serde_json::Value| {
        report["sites"][0]["context_digest"]
            .as_str()
            .unwrap_or_else(|| panic!("no context digest: {report:#}"))
            .to_string()
    };
    let first_context = context_digest(world.berth(["run", "--json"]).json());
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
    world
        .kwok_deployment("web2", "x")
        .container("extra0")
        .readiness(Probe::http("/").on_port(8080))
        .create()
        .await;
    let mut pipeline = world.landing_pipeline();
    let mut again = SiteSpec::new("again", "landing", &world.image("again"), "web2");
    again.deployment.container = "extra0".into();
    again.build_arg("BASE_IMAGE", &variant);
    pipeline.sites.push(again);
    world.write_pipeline(&pipeline);
    let again_context = context_digest(world.berth(["run", "again", "--json"]).json());
    let again = docker
        .inspect_image(&image_of(&world.deployment("web2").await))
        .await
        .unwrap();
    assert_eq!(again_context, first_context);
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
    world
        .berth(["run"])
        .fails_with(exit::SITE_FAILED)
        .has("symlink `passwd.html` points outside the site");
    let port = world.stack.registry_port();
    assert_eq!(
        http_get(port, &format!("/v2/{}/landing/tags/list", world.prefix))
            .unwrap()
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_auth_registry_takes_docker_config_and_helper_credentials_and_names_a_wrong_password() {
    let world = landing_world("image-auth").await;
    let stack = &world.stack;
    let mut pipeline = pushing_to(&world, &stack.auth_registry, Credentials::DockerConfig);
    world.write_pipeline(&pipeline);
    let docker_config = std::env::var("BERTH_STACK_AUTH_DOCKER_CONFIG").unwrap();
    // config.json's auths.
    world
        .berth(["run"])
        .env("DOCKER_CONFIG", &docker_config)
        .succeeds();
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
    world
        .berth(["run"])
        .env("DOCKER_CONFIG", &helper_dir)
        .env("PATH", &path)
        .succeeds();

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
    // The private base image.
    world
        .berth(["run"])
        .env("DOCKER_CONFIG", &docker_config)
        .succeeds();

    // A wrong password: refused at once (the Engine asks the registry once,
    // no retry), naming the registry and the source, never the secret.
    // Through a proxy that counts what the Engine asks.
    let counting = FlakyRegistry::passing_to(&stack.auth_registry);
    let credentials = Credentials::Env {
        username_env: "REG_USER".into(),
        password_env: "REG_PASSWORD".into(),
    };
    // A new pipeline: the private base of the round before is not in it.
    world.write_pipeline(&pushing_to(&world, &counting.address, credentials));
    world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>wrong</h1>\n")],
        "Wrong password round",
    );
    let ran = world
        .berth(["run"])
        .env("REG_USER", &stack.auth_username)
        .env("REG_PASSWORD", "not-the-password-42")
        .fails_with(exit::SITE_FAILED)
        .has(&format!("registry {} refused the push", counting.address))
        .has("environment variables REG_USER and REG_PASSWORD")
        // The secret never shows.
        .lacks("not-the-password-42");
    assert_eq!(
        counting.engine_sessions(),
        1,
        "a refused login is not retried: {:#?}\n{ran}",
        counting.requests()
    );
}

/// Red when the registry never answered (then nothing here is about a
/// registry that went away), when it was not gone before the push, when
/// berth does not retry or calls it anything but an environment error, and
/// when the Deployment is touched.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_goes_away_before_the_push_fails_cleanly_and_the_deployment_stays() {
    let world = landing_world("image-gone").await;
    // A registry of this test's own, to stop: it answers now.
    let mut registry = OwnRegistry::start(true);
    assert!(registry.answers(), "the registry answers before the run");
    world.write_pipeline(&pushing_to(&world, &registry.address, Credentials::None));
    let before = image_of(&world.deployment("web").await);
    // The registry goes while berth builds: after the check that read it,
    // before the push.
    let run = world.berth(["-v", "run"]).spawn_until("building the image");
    registry.kill();
    let ran = run
        .wait()
        .exited(exit::ENVIRONMENT)
        .stderr_has("build    ok")
        .stderr_has("push     ..   pushing")
        .stderr_has(&format!("cannot reach the registry of {}/", registry.address))
        .has("failed after 3 attempts");
    assert_eq!(
        image_of(&world.deployment("web").await),
        before,
        "the Deployment was not touched:\n{ran}"
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
    world.berth(["run"]).succeeds();
    let image = image_of(&world.deployment("web").await);
    let docker = crate::support::docker().await;
    let (container, port) = crate::support::serve(&docker, &image).await;
    let (status, page) = http_get(port, "/index.html").unwrap();
    crate::support::remove_container(&docker, &container).await;
    assert_eq!(status, 200);
    assert!(page.contains("generator-check"), "{page}");

    // Rolled back and run again: the registry holds the image built from this source.
    world.berth(["rollback", "landing"]).succeeds();
    // No context was written.
    world
        .berth(["run"])
        .succeeds()
        .has("build    skip exists:")
        .lacks("context  ok");
    assert_eq!(image_of(&world.deployment("web").await), image);
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_build_inputs_never_move_a_commit_tag() {
    let world = landing_world("image-variant").await;
    let mut pipeline = world.landing_pipeline();
    world.write_pipeline(&pipeline);
    world.berth(["run"]).succeeds();
    let first = image_of(&world.deployment("web").await);

    // Same commit, other build inputs: a build arg the template does not even use.
    pipeline.site_mut("landing").build_arg("UNUSED", "1");
    world.write_pipeline(&pipeline);
    world
        .berth(["run"])
        .succeeds()
        .has("the commit's tag holds an image of other build inputs");
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
    world.berth(["run"]).succeeds();
    let before = image_of(&world.deployment("web").await);
    // A second later, so the new commit's time differs from the seeded ones.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let change = world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>New front page</h1>\n")],
        "One page",
    );
    world.berth(["run"]).succeeds();
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
