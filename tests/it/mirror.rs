//! The mirror stage against the stack's Git servers: over smart HTTP (tokens,
//! force-pushes, deleted branches, tags, damaged mirrors, concurrent processes),
//! over ssh (a key file with a passphrase, an ssh-agent, host keys checked), over
//! git://, and remotes that are down.

use std::path::Path;
use std::process::Command;

use crate::support::{
    Background, Ran, Repo, World, exit, free_port, git, git_commit, http_receiver, text, wait_for_port,
};

/// Writes the pipeline of site `landing` from `repo` ([`World::one_site_pipeline`]).
fn configure(world: &World, repo: Repo) {
    world.write_pipeline(&world.one_site_pipeline(repo));
}

/// `[[repo]]` `landing` at `url`, nothing else set.
fn landing(url: &str) -> Repo {
    Repo::new("landing", url)
}

/// The token of the stack's private Git endpoint.
fn git_token() -> String {
    std::fs::read_to_string(std::env::var("BERTH_STACK_GIT_TOKEN_FILE").unwrap())
        .unwrap()
        .trim()
        .to_string()
}

fn mirror_head(world: &World) -> String {
    world
        .berth(["mirror"])
        .succeeds()
        .stdout()
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string()
}

fn mirror_path(world: &World) -> std::path::PathBuf {
    world.dir.path().join(".berth/mirrors/landing.git")
}

/// Neither the runs' outputs nor any file berth wrote under `.berth` hold `secret`.
fn assert_no_secret(world: &World, runs: &[&Ran], secret: &str) {
    assert!(!secret.is_empty());
    for ran in runs {
        assert!(!ran.all().contains(secret), "an output holds a secret");
    }
    for entry in walkdir::WalkDir::new(world.dir.path().join(".berth"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
    {
        let bytes = std::fs::read(entry.path()).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds a secret",
            entry.path().display()
        );
    }
}

/// Every line of a private key file's body: none may show anywhere.
fn key_lines(key: &Path) -> Vec<String> {
    std::fs::read_to_string(key)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .map(str::to_string)
        .collect()
}

/// The URL of the same bare repo on another of the stack's servers.
fn on_server(base: &str, url: &str) -> String {
    format!("{base}/{}", url.rsplit('/').next().unwrap())
}

/// The ssh remote of a copy of `landing`, with the stack's known_hosts; returns its URL.
fn ssh_world_repo(world: &World) -> String {
    on_server(&world.stack.git_ssh_url, &world.copy_repo("landing"))
}

/// `[[repo]]` `landing` at the ssh `url`, host keys checked against the stack's known_hosts.
fn landing_over_ssh(world: &World, url: &str) -> Repo {
    Repo {
        known_hosts: Some(world.stack.ssh_known_hosts.display().to_string()),
        ..landing(url)
    }
}

/// A copy of the stack's client key at `path` (mode 600), with `passphrase` if not empty.
fn copy_key(world: &World, path: &Path, passphrase: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(&world.stack.ssh_key, path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if !passphrase.is_empty() {
        let locked = Command::new("ssh-keygen")
            .args(["-q", "-p", "-P", "", "-N", passphrase, "-f"])
            .arg(path)
            .output()
            .unwrap();
        assert!(locked.status.success(), "{}", text(&locked));
    }
}

/// The fingerprint ssh-keygen gives the stack's sshd (from its known_hosts file).
fn stack_host_fingerprint(world: &World) -> String {
    let listing = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&world.stack.ssh_known_hosts)
        .output()
        .unwrap();
    String::from_utf8(listing.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -l prints a fingerprint")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ssh_remote_is_mirrored_with_a_key_file_and_its_passphrase_from_the_environment() {
    let world = World::new("mirror-ssh-key").await;
    let url = ssh_world_repo(&world);
    // No agent: the key file alone.
    let no_agent = ("SSH_AUTH_SOCK", "");

    // The stack's key as it is (its .pub beside it), by absolute path.
    configure(
        &world,
        Repo {
            ssh_key: Some(world.stack.ssh_key.display().to_string()),
            ..landing_over_ssh(&world, &url)
        },
    );
    world
        .berth(["mirror"])
        .env(no_agent.0, no_agent.1)
        .succeeds()
        .stdout_has(&world.head(&url, "main"));

    // A copy locked with a passphrase, no .pub beside it, by a path relative to pipeline.toml.
    let passphrase = "correct horse battery staple";
    copy_key(&world, &world.dir.path().join("keys/deploy"), passphrase);
    configure(
        &world,
        Repo {
            ssh_key: Some("keys/deploy".into()),
            ssh_key_passphrase_env: Some("TEST_SSH_PASSPHRASE".into()),
            ..landing_over_ssh(&world, &url)
        },
    );
    let unset = world
        .berth(["mirror"])
        .env(no_agent.0, no_agent.1)
        .fails_with(exit::SITE_FAILED)
        .has("repo `landing`")
        .has("`TEST_SSH_PASSPHRASE`, which is not set");
    let wrong = world
        .berth(["mirror"])
        .env(no_agent.0, no_agent.1)
        .env("TEST_SSH_PASSPHRASE", "wrong passphrase 42")
        .fails_with(exit::SITE_FAILED)
        .has("repo `landing`")
        .has("is the passphrase in TEST_SSH_PASSPHRASE the key's?")
        .lacks("wrong passphrase 42");

    let second = world.commit(&url, "main", &[("index.html", "<h1>over ssh</h1>\n")], "Over ssh");
    let output = world
        .berth(["mirror"])
        .env(no_agent.0, no_agent.1)
        .env("TEST_SSH_PASSPHRASE", passphrase)
        .succeeds()
        .stdout_has(&second);

    let outputs = [&unset, &wrong, &output];
    assert_no_secret(&world, &outputs, passphrase);
    for line in key_lines(&world.dir.path().join("keys/deploy"))
        .into_iter()
        .chain(key_lines(&world.stack.ssh_key))
    {
        assert_no_secret(&world, &outputs, &line);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ssh_remote_is_mirrored_with_the_key_in_an_ssh_agent() {
    let world = World::new("mirror-ssh-agent").await;
    let url = ssh_world_repo(&world);
    configure(&world, landing_over_ssh(&world, &url));

    world
        .berth(["mirror"])
        .env("SSH_AUTH_SOCK", "")
        .fails_with(exit::SITE_FAILED)
        .has("set ssh_key in [[repo]], or run an ssh-agent");

    let socket = world.dir.path().join("agent.sock");
    let _agent = Background::start(Command::new("ssh-agent").arg("-D").arg("-a").arg(&socket));
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let agent = socket.to_str().unwrap();
    // An empty agent.
    world
        .berth(["mirror"])
        .env("SSH_AUTH_SOCK", agent)
        .fails_with(exit::SITE_FAILED)
        .has("refused every key of the ssh-agent");

    let added = Command::new("ssh-add")
        .arg(&world.stack.ssh_key)
        .env("SSH_AUTH_SOCK", agent)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added));
    let output = world
        .berth(["mirror"])
        .env("SSH_AUTH_SOCK", agent)
        .succeeds()
        .stdout_has(&world.head(&url, "main"));
    for line in key_lines(&world.stack.ssh_key) {
        assert_no_secret(&world, &[&output], &line);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_changed_host_keys_are_refused_at_once_and_hashed_known_hosts_are_read() {
    let world = World::new("mirror-host-key").await;
    let url = ssh_world_repo(&world);
    // The stack's key; host keys from ~/.ssh/known_hosts and the system's.
    let with_key = Repo {
        ssh_key: Some(world.stack.ssh_key.display().to_string()),
        ..landing(&url)
    };
    let fingerprint = stack_host_fingerprint(&world);
    let home = world.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let home_env = ("HOME", home.to_str().unwrap());

    // No known_hosts key: ~/.ssh/known_hosts (here empty HOME) and the system's.
    configure(&world, with_key.clone());
    // Refused at once: tried once, not retried.
    world
        .berth(["mirror"])
        .env(home_env.0, home_env.1)
        .fails_with(exit::SITE_FAILED)
        .has("repo `landing`")
        .has("unknown ssh host [127.0.0.1]:")
        .has(&format!("ssh-ed25519 {fingerprint}"))
        .has(&format!("{}/.ssh/known_hosts", home.display()))
        .has("tried 1 time)");
    let refs = git(&mirror_path(&world), &["for-each-ref"]);
    assert!(refs.trim().is_empty(), "nothing fetched: {refs}");

    // The host listed with another ed25519 key: changed, refused.
    let other = world.dir.path().join("other-host-key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let listed = std::fs::read_to_string(&world.stack.ssh_known_hosts).unwrap();
    let host = listed.split_whitespace().next().unwrap();
    let other_public = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let changed = world.dir.path().join("changed_known_hosts");
    std::fs::write(&changed, format!("{host} {other_public}")).unwrap();
    configure(
        &world,
        Repo {
            known_hosts: Some("changed_known_hosts".into()),
            ..with_key.clone()
        },
    );
    world
        .berth(["mirror"])
        .fails_with(exit::SITE_FAILED)
        .has("has CHANGED")
        .has(&fingerprint)
        .has("changed_known_hosts:1 lists another key");

    // The right key in ~/.ssh/known_hosts, hashed as Debian's ssh does by default.
    let ssh_dir = home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    std::fs::write(ssh_dir.join("known_hosts"), &listed).unwrap();
    let hashed = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(ssh_dir.join("known_hosts"))
        .output()
        .unwrap();
    assert!(hashed.status.success(), "{}", text(&hashed));
    let hashed_text = std::fs::read_to_string(ssh_dir.join("known_hosts")).unwrap();
    assert!(hashed_text.starts_with("|1|"), "{hashed_text}");
    configure(&world, with_key);
    world.berth(["mirror"]).env(home_env.0, home_env.1).succeeds();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_git_daemon_remote_is_mirrored_and_followed() {
    let world = World::new("mirror-git-daemon").await;
    let url = on_server(&world.stack.git_daemon_url, &world.copy_repo("landing"));
    configure(&world, landing(&url));
    assert_eq!(mirror_head(&world), world.head(&url, "main"));
    let second = world.commit(&url, "main", &[("index.html", "<h1>git://</h1>\n")], "Over git");
    assert_eq!(mirror_head(&world), second);
}

/// A git daemon of the test's own on `port`, serving the stack's repos.
fn own_git_daemon(world: &World, port: u16) -> Background {
    let exec_path = git(world.dir.path(), &["--exec-path"]);
    let daemon = Background::start(
        Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg(format!("--base-path={}", world.stack.git_root.display()))
            .arg(&world.stack.git_root),
    );
    wait_for_port(port);
    daemon
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_that_is_down_fails_after_retries_and_leaves_the_mirror_as_it_was() {
    let world = World::new("mirror-down").await;
    let port = free_port();
    let url = format!("git://127.0.0.1:{port}/{}", {
        let http = world.copy_repo("landing");
        http.rsplit('/').next().unwrap().to_string()
    });
    configure(&world, landing(&url));
    let daemon = own_git_daemon(&world, port);
    let first = mirror_head(&world);
    drop(daemon);

    // The server is gone and the repo moves on meanwhile.
    let second = world.commit(&url, "main", &[("index.html", "<h1>later</h1>\n")], "Later");
    world
        .berth(["mirror"])
        .fails_with(exit::SITE_FAILED)
        .has(&format!("cannot fetch repo `landing` from {url} (tried 3 times)"));
    let mirrored = git(&mirror_path(&world), &["rev-parse", "refs/heads/main"]);
    assert_eq!(mirrored.trim(), first, "the mirror is as it was");
    git(&mirror_path(&world), &["fsck", "--no-progress"]);

    // An HTTP server that answers 503 to everything: three requests, then the error.
    let (http_port, requests) = http_receiver(
        10,
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    let failing = format!("http://127.0.0.1:{http_port}/git/landing.git");
    configure(&world, landing(&failing));
    world
        .berth(["mirror"])
        .fails_with(exit::SITE_FAILED)
        .has("cannot fetch repo `landing`")
        .has("(tried 3 times)")
        .has("503");
    let asked: Vec<_> = requests.try_iter().map(|request| request.line).collect();
    assert_eq!(asked.len(), 3, "{asked:?}");
    let mirrored = git(&mirror_path(&world), &["rev-parse", "refs/heads/main"]);
    assert_eq!(mirrored.trim(), first, "the mirror is as it was");

    // The server is back: the next run fetches what happened meanwhile.
    configure(&world, landing(&url));
    let _daemon = own_git_daemon(&world, port);
    assert_eq!(mirror_head(&world), second);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_protected_remote_works_with_the_token_in_the_environment_only() {
    let world = World::new("mirror-token").await;
    let token = git_token();
    let url = std::env::var("BERTH_STACK_GIT_PRIVATE_URL").unwrap() + "/landing.git";
    configure(
        &world,
        Repo {
            token_env: Some("TEST_GIT_TOKEN".into()),
            ..landing(&url)
        },
    );

    world
        .berth(["mirror"])
        .fails_with(exit::SITE_FAILED)
        .has("repo `landing`")
        .has("no token is configured");

    let output = world.berth(["mirror"]).env("TEST_GIT_TOKEN", &token).succeeds();
    assert_no_secret(&world, &[&output], &token);
    world
        .berth(["mirror"])
        .env("TEST_GIT_TOKEN", "wrong-token-123")
        .fails_with(exit::SITE_FAILED)
        .lacks("wrong-token-123");
}

#[tokio::test(flavor = "multi_thread")]
async fn new_commits_force_pushes_deleted_branches_and_tags_are_followed() {
    let world = World::new("mirror-follow").await;
    let url = world.copy_repo("landing");
    configure(&world, landing(&url));
    let first = mirror_head(&world);
    assert_eq!(first, world.head(&url, "main"));

    // A new commit, fetched incrementally.
    let second = world.commit(&url, "main", &[("index.html", "<h1>two</h1>\n")], "Two");
    assert_eq!(mirror_head(&world), second);

    // A force-push back to an older history with a new commit on top.
    let work = world.clone_of(&url);
    git(&work, &["reset", "-q", "--hard", &first]);
    std::fs::write(work.join("index.html"), "<h1>rewritten</h1>\n").unwrap();
    git_commit(&work, &["-q", "-am", "Rewritten"]);
    git(&work, &["push", "-q", "--force", "origin", "HEAD:main"]);
    let rewritten = world.head(&url, "main");
    assert_eq!(
        mirror_head(&world),
        rewritten,
        "a force-push is followed, not an error"
    );

    // A branch and a tag appear; the branch is deleted again and pruned.
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/feature"]);
    git(&work, &["tag", "v1.0", &first]);
    git(&work, &["push", "-q", "origin", "v1.0"]);
    mirror_head(&world);
    let branches = git(&mirror_path(&world), &["for-each-ref", "--format=%(refname)"]);
    assert!(
        branches.contains("refs/heads/feature") && branches.contains("refs/tags/v1.0"),
        "{branches}"
    );
    git(&work, &["push", "-q", "origin", "--delete", "feature"]);
    mirror_head(&world);
    let branches = git(&mirror_path(&world), &["for-each-ref", "--format=%(refname)"]);
    assert!(
        !branches.contains("refs/heads/feature"),
        "deleted branches are pruned: {branches}"
    );

    // A tag and an unknown commit through `plan`-free resolution: `ship --commit`.
    world
        .berth(["ship", "landing", "--commit", "0000000deadbeef"])
        .fails_with(exit::SITE_FAILED)
        .has("repo `landing` has no commit `0000000deadbeef`");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_mirror_is_cloned_again_with_a_warning() {
    let world = World::new("mirror-damage").await;
    let url = world.copy_repo("landing");
    configure(&world, landing(&url));
    let head = mirror_head(&world);

    // Truncate every pack: objects are gone, refs still point at them.
    for entry in walkdir::WalkDir::new(mirror_path(&world).join("objects"))
        .into_iter()
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "pack") {
            std::fs::write(entry.path(), b"PACK").unwrap();
        }
    }
    world
        .berth(["mirror"])
        .succeeds()
        .has("is damaged")
        .has("cloning it again")
        .stdout_has(&head);

    // A mirror folder that is not a repo at all.
    std::fs::remove_dir_all(mirror_path(&world)).unwrap();
    std::fs::create_dir_all(mirror_path(&world).join("junk")).unwrap();
    world.berth(["mirror"]).succeeds();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_on_one_mirror_take_turns() {
    let world = World::new("mirror-two").await;
    let url = world.copy_repo("landing");
    configure(&world, landing(&url));
    // While another process holds the mirror's lock, berth waits for it.
    let mirrors = world.dir.path().join(".berth/mirrors");
    std::fs::create_dir_all(&mirrors).unwrap();
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(mirrors.join("landing.lock"))
        .unwrap();
    held.lock().unwrap();
    let mut waiting = world.berth(["mirror"]).spawn();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        waiting.is_running(),
        "berth mirrored while another process held the lock:\n{}",
        waiting.so_far()
    );
    assert!(
        !mirror_path(&world).join("HEAD").exists(),
        "nothing written meanwhile"
    );
    held.unlock().unwrap();
    waiting.wait().exited(exit::OK);
    // Four at once end with one whole mirror.
    let children: Vec<_> = (0..4).map(|_| world.berth(["mirror"]).spawn()).collect();
    for child in children {
        child.wait().exited(exit::OK);
    }
    let fsck = std::process::Command::new("git")
        .args(["fsck", "--no-progress"])
        .current_dir(mirror_path(&world))
        .output()
        .unwrap();
    assert!(fsck.status.success(), "the mirror is whole: {}", text(&fsck));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generator_that_reads_git_history_gets_a_checkout_and_no_git_reaches_the_image() {
    let world = World::example("git-history").await;
    let url = &world.url("website");
    let config =
        std::fs::read_to_string(crate::support::repo_root().join("sites/website/config.toml")).unwrap();
    world.commit(
        url,
        "main",
        &[("config.toml", &format!("enableGitInfo = true\n{config}"))],
        "Dates from Git",
    );

    // Hugo needs Git history.
    world
        .berth(["run", "www-en", "www-de"])
        .fails_with(exit::SITE_FAILED);

    let mut pipeline = world.example_pipeline();
    for site in ["www-en", "www-de"] {
        pipeline.site_mut(site).git_history = true;
    }
    world.write_pipeline(&pipeline);
    world.berth(["run", "www-en", "www-de"]).succeeds();
    let image = crate::support::image_of(&world.deployment("www-en").await);
    let listing = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "find",
            &image,
            "/",
            "-name",
            ".git",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout).trim().is_empty(),
        "no .git in the image: {}",
        text(&listing)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkout_with_history_ships_no_git_even_when_dockerignore_takes_files_back() {
    let world = World::new("git-history-root").await;
    let url = world.copy_repo("landing");
    // A `!` line makes berth walk the folders it excludes, `.git` among them.
    world.commit(
        &url,
        "main",
        &[
            (".dockerignore", "drafts\n!drafts/keep.html\n"),
            ("drafts/keep.html", "kept\n"),
            ("drafts/other.html", "left out\n"),
        ],
        "Drafts, one of them kept",
    );
    let mut pipeline = world.landing_pipeline();
    let landing = pipeline.site_mut("landing");
    // The site's folder is the checkout itself, `.git` and all.
    landing.build = Some("test -d .git".into());
    landing.git_history = true;
    world.write_pipeline(&pipeline);
    world.kwok_deployment("web", &world.busybox()).create().await;
    world.berth(["run"]).succeeds();
    let image = crate::support::image_of(&world.deployment("web").await);
    assert!(
        crate::support::image_has(&image, "/www/drafts/keep.html"),
        "the `!` line takes the file back"
    );
    assert!(!crate::support::image_has(&image, "/www/drafts/other.html"));
    assert!(
        !crate::support::image_has(&image, "/www/.git"),
        "no .git in the image"
    );
    assert!(
        !crate::support::image_has(&image, "/www/.git/config"),
        "nothing of .git in the image"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_theme_in_a_submodule_is_exported_from_its_own_mirror() {
    let world = World::new("submodule").await;
    let root = &world.stack.git_root;
    let theme = format!("{}-theme", world.prefix);
    let site = format!("{}-site", world.prefix);
    // The theme's repo.
    let theme_work = world.dir.path().join("theme-work");
    std::fs::create_dir_all(&theme_work).unwrap();
    git(&theme_work, &["init", "-q", "-b", "main"]);
    std::fs::write(theme_work.join("theme.css"), "body { color: teal }\n").unwrap();
    git(&theme_work, &["add", "-A"]);
    git_commit(&theme_work, &["-q", "-m", "Theme"]);
    git(
        world.dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            theme_work.to_str().unwrap(),
            root.join(format!("{theme}.git")).to_str().unwrap(),
        ],
    );
    // The site's repo, with the theme as a submodule at a relative URL.
    let site_work = world.dir.path().join("site-work");
    std::fs::create_dir_all(&site_work).unwrap();
    git(&site_work, &["init", "-q", "-b", "main"]);
    std::fs::write(site_work.join("index.html"), "<h1>with a theme</h1>\n").unwrap();
    git(
        &site_work,
        &[
            "submodule",
            "add",
            "-q",
            &format!("{}/{theme}.git", world.stack.git_url),
            "vendor/theme",
        ],
    );
    std::fs::write(
        site_work.join(".gitmodules"),
        format!("[submodule \"vendor/theme\"]\n\tpath = vendor/theme\n\turl = ../{theme}.git\n"),
    )
    .unwrap();
    git(&site_work, &["add", "-A"]);
    git_commit(&site_work, &["-q", "-m", "Site with theme"]);
    git(
        world.dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            site_work.to_str().unwrap(),
            root.join(format!("{site}.git")).to_str().unwrap(),
        ],
    );
    let url = format!("{}/{site}.git", world.stack.git_url);
    world
        .kwok_deployment("web", &world.busybox())
        .replicas(2)
        .create()
        .await;
    world.write_pipeline(&world.one_site_pipeline(Repo::new("site", &url)));
    world.berth(["run"]).succeeds();
    let theme_css = |image: &str| {
        std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--entrypoint",
                "cat",
                image,
                "/www/vendor/theme/theme.css",
            ])
            .output()
            .unwrap()
    };
    let css = theme_css(&crate::support::image_of(&world.deployment("web").await));
    assert!(
        String::from_utf8_lossy(&css.stdout).contains("teal"),
        "the theme is in the image: {}",
        text(&css)
    );

    // A new commit of the site with the same theme commit: the theme's mirror
    // holds it, so its server is not asked again (here it has gone).
    world.commit(
        &url,
        "main",
        &[("index.html", "<h1>still with a theme</h1>\n")],
        "Site changed",
    );
    std::fs::rename(
        root.join(format!("{theme}.git")),
        root.join(format!("{theme}-gone.git")),
    )
    .unwrap();
    // The theme is exported from its mirror without a fetch.
    world.berth(["run"]).succeeds();
    let css = theme_css(&crate::support::image_of(&world.deployment("web").await));
    assert!(
        String::from_utf8_lossy(&css.stdout).contains("teal"),
        "the theme is in the new image: {}",
        text(&css)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repo_that_fails_does_not_stop_the_others() {
    let world = World::new("mirror-each").await;
    let url = world.copy_repo("landing");
    let missing = on_server(&world.stack.git_url, "no-such-repo-for-berth.git");
    // A repo that fails, named before the good one, and one more after it.
    let mut pipeline = world.one_site_pipeline(landing(&url));
    pipeline.repos.insert(0, Repo::new("gone", &missing));
    pipeline.repos.push(Repo::new("gone-too", &missing));
    world.write_pipeline(&pipeline);

    world
        .berth(["mirror"])
        .fails_with(exit::SITE_FAILED)
        // The good repo is mirrored and listed...
        .stdout_has(&format!("landing  main    {}", world.head(&url, "main")))
        // ...and each failure is reported.
        .has("cannot fetch repo `gone`")
        .has("cannot fetch repo `gone-too`")
        .has("404");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_a_sites_folder_at_a_commit_into_an_empty_folder() {
    let world = World::new("mirror-export").await;
    let url = world.copy_repo("landing");
    configure(&world, landing(&url));
    let first = world.head(&url, "main");
    let out = world.dir.path().join("out");

    // Offline before any fetch: there is no mirror to read.
    world
        .berth(["export", "landing"])
        .arg(&out)
        .arg("--offline")
        .fails_with(exit::SITE_FAILED)
        .has("repo `landing` has no mirror yet");

    // The branch head, fetched first; the commit goes to stdout.
    let exported = world.berth(["export", "landing"]).arg(&out).succeeds();
    assert_eq!(exported.stdout().trim(), first, "{exported}");
    let bare = world.repo_path(&url);
    let listed = git(&bare, &["ls-tree", "-r", "--name-only", &first]);
    let mut exported: Vec<String> = walkdir::WalkDir::new(&out)
        .into_iter()
        .flatten()
        .filter(|entry| !entry.file_type().is_dir())
        .map(|entry| entry.path().strip_prefix(&out).unwrap().display().to_string())
        .collect();
    exported.sort();
    let mut expected: Vec<String> = listed.lines().map(str::to_string).collect();
    expected.sort();
    assert_eq!(
        exported, expected,
        "every file of the commit, and nothing else (no .git)"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("index.html")).unwrap(),
        git(&bare, &["show", &format!("{first}:index.html")])
    );

    // A folder that holds something is refused (usage error), and left as it was.
    world
        .berth(["export", "landing"])
        .arg(&out)
        .fails_with(exit::USAGE)
        .has("is not an empty folder");

    // An older commit, from the mirror as it is (the new commit is not fetched).
    let second = world.commit(&url, "main", &[("index.html", "<h1>two</h1>\n")], "Two");
    let older = world.dir.path().join("older");
    std::fs::create_dir(&older).unwrap();
    let exported = world
        .berth(["export", "landing"])
        .arg(&older)
        .args(["--offline", "--commit", &first[..10]])
        .succeeds();
    assert_eq!(exported.stdout().trim(), first, "{exported}");
    // Not fetched yet.
    world
        .berth(["export", "landing"])
        .arg(world.dir.path().join("unknown"))
        .args(["--offline", "--commit", &second])
        .fails_with(exit::SITE_FAILED);

    // --json: the commit written, where, and how many files; then the mirror's heads.
    let as_json = world.dir.path().join("as-json");
    let exported = world
        .berth(["export", "landing"])
        .arg(&as_json)
        .arg("--json")
        .json();
    crate::support::validate_against("export.schema.json", &exported);
    assert_eq!(exported["commit"], second.as_str(), "{exported:#}");
    assert_eq!(
        exported["files"].as_u64(),
        Some(expected.len() as u64),
        "{exported:#}"
    );
    let mirrored = world.berth(["mirror", "--json"]).json();
    crate::support::validate_against("mirror.schema.json", &mirrored);
    assert_eq!(mirrored["repos"][0]["head"], second.as_str(), "{mirrored:#}");
    assert!(mirrored["repos"][0]["error"].is_null(), "{mirrored:#}");
}

/// An https remote (the stack's Git server behind TLS, with a certificate of the
/// stack's own CA): the server's certificate is checked against the CA bundle
/// (`SSL_CERT_FILE`), which berth loads only when an https remote is fetched; a
/// certificate no bundle trusts is refused at once, not retried; the token works
/// over TLS and appears nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn an_https_remote_is_checked_against_the_ca_bundle_and_takes_a_token() {
    let world = World::new("mirror-https").await;
    let ca = std::env::var("BERTH_STACK_GIT_CA_FILE").unwrap();
    let token = git_token();
    let url = std::env::var("BERTH_STACK_GIT_HTTPS_PRIVATE_URL").unwrap() + "/landing.git";
    configure(
        &world,
        Repo {
            token_env: Some("TEST_GIT_TOKEN".into()),
            ..landing(&url)
        },
    );

    // A certificate refusal is not retried, and comes at once (no timeout).
    let started = std::time::Instant::now();
    let refused = world
        .berth(["mirror"])
        .env("TEST_GIT_TOKEN", &token)
        .fails_with(exit::SITE_FAILED)
        .has("repo `landing`")
        .has("certificate")
        .has("tried 1 time");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{refused}"
    );

    let head = world.head(
        &(std::env::var("BERTH_STACK_GIT_URL").unwrap() + "/landing.git"),
        "main",
    );
    let output = world
        .berth(["mirror"])
        .env("TEST_GIT_TOKEN", &token)
        .env("SSL_CERT_FILE", &ca)
        .succeeds()
        .has(&head[..12]);
    assert_no_secret(&world, &[&refused, &output], &token);
}

/// A server that accepts connections and never answers: each attempt gives up
/// after the timeout, the fetch is tried 3 times, and the run ends instead of
/// hanging.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_fails_the_fetch_after_the_timeout() {
    let world = World::new("mirror-silent").await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        });
    }
    configure(
        &world,
        landing(&format!("http://127.0.0.1:{port}/git/landing.git")),
    );
    let started = std::time::Instant::now();
    let ran = world
        .berth(["mirror"])
        .env("BERTH_GIT_TIMEOUT", "1")
        .fails_with(exit::SITE_FAILED)
        .has("repo `landing`")
        .has("tried 3 times")
        .has("the server sent nothing for 1 s (BERTH_GIT_TIMEOUT");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{ran}");
    assert!(held.lock().unwrap().len() >= 3, "one connection per attempt");
}

/// A proxy to the stack's Git server that cuts every `git-upload-pack` answer
/// (the pack) in half and closes the connection. Returns its port.
fn pack_cutting_proxy() -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let upstream = std::env::var("BERTH_STACK_GIT_URL").unwrap();
    let upstream = upstream
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut client = stream;
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let mut request = Vec::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if lower.starts_with("connection:") {
                    continue;
                }
                if line == "\r\n" {
                    request.extend_from_slice(b"Connection: close\r\n\r\n");
                    break;
                }
                request.extend_from_slice(line.as_bytes());
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            request.extend_from_slice(&body);
            let mut server = std::net::TcpStream::connect(&upstream).unwrap();
            server.write_all(&request).unwrap();
            let mut response = Vec::new();
            server.read_to_end(&mut response).unwrap();
            let body_start = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let keep = if request.starts_with(b"POST") {
                body_start + (response.len() - body_start) / 2
            } else {
                response.len()
            };
            let _ = client.write_all(&response[..keep]);
        }
    });
    port
}

/// The first fetch of a mirror goes to the parallel indexer (src/pack_index.rs).
/// A pack cut off half-way fails the fetch, naming the repo, and leaves no
/// partial pack or temporary file behind; the next whole fetch gives one pack
/// and its index that git reads and checks in full.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_pack_cut_off_half_way_leaves_nothing_and_a_whole_one_is_complete() {
    let world = World::new("mirror-cut").await;
    let url = world.copy_repo("landing");
    let port = pack_cutting_proxy();
    let path = url.split("/git/").nth(1).unwrap();
    configure(&world, landing(&format!("http://127.0.0.1:{port}/git/{path}")));
    world
        .berth(["mirror"])
        .fails_with(exit::SITE_FAILED)
        .has("cannot fetch repo `landing`");
    let packs = mirror_path(&world).join("objects/pack");
    let left: Vec<_> = std::fs::read_dir(&packs)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // What a first fetch killed half-way leaves (gix-pack's temporary file):
    // the next first fetch clears it.
    std::fs::write(packs.join(".tmpKILLED"), b"PACK\0\0\0\x02").unwrap();

    configure(&world, landing(&url));
    let head = mirror_head(&world);
    let mut names: Vec<_> = std::fs::read_dir(&packs)
        .unwrap()
        .flatten()
        .map(|entry| entry.path().extension().unwrap().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["idx", "pack"]);
    git(
        &mirror_path(&world),
        &["fsck", "--full", "--no-progress", "--no-dangling"],
    );
    assert_eq!(
        git(&mirror_path(&world), &["rev-parse", "refs/heads/main"]).trim(),
        head
    );

    // A later fetch (a thin pack, on top of the first) goes to libgit2's indexer.
    let next = world.commit(&url, "main", &[("index.html", "<h1>next</h1>\n")], "Next");
    assert_eq!(mirror_head(&world), next);
    git(
        &mirror_path(&world),
        &["fsck", "--full", "--no-progress", "--no-dangling"],
    );

    // The server gone mid-pack on a later fetch: the mirror stays as it
    // was (refs and objects), and the next fetch works.
    let last = world.commit(&url, "main", &[("index.html", "<h1>last</h1>\n")], "Last");
    configure(&world, landing(&format!("http://127.0.0.1:{port}/git/{path}")));
    world.berth(["mirror"]).fails_with(exit::SITE_FAILED);
    assert_eq!(
        git(&mirror_path(&world), &["rev-parse", "refs/heads/main"]).trim(),
        next,
        "the refs as they were"
    );
    git(
        &mirror_path(&world),
        &["fsck", "--full", "--no-progress", "--no-dangling"],
    );
    configure(&world, landing(&url));
    assert_eq!(mirror_head(&world), last);
}

/// A first pack larger than gix-pack may take (it maps the whole pack while it
/// resolves deltas) is handed over to libgit2's indexer half-way, from the copy
/// kept of its first bytes: the mirror is complete and git reads and checks it.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_pack_past_the_parallel_limit_is_handed_over_to_libgit2_whole() {
    let world = World::new("mirror-large").await;
    let url = world.copy_repo("landing");
    let work = world.clone_of(&url);
    // 56 MiB that does not compress: xorshift bytes, 1 MiB per file.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for index in 0..56 {
        let mut content = Vec::with_capacity(1 << 20);
        while content.len() < 1 << 20 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            content.extend_from_slice(&state.to_le_bytes());
        }
        std::fs::create_dir_all(work.join("media")).unwrap();
        std::fs::write(work.join(format!("media/{index}.bin")), content).unwrap();
    }
    git(&work, &["add", "-A"]);
    git_commit(&work, &["-q", "-m", "Media"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let head = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    git(&world.repo_path(&url), &["repack", "-adq"]);
    configure(&world, landing(&url));

    world
        .berth(["mirror"])
        .env("BERTH_LOG", "berth=debug")
        .succeeds()
        .has("libgit2's indexer takes the first pack: it is larger than 48 MiB")
        .lacks("panicked");
    let packs: Vec<_> = std::fs::read_dir(mirror_path(&world).join("objects/pack"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path().extension().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(packs.len(), 2, "one pack and its index: {packs:?}");
    git(
        &mirror_path(&world),
        &["fsck", "--full", "--no-progress", "--no-dangling"],
    );
    assert_eq!(
        git(&mirror_path(&world), &["rev-parse", "refs/heads/main"]).trim(),
        head
    );
}

/// An `http://` remote that redirects to `https://` on the same host is fetched
/// from there, as git does (libgit2 follows the redirect), with a warning
/// naming the host; the mirror keeps the configured URL. berth loads the CA
/// bundle only for https remotes, so the first attempt stops at the
/// certificate and is made again with the bundle: the http server answers
/// twice. A redirect to another host is refused at once (the repo's token is
/// not for it), asking for the URL it redirects to.
#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_https_is_followed_on_the_same_host_and_refused_to_another() {
    let world = World::new("mirror-redirect").await;
    let ca = std::env::var("BERTH_STACK_GIT_CA_FILE").unwrap();
    let url = world.copy_repo("landing");
    let name = url.rsplit('/').next().unwrap().to_string();
    let https = format!("{}/{name}", std::env::var("BERTH_STACK_GIT_HTTPS_URL").unwrap());
    let answer = format!(
        "HTTP/1.1 301 Moved Permanently\r\nlocation: {https}/info/refs?service=git-upload-pack\r\ncontent-length: 0\r\n\r\n"
    );
    let (port, requests) = http_receiver(5, Box::leak(answer.into_bytes().into_boxed_slice()));
    let redirecting = format!("http://127.0.0.1:{port}/git/{name}");
    configure(&world, landing(&redirecting));
    let ran = world
        .berth(["mirror"])
        .env("SSL_CERT_FILE", &ca)
        .succeeds()
        .has(&format!(
            "{redirecting} redirects to https:// on 127.0.0.1; fetching from there"
        ));
    assert_eq!(
        ran.all().matches("redirects to https://").count(),
        1,
        "one warning: {ran}"
    );
    assert_eq!(requests.try_iter().count(), 2);
    assert_eq!(
        git(&mirror_path(&world), &["rev-parse", "refs/heads/main"]).trim(),
        world.head(&url, "main")
    );
    assert_eq!(
        git(&mirror_path(&world), &["config", "remote.origin.url"]).trim(),
        redirecting
    );

    let (port, requests) = http_receiver(
        5,
        b"HTTP/1.1 301 Moved Permanently\r\nlocation: https://localhost:8443/git/landing.git/info/refs?service=git-upload-pack\r\ncontent-length: 0\r\n\r\n",
    );
    configure(
        &world,
        landing(&format!("http://127.0.0.1:{port}/git/landing.git")),
    );
    world
        .berth(["mirror"])
        .fails_with(exit::SITE_FAILED)
        .has("(tried 1 time)")
        .has("cannot redirect from '127.0.0.1' to 'localhost'")
        .has("write the URL the server redirects to in [[repo]]");
    assert_eq!(requests.try_iter().count(), 1);
}

/// A local path remote: libgit2 builds the pack itself, with deltas that name
/// their base by id, which gix-pack refuses; libgit2's indexer takes the pack
/// over from the copy, and the mirror is complete, with every ref.
#[tokio::test(flavor = "multi_thread")]
async fn a_local_path_remote_with_deltas_is_mirrored_whole() {
    let world = World::new("mirror-local").await;
    let url = world.copy_repo("landing");
    let work = world.clone_of(&url);
    let source = world.repo_path(&url);
    // Versions of a long page, each a line longer: deltas of one another.
    let mut page = String::new();
    for line in 0..2000 {
        page.push_str(&format!("<p>line {line} of the page</p>\n"));
    }
    for version in 0..5 {
        page.push_str(&format!("<p>version {version}</p>\n"));
        std::fs::write(work.join("long.html"), &page).unwrap();
        git(&work, &["add", "-A"]);
        git_commit(&work, &["-q", "-m", &format!("Version {version}")]);
    }
    git(&work, &["tag", "-a", "v1", "-m", "Version one"]);
    git(&work, &["push", "-q", "--tags", "origin", "main"]);
    configure(&world, landing(source.to_str().unwrap()));

    world
        .berth(["mirror"])
        .env("BERTH_LOG", "berth=debug")
        .succeeds()
        .has("libgit2's indexer takes the first pack")
        .lacks("damaged")
        .lacks("panicked");
    git(
        &mirror_path(&world),
        &["fsck", "--full", "--no-progress", "--no-dangling"],
    );
    assert_eq!(
        git(&mirror_path(&world), &["for-each-ref"]),
        git(&source, &["for-each-ref", "refs/heads", "refs/tags"])
    );
}
