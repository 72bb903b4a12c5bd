//! The mirror stage against the stack's Git server over smart HTTP: tokens,
//! force-pushes, deleted branches, tags, damaged mirrors, concurrent processes.

use crate::support::{World, git, text};

/// A world with a copy of `landing`, and a config mirroring it from `url`.
fn configure(world: &World, url: &str, token_env: Option<&str>) {
    let templates = crate::support::repo_root().join("templates");
    let token = token_env
        .map(|name| format!("token_env = \"{name}\"\n"))
        .unwrap_or_default();
    world.write_config(&format!(
        "templates = \"{}\"\n[registry]\naddress = \"{}\"\ncredentials = \"none\"\n[[repo]]\nname = \"landing\"\nurl = \"{url}\"\n{token}\
         [[site]]\nname = \"landing\"\nrepo = \"landing\"\nimage = \"{}/landing\"\ndeployment = {{ name = \"web\", container = \"web\" }}\n",
        templates.display(),
        world.stack.registry,
        world.prefix
    ));
}

fn mirror_head(world: &World) -> String {
    let output = world.berth(&["mirror"]);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8(output.stdout)
        .unwrap()
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

#[tokio::test(flavor = "multi_thread")]
async fn a_token_protected_remote_works_with_the_token_in_the_environment_only() {
    let world = World::new("mirror-token").await;
    let token = std::fs::read_to_string(std::env::var("BERTH_STACK_GIT_TOKEN_FILE").unwrap())
        .unwrap()
        .trim()
        .to_string();
    let url = std::env::var("BERTH_STACK_GIT_PRIVATE_URL").unwrap() + "/landing.git";
    configure(&world, &url, Some("TEST_GIT_TOKEN"));

    let output = world.berth(&["mirror"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("repo `landing`") && all.contains("no token is configured"),
        "{all}"
    );

    let output = world.berth_with_env(&["mirror"], &[("TEST_GIT_TOKEN", &token)]);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(!all.contains(&token), "the token never shows");
    // No file berth wrote holds the token.
    for entry in walkdir::WalkDir::new(world.dir.path().join(".berth"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
    {
        let bytes = std::fs::read(entry.path()).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "{} holds the token",
            entry.path().display()
        );
    }
    let wrong = world.berth_with_env(&["mirror"], &[("TEST_GIT_TOKEN", "wrong-token-123")]);
    let all = text(&wrong);
    assert_eq!(wrong.status.code(), Some(1), "{all}");
    assert!(!all.contains("wrong-token-123"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn new_commits_force_pushes_deleted_branches_and_tags_are_followed() {
    let world = World::new("mirror-follow").await;
    let url = world.copy_repo("landing");
    configure(&world, &url, None);
    let first = mirror_head(&world);
    assert_eq!(first, world.head(&url, "main"));

    // A new commit, fetched incrementally.
    let second = world.commit(&url, "main", &[("index.html", "<h1>two</h1>\n")], "Two");
    assert_eq!(mirror_head(&world), second);

    // A force-push back to an older history with a new commit on top.
    let bare = world.repo_path(&url);
    let work = world.dir.path().join("force");
    git(
        world.dir.path(),
        &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()],
    );
    git(&work, &["reset", "-q", "--hard", &first]);
    std::fs::write(work.join("index.html"), "<h1>rewritten</h1>\n").unwrap();
    git(
        &work,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.test",
            "commit",
            "-q",
            "-am",
            "Rewritten",
        ],
    );
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
    let output = world.berth(&["ship", "landing", "--commit", "0000000deadbeef"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("repo `landing` has no commit `0000000deadbeef`"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_mirror_is_cloned_again_with_a_warning() {
    let world = World::new("mirror-damage").await;
    let url = world.copy_repo("landing");
    configure(&world, &url, None);
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
    let output = world.berth(&["mirror"]);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("is damaged") && all.contains("cloning it again"),
        "{all}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&head));

    // A mirror folder that is not a repo at all.
    std::fs::remove_dir_all(mirror_path(&world)).unwrap();
    std::fs::create_dir_all(mirror_path(&world).join("junk")).unwrap();
    let output = world.berth(&["mirror"]);
    assert!(output.status.success(), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_on_one_mirror_take_turns() {
    let world = World::new("mirror-two").await;
    let url = world.copy_repo("landing");
    configure(&world, &url, None);
    let children: Vec<_> = (0..4).map(|_| world.spawn_berth(&["mirror"])).collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
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
    let example = crate::pipeline::Example::new("git-history").await;
    let world = &example.world;
    let url = &example.urls["website"];
    let config =
        std::fs::read_to_string(crate::support::repo_root().join("sites/website/config.toml")).unwrap();
    world.commit(
        url,
        "main",
        &[("config.toml", &format!("enableGitInfo = true\n{config}"))],
        "Dates from Git",
    );

    let output = world.berth(&["run", "www-en", "www-de"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "Hugo needs Git history: {all}");

    let pipeline = world.dir.path().join("pipeline.toml");
    let text_before = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        text_before.replace("repo = \"website\"\n", "repo = \"website\"\ngit_history = true\n"),
    )
    .unwrap();
    let output = world.berth(&["run", "www-en", "www-de"]);
    assert!(output.status.success(), "{}", text(&output));
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
    git(
        &theme_work,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.test",
            "commit",
            "-q",
            "-m",
            "Theme",
        ],
    );
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
    git(
        &site_work,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.test",
            "commit",
            "-q",
            "-m",
            "Site with theme",
        ],
    );
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
        .create_deployment("web", 2, &format!("{}/berth/base:busybox", world.stack.registry))
        .await;
    let templates = crate::support::repo_root().join("templates");
    world.write_config(&format!(
        "templates = \"{}\"\n[registry]\naddress = \"{}\"\ncredentials = \"none\"\n[kubernetes]\nnamespace = \"{}\"\n[[repo]]\nname = \"site\"\nurl = \"{url}\"\n\
         [[site]]\nname = \"site\"\nrepo = \"site\"\nimage = \"{}/site\"\ndeployment = {{ name = \"web\", container = \"web\" }}\n",
        templates.display(),
        world.stack.registry,
        world.namespace,
        world.prefix
    ));
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    let image = crate::support::image_of(&world.deployment("web").await);
    let css = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            &image,
            "/www/vendor/theme/theme.css",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&css.stdout).contains("teal"),
        "the theme is in the image: {}",
        text(&css)
    );
}
