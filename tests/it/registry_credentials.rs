//! Registry credentials as docker resolves them, against the stack's auth
//! registry: `config.json` keys with a scheme and `/v1/`, a `credsStore`
//! helper that has no entry for berth's registry (anonymous, as in docker),
//! the base image a build pulls from a registry berth does not push to, and
//! the existing-image check, which reads the registry and pulls nothing.
//! Each run gets its own `DOCKER_CONFIG` (and `PATH`) as a child's
//! environment, never the test process's.

use base64::Engine as _;

use crate::images::{landing_world, pushing_to};
use crate::support::{Credentials, World, exit, image_of, text};

/// A `DOCKER_CONFIG` folder of this world's, holding `config` as config.json.
fn docker_config(world: &World, name: &str, config: &serde_json::Value) -> String {
    let dir = world.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir.display().to_string()
}

/// `auth` of a config.json entry: base64 of the auth registry's `user:password`.
fn auth_of(world: &World) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        world.stack.auth_username, world.stack.auth_password
    ))
}

/// The stack's base image pushed to the auth registry as this world's
/// `<prefix>/base:1`, and removed from the Engine again: a build that
/// `FROM`s it must pull it from there, with credentials.
fn private_base(world: &World) -> String {
    let stack = &world.stack;
    let private = format!("{}/{}/base:1", stack.auth_registry, world.prefix);
    let push = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker tag {base} {private} && DOCKER_CONFIG={config} docker push -q {private} && docker rmi {private}",
            base = stack.base_image,
            config = std::env::var("BERTH_STACK_AUTH_DOCKER_CONFIG").unwrap(),
        ))
        .output()
        .unwrap();
    assert!(push.status.success(), "{}", text(&push));
    private
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_json_key_with_a_scheme_and_v1_logs_in_to_the_auth_registry() {
    let world = landing_world("creds-key").await;
    let stack = &world.stack;
    world.write_pipeline(&pushing_to(
        &world,
        &stack.auth_registry,
        Credentials::DockerConfig,
    ));
    let key = format!("http://{}/v1/", stack.auth_registry);
    let config = docker_config(
        &world,
        "docker",
        &serde_json::json!({"auths": {key: {"auth": auth_of(&world)}}}),
    );
    world
        .berth(["run"])
        .env("DOCKER_CONFIG", &config)
        .succeeds()
        .lacks(&stack.auth_password);
    let image = image_of(&world.deployment("web").await);
    assert!(image.starts_with(&format!("{}/", stack.auth_registry)), "{image}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_pulls_its_base_from_a_registry_only_config_json_knows() {
    let world = landing_world("creds-base").await;
    let stack = &world.stack;
    let private = private_base(&world);
    // berth pushes to the open registry; only the base is behind credentials,
    // under a key with a scheme and a path.
    let mut pipeline = pushing_to(&world, &stack.registry, Credentials::DockerConfig);
    pipeline.site_mut("landing").build_arg("BASE_IMAGE", &private);
    world.write_pipeline(&pipeline);
    let key = format!("https://{}/v1/", stack.auth_registry);
    let config = docker_config(
        &world,
        "docker",
        &serde_json::json!({"auths": {key: {"auth": auth_of(&world)}}}),
    );
    world.berth(["run"]).env("DOCKER_CONFIG", &config).succeeds();
    let image = image_of(&world.deployment("web").await);
    assert!(image.starts_with(&format!("{}/", stack.registry)), "{image}");

    // A developer's `berth build` of a working tree gets them too.
    let checkout = world.clone_of(&world.url("landing"));
    world
        .berth(["build", "landing", "--source"])
        .arg(&checkout)
        .env("DOCKER_CONFIG", &config)
        .succeeds();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_creds_store_without_an_entry_for_berths_registry_is_anonymous_and_lends_the_build_its_others() {
    let world = landing_world("creds-store").await;
    let stack = &world.stack;
    let private = private_base(&world);
    // A credsStore helper speaking docker-credential-helpers' protocol: it
    // holds the auth registry's credentials, and answers any other registry
    // as a keychain without an entry does. Each call is logged.
    let bin = world.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = world.dir.path().join("helper.log");
    let helper = bin.join("docker-credential-berthstore");
    std::fs::write(
        &helper,
        format!(
            r#"#!/bin/sh
read -r server
echo "$1 $server" >>'{log}'
case "$1" in
  list) printf '{{"{auth}":"{user}"}}' ;;
  get)
    if [ "$server" = '{auth}' ]; then
      printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}' "$server"
    else
      echo 'credentials not found in native keychain'
      exit 1
    fi ;;
  *) echo "unsupported: $1"; exit 1 ;;
esac
"#,
            log = log.display(),
            auth = stack.auth_registry,
            user = stack.auth_username,
            password = stack.auth_password,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = docker_config(
        &world,
        "docker",
        &serde_json::json!({"credsStore": "berthstore", "auths": {"https://index.docker.io/v1/": {}}}),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut pipeline = pushing_to(&world, &stack.registry, Credentials::DockerConfig);
    pipeline.site_mut("landing").build_arg("BASE_IMAGE", &private);
    world.write_pipeline(&pipeline);

    world
        .berth(["run"])
        .env("DOCKER_CONFIG", &config)
        .env("PATH", &path)
        .succeeds()
        .lacks(&stack.auth_password);
    let image = image_of(&world.deployment("web").await);
    assert!(image.starts_with(&format!("{}/", stack.registry)), "{image}");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains(&format!("get {}\n", stack.registry)), "{calls}");
    assert!(calls.contains("list"), "{calls}");
    assert!(
        calls.contains(&format!("get {}\n", stack.auth_registry)),
        "{calls}"
    );

    // Anything else the helper says is an error, in its words.
    std::fs::write(&helper, "#!/bin/sh\necho 'the keychain is locked'\nexit 1\n").unwrap();
    world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>locked</h1>\n")],
        "Locked keychain",
    );
    world
        .berth(["run"])
        .env("DOCKER_CONFIG", &config)
        .env("PATH", &path)
        .fails_with(exit::SITE_FAILED)
        .has("docker-credential-berthstore failed for")
        .has("the keychain is locked");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_existing_image_check_reads_the_registry_and_pulls_nothing() {
    let world = landing_world("creds-exists").await;
    world.write_pipeline(&world.landing_pipeline());
    world.berth(["run"]).succeeds();
    let image = image_of(&world.deployment("web").await);
    world.berth(["rollback", "landing"]).succeeds();

    // This machine forgets the image: only the registry has it now.
    let docker = crate::support::docker().await;
    let tagged = image.split('@').next().unwrap();
    let pinned = format!(
        "{}@{}",
        tagged.rsplit_once(':').unwrap().0,
        image.split('@').nth(1).unwrap()
    );
    let options = bollard::query_parameters::RemoveImageOptions {
        force: true,
        ..Default::default()
    };
    docker.remove_image(tagged, Some(options), None).await.unwrap();
    assert!(docker.inspect_image(&pinned).await.is_err(), "{pinned} is gone");

    // Nothing was built: no context was written.
    world
        .berth(["run"])
        .succeeds()
        .has("build    skip exists:")
        .lacks("context  ok");
    assert_eq!(image_of(&world.deployment("web").await), image);
    assert!(
        docker.inspect_image(&pinned).await.is_err(),
        "the check pulled {pinned} into the Engine"
    );
}
