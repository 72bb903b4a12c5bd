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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use sha2::{Digest as _, Sha256};

use crate::registry::RegistryAuth;

/// What berth asks a registry for: the four manifest media types it reads.
pub(super) const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// The largest manifest berth reads (distribution's own limit is 4 MiB).
const MANIFEST_LIMIT: usize = 4 << 20;
/// How much of an error body berth reads, and how much of it an error shows.
const ERROR_BODY_LIMIT: usize = 64 << 10;
const EXCERPT_CHARACTERS: usize = 300;
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for an answer to a request without a blob in it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const REDIRECTS: usize = 5;
/// The largest image config berth reads (its history makes it grow).
const CONFIG_LIMIT: usize = 8 << 20;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type Body = UnsyncBoxBody<Bytes, BoxError>;
type HttpClient = crate::http::HttpClient<Body>;
pub(super) type Response = http::Response<hyper::body::Incoming>;

/// A registry, with its credentials, and a repository in it: one side of a
/// copy, or where an image is read.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The registry's address (`ghcr.io`, `127.0.0.1:5000`) and its credentials.
    pub auth: &'a RegistryAuth,
    /// The repository's path in the registry (`sites/www`).
    pub repository: &'a str,
}

/// What can go wrong talking to a registry's HTTP API. No variant holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A digest, repository or tag (given to berth, or read in a manifest) is
    /// not a valid one.
    #[error("{0}")]
    InvalidReference(String),
    /// The registry (or its token service) could not be reached: down, wrong
    /// address, no answer in time, TLS refused.
    #[error("cannot reach registry {registry}: {message}")]
    Unreachable { registry: String, message: String },
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
    #[error("berth cannot read the manifest {digest} in {registry}/{repository}: {message}")]
    InvalidManifest {
        registry: String,
        repository: String,
        digest: String,
        message: String,
    },
    /// The registry's answer to a request is not what the API says (a tag
    /// list that is not JSON, a manifest without its digest header).
    #[error("registry {registry} answered {request} with {message}")]
    Answer {
        registry: String,
        request: String,
        message: String,
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
        /// The start of the answer's body.
        body: String,
    },
}

/// A manifest as the source answered it.
pub(super) struct Manifest {
    pub(super) digest: String,
    pub(super) media_type: String,
    pub(super) bytes: Bytes,
    pub(super) content: Content,
}

/// What a manifest refers to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Content {
    /// An index or manifest list: its child manifests.
    Index(Vec<Child>),
    /// An image manifest: its config first, then its layers (those a
    /// registry holds).
    Image(Vec<Blob>),
}

/// A blob a manifest names.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Blob {
    pub(super) digest: String,
    pub(super) size: u64,
}

/// A child manifest an index names, and the platform it is for (an
/// attestation's is `unknown/unknown`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Child {
    pub(super) digest: String,
    pub(super) os: Option<String>,
    pub(super) architecture: Option<String>,
}

/// The child of an index to read for this machine: the first for
/// `linux/<arch>` (`arch` as Rust names it), else the first for a platform
/// that is not `unknown` (an attestation's), else the first.
fn platform_child<'c>(children: &'c [Child], arch: &str) -> Option<&'c str> {
    let arch = match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "x86" => "386",
        other => other,
    };
    let is = |child: &&Child, os: &str, architecture: &str| {
        child.os.as_deref() == Some(os) && child.architecture.as_deref() == Some(architecture)
    };
    children
        .iter()
        .find(|child| is(child, "linux", arch))
        .or_else(|| children.iter().find(|child| !is(child, "unknown", "unknown")))
        .or_else(|| children.first())
        .map(|child| child.digest.as_str())
}

/// The labels in an image config (`config.Labels`; none is an empty map).
pub(super) fn labels_of(config: &serde_json::Value) -> HashMap<String, String> {
    config
        .pointer("/config/Labels")
        .and_then(serde_json::Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// One registry and repository, with the authorization it accepted last.
/// Not `Debug`: the authorization is a secret.
pub(super) struct Session<'a> {
    pub(super) client: &'a HttpClient,
    pub(super) auth: &'a RegistryAuth,
    pub(super) repository: &'a str,
    /// The API's host and port (Docker Hub's `docker.io` is `registry-1.docker.io`).
    pub(super) host: String,
    /// `scheme://host`
    pub(super) base: String,
    /// Shared by the sessions of one [`super::Repository`], so a login lasts
    /// for all its requests.
    pub(super) authorization: std::sync::Arc<Mutex<Option<HeaderValue>>>,
}

impl<'a> Session<'a> {
    /// A session with `endpoint`'s registry, over plain HTTP on loopback or
    /// with `plain_http` ([`scheme_and_host`]).
    pub(super) fn new(client: &'a HttpClient, endpoint: Endpoint<'a>, plain_http: bool) -> Self {
        let (scheme, host) = scheme_and_host(&endpoint.auth.registry, plain_http);
        Self {
            client,
            auth: endpoint.auth,
            repository: endpoint.repository,
            base: format!("{scheme}://{host}"),
            host,
            authorization: std::sync::Arc::default(),
        }
    }

    /// [`Session::new`], starting from (and keeping) `authorization`.
    pub(super) fn sharing(
        client: &'a HttpClient,
        endpoint: Endpoint<'a>,
        plain_http: bool,
        authorization: std::sync::Arc<Mutex<Option<HeaderValue>>>,
    ) -> Self {
        Self {
            authorization,
            ..Self::new(client, endpoint, plain_http)
        }
    }

    /// The URL of `path` under the repository (`manifests/…`, `blobs/…`).
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    pub(super) async fn get_manifest(&self, digest: &str) -> Result<Manifest, ApiError> {
        let url = self.url(&format!("manifests/{digest}"));
        let response = self
            .send(
                Method::GET,
                &url,
                &[(header::ACCEPT, MANIFEST_TYPES)],
                Bytes::new(),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(self.not_found(digest));
        }
        let response = self
            .expect(response, &[StatusCode::OK], &Method::GET, &url)
            .await?;
        let content_type = header_text(&response, header::CONTENT_TYPE);
        let bytes = self
            .verified(response, digest, MANIFEST_LIMIT, "the manifest")
            .await?;
        let (media_type, content) = parse_manifest(&bytes, content_type.as_deref())
            .map_err(|message| self.invalid_manifest(digest, &message))?;
        Ok(Manifest {
            digest: digest.to_string(),
            media_type,
            bytes,
            content,
        })
    }

    /// The config of image `digest` (for an index, of the child for this
    /// machine's platform, or its first), checked against its digest, and
    /// the blobs its manifest names (config and layers) with their sizes.
    pub(super) async fn image_config(&self, digest: &str) -> Result<(Bytes, Vec<(String, u64)>), ApiError> {
        check_digest(digest)?;
        let mut manifest = self.get_manifest(digest).await?;
        if let Content::Index(children) = &manifest.content {
            let child = platform_child(children, std::env::consts::ARCH)
                .ok_or_else(|| self.invalid_manifest(digest, "an index of no manifests"))?
                .to_string();
            manifest = self.get_manifest(&child).await?;
        }
        let Content::Image(blobs) = &manifest.content else {
            return Err(self.invalid_manifest(&manifest.digest, "an index inside an index"));
        };
        let config = blobs
            .first()
            .ok_or_else(|| self.invalid_manifest(&manifest.digest, "a manifest without a config"))?;
        let bytes = self.read_blob(&config.digest, CONFIG_LIMIT).await?;
        Ok((
            bytes,
            blobs
                .iter()
                .map(|blob| (blob.digest.clone(), blob.size))
                .collect(),
        ))
    }

    pub(super) async fn blob_exists(&self, digest: &str) -> Result<bool, ApiError> {
        let url = self.url(&format!("blobs/{digest}"));
        let response = self.send(Method::HEAD, &url, &[], Bytes::new()).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        let response = self
            .expect(response, &[StatusCode::OK], &Method::HEAD, &url)
            .await?;
        drain(response).await;
        Ok(true)
    }

    /// GETs a blob, following the redirects a registry answers for storage.
    pub(super) async fn get_blob(&self, digest: &str) -> Result<Response, ApiError> {
        let mut url = self.url(&format!("blobs/{digest}"));
        for _ in 0..REDIRECTS {
            let response = self.send(Method::GET, &url, &[], Bytes::new()).await?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                return Err(self.not_found(digest));
            }
            if status.is_redirection()
                && let Some(location) = header_text(&response, header::LOCATION)
            {
                drain(response).await;
                url = absolute_url(&self.base, &location);
                continue;
            }
            return self.expect(response, &[StatusCode::OK], &Method::GET, &url).await;
        }
        Err(self.unreachable(&format!("more than {REDIRECTS} redirects for blob {digest}")))
    }

    /// A blob's bytes (at most `limit`), checked against its digest.
    pub(super) async fn read_blob(&self, digest: &str, limit: usize) -> Result<Bytes, ApiError> {
        let response = self.get_blob(digest).await?;
        self.verified(response, digest, limit, "blob").await
    }

    /// The body of `response`, at most `limit` bytes: the bytes of `what`
    /// (for messages).
    pub(super) async fn read_body(
        &self,
        response: Response,
        limit: usize,
        what: &str,
    ) -> Result<Bytes, ApiError> {
        Ok(Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|error| self.unreachable(&format!("reading {what}: {error}")))?
            .to_bytes())
    }

    /// An answer to `method url` that berth cannot read, and why.
    pub(super) fn answer_error(&self, method: &Method, url: &str, message: &str) -> ApiError {
        ApiError::Answer {
            registry: self.auth.registry.clone(),
            request: request_text(method, url),
            message: message.to_string(),
        }
    }

    /// The body of `response` (at most `limit` bytes), which must hash to
    /// `digest`: the bytes of `what` (for messages).
    async fn verified(
        &self,
        response: Response,
        digest: &str,
        limit: usize,
        what: &str,
    ) -> Result<Bytes, ApiError> {
        let bytes = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|error| self.unreachable(&format!("reading {what} {digest}: {error}")))?
            .to_bytes();
        let got = sha256_digest(&bytes);
        if got != digest {
            return Err(ApiError::DigestMismatch {
                registry: self.auth.registry.clone(),
                repository: self.repository.to_string(),
                expected: digest.to_string(),
                got,
            });
        }
        Ok(bytes)
    }

    /// Sends a request whose body can be sent again: once as the last
    /// authorization allows, and once more after a 401 told how to log in.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, &str)],
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let request = self.request(&method, url, headers, full(body.clone()))?;
        let response = self.execute(request, Some(REQUEST_TIMEOUT)).await?;
        if response.status() != StatusCode::UNAUTHORIZED || !self.same_authority(url) {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(parse_challenge);
        drain(response).await;
        self.authenticate(challenge).await?;
        let request = self.request(&method, url, headers, full(body))?;
        self.execute(request, Some(REQUEST_TIMEOUT)).await
    }

    pub(super) fn request(
        &self,
        method: &Method,
        url: &str,
        headers: &[(HeaderName, &str)],
        body: Body,
    ) -> Result<http::Request<Body>, ApiError> {
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header(header::USER_AGENT, crate::http::USER_AGENT);
        for (name, value) in headers {
            builder = builder.header(name, *value);
        }
        // Credentials go to the registry only, not to the storage it redirects to.
        if self.same_authority(url)
            && let Some(authorization) = self.authorization.lock().expect("not poisoned").clone()
        {
            builder = builder.header(header::AUTHORIZATION, authorization);
        }
        builder.body(body).map_err(|_| {
            ApiError::InvalidReference(format!("not a valid URL: {}", request_text(method, url)))
        })
    }

    pub(super) async fn execute(
        &self,
        request: http::Request<Body>,
        timeout: Option<Duration>,
    ) -> Result<Response, ApiError> {
        let future = self.client.request(request);
        let result = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, future)
                .await
                .map_err(|_| self.unreachable(&format!("no answer within {}s", timeout.as_secs())))?,
            None => future.await,
        };
        result.map_err(|error| self.unreachable(&crate::http::connection_error(&error)))
    }

    fn same_authority(&self, url: &str) -> bool {
        url.strip_prefix(&self.base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Sets the authorization `challenge` asks for, or says the registry refused.
    async fn authenticate(&self, challenge: Option<Challenge>) -> Result<(), ApiError> {
        let credentials = Credentials::of(self.auth);
        let authorization = match challenge {
            Some(Challenge::Basic) => credentials.basic.clone(),
            Some(Challenge::Bearer(bearer)) => Some(self.token(&bearer, &credentials).await?),
            None => None,
        };
        let Some(mut authorization) = authorization else {
            return Err(self.refused(StatusCode::UNAUTHORIZED));
        };
        authorization.set_sensitive(true);
        let mut current = self.authorization.lock().expect("not poisoned");
        if current.as_ref() == Some(&authorization) {
            // The same credentials again would be refused again.
            return Err(self.refused(StatusCode::UNAUTHORIZED));
        }
        *current = Some(authorization);
        Ok(())
    }

    /// A Bearer token from the challenge's token service, asked with the
    /// credentials there are (none: an anonymous token, for public images).
    async fn token(&self, bearer: &Bearer, credentials: &Credentials) -> Result<HeaderValue, ApiError> {
        let realm_host = authority(&bearer.realm).to_string();
        let request = token_request(bearer, credentials).map_err(|()| {
            ApiError::InvalidReference(format!(
                "registry {} names a token service that is not a URL",
                self.auth.registry
            ))
        })?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| ApiError::Unreachable {
                registry: realm_host.clone(),
                message: format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            })?
            .map_err(|error| ApiError::Unreachable {
                registry: realm_host.clone(),
                message: crate::http::connection_error(&error),
            })?;
        let status = answer.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            drain(answer).await;
            return Err(self.refused(status));
        }
        let body = Limited::new(answer.into_body(), ERROR_BODY_LIMIT)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let token = status
            .is_success()
            .then(|| token_of(&body))
            .flatten()
            .ok_or_else(|| ApiError::Http {
                registry: realm_host,
                request: request_text(&Method::GET, &bearer.realm),
                status: status.as_u16(),
                body: if status.is_success() {
                    "no token in the answer".to_string()
                } else {
                    excerpt(&body)
                },
            })?;
        HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| ApiError::Http {
            registry: self.auth.registry.clone(),
            request: request_text(&Method::GET, &bearer.realm),
            status: status.as_u16(),
            body: "the token is not a valid header value".to_string(),
        })
    }

    /// `response` when its status is one of `expected`; otherwise the error it means.
    pub(super) async fn expect(
        &self,
        response: Response,
        expected: &[StatusCode],
        method: &Method,
        url: &str,
    ) -> Result<Response, ApiError> {
        let status = response.status();
        if expected.contains(&status) {
            return Ok(response);
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            drain(response).await;
            return Err(self.refused(status));
        }
        let body = Limited::new(response.into_body(), ERROR_BODY_LIMIT)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        Err(ApiError::Http {
            registry: self.auth.registry.clone(),
            request: request_text(method, url),
            status: status.as_u16(),
            body: excerpt(&body),
        })
    }

    fn refused(&self, status: StatusCode) -> ApiError {
        ApiError::Refused {
            registry: self.auth.registry.clone(),
            repository: self.repository.to_string(),
            status: status.as_u16(),
            source_description: self.auth.source_description.clone(),
        }
    }

    fn not_found(&self, digest: &str) -> ApiError {
        ApiError::NotFound {
            registry: self.auth.registry.clone(),
            repository: self.repository.to_string(),
            digest: digest.to_string(),
        }
    }

    fn unreachable(&self, message: &str) -> ApiError {
        ApiError::Unreachable {
            registry: self.auth.registry.clone(),
            message: message.to_string(),
        }
    }

    pub(super) fn invalid_manifest(&self, digest: &str, message: &str) -> ApiError {
        ApiError::InvalidManifest {
            registry: self.auth.registry.clone(),
            repository: self.repository.to_string(),
            digest: digest.to_string(),
            message: message.to_string(),
        }
    }
}

pub(super) const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// The secrets of a [`RegistryAuth`], as header values marked sensitive.
struct Credentials {
    /// `Basic base64(user:password)`.
    basic: Option<HeaderValue>,
    /// An OAuth2 refresh token (`identitytoken` in Docker's config.json).
    refresh_token: Option<String>,
}

impl Credentials {
    pub(super) fn of(auth: &RegistryAuth) -> Self {
        let sensitive = |text: String| {
            HeaderValue::try_from(text).ok().map(|mut value| {
                value.set_sensitive(true);
                value
            })
        };
        let Some(credentials) = &auth.credentials else {
            return Self {
                basic: None,
                refresh_token: None,
            };
        };
        // `resolve_credentials` gives a user name and password, or an
        // identity token (`config.json`'s `auth` is decoded there).
        let basic = match (&credentials.username, &credentials.password) {
            (Some(username), Some(password)) => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                sensitive(format!("Basic {encoded}"))
            }
            _ => None,
        };
        Self {
            basic,
            refresh_token: credentials
                .identitytoken
                .clone()
                .filter(|token| !token.is_empty()),
        }
    }
}

/// The request for a token: an OAuth2 POST with a refresh token when there is
/// one, else a GET with Basic credentials (if any).
fn token_request(bearer: &Bearer, credentials: &Credentials) -> Result<http::Request<Body>, ()> {
    let mut query = Vec::new();
    if let Some(service) = &bearer.service {
        query.push(format!("service={}", encode_query(service)));
    }
    for scope in bearer.scope.iter().flat_map(|scope| scope.split_whitespace()) {
        query.push(format!("scope={}", encode_query(scope)));
    }
    let builder = http::Request::builder().header(header::USER_AGENT, crate::http::USER_AGENT);
    if let Some(refresh_token) = &credentials.refresh_token {
        query.push("grant_type=refresh_token".to_string());
        query.push("client_id=berth".to_string());
        query.push(format!("refresh_token={}", encode_query(refresh_token)));
        return builder
            .method(Method::POST)
            .uri(&bearer.realm)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(full(Bytes::from(query.join("&"))))
            .map_err(|_| ());
    }
    let separator = if bearer.realm.contains('?') { '&' } else { '?' };
    let url = if query.is_empty() {
        bearer.realm.clone()
    } else {
        format!("{}{separator}{}", bearer.realm, query.join("&"))
    };
    let mut builder = builder.method(Method::GET).uri(url);
    if let Some(basic) = &credentials.basic {
        builder = builder.header(header::AUTHORIZATION, basic.clone());
    }
    builder.body(full(Bytes::new())).map_err(|_| ())
}

/// The token in a token service's JSON answer (`token`, or OAuth2's `access_token`).
fn token_of(body: &[u8]) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["token", "access_token"]
        .iter()
        .find_map(|key| answer.get(key).and_then(serde_json::Value::as_str))
        .filter(|token| !token.is_empty())
        .map(str::to_string)
}

/// How a registry's 401 asks to log in (`WWW-Authenticate`).
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer(Bearer),
}

/// A Bearer challenge: where to get a token, for what.
#[derive(Debug, PartialEq, Eq)]
struct Bearer {
    realm: String,
    service: Option<String>,
    /// Space-separated scopes (`repository:sites/www:pull,push`).
    scope: Option<String>,
}

/// Parses one `WWW-Authenticate` value: `Basic realm="…"` or
/// `Bearer realm="…",service="…",scope="…"`. `None` for other schemes, or a
/// Bearer challenge without a realm.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, parameters) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let parameters = parse_parameters(parameters);
    let get = |name: &str| {
        parameters
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    Some(Challenge::Bearer(Bearer {
        realm: get("realm").filter(|realm| !realm.is_empty())?,
        service: get("service"),
        scope: get("scope"),
    }))
}

/// `key=value` and `key="quoted, \"value\""` pairs, separated by commas.
fn parse_parameters(text: &str) -> Vec<(String, String)> {
    let mut parameters = Vec::new();
    let mut characters = text.chars().peekable();
    loop {
        while characters.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let key: String = characters.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().to_string();
        if key.is_empty() {
            return parameters;
        }
        while characters.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if characters.next_if_eq(&'"').is_some() {
            while let Some(character) = characters.next() {
                match character {
                    '\\' => value.extend(characters.next()),
                    '"' => break,
                    other => value.push(other),
                }
            }
        } else {
            while let Some(character) = characters.next_if(|c| *c != ',') {
                value.push(character);
            }
            value = value.trim_end().to_string();
        }
        parameters.push((key, value));
    }
}

/// Reads a manifest: its media type (the answer's `Content-Type`, or the
/// document's `mediaType`) and what it refers to.
fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<(String, Content), String> {
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|error| format!("not JSON: {error}"))?;
    let declared = document.get("mediaType").and_then(serde_json::Value::as_str);
    let answered = content_type
        .map(|value| value.split(';').next().unwrap_or_default().trim())
        .filter(|value| value.starts_with("application/vnd."));
    let media_type = answered
        .or(declared)
        .ok_or("no media type, in the answer or the manifest")?
        .to_string();
    let descriptor = |value: &serde_json::Value| -> Result<(String, u64, String), String> {
        let digest = value
            .get("digest")
            .and_then(serde_json::Value::as_str)
            .ok_or("a descriptor without a digest")?;
        check_digest(digest).map_err(|error| error.to_string())?;
        let size = value
            .get("size")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("{digest} has no size"))?;
        let media_type = value
            .get("mediaType")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        Ok((digest.to_string(), size, media_type.to_string()))
    };
    let list = |key: &str| document.get(key).and_then(serde_json::Value::as_array);
    match media_type.as_str() {
        "application/vnd.oci.image.index.v1+json"
        | "application/vnd.docker.distribution.manifest.list.v2+json" => {
            let children = list("manifests").ok_or("an index without `manifests`")?;
            let children = children
                .iter()
                .map(|child| {
                    let platform = |key: &str| {
                        child
                            .pointer(&format!("/platform/{key}"))
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_string)
                    };
                    descriptor(child).map(|(digest, _, _)| Child {
                        digest,
                        os: platform("os"),
                        architecture: platform("architecture"),
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok((media_type, Content::Index(children)))
        }
        "application/vnd.oci.image.manifest.v1+json"
        | "application/vnd.docker.distribution.manifest.v2+json" => {
            let config = document.get("config").ok_or("a manifest without `config`")?;
            let layers = list("layers").ok_or("a manifest without `layers`")?;
            let mut blobs = Vec::new();
            for value in std::iter::once(config).chain(layers) {
                let (digest, size, blob_type) = descriptor(value)?;
                // Foreign (non-distributable) layers live at their `urls`, not in registries.
                if !blob_type.contains("foreign") && !blob_type.contains("nondistributable") {
                    blobs.push(Blob { digest, size });
                }
            }
            Ok((media_type, Content::Image(blobs)))
        }
        other => Err(format!("berth does not copy {other}")),
    }
}

/// The scheme and API host of a registry address: `http` on loopback
/// (`127.x.x.x`, `localhost`, `[::1]`) or when `plain_http` (the Engine
/// calls the registry insecure), `https` elsewhere, unless the address names
/// its scheme. Docker Hub's API is at `registry-1.docker.io`.
pub(super) fn scheme_and_host(registry: &str, plain_http: bool) -> (&'static str, String) {
    let registry = registry.trim_end_matches('/');
    let (named, host) = if let Some(host) = registry.strip_prefix("https://") {
        (Some("https"), host)
    } else if let Some(host) = registry.strip_prefix("http://") {
        (Some("http"), host)
    } else {
        (None, registry)
    };
    let host = match host {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    };
    let scheme = named.unwrap_or(if plain_http || is_loopback(host) {
        "http"
    } else {
        "https"
    });
    (scheme, host.to_string())
}

/// Whether `host` (with or without a port) is this machine.
fn is_loopback(host: &str) -> bool {
    let name = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `location` as an absolute URL (registries may answer a path).
pub(super) fn absolute_url(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base}/{}", location.trim_start_matches('/'))
    }
}

/// `host[:port]` of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// `METHOD /path` for messages: no scheme, host or query (an upload's state
/// and a storage redirect's signature stay out).
pub(super) fn request_text(method: &Method, url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.find('/').map_or("/", |at| &rest[at..]);
    format!("{method} {}", path.split(['?', '#']).next().unwrap_or(path))
}

/// Percent-encodes a query value (RFC 3986's unreserved characters stay).
pub(super) fn encode_query(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub(super) fn check_digest(digest: &str) -> Result<(), ApiError> {
    let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if valid {
        Ok(())
    } else {
        Err(ApiError::InvalidReference(format!(
            "`{digest}` is not a sha256 digest (sha256: and 64 lowercase hex digits)"
        )))
    }
}

/// A repository path, by the distribution grammar ([`crate::reference`]'s check).
pub(super) fn check_repository(repository: &str) -> Result<(), ApiError> {
    crate::reference::check_repository(repository, None)
        .map_err(|e| ApiError::InvalidReference(e.to_string()))
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

    #[test]
    fn docker_hub_and_ghcr_bearer_challenges_are_parsed() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer(Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }))
        );
        assert_eq!(
            parse_challenge(
                r#"bearer realm="https://ghcr.io/token", service="ghcr.io", scope="repository:o/a:pull,push repository:o/b:pull""#
            ),
            Some(Challenge::Bearer(Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:o/a:pull,push repository:o/b:pull".into()),
            }))
        );
    }

    #[test]
    fn challenge_values_may_be_unquoted_or_hold_commas_and_escaped_quotes() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm=https://r.example/token,error="insufficient_scope",scope="a,\"b\"""#
            ),
            Some(Challenge::Bearer(Bearer {
                realm: "https://r.example/token".into(),
                service: None,
                scope: Some(r#"a,"b""#.into()),
            }))
        );
    }

    #[test]
    fn basic_unknown_and_realmless_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="berth-stack""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("BASIC"), Some(Challenge::Basic));
        assert_eq!(parse_challenge(r#"Digest realm="x", nonce="y""#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn loopback_registries_are_http_and_others_https() {
        for loopback in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "LOCALHOST",
            "[::1]:5000",
            "[::1]",
        ] {
            assert_eq!(
                scheme_and_host(loopback, false),
                ("http", loopback.to_string()),
                "{loopback}"
            );
        }
        for remote in [
            "ghcr.io",
            "registry.example:5000",
            "10.0.0.1:5000",
            "[2001:db8::1]:443",
            "localhost.example",
        ] {
            assert_eq!(
                scheme_and_host(remote, false),
                ("https", remote.to_string()),
                "{remote}"
            );
        }
        assert_eq!(
            scheme_and_host("docker.io", false),
            ("https", "registry-1.docker.io".into())
        );
        assert_eq!(
            scheme_and_host("http://registry.lan:5000/", false),
            ("http", "registry.lan:5000".into())
        );
        assert_eq!(
            scheme_and_host("https://localhost:5443", false),
            ("https", "localhost:5443".into())
        );
        assert_eq!(
            scheme_and_host("registry.lan:5000", true),
            ("http", "registry.lan:5000".into())
        );
        assert_eq!(
            scheme_and_host("https://registry.lan:5000", true),
            ("https", "registry.lan:5000".into())
        );
    }

    #[test]
    fn the_token_request_sends_each_scope_and_basic_or_refresh_credentials() {
        let bearer = Bearer {
            realm: "https://auth.example/token".into(),
            service: Some("registry.example".into()),
            scope: Some("repository:a:pull repository:b:pull,push".into()),
        };
        let basic = Credentials {
            basic: HeaderValue::try_from("Basic dTpw").ok(),
            refresh_token: None,
        };
        let request = token_request(&bearer, &basic).unwrap();
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().to_string(),
            "https://auth.example/token?service=registry.example&scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull%2Cpush"
        );
        assert_eq!(request.headers()[header::AUTHORIZATION], "Basic dTpw");
        let refresh = Credentials {
            basic: None,
            refresh_token: Some("refresh-me".into()),
        };
        let request = token_request(&bearer, &refresh).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert!(request.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(
            token_of(br#"{"access_token":"t1","expires_in":300}"#),
            Some("t1".into())
        );
        assert_eq!(
            token_of(br#"{"token":"t2","access_token":"t2"}"#),
            Some("t2".into())
        );
        assert_eq!(token_of(br#"{"token":""}"#), None);
    }

    #[test]
    fn credentials_become_sensitive_basic_headers() {
        let auth = RegistryAuth {
            registry: "r".into(),
            credentials: Some(bollard::auth::DockerCredentials {
                username: Some("user".into()),
                password: Some("hunter2".into()),
                ..Default::default()
            }),
            source_description: "test".into(),
        };
        let credentials = Credentials::of(&auth);
        let basic = credentials.basic.unwrap();
        assert_eq!(basic, "Basic dXNlcjpodW50ZXIy");
        assert!(basic.is_sensitive());
        assert!(!format!("{basic:?}").contains("dXNlcjpodW50ZXIy"));
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn an_image_manifest_names_its_config_and_layers_but_not_foreign_layers() {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7, "digest": digest('a')},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 9, "digest": digest('b')},
                {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 5, "digest": digest('c')},
            ],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let (media_type, content) = parse_manifest(&bytes, Some("application/json")).unwrap();
        assert_eq!(media_type, "application/vnd.docker.distribution.manifest.v2+json");
        assert_eq!(
            content,
            Content::Image(vec![
                Blob {
                    digest: digest('a'),
                    size: 7
                },
                Blob {
                    digest: digest('b'),
                    size: 9
                },
            ])
        );
    }

    #[test]
    fn an_index_names_its_children_and_the_answer_sets_the_media_type() {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": digest('d'), "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 2, "digest": digest('e')},
            ],
        });
        let bytes = serde_json::to_vec(&index).unwrap();
        let (media_type, content) = parse_manifest(
            &bytes,
            Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(media_type, "application/vnd.oci.image.index.v1+json");
        assert_eq!(
            content,
            Content::Index(vec![
                Child {
                    digest: digest('d'),
                    os: Some("linux".into()),
                    architecture: Some("amd64".into()),
                },
                Child {
                    digest: digest('e'),
                    os: None,
                    architecture: None,
                },
            ])
        );
    }

    #[test]
    fn manifests_berth_cannot_copy_say_why() {
        assert!(
            parse_manifest(b"not json", None)
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(parse_manifest(b"{}", None).unwrap_err().contains("no media type"));
        let schema1 =
            br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert!(
            parse_manifest(schema1, None)
                .unwrap_err()
                .contains("does not copy")
        );
        let bad_child = serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"size": 1, "digest": "sha256:../../evil"}],
        });
        let error = parse_manifest(&serde_json::to_vec(&bad_child).unwrap(), None).unwrap_err();
        assert!(error.contains("not a sha256 digest"), "{error}");
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
    fn request_texts_and_queries_leave_no_secret_and_are_encoded() {
        assert_eq!(authority("https://auth.docker.io/token?x=1"), "auth.docker.io");
        assert_eq!(
            request_text(&Method::PUT, "http://h:1/v2/r/blobs/uploads/u?_state=secret"),
            "PUT /v2/r/blobs/uploads/u"
        );
        assert_eq!(
            encode_query("repository:o/a:pull,push"),
            "repository%3Ao%2Fa%3Apull%2Cpush"
        );
    }

    #[test]
    fn digests_and_repositories_are_checked() {
        assert!(check_digest(&digest('0')).is_ok());
        assert!(check_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(check_digest("sha512:00").is_err());
        assert!(check_repository("sites/www").is_ok());
        assert!(check_repository("sites//www").is_err());
        assert!(check_repository("Sites/www").is_err());
        assert!(check_repository("sites/www?x=1").is_err());
        assert!(check_repository("sites/../www").is_err());
    }

    #[test]
    fn an_index_is_read_at_this_machines_platform_or_its_first_image() {
        let child = |c: char, os: &str, architecture: &str| Child {
            digest: digest(c),
            os: Some(os.into()).filter(|os: &String| !os.is_empty()),
            architecture: Some(architecture.into()).filter(|a: &String| !a.is_empty()),
        };
        let children = [
            child('a', "unknown", "unknown"),
            child('b', "linux", "arm64"),
            child('c', "linux", "amd64"),
        ];
        assert_eq!(platform_child(&children, "x86_64"), Some(digest('c').as_str()));
        assert_eq!(platform_child(&children, "aarch64"), Some(digest('b').as_str()));
        assert_eq!(platform_child(&children, "s390x"), Some(digest('b').as_str()));
        let attestations = [child('d', "unknown", "unknown"), child('e', "", "")];
        assert_eq!(
            platform_child(&attestations, "x86_64"),
            Some(digest('e').as_str())
        );
        assert_eq!(
            platform_child(&attestations[..1], "x86_64"),
            Some(digest('d').as_str())
        );
        assert_eq!(platform_child(&[], "x86_64"), None);
    }

    #[test]
    fn an_image_configs_labels_are_read_and_none_is_empty() {
        let config = serde_json::json!({"architecture": "amd64",
            "config": {"Labels": {"dev.berth.source-digest": "abc", "n": 1}}, "rootfs": {}});
        let labels = labels_of(&config);
        assert_eq!(labels.len(), 1, "a label that is not a string is left out");
        assert_eq!(labels["dev.berth.source-digest"], "abc");
        assert!(labels_of(&serde_json::json!({"config": {"Labels": null}})).is_empty());
        assert!(labels_of(&serde_json::json!({"rootfs": {}})).is_empty());
    }
}
