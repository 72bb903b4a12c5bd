//! One session with a registry's repository: its requests (asked
//! anonymously, or as the last login allows, then once more after a 401
//! said how to log in: [`super::auth`]), the answers berth expects of them,
//! a manifest or blob read whole and checked against its digest, and a
//! blob's redirects to storage followed without the registry's credentials.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::url::Url;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::registry::RegistryAuth;
use crate::registry::api::auth::parse_challenge;
use crate::registry::api::manifest::{CONFIG_LIMIT, MANIFEST_LIMIT, parse_manifest, platform_child};
use crate::registry::api::url::{base_url, repository_url, request_text};
use crate::registry::api::{
    ApiError, Body, Content, Endpoint, HttpClient, InvalidReference, MANIFEST_TYPES, Manifest,
    ManifestProblem, REQUEST_TIMEOUT, Response, Unreachable, check_digest, drain, error_body, full,
    header_text, sha256_digest,
};

/// How many redirects of a blob berth follows.
const REDIRECTS: usize = 5;

/// One registry and repository, with the authorization it accepted last.
/// Not `Debug`: the authorization is a secret.
pub(in crate::registry) struct Session<'a> {
    pub(in crate::registry) client: &'a HttpClient,
    pub(in crate::registry) auth: &'a RegistryAuth,
    pub(in crate::registry) repository: &'a str,
    /// The API's host and port (Docker Hub's `docker.io` is `registry-1.docker.io`).
    pub(in crate::registry) host: String,
    /// `scheme://host/`
    pub(in crate::registry) base: Url,
    /// Shared by the sessions of one [`crate::registry::Repository`], so a
    /// login lasts for all its requests.
    pub(super) authorization: Arc<Mutex<Option<HeaderValue>>>,
}

impl<'a> Session<'a> {
    /// A session with `endpoint`'s registry, over plain HTTP on loopback or
    /// with `plain_http` ([`base_url`]).
    pub(in crate::registry) fn new(
        client: &'a HttpClient,
        endpoint: Endpoint<'a>,
        plain_http: bool,
    ) -> Result<Self, ApiError> {
        Self::sharing(client, endpoint, plain_http, Arc::default())
    }

    /// [`Session::new`], starting from (and keeping) `authorization`.
    pub(in crate::registry) fn sharing(
        client: &'a HttpClient,
        endpoint: Endpoint<'a>,
        plain_http: bool,
        authorization: Arc<Mutex<Option<HeaderValue>>>,
    ) -> Result<Self, ApiError> {
        let (base, host) = base_url(&endpoint.auth.registry, plain_http)?;
        Ok(Self {
            client,
            auth: endpoint.auth,
            repository: endpoint.repository,
            host,
            base,
            authorization,
        })
    }

    /// The URL of `segments` under the repository (`manifests/…`, `blobs/…`).
    pub(in crate::registry) fn url(&self, segments: &[&str]) -> Url {
        repository_url(&self.base, self.repository, segments)
    }

    /// `location` (a redirect's, an upload's), made absolute against the
    /// registry (registries may answer a path).
    pub(in crate::registry) fn location(&self, location: &str) -> Result<Url, ApiError> {
        self.base.join(location).map_err(|error| {
            ApiError::from(InvalidReference::Location {
                registry: self.auth.registry.clone(),
                error,
            })
        })
    }

    pub(in crate::registry) async fn get_manifest(&self, digest: &str) -> Result<Manifest, ApiError> {
        let url = self.url(&["manifests", digest]);
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
            .map_err(|problem| self.invalid_manifest(digest, problem))?;
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
    pub(in crate::registry) async fn image_config(
        &self,
        digest: &str,
    ) -> Result<(Bytes, Vec<(String, u64)>), ApiError> {
        check_digest(digest)?;
        let mut manifest = self.get_manifest(digest).await?;
        if let Content::Index(children) = &manifest.content {
            let child = platform_child(children, std::env::consts::ARCH)
                .ok_or_else(|| self.invalid_manifest(digest, ManifestProblem::NoManifests))?
                .to_string();
            manifest = self.get_manifest(&child).await?;
        }
        let Content::Image(blobs) = &manifest.content else {
            return Err(self.invalid_manifest(&manifest.digest, ManifestProblem::NestedIndex));
        };
        let config = blobs
            .first()
            .ok_or_else(|| self.invalid_manifest(&manifest.digest, ManifestProblem::NoConfig))?;
        let bytes = self.read_blob(&config.digest, CONFIG_LIMIT).await?;
        Ok((
            bytes,
            blobs
                .iter()
                .map(|blob| (blob.digest.clone(), blob.size))
                .collect(),
        ))
    }

    pub(in crate::registry) async fn blob_exists(&self, digest: &str) -> Result<bool, ApiError> {
        let url = self.url(&["blobs", digest]);
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
    pub(in crate::registry) async fn get_blob(&self, digest: &str) -> Result<Response, ApiError> {
        let mut url = self.url(&["blobs", digest]);
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
                url = self.location(&location)?;
                continue;
            }
            return self.expect(response, &[StatusCode::OK], &Method::GET, &url).await;
        }
        Err(self.unreachable(Unreachable::Redirects {
            redirects: REDIRECTS,
            digest: digest.to_string(),
        }))
    }

    /// A blob's bytes (at most `limit`), checked against its digest.
    pub(in crate::registry) async fn read_blob(&self, digest: &str, limit: usize) -> Result<Bytes, ApiError> {
        let response = self.get_blob(digest).await?;
        self.verified(response, digest, limit, "blob").await
    }

    /// The body of `response`, at most `limit` bytes: the bytes of `what`
    /// (for messages).
    pub(in crate::registry) async fn read_body(
        &self,
        response: Response,
        limit: usize,
        what: &str,
    ) -> Result<Bytes, ApiError> {
        Ok(Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|error| {
                self.unreachable(Unreachable::Body {
                    what: what.to_string(),
                    error,
                })
            })?
            .to_bytes())
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
        let bytes = self
            .read_body(response, limit, &format!("{what} {digest}"))
            .await?;
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
    pub(in crate::registry) async fn send(
        &self,
        method: Method,
        url: &Url,
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

    pub(in crate::registry) fn request(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(HeaderName, &str)],
        body: Body,
    ) -> Result<http::Request<Body>, ApiError> {
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(url.as_str())
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
        builder.body(body).map_err(|error| {
            ApiError::from(InvalidReference::Request {
                request: request_text(method, url),
                error,
            })
        })
    }

    pub(in crate::registry) async fn execute(
        &self,
        request: http::Request<Body>,
        timeout: Option<Duration>,
    ) -> Result<Response, ApiError> {
        let future = self.client.request(request);
        let result = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, future)
                .await
                .map_err(|_| self.unreachable(Unreachable::Timeout(timeout)))?,
            None => future.await,
        };
        result.map_err(|error| self.unreachable(Unreachable::Connection(error)))
    }

    /// Whether `url` is the registry's (its scheme, host and port): only
    /// there do its credentials go.
    fn same_authority(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// `response` when its status is one of `expected`; otherwise the error it means.
    pub(in crate::registry) async fn expect(
        &self,
        response: Response,
        expected: &[StatusCode],
        method: &Method,
        url: &Url,
    ) -> Result<Response, ApiError> {
        let status = response.status();
        if expected.contains(&status) {
            return Ok(response);
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            drain(response).await;
            return Err(self.refused(status));
        }
        Err(ApiError::Http {
            registry: self.auth.registry.clone(),
            request: request_text(method, url),
            status: status.as_u16(),
            body: error_body(response).await,
        })
    }

    /// An answer to `method url` that berth cannot read, and why.
    pub(in crate::registry) fn answer_error(
        &self,
        method: &Method,
        url: &Url,
        problem: crate::registry::api::AnswerProblem,
    ) -> ApiError {
        ApiError::Answer {
            registry: self.auth.registry.clone(),
            request: request_text(method, url),
            problem,
        }
    }

    pub(super) fn refused(&self, status: StatusCode) -> ApiError {
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

    fn unreachable(&self, cause: Unreachable) -> ApiError {
        ApiError::Unreachable {
            registry: self.auth.registry.clone(),
            cause,
        }
    }

    pub(in crate::registry) fn invalid_manifest(&self, digest: &str, problem: ManifestProblem) -> ApiError {
        ApiError::InvalidManifest {
            registry: self.auth.registry.clone(),
            repository: self.repository.to_string(),
            digest: digest.to_string(),
            problem,
        }
    }
}
