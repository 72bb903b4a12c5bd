//! The whole pipeline through the real binary: pipeline.toml → mirror → build →
//! push → deploy, on the stack.

use std::collections::HashMap;

use crate::support::{World, image_of, text};

/// The four example sites of the bundled pipeline, on this test's own repo copies,
/// namespace and image names.
pub(crate) struct Example {
    pub(crate) world: World,
    pub(crate) urls: HashMap<&'static str, String>,
    pub(crate) images: HashMap<&'static str, String>,
}

pub(crate) const SITES: [(&str, &str); 4] = [
    ("www-en", "website"),
    ("www-de", "website"),
    ("docs", "product"),
    ("landing", "landing"),
];

impl Example {
    pub(crate) async fn new(name: &str) -> Self {
        Self::with_extra(name, "").await
    }

    /// The example pipeline with `extra` TOML appended.
    pub(crate) async fn with_extra(name: &str, extra: &str) -> Self {
        let world = World::new(name).await;
        let mut urls = HashMap::new();
        for repo in ["website", "product", "landing"] {
            urls.insert(repo, world.copy_repo(repo));
        }
        let mut images = HashMap::new();
        for (site, _) in SITES {
            images.insert(site, format!("{}/{site}", world.prefix));
            world
                .create_deployment(site, 2, &format!("{}/berth/base:busybox", world.stack.registry))
                .await;
        }
        let templates = crate::support::repo_root().join("templates");
        let config = format!(
            r#"
templates = "{templates}"
[registry]
address = "{registry}"
credentials = "none"
[kubernetes]
namespace = "{namespace}"
rollout_timeout = "2m"
[[repo]]
name = "website"
url = "{website}"
[[repo]]
name = "product"
url = "{product}"
[[repo]]
name = "landing"
url = "{landing}"
[[site]]
name = "www-en"
repo = "website"
build = "hugo --minify"
output = "public/en"
image = "{www_en}"
deployment = {{ name = "www-en", container = "web" }}
[[site]]
name = "www-de"
repo = "website"
build = "hugo --minify"
output = "public/de"
image = "{www_de}"
deployment = {{ name = "www-de", container = "web" }}
[[site]]
name = "docs"
repo = "product"
path = "docs"
image = "{docs}"
deployment = {{ name = "docs", container = "web" }}
[[site]]
name = "landing"
repo = "landing"
image = "{landing_image}"
deployment = {{ name = "landing", container = "web" }}
"#,
            templates = templates.display(),
            registry = world.stack.registry,
            namespace = world.namespace,
            website = urls["website"],
            product = urls["product"],
            landing = urls["landing"],
            www_en = images["www-en"],
            www_de = images["www-de"],
            docs = images["docs"],
            landing_image = images["landing"],
        );
        world.write_config(&format!("{config}\n{extra}\n"));
        Self { world, urls, images }
    }

    pub(crate) fn head(&self, repo: &str) -> String {
        self.world.head(&self.urls[repo], "main")
    }

    pub(crate) async fn generations(&self) -> HashMap<&'static str, i64> {
        let mut generations = HashMap::new();
        for (site, _) in SITES {
            generations.insert(
                site,
                self.world.deployment(site).await.metadata.generation.unwrap(),
            );
        }
        generations
    }

    fn registry_tags(&self, site: &str) -> Vec<String> {
        let url = format!("/v2/{}/tags/list", self.images[site]);
        let port = self.world.stack.registry_port();
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
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_ships_every_site_then_changes_nothing_then_ships_only_what_changed() {
    let example = Example::new("pipeline").await;
    let world = &example.world;

    // 1. A full run ships every example site.
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    for (site, repo) in SITES {
        let head = example.head(repo);
        let image = image_of(&world.deployment(site).await);
        let expected = format!("{}/{}:{head}@sha256:", world.stack.registry, example.images[site]);
        assert!(
            image.starts_with(&expected),
            "{site}: {image} does not start with {expected}"
        );
        assert!(
            example.registry_tags(site).contains(&head),
            "{site}: registry lacks tag {head}"
        );
    }

    // 2. A second run with no new commits changes nothing in the cluster.
    let before = example.generations().await;
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(example.generations().await, before);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("unchanged").count(), 4, "{stdout}");

    // 3. A new commit to one repo ships only its site; a commit outside docs/ in
    //    the product's monorepo does not ship the docs.
    let landing = world.commit(
        &example.urls["landing"],
        "main",
        &[("index.html", "<h1>new landing</h1>\n")],
        "New landing page",
    );
    world.commit(
        &example.urls["product"],
        "main",
        &[("src/lantern/extra.py", "print('x')\n")],
        "Code only",
    );
    let output = world.berth(&["run"]);
    assert!(output.status.success(), "{}", text(&output));
    let after = example.generations().await;
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
    let example = Example::new("failing-build").await;
    let world = &example.world;
    // Break the Hugo site's template: hugo fails, both languages fail, nothing pushed.
    world.commit(
        &example.urls["website"],
        "main",
        &[("layouts/_default/baseof.html", "{{ .Broken ")],
        "Break the layout",
    );
    let before_en = image_of(&world.deployment("www-en").await);
    let output = world.berth(&["run"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let all = text(&output);
    assert!(all.contains("build command `hugo --minify` failed"), "{all}");
    assert_eq!(image_of(&world.deployment("www-en").await), before_en);
    let port: u16 = world.stack.registry_port();
    let (status, _) =
        crate::support::http_get(port, &format!("/v2/{}/tags/list", example.images["www-en"])).unwrap();
    assert_eq!(status, 404, "nothing was pushed for www-en");
    // The others shipped.
    let landing = image_of(&world.deployment("landing").await);
    assert!(landing.contains(&example.head("landing")), "{landing}\n{all}");
}
