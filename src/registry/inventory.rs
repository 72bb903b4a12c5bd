//! What a repository holds, for `berth gc`: its tags, the image each names
//! (digest, labels, when it was built, its blobs), and the delete of a
//! manifest, through the Registry HTTP API v2 ([`super::api`]'s session:
//! the same logins, limits and checked digests as the copy and the reads).
//!
//! The distribution registry deletes a manifest by digest only: every tag
//! that names it goes with it, and its blobs stay on disk until the
//! registry's own garbage collection (`registry garbage-collect`) runs.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Method, StatusCode};

use crate::registry::api::{
    AnswerProblem, ApiError, DOCKER_CONTENT_DIGEST, Endpoint, MANIFEST_TYPES, Session, Unreachable,
    check_digest, check_repository, header_text, read_config, with_query,
};

/// The most tags berth asks for in one page of `tags/list`.
const PAGE: usize = 1000;
/// The largest `tags/list` page berth reads.
const TAGS_LIMIT: usize = 8 << 20;

/// One image a tag names, as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub digest: String,
    /// Its config's `config.Labels`.
    pub labels: HashMap<String, String>,
    /// Its config's `created` (RFC 3339), when it has one.
    pub created: Option<String>,
    /// The blobs its manifest names (config and layers; for an index, those
    /// of the manifest for this platform), with their sizes: layers shared
    /// with other images are in each.
    pub blobs: Vec<(String, u64)>,
}

/// One repository of one registry, read and pruned over one session.
pub struct Repository {
    client: crate::http::HttpClient<super::api::Body>,
    auth: super::RegistryAuth,
    /// The repository's path in the registry (`sites/www`).
    path: String,
    plain_http: bool,
    /// The login the registry accepted last, for every request of this repository.
    authorization: std::sync::Arc<std::sync::Mutex<Option<http::HeaderValue>>>,
}

impl Repository {
    /// The repository `endpoint` names; `plain_http`: spoken to over HTTP, as
    /// the Engine speaks to an insecure registry ([`super::plain_http`]).
    pub fn new(endpoint: Endpoint<'_>, plain_http: bool) -> Result<Self, ApiError> {
        check_repository(endpoint.repository)?;
        let client =
            crate::http::client(super::api::CONNECT_TIMEOUT).map_err(|error| ApiError::Unreachable {
                registry: endpoint.auth.registry.clone(),
                cause: Unreachable::Client(error),
            })?;
        Ok(Self {
            client,
            auth: endpoint.auth.clone(),
            path: endpoint.repository.to_string(),
            plain_http,
            authorization: std::sync::Arc::default(),
        })
    }

    fn session(&self) -> Result<Session<'_>, ApiError> {
        let endpoint = Endpoint {
            auth: &self.auth,
            repository: &self.path,
        };
        Session::sharing(
            &self.client,
            endpoint,
            self.plain_http,
            self.authorization.clone(),
        )
    }

    /// Every tag, page by page (`?n=` and the `Link` header); none when the
    /// registry does not know the repository.
    pub async fn tags(&self) -> Result<Vec<String>, ApiError> {
        let session = self.session()?;
        let mut tags = Vec::new();
        let mut url = with_query(session.url(&["tags", "list"]), &[("n", &PAGE.to_string())]);
        loop {
            let response = session.send(Method::GET, &url, &[], Bytes::new()).await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            let response = session
                .expect(response, &[StatusCode::OK], &Method::GET, &url)
                .await?;
            let next = header_text(&response, header::LINK).and_then(|link| next_page(&link));
            let body = session.read_body(response, TAGS_LIMIT, "the tag list").await?;
            let page: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|error| session.answer_error(&Method::GET, &url, AnswerProblem::NotJson(error)))?;
            tags.extend(
                page["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|tag| tag.as_str().map(str::to_string)),
            );
            match next {
                Some(path) => url = session.location(&path)?,
                None => return Ok(tags),
            }
        }
    }

    /// The digest `tag` names (`HEAD` of its manifest); `None` when the tag
    /// is gone.
    pub async fn digest_of(&self, tag: &str) -> Result<Option<String>, ApiError> {
        let session = self.session()?;
        let url = session.url(&["manifests", tag]);
        let accept: [(HeaderName, &str); 1] = [(header::ACCEPT, MANIFEST_TYPES)];
        let response = session.send(Method::HEAD, &url, &accept, Bytes::new()).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = session
            .expect(response, &[StatusCode::OK], &Method::HEAD, &url)
            .await?;
        let digest = header_text(&response, DOCKER_CONTENT_DIGEST)
            .ok_or_else(|| session.answer_error(&Method::HEAD, &url, AnswerProblem::NoDigest))?;
        check_digest(&digest)?;
        Ok(Some(digest))
    }

    /// The image `digest`: its manifest (an index's child for this
    /// platform gives the config) and config, each checked against its digest.
    pub async fn image(&self, digest: &str) -> Result<Image, ApiError> {
        let session = self.session()?;
        let (config, blobs) = session.image_config(digest).await?;
        let config = read_config(&config).map_err(|problem| session.invalid_manifest(digest, problem))?;
        Ok(Image {
            digest: digest.to_string(),
            labels: config.labels,
            created: config.created,
            blobs,
        })
    }

    /// Deletes the manifest `digest` (and so every tag that names it). Gone
    /// already is done; a registry that does not allow deletes says so
    /// ([`ApiError::DeleteRefused`]).
    pub async fn delete(&self, digest: &str) -> Result<(), ApiError> {
        check_digest(digest)?;
        let session = self.session()?;
        let url = session.url(&["manifests", digest]);
        let response = session.send(Method::DELETE, &url, &[], Bytes::new()).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(()),
            StatusCode::METHOD_NOT_ALLOWED => Err(ApiError::DeleteRefused {
                registry: self.auth.registry.clone(),
                repository: self.path.clone(),
            }),
            _ => {
                session
                    .expect(
                        response,
                        &[StatusCode::ACCEPTED, StatusCode::OK, StatusCode::NO_CONTENT],
                        &Method::DELETE,
                        &url,
                    )
                    .await?;
                Ok(())
            }
        }
    }
}

/// The path of the next page a `Link: <path>; rel="next"` header names.
fn next_page(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, parameters) = part.split_once(';')?;
        parameters
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"")
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        assert_eq!(
            next_page(r#"</v2/sites/www/tags/list?last=abc&n=1000>; rel="next""#).as_deref(),
            Some("/v2/sites/www/tags/list?last=abc&n=1000")
        );
        assert_eq!(next_page(r#"<https://r.example/x>; rel="prev""#), None);
        assert_eq!(
            next_page(r#"<a>; rel="prev", <b>; rel = "next""#).as_deref(),
            Some("b")
        );
    }
}
