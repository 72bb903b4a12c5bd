//! The stack's forge (Gitea, built from its Go module): what berth's forge
//! features will rely on, proved against the real server. Its repos of `sites/`
//! have the Git server's commits; a `git push` over HTTP and a pull request
//! opened through the API are delivered as webhooks with GitHub's headers and an
//! HMAC-SHA256 signature of the exact body; commit statuses and issue comments
//! are written and read back in GitHub's shape. Each test makes a repo of its
//! own in the stack's organisation and deletes it at the end.

use std::sync::mpsc;
use std::time::Instant;

use hmac::{KeyInit as _, Mac as _};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::forge::{DELIVERY_TIMEOUT, Forge, commit, work_tree};
use crate::support::{Request as Delivery, Stack, git, http_receiver, unique};

/// Every request answered 200 (Gitea's deliveries, as many as come).
fn receiver() -> (u16, mpsc::Receiver<Delivery>) {
    http_receiver(
        usize::MAX,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
}

/// The first delivery of `event` (by its `X-GitHub-Event`) within
/// [`DELIVERY_TIMEOUT`]; deliveries of other events are passed over.
fn next_delivery(deliveries: &mpsc::Receiver<Delivery>, event: &str) -> Delivery {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let delivery = deliveries
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no `{event}` webhook within {DELIVERY_TIMEOUT:?}"));
        if delivery.header("X-GitHub-Event") == Some(event) {
            return delivery;
        }
    }
}

/// GitHub's `X-Hub-Signature-256` of `body` with `secret`: `sha256=` and the
/// HMAC-SHA256 in lowercase hex.
fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delivery has GitHub's headers and Gitea's own: it is signed with
/// `secret` as GitHub signs (the HMAC-SHA256 of the exact body, which neither
/// another secret nor another body gives; `X-Gitea-Signature` is the same
/// HMAC), has a delivery id, and names its event in `X-Gitea-Event` as in
/// `X-GitHub-Event`.
fn assert_github_headers(delivery: &Delivery, secret: &str) {
    let header = delivery
        .header("X-Hub-Signature-256")
        .expect("an X-Hub-Signature-256 header");
    assert_eq!(
        header,
        signature(secret, delivery.body.as_bytes()),
        "the signature of the body with the secret"
    );
    assert_ne!(
        header,
        signature("not-the-secret", delivery.body.as_bytes()),
        "another secret's signature"
    );
    let mut changed = delivery.body.clone().into_bytes();
    changed.push(b'\n');
    assert_ne!(
        header,
        signature(secret, &changed),
        "the signature of another body"
    );
    assert_eq!(
        delivery.header("X-Gitea-Signature"),
        header.strip_prefix("sha256="),
        "Gitea's own signature is the same HMAC, in hex"
    );
    let delivery_id = delivery.header("X-GitHub-Delivery").unwrap_or_default();
    assert!(
        !delivery_id.is_empty(),
        "an X-GitHub-Delivery header: {:?}",
        delivery.headers
    );
    assert_eq!(
        delivery.header("X-Gitea-Event"),
        delivery.header("X-GitHub-Event"),
        "{:?}",
        delivery.headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_repos_of_sites_are_in_the_forge_with_the_git_servers_commits() {
    let forge = Forge::from_env();
    let stack = Stack::from_env();
    let mut sites: Vec<String> = std::fs::read_dir(crate::support::repo_root().join("sites"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    sites.sort();
    assert!(!sites.is_empty(), "sites/ has repos");
    let here = std::env::temp_dir();
    for site in &sites {
        let on_git_server = git(
            &here,
            &[
                "ls-remote",
                &format!("{}/{site}.git", stack.git_url),
                "refs/heads/*",
            ],
        );
        let on_forge = git(
            &here,
            &[
                "ls-remote",
                &format!("{}/{}/{site}.git", forge.url, forge.organisation),
                "refs/heads/*",
            ],
        );
        assert!(
            on_git_server.contains("refs/heads/main"),
            "{site}: {on_git_server}"
        );
        assert_eq!(
            on_forge, on_git_server,
            "{site}: the forge's branches and commits are the Git server's"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_over_http_sends_a_push_webhook_signed_as_github_signs() {
    let forge = Forge::from_env();
    let repo = forge.create_repo("forge-push").await;
    let (port, deliveries) = receiver();
    let secret = unique("push-secret");
    forge.add_webhook(&repo, port, &secret, &["push"]).await;

    let (work, head) = work_tree();
    forge.push(work.path(), &repo, "main");
    let pushed = Instant::now();
    let delivery = next_delivery(&deliveries, "push");
    eprintln!("push webhook {:?} after the push", delivery.arrived - pushed);

    assert_github_headers(&delivery, &secret);
    let body = delivery.json();
    assert_eq!(body["ref"], "refs/heads/main", "{body:#}");
    assert_eq!(body["after"], head.as_str(), "{body:#}");
    assert_eq!(body["head_commit"]["id"], head.as_str(), "{body:#}");
    assert_eq!(body["repository"]["full_name"], repo.as_str(), "{body:#}");
    assert_eq!(
        body["repository"]["clone_url"],
        format!("{}/{repo}.git", forge.url),
        "{body:#}"
    );

    // A second push: its own delivery, whose `before` is the first commit.
    let second = commit(work.path(), "about.html", "<h1>about</h1>\n", "About page");
    forge.push(work.path(), &repo, "main");
    let delivery = next_delivery(&deliveries, "push");
    assert_github_headers(&delivery, &secret);
    let body = delivery.json();
    assert_eq!(body["before"], head.as_str(), "{body:#}");
    assert_eq!(body["after"], second.as_str(), "{body:#}");

    forge.delete_repo(&repo).await;
}

/// A repo of the forge with `main` (one commit) and a branch `feature` one
/// commit ahead: the repo, `main`'s commit and `feature`'s.
async fn repo_with_a_branch(forge: &Forge, prefix: &str) -> (String, String, String) {
    let repo = forge.create_repo(prefix).await;
    let (work, main) = work_tree();
    forge.push(work.path(), &repo, "main");
    git(work.path(), &["checkout", "-q", "-b", "feature"]);
    let feature = commit(work.path(), "news.html", "<h1>news</h1>\n", "News page");
    forge.push(work.path(), &repo, "feature");
    forge.wait_for_branches(&repo, &["main", "feature"]).await;
    (repo, main, feature)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_opened_through_the_api_sends_a_pull_request_webhook() {
    let forge = Forge::from_env();
    let (repo, _, feature) = repo_with_a_branch(&forge, "forge-pull").await;
    let (port, deliveries) = receiver();
    let secret = unique("pull-secret");
    forge.add_webhook(&repo, port, &secret, &["pull_request"]).await;

    let opened_at = Instant::now();
    let number = forge.open_pull_request(&repo).await;
    let delivery = next_delivery(&deliveries, "pull_request");
    eprintln!(
        "pull_request webhook {:?} after the request",
        delivery.arrived - opened_at
    );

    assert_github_headers(&delivery, &secret);
    let body = delivery.json();
    assert_eq!(body["action"], "opened", "{body:#}");
    assert_eq!(body["number"], number, "{body:#}");
    assert_eq!(body["pull_request"]["number"], number, "{body:#}");
    assert_eq!(body["pull_request"]["head"]["ref"], "feature", "{body:#}");
    assert_eq!(body["pull_request"]["head"]["sha"], feature.as_str(), "{body:#}");
    assert_eq!(body["pull_request"]["base"]["ref"], "main", "{body:#}");
    assert_eq!(body["repository"]["full_name"], repo.as_str(), "{body:#}");

    forge.delete_repo(&repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_statuses_are_written_and_read_back_in_githubs_shape() {
    let forge = Forge::from_env();
    let (repo, main, feature) = repo_with_a_branch(&forge, "forge-status").await;
    let status = json!({
        "state": "success",
        "context": "berth/staging",
        "description": "shipped to staging",
        "target_url": "http://127.0.0.1:8080/runs/1",
    });
    let written = forge
        .expect(
            Method::POST,
            &format!("/repos/{repo}/statuses/{feature}"),
            Some(&status),
            StatusCode::CREATED,
        )
        .await;
    // GitHub's request, and GitHub's answer but for one key: Gitea names a
    // status's state `status` (GitHub: `state`); the combined status says `state`.
    assert_eq!(written["status"], "success", "{written:#}");
    assert!(written.get("state").is_none(), "{written:#}");
    for key in ["context", "description", "target_url"] {
        assert_eq!(written[key], status[key], "{key}: {written:#}");
    }
    assert!(written["id"].is_u64(), "{written:#}");
    assert_eq!(written["creator"]["login"], forge.user.as_str(), "{written:#}");

    let listed = forge
        .expect(
            Method::GET,
            &format!("/repos/{repo}/commits/{feature}/statuses"),
            None,
            StatusCode::OK,
        )
        .await;
    let listed = listed.as_array().expect("a list of statuses");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    for key in ["id", "status", "context", "description", "target_url"] {
        assert_eq!(listed[0][key], written[key], "{key}: {listed:#?}");
    }
    let combined = forge
        .expect(
            Method::GET,
            &format!("/repos/{repo}/commits/{feature}/status"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(combined["state"], "success", "{combined:#}");
    assert_eq!(combined["sha"], feature.as_str(), "{combined:#}");
    assert_eq!(combined["total_count"], 1, "{combined:#}");
    assert_eq!(
        combined["statuses"][0]["context"], "berth/staging",
        "{combined:#}"
    );

    // Statuses belong to their commit: main's has none.
    let other = forge
        .expect(
            Method::GET,
            &format!("/repos/{repo}/commits/{main}/statuses"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(other, json!([]), "main's statuses");

    forge.delete_repo(&repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_requests_comment_is_edited_in_place() {
    let forge = Forge::from_env();
    let (repo, _, _) = repo_with_a_branch(&forge, "forge-comment").await;
    let number = forge.open_pull_request(&repo).await;
    let comments = format!("/repos/{repo}/issues/{number}/comments");

    let created = forge
        .expect(
            Method::POST,
            &comments,
            Some(&json!({"body": "berth: building"})),
            StatusCode::CREATED,
        )
        .await;
    let id = created["id"].as_u64().expect("the comment's id");
    assert_eq!(created["body"], "berth: building", "{created:#}");
    for key in ["html_url", "issue_url", "created_at", "updated_at"] {
        assert!(created[key].is_string(), "{key}: {created:#}");
    }
    assert_eq!(created["user"]["login"], forge.user.as_str(), "{created:#}");

    let edited = forge
        .expect(
            Method::PATCH,
            &format!("/repos/{repo}/issues/comments/{id}"),
            Some(&json!({"body": "berth: shipped"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(edited["id"], id, "{edited:#}");
    assert_eq!(edited["body"], "berth: shipped", "{edited:#}");

    let listed = forge.expect(Method::GET, &comments, None, StatusCode::OK).await;
    let listed = listed.as_array().expect("a list of comments");
    assert_eq!(listed.len(), 1, "one comment, edited in place: {listed:#?}");
    assert_eq!(listed[0]["id"], id, "{listed:#?}");
    assert_eq!(listed[0]["body"], "berth: shipped", "{listed:#?}");

    forge.delete_repo(&repo).await;
}
