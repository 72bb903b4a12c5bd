//! Pull requests' previews on the stack: the real forge (Gitea) sends the
//! `pull_request` webhooks to `berth serve`, the preview runs on the real node
//! and answers through its own Service, berth's comment names the changed
//! pages and is edited in place, a close leaves nothing with the preview's
//! label, a close whose webhook was lost is swept by `berth pr gc`, and a
//! fork's pull request is not built (its status says why).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::browser::{self, Browser};
use crate::support::forge::{ForgeSite, TOKEN_ENV, commit};
use crate::support::{PreviewSpec, Running, SiteSpec, exit, git, text};

/// How long a preview may take to be built and served on the real node.
const PREVIEWED_WITHIN: Duration = Duration::from_secs(180);

/// A site `site` in a forge repo of its own (index.html and about.html on
/// main), on the real node behind Service `web`, with `[preview]` and a
/// `berth serve` to start when the test wants one.
struct Previewed {
    site: ForgeSite,
}

impl std::ops::Deref for Previewed {
    type Target = ForgeSite;

    fn deref(&self) -> &ForgeSite {
        &self.site
    }
}

impl Previewed {
    async fn new(test: &str, preview: PreviewSpec) -> Self {
        let site = ForgeSite::new(
            test,
            &[
                ("index.html", "<h1>Home of the site</h1>\n"),
                ("about.html", "<h1>About us</h1>\n"),
            ],
        )
        .await;
        site.world
            .real_node_deployment("web", &site.world.stack.placeholder_image)
            .create()
            .await;
        site.world.create_service("web", "web", json!("http")).await;
        let mut pipeline = site.pipeline("1h").with_rollout_timeout("90s");
        let mut served = SiteSpec::new("site", "site", &site.world.image("site"), "web");
        served.template = Some("static".into());
        pipeline.sites.push(served);
        pipeline.preview = Some(preview);
        site.world.write_pipeline(&pipeline);
        Self { site }
    }

    fn serve(&self) -> Running {
        self.berth(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .spawn_until("serving on http://")
    }

    async fn hook(&self, events: &[&str]) {
        self.site.hook(self.port, events).await;
    }

    /// A branch `feature` from main with a changed about page and a new news
    /// page, pushed: its head.
    fn push_feature(&self) -> String {
        git(self.work.path(), &["checkout", "-q", "-b", "feature"]);
        commit(
            self.work.path(),
            "about.html",
            "<h1>About us, better</h1>\n",
            "Better about page",
        );
        let head = commit(self.work.path(), "news.html", "<h1>News 1</h1>\n", "News page");
        self.forge.push(self.work.path(), &self.repo, "feature");
        head
    }

    /// The ClusterIP of Service `name`.
    async fn address(&self, name: &str) -> Option<std::net::IpAddr> {
        let api: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(crate::support::kube_client().await, &self.world.namespace);
        let service = api.get_opt(name).await.unwrap()?;
        service.spec?.cluster_ip?.parse().ok()
    }

    /// Waits until Service `name` answers `path` with a page holding `text`.
    async fn answers(&self, name: &str, path: &str, text: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if let Some(ip) = self.address(name).await
                && let Ok((200, body)) =
                    crate::support::http_get_at((ip, 80).into(), path, Duration::from_secs(2))
                && body.contains(text)
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{name} never answered {path} with {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the pull request's comments hold one matching `check`: all of them.
    async fn comment(&self, number: u64, within: Duration, check: impl Fn(&str) -> bool) -> Vec<String> {
        let started = Instant::now();
        loop {
            let comments = self.forge.comments(&self.repo, number).await;
            if comments.iter().any(|comment| check(comment)) {
                return comments;
            }
            assert!(
                started.elapsed() < within,
                "no such comment on #{number}: {comments:#?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// What is left in the namespace with the preview's label.
    fn left(&self, preview: &str) -> String {
        let output = self.world.kubectl(&[
            "get",
            "all,ingress",
            "-l",
            &format!("berth.dev/preview={preview}"),
            "-o",
            "name",
        ]);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    async fn statuses(&self, commit: &str) -> Vec<Value> {
        self.forge
            .statuses(&self.repo, commit)
            .await
            .into_iter()
            .filter(|status| status["context"] == "berth/preview")
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_gets_a_preview_its_comment_is_edited_on_a_push_and_a_close_leaves_nothing() {
    let previewed = Previewed::new("preview-life", PreviewSpec::default()).await;
    let mut running = previewed.serve();
    // Production first: the site's Service answers main's about page.
    previewed
        .answers("web", "/about.html", "About us", PREVIEWED_WITHIN)
        .await;
    running.wait_for("rolled out", PREVIEWED_WITHIN);
    previewed.hook(&["push", "pull_request"]).await;

    let head = previewed.push_feature();
    previewed
        .forge
        .wait_for_branches(&previewed.repo, &["main", "feature"])
        .await;
    let opened = Instant::now();
    let number = previewed
        .forge
        .open_pull_request_from(&previewed.repo, "feature", "News page")
        .await;
    let marker = "<!-- berth-preview:site -->";
    let comments = previewed
        .comment(number, PREVIEWED_WITHIN, |comment| {
            comment.contains(marker) && comment.contains(&head[..12])
        })
        .await;
    let comment_after = opened.elapsed();
    eprintln!(
        "pull request opened to comment: {:.1}s",
        comment_after.as_secs_f64()
    );
    let comment = comments.iter().find(|comment| comment.contains(marker)).unwrap();
    let preview = format!("web-pr-{number}");
    // The preview answers the pull request's pages through its own Service.
    previewed
        .answers(&preview, "/news.html", "News 1", Duration::from_secs(10))
        .await;
    previewed
        .answers(
            &preview,
            "/about.html",
            "About us, better",
            Duration::from_secs(10),
        )
        .await;
    let ip = previewed.address(&preview).await.unwrap();
    the_comment_links_each_changed_page(comment, ip);
    // Production is untouched: no production Service sends traffic to the preview.
    previewed
        .answers("web", "/about.html", "About us", Duration::from_secs(5))
        .await;
    let statuses = previewed.statuses(&head).await;
    assert!(
        statuses.iter().any(|status| status["status"] == "success"),
        "{statuses:#?}"
    );
    the_browser_follows_the_links(&previewed, ip, number).await;

    // A second push: the same preview, the comment edited.
    let second = commit(
        previewed.work.path(),
        "news.html",
        "<h1>News 2</h1>\n",
        "More news",
    );
    previewed
        .forge
        .push(previewed.work.path(), &previewed.repo, "feature");
    let comments = previewed
        .comment(number, PREVIEWED_WITHIN, |comment| {
            comment.contains(marker) && comment.contains(&second[..12])
        })
        .await;
    assert_eq!(
        comments.iter().filter(|comment| comment.contains(marker)).count(),
        1,
        "edited, not added: {comments:#?}"
    );
    previewed
        .answers(&preview, "/news.html", "News 2", Duration::from_secs(10))
        .await;
    assert_eq!(previewed.address(&preview).await, Some(ip), "the same preview");

    // Closed: nothing with the preview's label is left, and the comment says it is gone.
    let closed = Instant::now();
    previewed.forge.close_pull_request(&previewed.repo, number).await;
    loop {
        if previewed.left(&preview).is_empty() {
            break;
        }
        assert!(
            closed.elapsed() < Duration::from_secs(120),
            "left after the close: {}",
            previewed.left(&preview)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!(
        "pull request closed to cleaned up: {:.1}s",
        closed.elapsed().as_secs_f64()
    );
    previewed
        .comment(number, Duration::from_secs(30), |comment| {
            comment.contains(marker) && comment.contains("Gone:")
        })
        .await;
    running.terminate();
    running.wait().exited(exit::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_whose_webhook_was_lost_is_swept_by_pr_gc_and_until_then_pr_list_shows_the_preview_and_gc_keeps_its_image()
 {
    let previewed = Previewed::new("preview-sweep", PreviewSpec::default()).await;
    // Production, by hand (no server: no webhook reaches anybody).
    previewed.berth(["run"]).succeeds();
    let head = previewed.push_feature();
    previewed
        .forge
        .wait_for_branches(&previewed.repo, &["main", "feature"])
        .await;
    let number = previewed
        .forge
        .open_pull_request_from(&previewed.repo, "feature", "News page")
        .await;
    let report = previewed
        .berth(["pr", "deploy", "site", "--number", &number.to_string(), "--json"])
        .succeeds()
        .json();
    crate::support::validate_against("pr.schema.json", &report);
    let deployed = &report["previews"][0];
    assert_eq!(deployed["action"], "deployed", "{report:#}");
    assert_eq!(
        deployed["commit"],
        head.as_str(),
        "the forge's head of #{number}: {report:#}"
    );
    assert_eq!(deployed["comment"], "created", "{report:#}");
    let listed = previewed.berth(["pr", "list", "--json"]).succeeds().json();
    crate::support::validate_against("pr-list.schema.json", &listed);
    assert_eq!(listed["previews"][0]["number"], number, "{listed:#}");
    // While the preview lives, gc keeps its image, and says so.
    let kept = previewed.berth(["gc", "--json"]).succeeds().json();
    let image = kept["sites"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|image| image["commit"] == head.as_str())
        .unwrap_or_else(|| panic!("no image of {head}: {kept:#}"));
    assert!(
        image["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("preview of #{number}"))),
        "{image:#}"
    );
    // The pull request is closed with nobody listening; the sweep finds it.
    previewed.forge.close_pull_request(&previewed.repo, number).await;
    let preview = format!("web-pr-{number}");
    assert!(!previewed.left(&preview).is_empty());
    let swept = previewed.berth(["pr", "gc", "--json"]).succeeds().json();
    assert_eq!(swept["previews"][0]["action"], "closed", "{swept:#}");
    assert_eq!(
        swept["previews"][0]["reason"], "the pull request was closed",
        "{swept:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !previewed.left(&preview).is_empty() {
        assert!(Instant::now() < deadline, "left: {}", previewed.left(&preview));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Nothing to sweep any more.
    let again = previewed.berth(["pr", "gc", "--json"]).succeeds().json();
    assert_eq!(again["previews"], json!([]), "{again:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forks_pull_request_is_not_built_and_its_status_says_why() {
    let previewed = Previewed::new("preview-fork", PreviewSpec::default()).await;
    let mut running = previewed.serve();
    running.wait_for("rolled out", PREVIEWED_WITHIN);
    previewed.hook(&["pull_request"]).await;
    let fork = previewed.forge.fork(&previewed.repo).await;
    git(previewed.work.path(), &["checkout", "-q", "-b", "feature"]);
    let head = commit(
        previewed.work.path(),
        "news.html",
        "<h1>From a fork</h1>\n",
        "News from a fork",
    );
    previewed.forge.push(previewed.work.path(), &fork, "feature");
    previewed.forge.wait_for_branches(&fork, &["feature"]).await;
    let owner = fork.split('/').next().unwrap();
    let number = previewed
        .forge
        .open_pull_request_from(&previewed.repo, &format!("{owner}:feature"), "From a fork")
        .await;
    let status = previewed
        .forge
        .wait_for_status(
            &previewed.repo,
            &head,
            "berth/preview",
            |_| true,
            Duration::from_secs(60),
            String::new,
        )
        .await;
    assert_eq!(status["status"], "failure", "{status:#}");
    assert!(
        status["description"]
            .as_str()
            .unwrap()
            .contains("pull requests from forks are not built"),
        "{status:#}"
    );
    previewed
        .comment(number, Duration::from_secs(30), |comment| {
            comment.contains("Not built: pull requests from forks")
        })
        .await;
    assert!(
        previewed.left(&format!("web-pr-{number}")).is_empty(),
        "nothing was built"
    );
    running.terminate();
    running.wait().exited(exit::OK);
    let _ = previewed
        .forge
        .call(hyper::Method::DELETE, &format!("/repos/{fork}"), None)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_host_a_preview_gets_an_ingress_and_without_a_forge_no_comment() {
    let previewed = Previewed::new(
        "preview-host",
        PreviewSpec {
            host: Some("pr-{number}.{site}.preview.example.com".into()),
            ingress_class: Some("nginx".into()),
            ..PreviewSpec::default()
        },
    )
    .await;
    previewed.berth(["run"]).succeeds();
    let head = previewed.push_feature();
    // As the documented service account (docs/rbac.yaml and docs/rbac-previews.yaml).
    let root = crate::support::repo_root();
    for rules in ["docs/rbac.yaml", "docs/rbac-previews.yaml"] {
        let applied = previewed
            .world
            .kubectl(&["apply", "-f", root.join(rules).to_str().unwrap()]);
        assert!(applied.status.success(), "{}", text(&applied));
    }
    let kubeconfig = previewed.world.token_kubeconfig("berth");
    // No forge token: the preview is deployed all the same, and the report says so.
    let report = previewed
        .world
        .berth([
            "pr", "deploy", "site", "--number", "41", "--commit", &head, "--json",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .succeeds()
        .json();
    let deployed = &report["previews"][0];
    assert_eq!(deployed["action"], "deployed", "{report:#}");
    assert_eq!(
        deployed["url"], "https://pr-41.site.preview.example.com/",
        "{report:#}"
    );
    assert_eq!(
        deployed["comment"],
        format!("not written: {TOKEN_ENV} is not set"),
        "{report:#}"
    );
    let output = previewed
        .world
        .kubectl(&["get", "ingress", "web-pr-41", "-o", "json"]);
    assert!(output.status.success(), "{}", text(&output));
    let ingress: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        ingress["spec"]["rules"][0]["host"],
        "pr-41.site.preview.example.com"
    );
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "web-pr-41"
    );
    assert_eq!(ingress["metadata"]["ownerReferences"][0]["name"], "web-pr-41");
    let closed = previewed
        .world
        .berth(["pr", "close", "site", "--number", "41", "--json"])
        .env("KUBECONFIG", &kubeconfig)
        .succeeds()
        .json();
    assert_eq!(closed["previews"][0]["action"], "closed", "{closed:#}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !previewed.left("web-pr-41").is_empty() {
        assert!(Instant::now() < deadline, "left: {}", previewed.left("web-pr-41"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// In a real browser: the status page lists the preview, and its link leads
/// to the preview; the comment on the forge's pull request page links each
/// changed page into the preview.
async fn the_browser_follows_the_links(previewed: &Previewed, ip: std::net::IpAddr, number: u64) {
    let browser = Browser::start().await;
    let page = browser
        .rendered(&format!("http://127.0.0.1:{}/", previewed.port))
        .await;
    assert!(page.alerts.is_empty(), "{:?}", page.alerts);
    assert!(page.dom.contains("Previews"), "{}", page.dom);
    let link = browser::link(&page.dom, &format!("http://{ip}/"))
        .unwrap_or_else(|| panic!("no link to the preview: {}", page.dom));
    assert_eq!(link, format!("http://{ip}/"));
    assert!(browser.rendered(&link).await.dom.contains("Home of the site"));
    // Gitea's pages alert that its front-end assets (not built here) failed
    // to load; the comment itself is rendered on the server.
    let pull_request_page = browser
        .rendered(&format!(
            "{}/{}/pulls/{number}",
            previewed.forge.url, previewed.repo
        ))
        .await;
    let news = browser::link(&pull_request_page.dom, "/news.html").unwrap_or_else(|| {
        panic!(
            "no link to the news page on the pull request: {}",
            pull_request_page.dom
        )
    });
    assert_eq!(news, format!("http://{ip}/news.html"));
    assert!(browser.rendered(&news).await.dom.contains("News 1"));
}

/// The comment gives the preview's address, each changed page as a link into
/// it (the new one marked), the check's result and how long it lives.
fn the_comment_links_each_changed_page(comment: &str, ip: std::net::IpAddr) {
    assert!(comment.contains(&format!("**http://{ip}/**")), "{comment}");
    assert!(comment.contains("Pages that changed (2):"), "{comment}");
    assert!(
        comment.contains(&format!("- [/about.html](http://{ip}/about.html)")),
        "{comment}"
    );
    assert!(
        comment.contains(&format!("- [/news.html](http://{ip}/news.html) (new)")),
        "{comment}"
    );
    assert!(comment.contains("answered 200"), "the check's result: {comment}");
    assert!(comment.contains("each push renews it"), "{comment}");
}
