//! `berth serve` against the stack's real forge (Gitea) and cluster: a push
//! to the forge reaches berth as Gitea's own signed webhook, is shipped, and
//! gets its commit status (failure, and why, when its ship fails); bad
//! deliveries are refused and queue nothing; a burst leaves one pending run;
//! the poll catches a lost delivery; SIGTERM lets the rollout in flight
//! finish; a server killed mid-rollout sees it through when started again;
//! two replicas ship a push once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};

use crate::support::forge::{ForgeSite, commit};
use crate::support::in_cluster::InCluster;
use crate::support::{ForgeSpec, Running, ServeSpec, SiteSpec, World, exit, free_port, git};

/// How long a push may take to be served on kwok's node.
const SERVED_WITHIN: Duration = Duration::from_secs(90);

/// A site `site` in a repo of its own on the stack's forge, shipped to
/// Deployment `web` (kwok) by a `berth serve` of this world.
struct Served {
    site: ForgeSite,
}

impl std::ops::Deref for Served {
    type Target = ForgeSite;

    fn deref(&self) -> &ForgeSite {
        &self.site
    }
}

impl Served {
    /// The world, the forge's repo with its first commit pushed, the
    /// Deployment, and the pipeline file (`poll_interval`) written; no server yet.
    async fn new(test: &str, poll_interval: &str, min_ready_seconds: Option<i32>) -> Self {
        Self::with_site(test, poll_interval, min_ready_seconds, |_| {}).await
    }

    /// As [`Served::new`], with the site's entry changed by `edit` first.
    async fn with_site(
        test: &str,
        poll_interval: &str,
        min_ready_seconds: Option<i32>,
        edit: impl FnOnce(&mut SiteSpec),
    ) -> Self {
        let site = ForgeSite::new(test, &[]).await;
        let mut deployment = site.world.kwok_deployment("web", &site.world.busybox());
        if let Some(seconds) = min_ready_seconds {
            deployment = deployment.min_ready_seconds(seconds);
        }
        deployment.create().await;
        let mut pipeline = site.pipeline(poll_interval);
        let mut spec = SiteSpec::new("site", "site", &site.world.image("site"), "web");
        edit(&mut spec);
        pipeline.sites.push(spec);
        site.world.write_pipeline(&pipeline);
        Self { site }
    }

    /// Starts `berth serve` (in `state`, a folder of the world, when given),
    /// listening on `port`, until it says it serves.
    fn serve(&self, port: u16, state: Option<&str>) -> Running {
        let mut berth = self.berth(["serve", "--listen", &format!("127.0.0.1:{port}")]);
        if let Some(state) = state {
            berth = berth.args(["--state-dir", state]);
        }
        berth.spawn_until("serving on http://")
    }

    /// The forge's webhook of Gitea's own type, to `port`'s GitHub endpoint.
    async fn hook(&self, port: u16) {
        self.site.hook(port, &["push"]).await;
    }

    /// Commits `page` as index.html and pushes it: the new commit.
    fn push_page(&self, page: &str) -> String {
        let commit = commit(self.work.path(), "index.html", page, page);
        self.forge.push(self.work.path(), &self.repo, "main");
        commit
    }

    /// Waits until Deployment `web` runs an image built at `commit`.
    async fn served(&self, commit: &str, running: &Running) -> Duration {
        let started = Instant::now();
        loop {
            let image = self.world.image_of("web").await;
            if image.contains(commit) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < SERVED_WITHIN,
                "{commit} not served within {SERVED_WITHIN:?} (runs {image}); berth said:\n{}",
                running.so_far()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET path` of the server on `port`: the status and the body.
    fn get(port: u16, path: &str) -> (u16, String) {
        crate::support::http_get(port, path).unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    /// `/api/v1/sites` of the server on `port`.
    fn sites(port: u16) -> Value {
        let (status, body) = Self::get(port, "/api/v1/sites");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Deployment `web`'s revision, which its controller raises by one for
    /// each rollout (the first is 1): the difference of two readings is how
    /// many rollouts came between them.
    async fn revision(&self) -> u64 {
        let deployment = self.world.deployment("web").await;
        let annotations = deployment.metadata.annotations.unwrap_or_default();
        annotations
            .get("deployment.kubernetes.io/revision")
            .and_then(|revision| revision.parse().ok())
            .unwrap_or_else(|| panic!("Deployment web has no revision: {annotations:?}"))
    }
}

/// A delivery to `path` of the server on `port`: its status and answer.
fn deliver(port: u16, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // A server may answer a body over its limit before reading all of it.
    let _ = stream.write_all(body);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_to_the_forge_is_served_with_its_commit_status_page_json_and_metrics() {
    let served = Served::new("serve-push", "1h", None).await;
    let first = git(served.work.path(), &["rev-parse", "HEAD"]).trim().to_string();
    let running = served.serve(served.port, None);
    // At start, every site gets one run: the head is shipped.
    served.served(&first, &running).await;
    served.hook(served.port).await;

    let pushed_at = Instant::now();
    let second = served.push_page("<h1>second</h1>\n");
    let took = served.served(&second, &running).await;
    eprintln!("push to served: {:.1}s", pushed_at.elapsed().as_secs_f64());
    assert!(took < SERVED_WITHIN);

    // The forge's commit status: pending while queued, then success, linking the page.
    let status = served
        .forge
        .wait_for_status(
            &served.repo,
            &second,
            "berth/site",
            |status| status["status"] == "success",
            Duration::from_secs(20),
            || running.so_far(),
        )
        .await;
    assert_eq!(
        status["target_url"],
        format!("http://127.0.0.1:{}/#site-site", served.port),
        "{status:#}"
    );
    let all = served.forge.statuses(&served.repo, &second).await;
    assert!(
        all.iter()
            .any(|status| status["context"] == "berth/site" && status["status"] == "pending"),
        "a pending status came first: {all:#?}"
    );

    // The JSON, its schema, the page and the metrics say the same.
    let sites = Served::sites(served.port);
    crate::support::validate_against("sites.schema.json", &sites);
    let site = &sites["sites"][0];
    assert_eq!(site["site"], "site", "{sites:#}");
    assert_eq!(site["deployed_commit"], second.as_str(), "{sites:#}");
    assert_eq!(site["last"]["result"], "deployed", "{sites:#}");
    assert!(
        site["deployed_commit_url"]
            .as_str()
            .is_some_and(|url| url.ends_with(&format!("/commit/{second}"))),
        "{sites:#}"
    );
    let (status, page) = Served::get(served.port, "/");
    assert_eq!(status, 200);
    assert!(page.contains(&second[..12]), "{page}");
    assert!(page.contains("id=\"site-site\""), "{page}");
    let (_, metrics) = Served::get(served.port, "/metrics");
    assert!(
        metrics.contains("berth_ships_total{result=\"deployed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_deliveries_total{endpoint=\"github\",result=\"queued\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_push_to_served_seconds_count 1"),
        "{metrics}"
    );
    assert_eq!(Served::get(served.port, "/healthz").0, 200);
    assert_eq!(Served::get(served.port, "/readyz").0, 200);
    // Nothing of a secret anywhere.
    for text in [
        page.as_str(),
        metrics.as_str(),
        &sites.to_string(),
        &running.so_far(),
    ] {
        assert!(!text.contains(&served.secret), "the webhook secret leaked");
        assert!(!text.contains(&served.forge.token), "the forge token leaked");
    }
    running.terminate();
    running.wait().exited(exit::OK);
}

#[tokio::test(flavor = "multi_thread")]
#[expect(
    clippy::too_many_lines,
    reason = "one server, every bad delivery in turn, then what it left"
)]
async fn bad_deliveries_are_refused_and_queue_nothing() {
    let served = Served::new("serve-refuse", "1h", None).await;
    let first = git(served.work.path(), &["rev-parse", "HEAD"]).trim().to_string();
    let running = served.serve(served.port, None);
    served.served(&first, &running).await;
    let generation = served.world.deployment("web").await.metadata.generation;
    let port = served.port;
    let url = format!("{}/{}.git", served.forge.url, served.repo);
    let push = |reference: &str, after: &str| {
        json!({"ref": reference, "after": after, "repository": {"clone_url": url}}).to_string()
    };
    let signed = |body: &str, delivery: &str| {
        vec![
            ("X-GitHub-Event", "push".to_string()),
            ("X-GitHub-Delivery", delivery.to_string()),
            ("X-Hub-Signature-256", signature(&served.secret, body.as_bytes())),
        ]
    };
    let unknown_commit = "0123456789abcdef0123456789abcdef01234567";

    // No signature, or another secret's: 401, nothing queued.
    let body = push("refs/heads/main", &first);
    let (status, answer) = deliver(
        port,
        "/hooks/github",
        &[("X-GitHub-Event", "push".into())],
        body.as_bytes(),
    );
    assert_eq!(status, 401, "{answer}");
    let wrong = vec![
        ("X-GitHub-Event", "push".to_string()),
        (
            "X-Hub-Signature-256",
            signature("not the secret", body.as_bytes()),
        ),
    ];
    assert_eq!(deliver(port, "/hooks/github", &wrong, body.as_bytes()).0, 401);
    // GitLab's token compared, the generic HMAC checked.
    let gitlab = vec![
        ("X-Gitlab-Event", "Push Hook".to_string()),
        ("X-Gitlab-Token", "wrong".to_string()),
    ];
    assert_eq!(deliver(port, "/hooks/gitlab", &gitlab, b"{}").0, 401);
    assert_eq!(deliver(port, "/hooks/generic", &[], body.as_bytes()).0, 401);
    // Over 1 MiB: 413.
    let big = vec![b'x'; (1 << 20) + 10];
    let (status, _) = deliver(port, "/hooks/github", &signed("x", "big"), &big);
    assert_eq!(status, 413);
    // A ping: 200; an event berth does not act on: 202 ignored.
    let ping = vec![
        ("X-GitHub-Event", "ping".to_string()),
        ("X-Hub-Signature-256", signature(&served.secret, b"{}")),
    ];
    assert_eq!(deliver(port, "/hooks/github", &ping, b"{}").0, 200);
    let issues = vec![
        ("X-GitHub-Event", "issues".to_string()),
        ("X-Hub-Signature-256", signature(&served.secret, b"{}")),
    ];
    let (status, answer) = deliver(port, "/hooks/github", &issues, b"{}");
    assert_eq!(
        (status, answer.trim()),
        (202, "ignored: berth does not act on `issues` events")
    );
    // A branch no site follows: 202, nothing queued.
    let other = push("refs/heads/feature", &first);
    let (status, answer) = deliver(
        port,
        "/hooks/github",
        &signed(&other, "d-other"),
        other.as_bytes(),
    );
    assert_eq!(status, 202);
    assert!(
        answer.contains("ignored: no site follows refs/heads/feature"),
        "{answer}"
    );
    // A signed payload naming a commit not in Git: queued, and ships nothing.
    let forged = push("refs/heads/main", unknown_commit);
    let (status, answer) = deliver(
        port,
        "/hooks/github",
        &signed(&forged, "d-forged"),
        forged.as_bytes(),
    );
    assert_eq!((status, answer.trim()), (202, "queued: site"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sites = Served::sites(port);
        if sites["sites"][0]["last"]["result"] == "skipped" {
            assert!(
                sites["sites"][0]["last"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("not in Git"),
                "{sites:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forged commit's run did not end: {sites:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same delivery again: ignored, as a redelivery.
    let (status, answer) = deliver(
        port,
        "/hooks/github",
        &signed(&forged, "d-forged"),
        forged.as_bytes(),
    );
    assert_eq!(status, 202);
    assert!(
        answer.contains("ignored: delivery d-forged was seen before"),
        "{answer}"
    );
    // A client that sends half its headers is cut off after the header timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"POST /hooks/github HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let cut = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = cut.elapsed();
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(25),
        "closed after {waited:?}"
    );
    // Nothing was rolled out by any of it.
    assert_eq!(
        served.world.deployment("web").await.metadata.generation,
        generation
    );
    let (_, metrics) = Served::get(port, "/metrics");
    for (result, count) in [
        ("unauthorized", 2),
        ("too-large", 1),
        ("ping", 1),
        ("duplicate", 1),
    ] {
        assert!(
            metrics.contains(&format!("endpoint=\"github\",result=\"{result}\"}} {count}")),
            "{result}: {metrics}"
        );
    }
    running.terminate();
    running.wait().exited(exit::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_whose_ship_fails_gets_a_failure_status_and_the_deployment_keeps_its_image() {
    // The site's generator fails on a commit that adds a file `broken`.
    let served = Served::with_site("serve-fail", "1h", None, |spec| {
        spec.build = Some("if [ -e broken ]; then echo 'the page is broken' >&2; exit 3; fi".into());
    })
    .await;
    let first = git(served.work.path(), &["rev-parse", "HEAD"]).trim().to_string();
    let mut running = served.serve(served.port, None);
    served.served(&first, &running).await;
    running.wait_for("rolled out", SERVED_WITHIN);
    served.hook(served.port).await;

    let broken = commit(served.work.path(), "broken", "x", "A broken page");
    served.forge.push(served.work.path(), &served.repo, "main");
    // The forge is told: failure, in the generator's words, linking the page.
    let status = served
        .forge
        .wait_for_status(
            &served.repo,
            &broken,
            "berth/site",
            |status| status["status"] != "pending",
            SERVED_WITHIN,
            || running.so_far(),
        )
        .await;
    assert_eq!(status["status"], "failure", "{status:#}");
    assert_eq!(
        status["target_url"],
        format!("http://127.0.0.1:{}/#site-site", served.port),
        "{status:#}"
    );
    assert!(
        status["description"]
            .as_str()
            .is_some_and(|words| !words.is_empty()),
        "the failure says why: {status:#}"
    );
    // The page's JSON says it failed, and why; the Deployment still runs the first commit.
    let sites = Served::sites(served.port);
    let site = &sites["sites"][0];
    assert_eq!(site["last"]["result"], "failed", "{sites:#}");
    assert!(
        site["last"]["error"]
            .as_str()
            .is_some_and(|error| error.contains("the page is broken")),
        "{sites:#}"
    );
    assert_eq!(site["deployed_commit"], first.as_str(), "{sites:#}");
    assert!(
        served.world.image_of("web").await.contains(&first),
        "a failed ship leaves the Deployment on its image"
    );
    running.terminate();
    running.wait().exited(exit::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_pushes_is_served_at_its_last_commit_with_at_most_two_rollouts() {
    // Ten seconds before a new pod counts as available: the whole burst comes
    // while the first push's rollout goes on, as a burst does on a real site.
    let served = Served::new("serve-burst", "1h", Some(10)).await;
    let first = git(served.work.path(), &["rev-parse", "HEAD"]).trim().to_string();
    let mut running = served.serve(served.port, None);
    served.served(&first, &running).await;
    running.wait_for("rolled out", SERVED_WITHIN);
    served.hook(served.port).await;
    let before = served.revision().await;
    // Five pushes, five commits made by the forge itself as fast as it takes
    // them (about 0.5 s each here), all while the first push's rollout goes on.
    let mut last = String::new();
    let started = Instant::now();
    for n in 1..=5 {
        last = served
            .forge
            .create_file(
                &served.repo,
                &format!("burst-{n}.html"),
                &format!("<h1>burst {n}</h1>\n"),
            )
            .await;
    }
    eprintln!("5 pushes in {:.2}s", started.elapsed().as_secs_f64());
    // The first run goes on, and the rest wait in one pending run.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sites = Served::sites(served.port);
        let site = &sites["sites"][0];
        if !site["running"].is_null() && site["pending"] == true {
            assert_eq!(sites["queue_depth"], 1, "{sites:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no run pending behind the first: {sites:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    served.served(&last, &running).await;
    // Until every run has ended, then count.
    let deadline = Instant::now() + SERVED_WITHIN;
    let sites = loop {
        let sites = Served::sites(served.port);
        let site = &sites["sites"][0];
        if site["running"].is_null() && site["pending"] == false {
            break sites;
        }
        assert!(Instant::now() < deadline, "the runs did not end: {sites:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(sites["sites"][0]["deployed_commit"], last.as_str(), "{sites:#}");
    let rollouts = served.revision().await - before;
    assert!(
        (1..=2).contains(&rollouts),
        "{rollouts} rollouts for a burst of 5 pushes"
    );
    running.terminate();
    running.wait().exited(exit::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_whose_delivery_is_lost_is_caught_by_the_poll() {
    let served = Served::new("serve-poll", "5s", None).await;
    let first = git(served.work.path(), &["rev-parse", "HEAD"]).trim().to_string();
    let running = served.serve(served.port, None);
    served.served(&first, &running).await;
    // No webhook at all: the poll must find the push.
    let pushed = served.push_page("<h1>polled</h1>\n");
    let took = served.served(&pushed, &running).await;
    assert!(
        took < Duration::from_secs(5 + 30),
        "served {took:?} after the push"
    );
    let (_, metrics) = Served::get(served.port, "/metrics");
    assert!(
        !metrics.contains("berth_deliveries_total{"),
        "no delivery came: {metrics}"
    );
    running.terminate();
    running.wait().exited(exit::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_rollout_lets_it_finish_and_a_killed_server_sees_its_rollout_through() {
    // Ten seconds before a new pod counts as available: each rollout takes that long.
    let served = Served::new("serve-stop", "1h", Some(10)).await;
    let first = git(served.work.path(), &["rev-parse", "HEAD"]).trim().to_string();
    let mut running = served.serve(served.port, None);
    served.served(&first, &running).await;
    running.wait_for("rolled out", SERVED_WITHIN);
    served.hook(served.port).await;

    // SIGTERM while the push's rollout goes on (its image set, its new pod
    // not yet available): it finishes, then berth exits 0.
    let second = served.push_page("<h1>second</h1>\n");
    served.served(&second, &running).await;
    running.terminate();
    let ran = running.wait().exited(exit::OK);
    let text = ran.all();
    assert!(text.contains("rolled out"), "{text}");
    let deployment = served.world.deployment("web").await;
    let state = crate::support::rollout_state(&deployment);
    assert_eq!(state, crate::support::RolloutState::Complete, "{text}");
    assert_eq!(served.world.leases_held().await, 0, "no lease held: {text}");

    // SIGKILL mid-rollout; started again, berth sees it through.
    let restarted = served.serve(served.port, None);
    served.hook(served.port).await;
    let third = served.push_page("<h1>third</h1>\n");
    served.served(&third, &restarted).await;
    restarted.kill();
    drop(restarted);
    let deployment = served.world.deployment("web").await;
    assert_ne!(
        crate::support::rollout_state(&deployment),
        crate::support::RolloutState::Complete,
        "killed while the rollout went on"
    );
    let mut again = served.serve(served.port, None);
    again.wait_for("sees it through", SERVED_WITHIN);
    let deadline = Instant::now() + SERVED_WITHIN;
    loop {
        let deployment = served.world.deployment("web").await;
        if crate::support::rollout_state(&deployment) == crate::support::RolloutState::Complete
            && crate::support::image_of(&deployment).contains(&third)
        {
            break;
        }
        assert!(Instant::now() < deadline, "not seen through: {}", again.so_far());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    again.terminate();
    again.wait().exited(exit::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_ship_a_push_once() {
    let served = Served::new("serve-twice", "1h", None).await;
    let first = git(served.work.path(), &["rev-parse", "HEAD"]).trim().to_string();
    let other_port = free_port();
    // Two replicas, each with its own state folder, behind one forge.
    let one = served.serve(served.port, Some("state-one"));
    let two = served.serve(other_port, Some("state-two"));
    served.served(&first, &one).await;
    // The first runs may have raced for the Deployment's lease: both end.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = served.revision().await;
    // Each replica gets the delivery (a forge that redelivers, or both behind one address).
    served.hook(served.port).await;
    served.hook(other_port).await;
    let pushed = served.push_page("<h1>once</h1>\n");
    served.served(&pushed, &one).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ended = [served.port, other_port].iter().all(|port| {
            let sites = Served::sites(*port);
            sites["sites"][0]["running"].is_null()
                && sites["sites"][0]["history"]
                    .as_array()
                    .is_some_and(|runs| runs.iter().any(|run| run["commit"] == pushed.as_str()))
        });
        if ended {
            break;
        }
        assert!(Instant::now() < deadline, "both replicas did not run {pushed}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(served.revision().await - before, 1, "one rollout for one push");
    let results: Vec<Value> = [served.port, other_port]
        .iter()
        .map(|port| Served::sites(*port)["sites"][0]["history"][0]["result"].clone())
        .collect();
    assert!(
        results.contains(&json!("deployed")) && results.contains(&json!("unchanged")),
        "one deployed, the other found it unchanged: {results:?}"
    );
    one.terminate();
    two.terminate();
    one.wait().exited(exit::OK);
    two.wait().exited(exit::OK);
}

/// The ClusterIP of Service `name` in `world`'s namespace.
async fn cluster_ip(world: &World, name: &str) -> std::net::IpAddr {
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(crate::support::kube_client().await, &world.namespace);
    let service = api.get(name).await.unwrap();
    service.spec.unwrap().cluster_ip.unwrap().parse().unwrap()
}

/// Waits until the site's Service answers `/` with a page holding `text`: how long it took.
async fn page_through_service(world: &World, text: &str, within: Duration) -> Duration {
    let address = (cluster_ip(world, "web").await, 80).into();
    let started = Instant::now();
    loop {
        if let Ok((200, body)) = crate::support::http_get_at(address, "/", Duration::from_secs(2))
            && body.contains(text)
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the site's Service never answered {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The documented manifests (`docs/serve/berth.yaml`, with `docs/rbac.yaml`)
/// on the stack's real node: berth's own image serves in a pod (hostNetwork:
/// the node's loopback reaches the forge, the registry and the Engine's TLS
/// endpoint), the forge's webhook reaches it through its Service, and the
/// pushed page is then served through the site's Service.
#[tokio::test(flavor = "multi_thread")]
#[expect(
    clippy::too_many_lines,
    reason = "the documented manifests, adapted to the stack, then one push end to end"
)]
async fn the_documented_server_runs_in_the_cluster_and_a_push_is_served_through_the_sites_service() {
    let site = ForgeSite::new("serve-cluster", &[]).await;
    let (world, forge, repo, work) = (&site.world, &site.forge, &site.repo, &site.work);
    world
        .real_node_deployment("web", &world.stack.placeholder_image)
        .create()
        .await;
    world.create_service("web", "web", json!("http")).await;
    let kubectl = |args: &[&str]| world.kubectl_ok(args);
    // berth's image, the Role, the Engine's client certificates, the secrets
    // the manifests name, a volume for the claim, and the documented manifests.
    let secret = crate::support::unique("hook-secret");
    let InCluster {
        image,
        volume,
        persistent_volume,
        mut manifests,
        ..
    } = world.in_cluster(
        "docs/serve/berth.yaml",
        &[
            format!("webhook-secret={secret}"),
            format!("forge-token={}", forge.token),
        ],
    );
    // The node's loopback: a port of its own for berth's listener.
    let port = free_port();
    for item in manifests["items"].as_array_mut().unwrap() {
        match item["kind"].as_str().unwrap() {
            "ConfigMap" => {
                let mut pipeline = site.pipeline("1h").with_rollout_timeout("90s");
                pipeline.state_dir = Some("/var/cache/berth".into());
                pipeline.templates = Some("/etc/berth/templates".into());
                let mut served = SiteSpec::new("site", "site", &world.image("site"), "web");
                served
                    .build_arg("BASE_IMAGE", &world.stack.base_image)
                    .build_arg("WEB_ROOT", "/www");
                pipeline.sites.push(served);
                pipeline.serve = Some(ServeSpec {
                    listen: Some(format!("0.0.0.0:{port}")),
                    webhook_secret_env: Some("BERTH_WEBHOOK_SECRET".into()),
                    poll_interval: Some("1h".into()),
                    ..ServeSpec::default()
                });
                pipeline.forge = Some(ForgeSpec {
                    api: forge.api.clone(),
                    token_env: "BERTH_FORGE_TOKEN".into(),
                });
                item["data"]["pipeline.toml"] = json!(pipeline.to_toml());
            }
            "PersistentVolumeClaim" => {
                item["spec"]["storageClassName"] = json!(volume);
                item["spec"]["volumeName"] = json!(volume);
            }
            "Deployment" => {
                // One replica: two on the node's own network would want one port.
                item["spec"]["replicas"] = json!(1);
                let pod = &mut item["spec"]["template"]["spec"];
                pod["hostNetwork"] = json!(true);
                pod["dnsPolicy"] = json!("ClusterFirstWithHostNet");
                pod["nodeSelector"] = serde_json::to_value(world.real_node_selector()).unwrap();
                pod["tolerations"] = serde_json::to_value(world.real_node_tolerations()).unwrap();
                let container = &mut pod["containers"][0];
                container["image"] = json!(image);
                container["ports"][0]["containerPort"] = json!(port);
                for variable in container["env"].as_array_mut().unwrap() {
                    if variable["name"] == "DOCKER_HOST" {
                        variable["value"] = json!(std::env::var("BERTH_STACK_DOCKER_TLS_HOST").unwrap());
                    }
                }
            }
            "Service" => {}
            other => panic!("docs/serve/berth.yaml has a {other} the test does not know"),
        }
    }
    manifests["items"].as_array_mut().unwrap().push(persistent_volume);
    let file = world.dir.path().join("serve.json");
    std::fs::write(&file, manifests.to_string()).unwrap();
    kubectl(&["create", "-f", file.to_str().unwrap()]);
    let ready = world.kubectl(&["rollout", "status", "deployment/berth-serve", "--timeout=180s"]);
    let logs = || crate::support::text(&world.kubectl(&["logs", "deployment/berth-serve", "--tail=200"]));
    assert!(
        ready.status.success(),
        "berth-serve not ready: {}\n{}",
        crate::support::text(&ready),
        logs()
    );

    // At start it ships the head: the site's Service serves the first page.
    page_through_service(world, "first", Duration::from_secs(180)).await;
    // The forge's webhook to berth's Service; a push; the new page through the site's Service.
    let berth = cluster_ip(world, "berth-serve").await;
    forge
        .add_webhook_to(repo, &format!("http://{berth}/hooks/github"), &secret, &["push"])
        .await;
    let pushed_at = Instant::now();
    let second = commit(work.path(), "index.html", "<h1>second</h1>\n", "Second page");
    forge.push(work.path(), repo, "main");
    page_through_service(world, "second", Duration::from_secs(120)).await;
    eprintln!(
        "in the cluster: push to served through the site's Service in {:.1}s",
        pushed_at.elapsed().as_secs_f64()
    );
    forge
        .wait_for_status(
            repo,
            &second,
            "berth/site",
            |status| status["status"] == "success",
            Duration::from_secs(30),
            &logs,
        )
        .await;
    let output = logs();
    assert!(!output.contains(&secret), "the secret leaked into the log");
    assert!(!output.contains(&forge.token), "the token leaked into the log");
    kubectl(&["delete", "deployment", "berth-serve", "--wait=true"]);
}
