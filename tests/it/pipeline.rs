//! The whole pipeline through the real binary: pipeline.toml → mirror → build →
//! push → deploy, on the stack.

use std::collections::HashMap;

use crate::support::{SITES, World, exit, image_of, text};

/// The generation of each example site's Deployment.
async fn generations(world: &World) -> HashMap<&'static str, i64> {
    let mut generations = HashMap::new();
    for (site, _) in SITES {
        generations.insert(site, world.generation(site).await);
    }
    generations
}

/// The tags of site `site`'s image repository in the open registry.
fn registry_tags(world: &World, site: &str) -> Vec<String> {
    let url = format!("/v2/{}/tags/list", world.image(site));
    let port = world.stack.registry_port();
    let (status, body) = crate::support::http_get(port, &url).unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_ships_every_site_then_changes_nothing_then_ships_only_what_changed() {
    let world = World::example("pipeline").await;

    // 1. A full run ships every example site.
    world.berth(["run"]).succeeds();
    for (site, repo) in SITES {
        let head = world.repo_head(repo);
        let image = image_of(&world.deployment(site).await);
        let expected = format!("{}/{}:{head}@sha256:", world.stack.registry, world.image(site));
        assert!(
            image.starts_with(&expected),
            "{site}: {image} does not start with {expected}"
        );
        assert!(
            registry_tags(&world, site).contains(&head),
            "{site}: registry lacks tag {head}"
        );
    }

    // 2. A second run with no new commits changes nothing in the cluster.
    let before = generations(&world).await;
    let ran = world.berth(["run"]).succeeds();
    assert_eq!(generations(&world).await, before);
    assert_eq!(ran.stdout().matches("unchanged").count(), 4, "{ran}");

    // 3. A new commit to one repo ships only its site; a commit outside docs/ in
    //    the product's monorepo does not ship the docs.
    let landing = world.commit(
        &world.url("landing"),
        "main",
        &[("index.html", "<h1>new landing</h1>\n")],
        "New landing page",
    );
    world.commit(
        &world.url("product"),
        "main",
        &[("src/lantern/extra.py", "print('x')\n")],
        "Code only",
    );
    world.berth(["run"]).succeeds();
    let after = generations(&world).await;
    for (site, _) in SITES {
        if site == "landing" {
            assert_eq!(after[site], before[site] + 1, "landing was shipped");
        } else {
            assert_eq!(after[site], before[site], "{site} must not change");
        }
    }
    let image = image_of(&world.deployment("landing").await);
    assert!(image.contains(&format!(":{landing}@sha256:")), "{image}");
    let deployment = world.deployment("landing").await;
    let annotations = deployment.metadata.annotations.unwrap();
    assert_eq!(annotations["berth.dev/commit"], landing);
    assert!(annotations["kubernetes.io/change-cause"].contains("New landing page"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_build_command_ships_nothing_and_the_other_sites_still_ship() {
    let world = World::example("failing-build").await;
    // Break the Hugo site's template: hugo fails, both languages fail, nothing pushed.
    world.commit(
        &world.url("website"),
        "main",
        &[("layouts/_default/baseof.html", "{{ .Broken ")],
        "Break the layout",
    );
    let before_en = image_of(&world.deployment("www-en").await);
    let ran = world
        .berth(["run"])
        .fails_with(exit::SITE_FAILED)
        .has("build command `hugo --minify` failed");
    assert_eq!(image_of(&world.deployment("www-en").await), before_en);
    let port: u16 = world.stack.registry_port();
    let (status, _) =
        crate::support::http_get(port, &format!("/v2/{}/tags/list", world.image("www-en"))).unwrap();
    assert_eq!(status, 404, "nothing was pushed for www-en");
    // The others shipped.
    let landing = image_of(&world.deployment("landing").await);
    assert!(landing.contains(&world.repo_head("landing")), "{landing}\n{ran}");
}

/// Commits `line` appended to `path` of the website repo; returns the commit.
fn append_to_website(world: &World, path: &str, line: &str, message: &str) -> String {
    let url = &world.url("website");
    let mut text = String::from_utf8(std::fs::read(world.clone_of(url).join(path)).unwrap()).unwrap();
    text.push_str(&format!("\n{line}\n"));
    world.commit(url, "main", &[(path, text.as_str())], message)
}

/// The arguments that point berth at `state`, when there is one.
fn state_args(state: Option<&std::path::Path>) -> Vec<String> {
    state.map_or_else(Vec::new, |state| {
        vec!["--state-dir".into(), state.display().to_string()]
    })
}

/// Each site of a `--json` report or plan with its action, by site name.
fn actions(document: &serde_json::Value) -> Vec<(String, String)> {
    let mut actions: Vec<(String, String)> = document["sites"]
        .as_array()
        .unwrap_or_else(|| panic!("no sites in {document:#}"))
        .iter()
        .map(|site| {
            (
                site["site"].as_str().unwrap().to_string(),
                site["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    actions.sort();
    actions
}

/// Two sites from one Hugo run (`public/en`, `public/de`): a commit that
/// changes only a German post ships www-de, and www-en, whose files are the
/// same, is up to date: nothing built, pushed or rolled out, the new commit
/// recorded. The same with an empty state folder (a fresh CI runner).
#[tokio::test(flavor = "multi_thread")]
async fn a_site_whose_generated_files_did_not_change_is_up_to_date_without_a_rollout() {
    let world = World::example("same-files").await;
    world.berth(["run", "www-en", "www-de"]).succeeds();
    let english = world.deployment("www-en").await;
    let (image, generation) = (image_of(&english), english.metadata.generation.unwrap());
    let tags = registry_tags(&world, "www-en");
    let [home_modified] = last_modified(&image, ["/"]).await;

    let post = "content/de/news/new-office.md";
    for (round, state) in [(1, None), (2, Some(world.dir.path().join("empty-state")))] {
        let commit = append_to_website(
            &world,
            post,
            &format!("Noch ein Satz ({round})."),
            "Only a German post",
        );
        let mut args = vec!["www-en".to_string(), "www-de".into(), "--json".into()];
        args.extend(state_args(state.as_deref()));
        // plan says it first, with run's words.
        let plan = world.berth(["plan"]).args(&args).json();
        crate::support::validate_against("plan.schema.json", &plan);
        let planned = |name: &str| {
            plan["sites"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["site"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(planned("www-de")["action"], "build-and-deploy", "{plan}");
        assert_eq!(planned("www-en")["action"], "up-to-date", "{plan}");
        assert!(
            planned("www-en")["reason"]
                .as_str()
                .unwrap()
                .starts_with("same files as the running image"),
            "{plan}"
        );
        let ran = world
            .berth(["run"])
            .args(&args)
            .succeeds()
            .has("up to date: same files as the running image");
        let report = ran.json();
        let sites = report["sites"].as_array().unwrap();
        let entry = |name: &str| sites.iter().find(|s| s["site"] == name).unwrap().clone();
        assert_eq!(entry("www-de")["action"], "deployed", "{ran}");
        let en = entry("www-en");
        assert_eq!(en["action"], "up-to-date", "{ran}");
        assert!(
            en["reason"]
                .as_str()
                .unwrap()
                .starts_with("same files as the running image, built at `"),
            "{en}"
        );
        assert_eq!(en["image"], image.as_str(), "{en}");
        crate::support::validate_against("report.schema.json", &report);

        let english = world.deployment("www-en").await;
        assert_eq!(image_of(&english), image, "round {round}: the image stays");
        assert_eq!(
            english.metadata.generation.unwrap(),
            generation,
            "round {round}: no rollout"
        );
        // Recorded where the next run and `status` find it.
        let status = world.berth(["status", "www-en", "--json"]).json();
        assert_eq!(status["sites"][0]["deployed_commit"], commit.as_str(), "{status}");
        assert_eq!(
            registry_tags(&world, "www-en"),
            tags,
            "round {round}: nothing pushed"
        );

        // The next run finds the commit recorded: both unchanged, nothing written.
        let german = world.generation("www-de").await;
        let report = world.berth(["run", "www-en", "www-de", "--json"]).json();
        assert_eq!(
            actions(&report),
            [
                ("www-de".to_string(), "unchanged".to_string()),
                ("www-en".to_string(), "unchanged".to_string())
            ],
            "round {round}: {report:#}"
        );
        assert_eq!(
            (world.generation("www-en").await, world.generation("www-de").await),
            (generation, german),
            "round {round}: nothing written"
        );
    }
    assert_eq!(last_modified(&image, ["/"]).await, [home_modified]);
    // The out-of-order guard starts from the newest recorded commit: the
    // first commit, which the running image was built from, is older now.
    let first = image
        .split_once('@')
        .unwrap()
        .0
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    world
        .berth(["ship", "www-en", "--commit", &first])
        .fails_with(exit::SITE_FAILED)
        .has("is older than the deployed");
}

/// The `Last-Modified` of each of `paths`, served by one container of `image`.
async fn last_modified<const N: usize>(image: &str, paths: [&str; N]) -> [String; N] {
    let docker = crate::support::docker().await;
    let (container, port) = crate::support::serve(&docker, image).await;
    let times = paths.map(|path| {
        let response = std::process::Command::new("curl")
            .args(["-sI", &format!("http://127.0.0.1:{port}{path}")])
            .output()
            .unwrap();
        let headers = String::from_utf8_lossy(&response.stdout).to_string();
        headers
            .lines()
            .find_map(|line| line.strip_prefix("Last-Modified: "))
            .unwrap_or_else(|| panic!("no Last-Modified for {path} in {headers}"))
            .trim()
            .to_string()
    });
    crate::support::remove_container(&docker, &container).await;
    times
}

/// A commit that changes one English page ships www-en again, and only that
/// page gets a new `Last-Modified`: every other generated page keeps the time
/// it had in the running image. The same with an empty state folder, where
/// berth reads the running image's files out of the image itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_generated_page_that_did_not_change_keeps_its_last_modified() {
    let world = World::example("page-times").await;
    world.berth(["run", "www-en"]).succeeds();
    let first = image_of(&world.deployment("www-en").await);
    let [home, news, mut about] = last_modified(&first, ["/", "/news/", "/about/"]).await;
    let mut previous = first.clone();
    let page = "content/en/about.md";
    for (round, state) in [(1, None), (2, Some(world.dir.path().join("empty-state")))] {
        // A second apart from the last build, so a new time shows.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        append_to_website(
            &world,
            page,
            &format!("One more line ({round})."),
            "Only the English about page",
        );
        world
            .berth(["run", "www-en"])
            .args(state_args(state.as_deref()))
            .succeeds()
            .lacks("gets the commit's time");
        let image = image_of(&world.deployment("www-en").await);
        assert_ne!(image, first, "round {round}: www-en shipped");
        let [new_home, new_news, changed] = last_modified(&image, ["/", "/news/", "/about/"]).await;
        assert_eq!(new_home, home, "round {round}: the home page kept its time");
        assert_eq!(new_news, news, "round {round}: the news list kept its time");
        assert_ne!(
            changed, about,
            "round {round}: the changed page got the commit's time"
        );
        about = changed;
        // Every file of the web root: a new time exactly where the bytes changed.
        let (before, after) = (web_root_files(&previous), web_root_files(&image));
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>()
        );
        let moved: Vec<&String> = after
            .keys()
            .filter(|path| before[*path].1 != after[*path].1)
            .collect();
        let rewritten: Vec<&String> = after
            .keys()
            .filter(|path| before[*path].0 != after[*path].0)
            .collect();
        assert_eq!(
            moved, rewritten,
            "round {round}: times moved where content did not change, or stayed where it did"
        );
        assert_eq!(moved, ["/www/about/index.html"], "round {round}");
        previous = image;
    }
}

/// Each file below `/www` of `image`: its MD5 and mtime.
fn web_root_files(image: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let list = |script: &str| {
        let output = std::process::Command::new("docker")
            .args(["run", "--rm", "--entrypoint", "/bin/sh", image, "-c", script])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    let sums = list("find /www -type f | sort | xargs md5sum");
    let times = list("find /www -type f | sort | xargs stat -c '%Y %n'");
    sums.lines()
        .zip(times.lines())
        .map(|(sum, time)| {
            let (sum, path) = sum.split_once("  ").unwrap();
            let (time, same) = time.split_once(' ').unwrap();
            assert_eq!(path, same);
            (path.to_string(), (sum.to_string(), time.to_string()))
        })
        .collect()
}
