//! The Registry HTTP API v2, as berth speaks it: one session per registry
//! and repository, shared by the copy between registries
//! ([`super::copy`]) and the reads of an image's manifest and config
//! ([`super::Repository`]: the existing-image check, which so pulls nothing, and gc).
//!
//! Each registry is asked anonymously first; a 401 says how to log in: HTTP
//! Basic, or a Bearer token from the registry's token service (Docker Hub,
//! GHCR). Secrets live in request headers only, marked sensitive: no error, log
//! line or `Debug` output holds one. A manifest is read whole (up to 4 MiB)
//! and its digest checked; a blob answered by a redirect to storage is
//! followed there, without the registry's credentials.
//!
//! One job a file: [`session`] (the session, its requests and redirects),
//! [`auth`] (the 401's challenge and the token service), [`manifest`]
//! (manifests, indexes and image configs, read as the OCI image spec types
//! them) and [`url`] (the registry's URLs, built and escaped by the `url`
//! crate). This file holds the error and what they share.

mod auth;
mod manifest;
mod session;
mod url;

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use sha2::{Digest as _, Sha256};

use crate::registry::RegistryAuth;

pub use manifest::ManifestProblem;
pub(in crate::registry) use manifest::{Blob, Content, MANIFEST_TYPES, Manifest, read_config};
pub(in crate::registry) use session::Session;
pub(in crate::registry) use url::{request_text, with_query};

pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for an answer to a request without a blob in it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of an error body berth reads, and how much of it an error shows.
const ERROR_BODY_LIMIT: usize = 64 << 10;
const EXCERPT_CHARACTERS: usize = 300;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type Body = UnsyncBoxBody<Bytes, BoxError>;
type HttpClient = crate::http::HttpClient<Body>;
pub(super) type Response = http::Response<hyper::body::Incoming>;

pub(super) const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// A registry, with its credentials, and a repository in it: one side of a
/// copy, or where an image is read.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The registry's address (`ghcr.io`, `127.0.0.1:5000`) and its credentials.
    pub auth: &'a RegistryAuth,
    /// The repository's path in the registry (`sites/www`).
    pub repository: &'a str,
}

/// What can go wrong talking to a registry's HTTP API. No variant holds a
/// secret. Each keeps what failed typed, its message saying it in words.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A digest, repository or tag (given to berth, or read in a manifest),
    /// or a URL a registry gave, is not a valid one.
    #[error(transparent)]
    InvalidReference(#[from] InvalidReference),
    /// The registry (or its token service) could not be reached: down, wrong
    /// address, no answer in time, TLS refused.
    #[error("cannot reach registry {registry}: {cause}")]
    Unreachable { registry: String, cause: Unreachable },
    /// The registry (or its token service) refused the credentials, or their
    /// absence, with 401 or 403.
    #[error(
        "registry {registry} refused access to {repository} (HTTP {status}; credentials from {source_description})"
    )]
    Refused {
        registry: String,
        repository: String,
        status: u16,
        source_description: String,
    },
    /// The source holds no manifest or blob with this digest in the repository.
    #[error("registry {registry} has no {digest} in {repository}")]
    NotFound {
        registry: String,
        repository: String,
        digest: String,
    },
    /// The bytes the source answered for a manifest digest hash to another digest.
    #[error("registry {registry} answered for {expected} in {repository} a manifest whose digest is {got}")]
    DigestMismatch {
        registry: String,
        repository: String,
        expected: String,
        got: String,
    },
    /// A manifest (or image config) berth cannot read: not JSON, no known
    /// media type, a nested index, no config.
    #[error("berth cannot read the manifest {digest} in {registry}/{repository}: {problem}")]
    InvalidManifest {
        registry: String,
        repository: String,
        digest: String,
        problem: ManifestProblem,
    },
    /// The registry's answer to a request is not what the API says (a tag
    /// list that is not JSON, a manifest without its digest header).
    #[error("registry {registry} answered {request} with {problem}")]
    Answer {
        registry: String,
        request: String,
        problem: AnswerProblem,
    },
    /// The registry does not allow deletes (405: distribution's
    /// `storage.delete.enabled` is off).
    #[error(
        "registry {registry} does not allow deletes in {repository} (HTTP 405); enable them (the distribution registry's storage.delete.enabled: true) or leave gc's --delete out"
    )]
    DeleteRefused { registry: String, repository: String },
    /// The registry answered a request with a status berth did not expect.
    #[error("registry {registry} answered {status} to {request}: {body}")]
    Http {
        registry: String,
        /// The method and path, without the query.
        request: String,
        status: u16,
        /// The start of the answer's body, or what berth missed in it.
        body: String,
    },
}

impl ApiError {
    /// An unreachable registry is the environment's failure (exit 3); its
    /// refusals and answers berth cannot read are the site's.
    pub fn kind(&self) -> crate::exit::Kind {
        match self {
            Self::Unreachable { .. } => crate::exit::Kind::Environment,
            _ => crate::exit::Kind::Site,
        }
    }
}

/// A name or URL berth cannot use, for [`ApiError::InvalidReference`].
#[derive(Debug, thiserror::Error)]
pub enum InvalidReference {
    /// Not `sha256:` and 64 lowercase hex digits.
    #[error("`{digest}` is not a sha256 digest (sha256: and 64 lowercase hex digits)")]
    Digest { digest: String },
    /// Not a repository path by the distribution grammar.
    #[error(transparent)]
    Repository(Box<crate::reference::NameError>),
    /// Not a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error("`{tag}` is not a valid tag")]
    Tag { tag: String },
    /// A registry address no URL can be made of.
    #[error("`{registry}` is not a registry address berth can request ({error})")]
    Registry {
        registry: String,
        error: ::url::ParseError,
    },
    /// A request the HTTP client cannot send (a URL it does not take).
    #[error("not a valid URL: {request}")]
    Request { request: String, error: http::Error },
    /// A 401's token service (its `realm`) that is not a URL.
    #[error("registry {registry} names a token service that is not a URL")]
    TokenService {
        registry: String,
        error: ::url::ParseError,
    },
    /// A `Location` (a redirect's, an upload's) that is not a URL; not
    /// quoted, as a storage redirect's may hold a signature.
    #[error("registry {registry} answered a Location that is not a URL ({error})")]
    Location {
        registry: String,
        error: ::url::ParseError,
    },
}

/// Why a registry (or its token service) could not be reached, for
/// [`ApiError::Unreachable`].
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// berth's HTTP client could not be made.
    #[error("{0}")]
    Client(crate::http::ClientError),
    /// The connection failed: its innermost cause, said without the URL.
    #[error("{}", crate::http::connection_error(.0))]
    Connection(hyper_util::client::legacy::Error),
    /// No answer came in time.
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
    /// The answer's body could not be read (or was longer than berth reads).
    #[error("reading {what}: {error}")]
    Body { what: String, error: BoxError },
    /// A blob was redirected more often than berth follows.
    #[error("more than {redirects} redirects for blob {digest}")]
    Redirects { redirects: usize, digest: String },
}

/// What is wrong with a registry's answer, for [`ApiError::Answer`].
#[derive(Debug, thiserror::Error)]
pub enum AnswerProblem {
    /// A JSON document (a tag list) that is not JSON.
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// A manifest's answer without its digest.
    #[error("no Docker-Content-Digest header")]
    NoDigest,
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub(super) fn check_digest(digest: &str) -> Result<(), InvalidReference> {
    let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if valid {
        Ok(())
    } else {
        Err(InvalidReference::Digest {
            digest: digest.to_string(),
        })
    }
}

/// A repository path, by the distribution grammar ([`crate::reference`]'s check).
pub(super) fn check_repository(repository: &str) -> Result<(), InvalidReference> {
    crate::reference::check_repository(repository, None)
        .map_err(|problem| InvalidReference::Repository(Box::new(problem)))
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

pub(super) fn header_text(response: &Response, name: HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

pub(super) fn content_length(response: &Response) -> Option<u64> {
    header_text(response, header::CONTENT_LENGTH).and_then(|length| length.parse().ok())
}

/// Reads what is left of a body, so the connection can serve the next request.
pub(super) async fn drain(response: Response) {
    let _ = Limited::new(response.into_body(), ERROR_BODY_LIMIT)
        .collect()
        .await;
}

/// The start of an error body (at most [`ERROR_BODY_LIMIT`] read), on one line.
async fn error_body(response: Response) -> String {
    let body = Limited::new(response.into_body(), ERROR_BODY_LIMIT)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    excerpt(&body)
}

/// The start of an error body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > EXCERPT_CHARACTERS {
        format!("{}…", line.chars().take(EXCERPT_CHARACTERS).collect::<String>())
    } else if line.is_empty() {
        "no body".to_string()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn an_error_excerpt_is_one_short_line() {
        assert_eq!(excerpt(b"{\"errors\":\n  [1]}"), "{\"errors\": [1]}");
        assert_eq!(excerpt(b""), "no body");
        assert_eq!(
            excerpt("x".repeat(400).as_bytes()).chars().count(),
            EXCERPT_CHARACTERS + 1
        );
    }

    #[test]
    fn digests_and_repositories_are_checked() {
        assert!(check_digest(&digest('0')).is_ok());
        assert!(check_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert_eq!(
            check_digest("sha512:00").unwrap_err().to_string(),
            "`sha512:00` is not a sha256 digest (sha256: and 64 lowercase hex digits)"
        );
        assert!(check_repository("sites/www").is_ok());
        assert!(check_repository("sites//www").is_err());
        assert!(check_repository("Sites/www").is_err());
        assert!(check_repository("sites/www?x=1").is_err());
        assert!(matches!(
            check_repository("sites/../www"),
            Err(InvalidReference::Repository(_))
        ));
    }
}
