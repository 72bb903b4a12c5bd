//! The forge, told what berth does with its commits, through the REST API
//! GitHub and Gitea share (GitHub's at `https://api.github.com`, Gitea's under
//! `/api/v1`), with a token from the environment: commit statuses
//! (`POST /repos/{owner}/{repo}/statuses/{sha}`), a pull request's comment
//! (made once, then edited in place) and the pull request's own state. A
//! stage: the pipeline decides what to say, this says it. The token never
//! shows in an error, a log line or `Debug`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use crate::http::{self, HttpClient};

/// How long one request to the forge may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// GitHub keeps a status's description to 140 characters.
const DESCRIPTION_LIMIT: usize = 140;

/// What can go wrong telling the forge. No variant holds the token.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// berth's HTTP client could not be made.
    #[error(transparent)]
    Client(#[from] http::ClientError),
    /// The API's address or a path berth built from it is not a URL.
    #[error("`{0}` is not a URL berth can call")]
    InvalidUrl(String),
    /// The forge did not answer.
    #[error("the forge at {api} did not answer: {}", http::connection_error(.source))]
    Unreachable {
        api: String,
        source: hyper_util::client::legacy::Error,
    },
    /// No answer within the time allowed.
    #[error("the forge at {0} did not answer within 10s")]
    Timeout(String),
    /// The forge answered, but refused.
    #[error("the forge refused {what} with HTTP {status}: {message}")]
    Refused {
        what: String,
        status: hyper::StatusCode,
        /// The forge's own words (its `message`), cut short.
        message: String,
    },
    /// The repo's URL names no `owner/name` on a forge.
    #[error("`{0}` names no repository as owner/name")]
    NotARepository(String),
}

/// A commit status's state, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Success,
    Failure,
    Error,
}

/// A commit status: which check (`context`, say `berth/www-en`), its state,
/// a line for people, and a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub context: String,
    pub state: State,
    pub description: String,
    pub target_url: Option<String>,
}

/// A comment of an issue or a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub body: String,
}

/// How a comment was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentWritten {
    Created(u64),
    Edited(u64),
}

/// A pull request as the forge tells it (GitHub's and Gitea's shape).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullRequest {
    pub number: u64,
    /// Open (not closed, not merged).
    pub open: bool,
    pub merged: bool,
    pub head_commit: String,
    pub head_branch: String,
    pub base_branch: String,
    /// From a fork: its head is in another repository than its base.
    pub from_fork: bool,
    pub labels: Vec<String>,
}

impl PullRequest {
    /// A pull request object of GitHub's (or Gitea's) API or webhook.
    pub fn of_json(pull: &serde_json::Value) -> Self {
        let full_name = |side: &str| {
            pull[side]["repo"]["full_name"]
                .as_str()
                .map(str::to_ascii_lowercase)
        };
        let (head_repo, base_repo) = (full_name("head"), full_name("base"));
        Self {
            number: pull["number"].as_u64().unwrap_or(0),
            open: pull["state"].as_str() == Some("open"),
            merged: pull["merged"].as_bool().unwrap_or(false),
            head_commit: pull["head"]["sha"].as_str().unwrap_or_default().to_string(),
            head_branch: pull["head"]["ref"].as_str().unwrap_or_default().to_string(),
            base_branch: pull["base"]["ref"].as_str().unwrap_or_default().to_string(),
            // A head repository that is gone (a deleted fork) is a fork too.
            from_fork: head_repo.is_none() || head_repo != base_repo,
            labels: pull["labels"]
                .as_array()
                .map(|labels| {
                    labels
                        .iter()
                        .filter_map(|label| label["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A repository on the forge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub owner: String,
    pub name: String,
}

impl Repository {
    /// The repository a Git URL names: `https://host/owner/name(.git)`,
    /// `ssh://git@host/owner/name.git`, `git@host:owner/name.git`. The last
    /// two parts of its path.
    pub fn of_url(url: &str) -> Result<Self, ForgeError> {
        let path = if let Some((_, rest)) = url.split_once("://") {
            rest.split_once('/').map_or("", |(_, path)| path)
        } else if let Some((_, path)) = url.split_once(':') {
            path
        } else {
            ""
        };
        let path = path.trim_end_matches('/').trim_end_matches(".git");
        let mut parts = path.rsplit('/').filter(|part| !part.is_empty());
        match (parts.next(), parts.next()) {
            (Some(name), Some(owner)) => Ok(Self {
                owner: owner.to_string(),
                name: name.to_string(),
            }),
            _ => Err(ForgeError::NotARepository(url.to_string())),
        }
    }
}

/// A forge's API, with its token.
#[derive(Clone)]
pub struct Forge {
    /// The API's base, without a trailing slash.
    api: String,
    token: String,
    client: HttpClient<Full<Bytes>>,
}

impl std::fmt::Debug for Forge {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Forge")
            .field("api", &self.api)
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Forge {
    /// The forge whose API is at `api` (`https://api.github.com`,
    /// `https://gitea.example/api/v1`), called with `token`.
    pub fn new(api: &str, token: String) -> Result<Self, ForgeError> {
        if !(api.starts_with("http://") || api.starts_with("https://")) {
            return Err(ForgeError::InvalidUrl(api.to_string()));
        }
        Ok(Self {
            api: api.trim_end_matches('/').to_string(),
            token,
            client: http::client(Duration::from_secs(10))?,
        })
    }

    /// Sets `status` on `commit` of `repository`.
    pub async fn set_status(
        &self,
        repository: &Repository,
        commit: &str,
        status: &Status,
    ) -> Result<(), ForgeError> {
        let description: String = status.description.chars().take(DESCRIPTION_LIMIT).collect();
        let mut body = serde_json::json!({
            "state": status.state,
            "context": status.context,
            "description": description,
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = serde_json::Value::String(url.clone());
        }
        let path = format!(
            "/repos/{}/{}/statuses/{commit}",
            repository.owner, repository.name
        );
        self.call(hyper::Method::POST, &path, Some(&body), "a commit status")
            .await
            .map(drop)
    }

    /// The comments of issue (or pull request) `number`, oldest first.
    pub async fn comments(&self, repository: &Repository, number: u64) -> Result<Vec<Comment>, ForgeError> {
        let path = format!(
            "/repos/{}/{}/issues/{number}/comments",
            repository.owner, repository.name
        );
        let list = self.call(hyper::Method::GET, &path, None, "the comments").await?;
        Ok(list
            .as_array()
            .map(|comments| {
                comments
                    .iter()
                    .filter_map(|comment| {
                        Some(Comment {
                            id: comment["id"].as_u64()?,
                            body: comment["body"].as_str().unwrap_or_default().to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The comment of pull request `number` holding `marker` edited to `body`
    /// (which holds the marker too), or a new one when there is none: one
    /// comment per marker, edited in place on every push.
    pub async fn put_comment(
        &self,
        repository: &Repository,
        number: u64,
        marker: &str,
        body: &str,
    ) -> Result<CommentWritten, ForgeError> {
        let existing = self
            .comments(repository, number)
            .await?
            .into_iter()
            .find(|comment| comment.body.contains(marker));
        let payload = serde_json::json!({"body": body});
        if let Some(comment) = existing {
            let path = format!(
                "/repos/{}/{}/issues/comments/{}",
                repository.owner, repository.name, comment.id
            );
            self.call(
                hyper::Method::PATCH,
                &path,
                Some(&payload),
                "an edit of a comment",
            )
            .await?;
            Ok(CommentWritten::Edited(comment.id))
        } else {
            let path = format!(
                "/repos/{}/{}/issues/{number}/comments",
                repository.owner, repository.name
            );
            let created = self
                .call(hyper::Method::POST, &path, Some(&payload), "a comment")
                .await?;
            Ok(CommentWritten::Created(created["id"].as_u64().unwrap_or(0)))
        }
    }

    /// Pull request `number`: open or not, its head, where it comes from, its labels.
    pub async fn pull_request(
        &self,
        repository: &Repository,
        number: u64,
    ) -> Result<PullRequest, ForgeError> {
        let path = format!("/repos/{}/{}/pulls/{number}", repository.owner, repository.name);
        let pull = self
            .call(hyper::Method::GET, &path, None, "a pull request")
            .await?;
        Ok(PullRequest::of_json(&pull))
    }

    /// One request to the API; its answer's JSON (`null` when empty).
    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<serde_json::Value, ForgeError> {
        let url = format!("{}{path}", self.api);
        let request = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("accept", "application/vnd.github+json, application/json")
            .header("content-type", "application/json")
            .header("user-agent", http::USER_AGENT)
            .header("authorization", {
                let mut value = hyper::header::HeaderValue::from_str(&format!("token {}", self.token))
                    .map_err(|_| ForgeError::InvalidUrl(url.clone()))?;
                value.set_sensitive(true);
                value
            })
            .body(Full::new(Bytes::from(
                body.map(serde_json::Value::to_string).unwrap_or_default(),
            )))
            .map_err(|_| ForgeError::InvalidUrl(url.clone()))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| ForgeError::Timeout(self.api.clone()))?
            .map_err(|source| ForgeError::Unreachable {
                api: self.api.clone(),
                source,
            })?;
        let status = response.status();
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| ForgeError::Timeout(self.api.clone()))?
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            Ok(json)
        } else {
            let message = json["message"]
                .as_str()
                .map_or_else(|| String::from_utf8_lossy(&bytes).to_string(), str::to_string);
            Err(ForgeError::Refused {
                what: what.to_string(),
                status,
                message: message.chars().take(200).collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_the_last_two_parts_of_its_urls_path() {
        let expected = Repository {
            owner: "berth".into(),
            name: "website".into(),
        };
        for url in [
            "http://127.0.0.1:3000/berth/website.git",
            "https://github.com/berth/website",
            "https://github.com/berth/website/",
            "ssh://git@github.com/berth/website.git",
            "git@github.com:berth/website.git",
            "https://gitlab.example/group/berth/website.git",
        ] {
            assert_eq!(Repository::of_url(url).unwrap(), expected, "{url}");
        }
        assert!(Repository::of_url("https://host/alone.git").is_err());
        assert!(Repository::of_url("/srv/git/website.git").is_err());
    }

    #[test]
    fn a_pull_request_says_whether_it_comes_from_a_fork() {
        let pull = |head: &str| {
            serde_json::json!({
                "number": 7, "state": "open", "merged": false,
                "head": {"sha": "abc", "ref": "feature", "repo": {"full_name": head}},
                "base": {"ref": "main", "repo": {"full_name": "Berth/Website"}},
                "labels": [{"name": "preview"}]
            })
        };
        let own = PullRequest::of_json(&pull("berth/website"));
        assert!(own.open && !own.from_fork);
        assert_eq!(
            (own.number, own.head_commit.as_str(), own.base_branch.as_str()),
            (7, "abc", "main")
        );
        assert_eq!(own.labels, ["preview"]);
        assert!(PullRequest::of_json(&pull("someone/website")).from_fork);
        let mut gone = pull("x");
        gone["head"]["repo"] = serde_json::Value::Null;
        assert!(PullRequest::of_json(&gone).from_fork);
    }

    #[test]
    fn the_token_never_shows() {
        let forge = Forge::new("http://127.0.0.1:3000/api/v1/", "s3cret-token".into()).unwrap();
        let shown = format!("{forge:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(
            shown.contains("http://127.0.0.1:3000/api/v1\""),
            "trailing slash gone: {shown}"
        );
        assert!(matches!(
            Forge::new("127.0.0.1:3000", String::new()),
            Err(ForgeError::InvalidUrl(_))
        ));
    }
}
