//! The stack's forge (Gitea): a client of its API as the admin, its repos,
//! webhooks and pushes, for the tests that need a real forge.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::support::{git, git_commit, unique};

/// How long a webhook may take to arrive after what caused it.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

fn variable(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the local stack's forge. Run \
             `scripts/stack up && eval \"$(scripts/stack env)\"` first."
        )
    })
}

/// The stack's forge, as `scripts/stack env` describes it, and a client of its API.
pub struct Forge {
    /// `http://127.0.0.1:3000`: repos are at `URL/OWNER/NAME.git`.
    pub url: String,
    /// `URL/api/v1`.
    pub api: String,
    /// The organisation that holds the repos of `sites/`.
    pub organisation: String,
    /// The admin whose token this is.
    pub user: String,
    pub token: String,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

impl Forge {
    pub fn from_env() -> Self {
        let token_file = variable("BERTH_STACK_FORGE_TOKEN_FILE");
        let token = std::fs::read_to_string(&token_file)
            .unwrap_or_else(|error| panic!("BERTH_STACK_FORGE_TOKEN_FILE={token_file}: {error}"))
            .trim()
            .to_string();
        Self {
            url: variable("BERTH_STACK_FORGE_URL"),
            api: variable("BERTH_STACK_FORGE_API"),
            organisation: variable("BERTH_STACK_FORGE_ORG"),
            user: variable("BERTH_STACK_FORGE_USER"),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// One request to the API as the admin: its status and its JSON answer
    /// (`null` when it has no body).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let bytes = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
        let request = hyper::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.api))
            .header("Authorization", format!("token {}", self.token))
            .header("Accept", "application/json")
            .header("Content-Type", "application/json")
            .body(Full::new(bytes))
            .unwrap();
        let response = self
            .client
            .request(request)
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        let status = response.status();
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        let value = if answer.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&answer).unwrap_or_else(|error| {
                panic!(
                    "{method} {path}: {status}, not JSON ({error}): {}",
                    String::from_utf8_lossy(&answer)
                )
            })
        };
        (status, value)
    }

    /// A request that must answer `expected`; its JSON answer.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> Value {
        let (status, value) = self.call(method.clone(), path, body).await;
        assert_eq!(status, expected, "{method} {path}: {value:#}");
        value
    }

    /// A new empty repo in the organisation, named after `prefix`: its full name.
    pub async fn create_repo(&self, prefix: &str) -> String {
        let name = unique(prefix);
        let body = json!({"name": name, "default_branch": "main", "auto_init": false, "private": false});
        let path = format!("/orgs/{}/repos", self.organisation);
        self.expect(Method::POST, &path, Some(&body), StatusCode::CREATED)
            .await;
        format!("{}/{name}", self.organisation)
    }

    pub async fn delete_repo(&self, repo: &str) {
        self.expect(
            Method::DELETE,
            &format!("/repos/{repo}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    }

    /// A webhook of Gitea's own type on `repo`, signed with `secret`, for
    /// `events`, to a receiver on loopback.
    pub async fn add_webhook(&self, repo: &str, port: u16, secret: &str, events: &[&str]) {
        let body = json!({
            "type": "gitea",
            "active": true,
            "events": events,
            "config": {
                "url": format!("http://127.0.0.1:{port}/hook"),
                "content_type": "json",
                "secret": secret,
            },
        });
        let path = format!("/repos/{repo}/hooks");
        self.expect(Method::POST, &path, Some(&body), StatusCode::CREATED)
            .await;
    }

    /// A webhook of Gitea's own type on `repo`, signed with `secret`, for
    /// `events`, to `url`.
    pub async fn add_webhook_to(&self, repo: &str, url: &str, secret: &str, events: &[&str]) {
        let body = json!({
            "type": "gitea",
            "active": true,
            "events": events,
            "config": {"url": url, "content_type": "json", "secret": secret},
        });
        let path = format!("/repos/{repo}/hooks");
        self.expect(Method::POST, &path, Some(&body), StatusCode::CREATED)
            .await;
    }

    /// The commit statuses of `commit` in `repo`, newest first, as Gitea lists
    /// them (its `status` is GitHub's `state`).
    pub async fn statuses(&self, repo: &str, commit: &str) -> Vec<Value> {
        let path = format!("/repos/{repo}/commits/{commit}/statuses");
        let list = self.expect(Method::GET, &path, None, StatusCode::OK).await;
        list.as_array().cloned().unwrap_or_default()
    }

    /// The newest status of `commit` in `repo` named `context` that `wanted`
    /// takes, asked for every 300 ms until `within` has passed; the failure
    /// lists the commit's statuses and what `said` returns (a server's output).
    pub async fn wait_for_status(
        &self,
        repo: &str,
        commit: &str,
        context: &str,
        wanted: impl Fn(&Value) -> bool,
        within: Duration,
        said: impl Fn() -> String,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let statuses = self.statuses(repo, commit).await;
            if let Some(status) = statuses
                .iter()
                .find(|status| status["context"] == context && wanted(status))
            {
                return status.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such {context} status on {commit} within {within:?}: {statuses:#?}\n{}",
                said()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// A new file `path` on `repo`'s `main`, committed by the forge itself
    /// (its contents API): the commit's id. Quicker than a push, and a push
    /// to the forge all the same: it sends the `push` webhook.
    pub async fn create_file(&self, repo: &str, path: &str, content: &str) -> String {
        let body = json!({
            "content": base64::engine::general_purpose::STANDARD.encode(content),
            "message": format!("Add {path}"),
            "branch": "main",
        });
        let answer = self
            .expect(
                Method::POST,
                &format!("/repos/{repo}/contents/{path}"),
                Some(&body),
                StatusCode::CREATED,
            )
            .await;
        answer["commit"]["sha"]
            .as_str()
            .unwrap_or_else(|| panic!("no commit in {answer:#}"))
            .to_string()
    }

    /// A pull request of `repo` from `feature` into `main`: its number.
    pub async fn open_pull_request(&self, repo: &str) -> u64 {
        let body = json!({"head": "feature", "base": "main", "title": "News page"});
        let path = format!("/repos/{repo}/pulls");
        let pull = self
            .expect(Method::POST, &path, Some(&body), StatusCode::CREATED)
            .await;
        pull["number"].as_u64().expect("the pull request's number")
    }

    /// A pull request of `repo` from `head` (`branch`, or `owner:branch` from a
    /// fork) into `main`: its number.
    pub async fn open_pull_request_from(&self, repo: &str, head: &str, title: &str) -> u64 {
        let body = json!({"head": head, "base": "main", "title": title});
        let path = format!("/repos/{repo}/pulls");
        let pull = self
            .expect(Method::POST, &path, Some(&body), StatusCode::CREATED)
            .await;
        pull["number"].as_u64().expect("the pull request's number")
    }

    /// Closes pull request `number` of `repo` (without merging).
    pub async fn close_pull_request(&self, repo: &str, number: u64) {
        let path = format!("/repos/{repo}/pulls/{number}");
        self.expect(
            Method::PATCH,
            &path,
            Some(&json!({"state": "closed"})),
            StatusCode::CREATED,
        )
        .await;
    }

    /// The comments of pull request `number` of `repo`: their bodies, oldest first.
    pub async fn comments(&self, repo: &str, number: u64) -> Vec<String> {
        let path = format!("/repos/{repo}/issues/{number}/comments");
        let list = self.expect(Method::GET, &path, None, StatusCode::OK).await;
        list.as_array()
            .map(|comments| {
                comments
                    .iter()
                    .map(|comment| comment["body"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A fork of `repo` in the admin's own namespace: its full name.
    pub async fn fork(&self, repo: &str) -> String {
        let name = repo.rsplit('/').next().unwrap();
        let path = format!("/repos/{repo}/forks");
        let fork = self
            .expect(
                Method::POST,
                &path,
                Some(&json!({"name": format!("{name}-fork")})),
                StatusCode::ACCEPTED,
            )
            .await;
        fork["full_name"].as_str().expect("the fork's name").to_string()
    }

    /// Waits until the forge has taken in the pushes of `branches`: it handles a
    /// push after answering it (a repo first pushed to stays `empty`, and takes
    /// no pull request, until then).
    pub async fn wait_for_branches(&self, repo: &str, branches: &[&str]) {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let (_, answer) = self.call(Method::GET, &format!("/repos/{repo}"), None).await;
            let mut ready = answer["empty"] == false;
            for branch in branches {
                let path = format!("/repos/{repo}/branches/{branch}");
                ready = ready && self.call(Method::GET, &path, None).await.0 == StatusCode::OK;
            }
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the forge took in no push of {branches:?} to {repo} within {DELIVERY_TIMEOUT:?}: {answer:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `git push` over HTTP of `refspec` from `work` to `repo`, as the admin
    /// (its token in a header from git's environment, never in the URL).
    pub fn push(&self, work: &Path, repo: &str, refspec: &str) {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.token));
        let output = Command::new("git")
            .args(["push", "-q", &format!("{}/{repo}.git", self.url), refspec])
            .current_dir(work)
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", format!("Authorization: Basic {basic}"))
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .expect("run git push");
        assert!(
            output.status.success(),
            "git push {refspec} to {repo} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A work tree with one commit on `main` (a file `index.html`): the tree and the commit.
pub fn work_tree() -> (tempfile::TempDir, String) {
    let work = tempfile::tempdir().expect("temp dir");
    git(work.path(), &["init", "-q", "-b", "main"]);
    let head = commit(work.path(), "index.html", "<h1>first</h1>\n", "First page");
    (work, head)
}

/// Writes `file` and commits it on the current branch: the new commit.
pub fn commit(work: &Path, file: &str, content: &str, message: &str) -> String {
    std::fs::write(work.join(file), content).unwrap();
    git(work, &["add", "-A"]);
    git_commit(work, &["-q", "-m", message]);
    git(work, &["rev-parse", "HEAD"]).trim().to_string()
}

/// The variable that holds the webhook secret in a [`ForgeSite`]'s pipeline.
pub const SECRET_ENV: &str = "FORGE_SITE_SECRET";
/// The variable that holds the forge's token in a [`ForgeSite`]'s pipeline.
pub const TOKEN_ENV: &str = "FORGE_SITE_TOKEN";

/// A world whose site lives in a repo of its own on the stack's forge (named
/// after the test, deleted with it), with a work tree to commit and push from,
/// and a webhook secret and a port for its `berth serve`.
pub struct ForgeSite {
    pub world: crate::support::World,
    pub forge: Forge,
    /// `org/name` on the forge.
    pub repo: String,
    /// A work tree of the repo, on branch main.
    pub work: tempfile::TempDir,
    pub secret: String,
    pub port: u16,
}

impl ForgeSite {
    /// The world and the forge's repo, its first commit (index.html) and then
    /// one commit per `(file, content)` pushed to main.
    pub async fn new(test: &str, files: &[(&str, &str)]) -> Self {
        let world = crate::support::World::new(test).await;
        let forge = Forge::from_env();
        let repo = forge.create_repo(test).await;
        let (work, _) = work_tree();
        for (file, content) in files {
            commit(work.path(), file, content, &format!("Add {file}"));
        }
        forge.push(work.path(), &repo, "main");
        forge.wait_for_branches(&repo, &["main"]).await;
        Self {
            secret: unique("secret"),
            world,
            forge,
            repo,
            work,
            port: crate::support::free_port(),
        }
    }

    /// The world's pipeline with the repo as `[[repo]] site`, `[serve]` on
    /// the port (its secret in [`SECRET_ENV`]) and `[forge]` (its token in
    /// [`TOKEN_ENV`]); the caller adds the site and writes it.
    pub fn pipeline(&self, poll_interval: &str) -> crate::support::Pipeline {
        let mut pipeline = self.world.pipeline();
        pipeline.repos.push(crate::support::Repo::new(
            "site",
            &format!("{}/{}.git", self.forge.url, self.repo),
        ));
        pipeline.serve = Some(crate::support::ServeSpec {
            listen: Some(format!("127.0.0.1:{}", self.port)),
            webhook_secret_env: Some(SECRET_ENV.into()),
            poll_interval: Some(poll_interval.into()),
            public_url: Some(format!("http://127.0.0.1:{}", self.port)),
            ..crate::support::ServeSpec::default()
        });
        pipeline.forge = Some(crate::support::ForgeSpec {
            api: self.forge.api.clone(),
            token_env: TOKEN_ENV.into(),
        });
        pipeline
    }

    /// berth with the webhook secret and the forge's token in its environment.
    pub fn berth<I, S>(&self, args: I) -> crate::support::Berth
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.world
            .berth(args)
            .env(SECRET_ENV, &self.secret)
            .env(TOKEN_ENV, &self.forge.token)
    }

    /// The forge's webhook of Gitea's own type for `events`, to `port`'s
    /// GitHub endpoint.
    pub async fn hook(&self, port: u16, events: &[&str]) {
        let url = format!("http://127.0.0.1:{port}/hooks/github");
        self.forge
            .add_webhook_to(&self.repo, &url, &self.secret, events)
            .await;
    }
}

impl Drop for ForgeSite {
    fn drop(&mut self) {
        let forge = Forge::from_env();
        let repo = self.repo.clone();
        // The test's own repo goes; a failure to delete it is no failure of the test.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async { forge.call(Method::DELETE, &format!("/repos/{repo}"), None).await })
        })
        .join();
    }
}
