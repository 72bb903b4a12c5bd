//! Webhook deliveries, checked and read: pure functions of a delivery's
//! headers and body, tested on fixtures of each forge's payloads.
//!
//! - `/hooks/github` (GitHub and Gitea): `X-Hub-Signature-256: sha256=<hex>`,
//!   the HMAC-SHA256 of the body with the shared secret; the event in
//!   `X-GitHub-Event` (or Gitea's `X-Gitea-Event`), the delivery's id in
//!   `X-GitHub-Delivery` (or `X-Gitea-Delivery`).
//! - `/hooks/gitlab`: `X-Gitlab-Token`, the shared secret itself, compared in
//!   constant time; the event in `X-Gitlab-Event`, the id in
//!   `Idempotency-Key` (GitLab 17.4 on) or `X-Gitlab-Event-UUID`.
//! - `/hooks/generic`: `X-Berth-Signature-256: sha256=<hex>`, the HMAC-SHA256 of
//!   the body; the body is `{"event": "push", "repository": URL, "ref":
//!   "refs/heads/BRANCH", "after": COMMIT}` (or `{"event": "ping"}`), the id in
//!   `X-Berth-Delivery`.
//!
//! A delivery is only a hint: it names a repository and a ref (and perhaps a
//! commit), and berth decides from Git alone what to ship.

use hmac::{KeyInit as _, Mac as _};
use http::HeaderMap;
use serde_json::Value;
use subtle::ConstantTimeEq as _;

/// Which endpoint a delivery came to: how it is signed and shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// GitHub's webhooks, and Gitea's (which send GitHub's headers too).
    GitHub,
    /// GitLab's.
    GitLab,
    /// Anything that can sign a small JSON body.
    Generic,
}

impl Endpoint {
    /// The endpoint's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::Generic => "generic",
        }
    }
}

/// A shared secret. Its bytes never show in `Debug`.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret([redacted])")
    }
}

/// Why a delivery is refused. None of these holds the secret or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// berth has no secret for this endpoint: it takes nothing unsigned.
    #[error("no secret is set for /hooks/{0}: berth takes no delivery there")]
    NoSecret(&'static str),
    /// The delivery carries no signature (or token).
    #[error("the delivery is not signed ({0} is missing)")]
    Unsigned(&'static str),
    /// The signature (or token) does not match the secret.
    #[error("the delivery's {0} does not match the secret")]
    BadSignature(&'static str),
    /// Signed, but not JSON berth can read.
    #[error("the delivery's body is not the JSON of a {0} event: {1}")]
    BadBody(String, String),
}

impl Refusal {
    /// The HTTP status berth answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::NoSecret(_) | Self::Unsigned(_) | Self::BadSignature(_) => http::StatusCode::UNAUTHORIZED,
            Self::BadBody(..) => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// What a signed delivery says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The forge's id of the delivery, when it gives one (a repeated id is a
    /// redelivery, and is ignored).
    pub id: Option<String>,
    pub event: Event,
}

/// The event of a signed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The forge checks that the endpoint answers.
    Ping,
    /// Commits were pushed.
    Push(Push),
    /// A pull (or merge) request was opened, pushed to, or closed.
    PullRequest(PullRequest),
    /// An event berth does not act on, by name.
    Ignored(String),
}

/// What happened to a pull request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullAction {
    /// Opened, reopened, or pushed to: build its preview.
    Updated,
    /// Closed or merged: its preview goes.
    Closed { merged: bool },
}

/// A pull (or merge) request event, as a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub action: PullAction,
    pub number: u64,
    /// The base repository, by every URL the payload gives.
    pub repository_urls: Vec<String>,
    /// The branch it would merge into.
    pub base_branch: String,
    pub head_commit: String,
    /// Its head is in another repository (a fork).
    pub from_fork: bool,
    pub labels: Vec<String>,
}

/// A push, as a hint: the repository (by every URL the payload gives), the
/// ref, and the commit the ref now names (none when the ref was deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub repository_urls: Vec<String>,
    /// `refs/heads/main`, `refs/tags/v1`.
    pub reference: String,
    pub after: Option<String>,
}

impl Push {
    /// The branch pushed, when the ref is one.
    pub fn branch(&self) -> Option<&str> {
        self.reference.strip_prefix("refs/heads/")
    }
}

/// Checks a delivery to `endpoint` against `secret` and reads it.
pub fn read(
    endpoint: Endpoint,
    secret: Option<&Secret>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Delivery, Refusal> {
    let secret = secret.ok_or(Refusal::NoSecret(endpoint.name()))?;
    match endpoint {
        Endpoint::GitHub => {
            check_hmac(secret, headers, "x-hub-signature-256", body)?;
            let event = header(headers, "x-github-event")
                .or_else(|| header(headers, "x-gitea-event"))
                .unwrap_or_default();
            let id = header(headers, "x-github-delivery").or_else(|| header(headers, "x-gitea-delivery"));
            Ok(Delivery {
                id,
                event: github_event(&event, body)?,
            })
        }
        Endpoint::GitLab => {
            check_token(secret, headers)?;
            let event = header(headers, "x-gitlab-event").unwrap_or_default();
            let id = header(headers, "idempotency-key").or_else(|| header(headers, "x-gitlab-event-uuid"));
            Ok(Delivery {
                id,
                event: gitlab_event(&event, body)?,
            })
        }
        Endpoint::Generic => {
            check_hmac(secret, headers, "x-berth-signature-256", body)?;
            Ok(Delivery {
                id: header(headers, "x-berth-delivery"),
                event: generic_event(body)?,
            })
        }
    }
}

/// A header's value as text, when it is there and is text.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_string)
}

/// `sha256=<hex>` in `name` must be the HMAC-SHA256 of `body` with `secret`,
/// compared in constant time.
fn check_hmac(secret: &Secret, headers: &HeaderMap, name: &'static str, body: &[u8]) -> Result<(), Refusal> {
    let given = header(headers, name).ok_or(Refusal::Unsigned(name))?;
    let signature = given
        .strip_prefix("sha256=")
        .and_then(|hex_digits| hex::decode(hex_digits).ok())
        .ok_or(Refusal::BadSignature(name))?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret.0).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| Refusal::BadSignature(name))
}

/// GitLab's `X-Gitlab-Token` must be the secret, compared in constant time.
fn check_token(secret: &Secret, headers: &HeaderMap) -> Result<(), Refusal> {
    const NAME: &str = "x-gitlab-token";
    let given = headers.get(NAME).ok_or(Refusal::Unsigned(NAME))?;
    if bool::from(given.as_bytes().ct_eq(&secret.0)) {
        Ok(())
    } else {
        Err(Refusal::BadSignature(NAME))
    }
}

fn json(kind: &str, body: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|error| Refusal::BadBody(kind.to_string(), error.to_string()))
}

/// The strings at `paths` (JSON pointers) of `value`, each once, in order.
fn strings(value: &Value, paths: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for path in paths {
        if let Some(text) = value
            .pointer(path)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            && !found.iter().any(|f| f == text)
        {
            found.push(text.to_string());
        }
    }
    found
}

/// A commit id, unless it is the all-zero id a deleted ref gets.
fn commit(value: &Value, path: &str) -> Option<String> {
    value
        .pointer(path)
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && !id.bytes().all(|byte| byte == b'0'))
        .map(str::to_string)
}

fn github_event(event: &str, body: &[u8]) -> Result<Event, Refusal> {
    match event {
        "ping" => Ok(Event::Ping),
        "push" => {
            let value = json(event, body)?;
            let reference = value["ref"].as_str().unwrap_or_default().to_string();
            let deleted = value["deleted"].as_bool().unwrap_or(false);
            Ok(Event::Push(Push {
                repository_urls: strings(
                    &value,
                    &[
                        "/repository/clone_url",
                        "/repository/ssh_url",
                        "/repository/git_url",
                        "/repository/html_url",
                    ],
                ),
                reference,
                after: if deleted { None } else { commit(&value, "/after") },
            }))
        }
        "pull_request" => {
            let value = json(event, body)?;
            let action = match value["action"].as_str().unwrap_or_default() {
                "opened" | "reopened" | "synchronize" | "synchronized" | "edited" | "labeled" => {
                    PullAction::Updated
                }
                "closed" => PullAction::Closed {
                    merged: value["pull_request"]["merged"].as_bool().unwrap_or(false),
                },
                other => return Ok(Event::Ignored(format!("pull_request {other}"))),
            };
            let pull = crate::pipeline::preview::PullRequest::of_json(&value["pull_request"]);
            Ok(Event::PullRequest(PullRequest {
                action,
                number: value["number"].as_u64().unwrap_or(pull.number),
                repository_urls: strings(
                    &value,
                    &[
                        "/repository/clone_url",
                        "/repository/ssh_url",
                        "/repository/git_url",
                        "/repository/html_url",
                    ],
                ),
                base_branch: pull.base_branch,
                head_commit: pull.head_commit,
                from_fork: pull.from_fork,
                labels: pull.labels,
            }))
        }
        "" => Ok(Event::Ignored("(no event header)".into())),
        other => Ok(Event::Ignored(other.to_string())),
    }
}

fn gitlab_event(event: &str, body: &[u8]) -> Result<Event, Refusal> {
    match event {
        "Push Hook" => {
            let value = json(event, body)?;
            Ok(Event::Push(Push {
                repository_urls: strings(
                    &value,
                    &[
                        "/project/git_http_url",
                        "/project/git_ssh_url",
                        "/project/web_url",
                        "/repository/git_http_url",
                        "/repository/git_ssh_url",
                    ],
                ),
                reference: value["ref"].as_str().unwrap_or_default().to_string(),
                after: commit(&value, "/after"),
            }))
        }
        "Merge Request Hook" => {
            let value = json(event, body)?;
            let attributes = &value["object_attributes"];
            let action = match attributes["action"].as_str().unwrap_or_default() {
                "open" | "reopen" | "update" => PullAction::Updated,
                "close" => PullAction::Closed { merged: false },
                "merge" => PullAction::Closed { merged: true },
                other => return Ok(Event::Ignored(format!("merge request {other}"))),
            };
            Ok(Event::PullRequest(PullRequest {
                action,
                number: attributes["iid"].as_u64().unwrap_or(0),
                repository_urls: strings(
                    &value,
                    &[
                        "/project/git_http_url",
                        "/project/git_ssh_url",
                        "/project/web_url",
                    ],
                ),
                base_branch: attributes["target_branch"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                head_commit: attributes["last_commit"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                from_fork: attributes["source_project_id"] != attributes["target_project_id"],
                labels: value["labels"]
                    .as_array()
                    .map(|labels| {
                        labels
                            .iter()
                            .filter_map(|label| label["title"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            }))
        }
        "" => Ok(Event::Ignored("(no event header)".into())),
        other => Ok(Event::Ignored(other.to_string())),
    }
}

fn generic_event(body: &[u8]) -> Result<Event, Refusal> {
    let value = json("generic", body)?;
    match value["event"].as_str().unwrap_or("push") {
        "ping" => Ok(Event::Ping),
        "push" => {
            let repository = value["repository"].as_str().unwrap_or_default();
            let reference = value["ref"].as_str().unwrap_or_default();
            if repository.is_empty() || reference.is_empty() {
                return Err(Refusal::BadBody(
                    "generic push".into(),
                    "it needs `repository` and `ref`".into(),
                ));
            }
            Ok(Event::Push(Push {
                repository_urls: vec![repository.to_string()],
                reference: reference.to_string(),
                after: commit(&value, "/after"),
            }))
        }
        other => Ok(Event::Ignored(other.to_string())),
    }
}

/// The ids of recent deliveries, to ignore a redelivery: the last
/// `capacity` ids, the oldest forgotten first.
#[derive(Debug)]
pub struct Seen {
    capacity: usize,
    order: std::collections::VecDeque<String>,
    ids: std::collections::HashSet<String>,
}

impl Seen {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: std::collections::VecDeque::new(),
            ids: std::collections::HashSet::new(),
        }
    }

    /// Whether `id` was seen before; it is remembered either way.
    pub fn repeated(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return true;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.order.push_back(id.to_string());
        self.ids.insert(id.to_string());
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "it's a secret to everybody";

    fn secret() -> Secret {
        Secret::new(SECRET)
    }

    fn signed(body: &str) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    /// A push as Gitea 1.26 sends it (trimmed), to `/hooks/github`.
    const GITEA_PUSH: &str = r#"{"ref":"refs/heads/main","before":"1111111111111111111111111111111111111111","after":"2222222222222222222222222222222222222222","repository":{"clone_url":"http://127.0.0.1:3000/berth/website.git","ssh_url":"","html_url":"http://127.0.0.1:3000/berth/website"}}"#;

    #[test]
    fn a_gitea_push_signed_with_the_secret_is_read_with_its_urls_ref_and_commit() {
        let delivery = read(
            Endpoint::GitHub,
            Some(&secret()),
            &headers(&[
                ("x-github-event", "push"),
                ("x-github-delivery", "d-1"),
                ("x-hub-signature-256", &signed(GITEA_PUSH)),
            ]),
            GITEA_PUSH.as_bytes(),
        )
        .unwrap();
        assert_eq!(delivery.id.as_deref(), Some("d-1"));
        let Event::Push(push) = delivery.event else {
            panic!("a push: {delivery:?}")
        };
        assert_eq!(
            push.repository_urls,
            [
                "http://127.0.0.1:3000/berth/website.git",
                "http://127.0.0.1:3000/berth/website"
            ]
        );
        assert_eq!(push.branch(), Some("main"));
        assert_eq!(
            push.after.as_deref(),
            Some("2222222222222222222222222222222222222222")
        );
    }

    #[test]
    fn a_missing_wrong_or_malformed_signature_is_refused_and_no_secret_takes_nothing() {
        let body = GITEA_PUSH.as_bytes();
        let refuse = |pairs: &[(&'static str, &str)], secret: Option<&Secret>| {
            read(Endpoint::GitHub, secret, &headers(pairs), body).unwrap_err()
        };
        let event = ("x-github-event", "push");
        assert_eq!(
            refuse(&[event], Some(&secret())),
            Refusal::Unsigned("x-hub-signature-256")
        );
        let other = Secret::new("another secret");
        let wrong = {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"another secret").unwrap();
            mac.update(b"another body");
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        };
        for signature in [
            wrong.as_str(),
            "sha256=zz",
            "sha1=abcd",
            &signed("a different body"),
        ] {
            assert_eq!(
                refuse(&[event, ("x-hub-signature-256", signature)], Some(&secret())),
                Refusal::BadSignature("x-hub-signature-256"),
                "{signature}"
            );
        }
        // Signed with the right body but checked against another secret.
        assert_eq!(
            refuse(
                &[event, ("x-hub-signature-256", &signed(GITEA_PUSH))],
                Some(&other)
            ),
            Refusal::BadSignature("x-hub-signature-256")
        );
        assert_eq!(
            refuse(&[event, ("x-hub-signature-256", &signed(GITEA_PUSH))], None),
            Refusal::NoSecret("github")
        );
        assert_eq!(Refusal::Unsigned("x").status(), http::StatusCode::UNAUTHORIZED);
        assert!(!format!("{:?}", secret()).contains(SECRET));
    }

    #[test]
    fn ping_other_events_and_a_deleted_branch_are_told_apart() {
        let read_event = |event: &'static str, body: &str| {
            read(
                Endpoint::GitHub,
                Some(&secret()),
                &headers(&[("x-github-event", event), ("x-hub-signature-256", &signed(body))]),
                body.as_bytes(),
            )
            .unwrap()
            .event
        };
        assert_eq!(read_event("ping", "{}"), Event::Ping);
        assert_eq!(read_event("issues", "{}"), Event::Ignored("issues".into()));
        let deleted = r#"{"ref":"refs/heads/old","after":"0000000000000000000000000000000000000000","deleted":true,"repository":{"clone_url":"https://github.com/o/r.git"}}"#;
        let Event::Push(push) = read_event("push", deleted) else {
            panic!("a push")
        };
        assert_eq!(push.after, None);
        assert!(matches!(
            read(
                Endpoint::GitHub,
                Some(&secret()),
                &headers(&[
                    ("x-github-event", "push"),
                    ("x-hub-signature-256", &signed("not json"))
                ]),
                b"not json"
            ),
            Err(Refusal::BadBody(..))
        ));
    }

    /// A GitLab push hook (trimmed).
    const GITLAB_PUSH: &str = r#"{"object_kind":"push","ref":"refs/heads/main","after":"3333333333333333333333333333333333333333","project":{"git_http_url":"https://gitlab.example.com/web/site.git","git_ssh_url":"git@gitlab.example.com:web/site.git","web_url":"https://gitlab.example.com/web/site"}}"#;

    #[test]
    fn a_gitlab_push_needs_its_token_and_takes_its_idempotency_key() {
        let push = |token: &str| {
            read(
                Endpoint::GitLab,
                Some(&secret()),
                &headers(&[
                    ("x-gitlab-event", "Push Hook"),
                    ("x-gitlab-token", token),
                    ("x-gitlab-event-uuid", "uuid-1"),
                    ("idempotency-key", "key-1"),
                ]),
                GITLAB_PUSH.as_bytes(),
            )
        };
        let delivery = push(SECRET).unwrap();
        assert_eq!(delivery.id.as_deref(), Some("key-1"));
        let Event::Push(push_event) = delivery.event else {
            panic!("a push")
        };
        assert_eq!(push_event.repository_urls.len(), 3);
        assert_eq!(push_event.branch(), Some("main"));
        assert_eq!(
            push("wrong").unwrap_err(),
            Refusal::BadSignature("x-gitlab-token")
        );
        assert_eq!(
            push(&format!("{SECRET}!")).unwrap_err(),
            Refusal::BadSignature("x-gitlab-token")
        );
        assert_eq!(
            read(Endpoint::GitLab, Some(&secret()), &HeaderMap::new(), b"{}").unwrap_err(),
            Refusal::Unsigned("x-gitlab-token")
        );
    }

    #[test]
    fn a_generic_push_is_an_hmac_signed_json_body() {
        let body = r#"{"repository":"http://git.example/site.git","ref":"refs/heads/main","after":"4444444444444444444444444444444444444444"}"#;
        let delivery = read(
            Endpoint::Generic,
            Some(&secret()),
            &headers(&[
                ("x-berth-signature-256", &signed(body)),
                ("x-berth-delivery", "g-1"),
            ]),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(delivery.id.as_deref(), Some("g-1"));
        assert!(matches!(delivery.event, Event::Push(ref push) if push.branch() == Some("main")));
        let ping = r#"{"event":"ping"}"#;
        assert_eq!(
            read(
                Endpoint::Generic,
                Some(&secret()),
                &headers(&[("x-berth-signature-256", &signed(ping))]),
                ping.as_bytes()
            )
            .unwrap()
            .event,
            Event::Ping
        );
        let incomplete = r#"{"ref":"refs/heads/main"}"#;
        assert!(matches!(
            read(
                Endpoint::Generic,
                Some(&secret()),
                &headers(&[("x-berth-signature-256", &signed(incomplete))]),
                incomplete.as_bytes()
            ),
            Err(Refusal::BadBody(..))
        ));
    }

    #[test]
    fn pull_requests_from_github_gitea_and_gitlab_are_read_with_their_fork_and_action() {
        let pull = r#"{"action":"synchronize","number":7,"pull_request":{"number":7,"state":"open","merged":false,"head":{"sha":"aaaa","ref":"feature","repo":{"full_name":"someone/website"}},"base":{"ref":"main","repo":{"full_name":"berth/website"}},"labels":[{"name":"preview ok"}]},"repository":{"clone_url":"http://127.0.0.1:3000/berth/website.git"}}"#;
        let delivery = read(
            Endpoint::GitHub,
            Some(&secret()),
            &headers(&[
                ("x-github-event", "pull_request"),
                ("x-hub-signature-256", &signed(pull)),
            ]),
            pull.as_bytes(),
        )
        .unwrap();
        let Event::PullRequest(event) = delivery.event else {
            panic!("a pull request")
        };
        assert_eq!(event.action, PullAction::Updated);
        assert_eq!(
            (
                event.number,
                event.head_commit.as_str(),
                event.base_branch.as_str()
            ),
            (7, "aaaa", "main")
        );
        assert!(event.from_fork);
        assert_eq!(event.labels, ["preview ok"]);
        let closed = pull
            .replace("synchronize", "closed")
            .replace("\"merged\":false", "\"merged\":true");
        let Event::PullRequest(event) = read(
            Endpoint::GitHub,
            Some(&secret()),
            &headers(&[
                ("x-github-event", "pull_request"),
                ("x-hub-signature-256", &signed(&closed)),
            ]),
            closed.as_bytes(),
        )
        .unwrap()
        .event
        else {
            panic!("a pull request")
        };
        assert_eq!(event.action, PullAction::Closed { merged: true });
        let gitlab = r#"{"object_kind":"merge_request","object_attributes":{"iid":4,"action":"merge","target_branch":"main","last_commit":{"id":"bbbb"},"source_project_id":1,"target_project_id":1},"project":{"git_http_url":"https://gitlab.example/web/site.git"}}"#;
        let Event::PullRequest(event) = read(
            Endpoint::GitLab,
            Some(&secret()),
            &headers(&[
                ("x-gitlab-event", "Merge Request Hook"),
                ("x-gitlab-token", SECRET),
            ]),
            gitlab.as_bytes(),
        )
        .unwrap()
        .event
        else {
            panic!("a merge request")
        };
        assert_eq!(event.action, PullAction::Closed { merged: true });
        assert!(!event.from_fork);
        assert_eq!(event.number, 4);
    }

    #[test]
    fn a_repeated_delivery_id_is_seen_and_the_oldest_is_forgotten() {
        let mut seen = Seen::new(2);
        assert!(!seen.repeated("a"));
        assert!(seen.repeated("a"));
        assert!(!seen.repeated("b"));
        assert!(!seen.repeated("c"), "a is forgotten now");
        assert!(!seen.repeated("a"));
        assert!(seen.repeated("c"));
    }
}
