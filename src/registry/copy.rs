//! The copy of an image from one registry to another by digest, byte for byte,
//! through the Registry HTTP API v2 (not through the Engine, whose pull and push
//! may re-serialize a manifest or recompress layers): what `berth promote`
//! deploys to production is the very manifest that ran in staging, under the
//! same digest in both registries.
//!
//! 1. GET the manifest by digest from the source and check the sha256 of its
//!    bytes. An index (or a Docker manifest list) has each child manifest
//!    copied first, by digest.
//! 2. For each blob of a manifest (config and layers): HEAD on the target, and
//!    skip it when it is there; on the same registry, mount it from the source
//!    repository; otherwise stream it from the source into a monolithic upload
//!    (never whole in memory).
//! 3. PUT the manifest's bytes verbatim, with its own media type, and check the
//!    digest the target answers.
//!
//! The requests, their credentials and their limits are [`super::api`]'s.

use std::collections::HashSet;

use ::url::Url;
use bytes::Bytes;
use http::header;
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use crate::registry::api::{
    ApiError, Blob, Body, BoxError, CONNECT_TIMEOUT, Content, DOCKER_CONTENT_DIGEST, Endpoint,
    InvalidReference, MANIFEST_TYPES, Manifest, ManifestProblem, Response, Session, Unreachable,
    check_digest, check_repository, content_length, drain, header_text, request_text, with_query,
};
/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The manifest's digest (`sha256:…`), the same in both registries: a
    /// copy ends well only when the target answers that it stores this one
    /// (otherwise [`CopyError::StoredDigestDiffers`]).
    pub digest: String,
    /// Blobs streamed from the source to the target.
    pub blobs_copied: usize,
    /// Blobs the target already held.
    pub blobs_present: usize,
    /// Blobs mounted from the source repository (same registry): no bytes sent.
    pub blobs_mounted: usize,
    /// The bytes of the blobs streamed.
    pub bytes_copied: u64,
    /// Manifests put on the target: the one asked for, and an index's children.
    pub manifests: usize,
}

/// What can go wrong in a copy. No variant holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A request to either registry failed, or a name or manifest is not one
    /// berth can copy.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The target stored the manifest under another digest (or said none).
    #[error("registry {registry} stored the manifest of {expected} under {got}: the digests differ")]
    StoredDigestDiffers {
        registry: String,
        expected: String,
        got: String,
    },
    /// The source answered a blob of another size than its manifest says.
    #[error("registry {registry} answered {got} bytes for blob {digest}, its manifest says {expected}")]
    BlobSizeMismatch {
        registry: String,
        digest: String,
        expected: u64,
        got: u64,
    },
}

impl CopyError {
    /// As its request's ([`ApiError::kind`]); a copy that went wrong is the site's.
    pub fn kind(&self) -> crate::exit::Kind {
        match self {
            Self::Api(error) => error.kind(),
            _ => crate::exit::Kind::Site,
        }
    }
}

/// Copies the manifest `digest` from `from` to `to` under `tag`, with every
/// blob it needs, byte for byte: the target then answers `tag` with `digest`.
pub async fn copy_by_digest(
    from: Endpoint<'_>,
    digest: &str,
    to: Endpoint<'_>,
    tag: &str,
) -> Result<Copied, CopyError> {
    check_digest(digest).map_err(ApiError::from)?;
    check_repository(from.repository).map_err(ApiError::from)?;
    check_repository(to.repository).map_err(ApiError::from)?;
    check_tag(tag).map_err(ApiError::from)?;
    let client = crate::http::client(CONNECT_TIMEOUT).map_err(|error| ApiError::Unreachable {
        registry: to.auth.registry.clone(),
        cause: Unreachable::Client(error),
    })?;
    let source = Session::new(&client, from, false)?;
    let target = Session::new(&client, to, false)?;
    tracing::debug!(
        source = %source.host, from = from.repository, target = %target.host, to = to.repository,
        %digest, %tag, "copying by digest"
    );
    let mut copy = Copy {
        same_registry: source.host == target.host,
        source,
        target,
        done: HashSet::new(),
        copied: Copied {
            digest: digest.to_string(),
            blobs_copied: 0,
            blobs_present: 0,
            blobs_mounted: 0,
            bytes_copied: 0,
            manifests: 0,
        },
    };
    let manifest = copy.source.get_manifest(digest).await?;
    if let Content::Index(children) = &manifest.content {
        for child in children {
            let child = copy.source.get_manifest(&child.digest).await?;
            match &child.content {
                Content::Image(blobs) => copy.blobs(blobs).await?,
                Content::Index(_) => {
                    return Err(copy
                        .source
                        .invalid_manifest(&child.digest, ManifestProblem::NestedIndex)
                        .into());
                }
            }
            copy.target.put_manifest(&child, &child.digest).await?;
            copy.copied.manifests += 1;
        }
    }
    if let Content::Image(blobs) = &manifest.content {
        copy.blobs(blobs).await?;
    }
    copy.target.put_manifest(&manifest, tag).await?;
    copy.copied.manifests += 1;
    Ok(copy.copied)
}

/// One copy under way: both sides, and what is done.
struct Copy<'a> {
    source: Session<'a>,
    target: Session<'a>,
    same_registry: bool,
    /// The blobs handled already (an index's children may share some).
    done: HashSet<String>,
    copied: Copied,
}

impl Copy<'_> {
    async fn blobs(&mut self, blobs: &[Blob]) -> Result<(), CopyError> {
        for blob in blobs {
            if self.done.insert(blob.digest.clone()) {
                self.blob(blob).await?;
            }
        }
        Ok(())
    }

    async fn blob(&mut self, blob: &Blob) -> Result<(), CopyError> {
        if self.target.blob_exists(&blob.digest).await? {
            tracing::debug!(digest = %blob.digest, "the target has the blob");
            self.copied.blobs_present += 1;
            return Ok(());
        }
        let location = if self.same_registry {
            match self.target.mount(&blob.digest, self.source.repository).await? {
                None => {
                    tracing::debug!(digest = %blob.digest, "blob mounted");
                    self.copied.blobs_mounted += 1;
                    return Ok(());
                }
                Some(location) => location,
            }
        } else {
            self.target.start_upload().await?
        };
        let response = self.source.get_blob(&blob.digest).await?;
        if let Some(length) = content_length(&response)
            && length != blob.size
        {
            return Err(CopyError::BlobSizeMismatch {
                registry: self.source.auth.registry.clone(),
                digest: blob.digest.clone(),
                expected: blob.size,
                got: length,
            });
        }
        let body = response.into_body().map_err(BoxError::from).boxed_unsync();
        self.target.put_blob(&location, blob, body).await?;
        tracing::debug!(digest = %blob.digest, size = blob.size, "blob copied");
        self.copied.blobs_copied += 1;
        self.copied.bytes_copied += blob.size;
        Ok(())
    }
}

/// The requests only a copy makes: it writes to the target.
impl Session<'_> {
    /// PUTs the manifest's bytes under `reference` (a tag or its digest) and
    /// checks the digest the registry stored them under.
    async fn put_manifest(&self, manifest: &Manifest, reference: &str) -> Result<(), CopyError> {
        let url = self.url(&["manifests", reference]);
        let headers = [(header::CONTENT_TYPE, manifest.media_type.as_str())];
        let response = self
            .send(Method::PUT, &url, &headers, manifest.bytes.clone())
            .await?;
        let response = self
            .expect(
                response,
                &[StatusCode::CREATED, StatusCode::OK],
                &Method::PUT,
                &url,
            )
            .await?;
        let mut stored = header_text(&response, DOCKER_CONTENT_DIGEST);
        drain(response).await;
        if stored.is_none() {
            // Not every registry answers the digest to a PUT; a HEAD tells.
            let response = self
                .send(
                    Method::HEAD,
                    &url,
                    &[(header::ACCEPT, MANIFEST_TYPES)],
                    Bytes::new(),
                )
                .await?;
            let response = self
                .expect(response, &[StatusCode::OK], &Method::HEAD, &url)
                .await?;
            stored = header_text(&response, DOCKER_CONTENT_DIGEST);
        }
        match stored {
            Some(stored) if stored == manifest.digest => {
                tracing::debug!(registry = %self.host, %reference, digest = %stored, "manifest put");
                Ok(())
            }
            stored => Err(CopyError::StoredDigestDiffers {
                registry: self.auth.registry.clone(),
                expected: manifest.digest.clone(),
                got: stored.unwrap_or_else(|| "no digest".to_string()),
            }),
        }
    }

    /// Mounts `digest` from `from` (same registry): `None` when mounted, or the
    /// location of the upload the registry started instead.
    async fn mount(&self, digest: &str, from: &str) -> Result<Option<Url>, CopyError> {
        let url = with_query(
            self.url(&["blobs", "uploads", ""]),
            &[("mount", digest), ("from", from)],
        );
        let response = self.send(Method::POST, &url, &[], Bytes::new()).await?;
        let response = self
            .expect(
                response,
                &[StatusCode::CREATED, StatusCode::ACCEPTED],
                &Method::POST,
                &url,
            )
            .await?;
        if response.status() == StatusCode::CREATED {
            drain(response).await;
            return Ok(None);
        }
        self.upload_location(response, &url).await.map(Some)
    }

    /// Starts an upload; returns its location.
    async fn start_upload(&self) -> Result<Url, CopyError> {
        let url = self.url(&["blobs", "uploads", ""]);
        let response = self.send(Method::POST, &url, &[], Bytes::new()).await?;
        let response = self
            .expect(response, &[StatusCode::ACCEPTED], &Method::POST, &url)
            .await?;
        self.upload_location(response, &url).await
    }

    /// The absolute URL of the `Location` an upload answered.
    async fn upload_location(&self, response: Response, url: &Url) -> Result<Url, CopyError> {
        let location = header_text(&response, header::LOCATION);
        drain(response).await;
        let location = location.ok_or_else(|| ApiError::Http {
            registry: self.auth.registry.clone(),
            request: request_text(&Method::POST, url),
            status: StatusCode::ACCEPTED.as_u16(),
            body: "no Location for the upload".to_string(),
        })?;
        Ok(self.location(&location)?)
    }

    /// Completes the upload at `location` with `body`, the blob's bytes streamed.
    async fn put_blob(&self, location: &Url, blob: &Blob, body: Body) -> Result<(), CopyError> {
        let url = with_query(location.clone(), &[("digest", &blob.digest)]);
        let size = blob.size.to_string();
        let headers = [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CONTENT_LENGTH, size.as_str()),
        ];
        let request = self.request(&Method::PUT, &url, &headers, body)?;
        // No timeout: a large layer takes as long as it takes.
        let response = self.execute(request, None).await?;
        let response = self
            .expect(response, &[StatusCode::CREATED], &Method::PUT, &url)
            .await?;
        drain(response).await;
        Ok(())
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), InvalidReference> {
    let valid = tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(InvalidReference::Tag { tag: tag.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked() {
        assert!(check_tag("v1.2_3-rc").is_ok());
        assert!(check_tag(".hidden").is_err());
        assert!(check_tag("a/b").is_err());
        assert_eq!(
            check_tag(&"a".repeat(129)).unwrap_err().to_string(),
            format!("`{}` is not a valid tag", "a".repeat(129))
        );
    }
}
