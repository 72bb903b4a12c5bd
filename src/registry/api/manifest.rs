//! Manifests, indexes and image configs, read as the OCI image spec types
//! them (`oci-spec`; a Docker manifest and manifest list have the same
//! shape): what a manifest refers to, the child of an index for this
//! machine, an image's labels and build time. They are parsed to be read,
//! never serialized again: a copy puts the registry's bytes, whose digest
//! was checked.

use std::collections::HashMap;

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::registry::api::{InvalidReference, check_digest};

/// What berth asks a registry for: the four manifest media types it reads.
pub(in crate::registry) const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// The largest manifest berth reads (distribution's own limit is 4 MiB).
pub(super) const MANIFEST_LIMIT: usize = 4 << 20;
/// The largest image config berth reads (its history makes it grow).
pub(super) const CONFIG_LIMIT: usize = 8 << 20;

/// Why berth cannot read a manifest or image config, for
/// [`super::ApiError::InvalidManifest`].
#[derive(Debug, thiserror::Error)]
pub enum ManifestProblem {
    /// The manifest is not JSON.
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// Neither the answer's `Content-Type` nor the manifest names its media type.
    #[error("no media type, in the answer or the manifest")]
    NoMediaType,
    /// A media type berth does not read (a schema 1 manifest, an artifact).
    #[error("berth does not copy {media_type}")]
    Unsupported { media_type: String },
    /// JSON that is not the index or manifest its media type says (a field
    /// missing, a digest that is none).
    #[error("not a valid {media_type}: {error}")]
    Shape {
        media_type: String,
        error: serde_json::Error,
    },
    /// A descriptor whose digest is not a sha256 one.
    #[error(transparent)]
    Digest(#[from] InvalidReference),
    /// An index that names no manifest.
    #[error("an index of no manifests")]
    NoManifests,
    /// An index inside an index.
    #[error("an index inside an index")]
    NestedIndex,
    /// A manifest whose config is not a blob berth can read.
    #[error("a manifest without a config")]
    NoConfig,
    /// The image config is not JSON.
    #[error("its config is not JSON: {0}")]
    ConfigNotJson(serde_json::Error),
}

/// A manifest as the source answered it.
pub(in crate::registry) struct Manifest {
    pub(in crate::registry) digest: String,
    pub(in crate::registry) media_type: String,
    pub(in crate::registry) bytes: Bytes,
    pub(in crate::registry) content: Content,
}

/// What a manifest refers to.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::registry) enum Content {
    /// An index or manifest list: its child manifests.
    Index(Vec<Child>),
    /// An image manifest: its config first, then its layers (those a
    /// registry holds).
    Image(Vec<Blob>),
}

/// A blob a manifest names.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::registry) struct Blob {
    pub(in crate::registry) digest: String,
    pub(in crate::registry) size: u64,
}

/// A child manifest an index names, and the platform it is for (an
/// attestation's is `unknown/unknown`).
#[derive(Debug, PartialEq, Eq)]
pub(in crate::registry) struct Child {
    pub(in crate::registry) digest: String,
    pub(in crate::registry) os: Option<String>,
    pub(in crate::registry) architecture: Option<String>,
}

/// The one field of a manifest read before its type is known.
#[derive(serde::Deserialize)]
struct Declared {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
}

/// Reads a manifest: its media type (the answer's `Content-Type`, or the
/// document's `mediaType`) and what it refers to.
pub(super) fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<(String, Content), ManifestProblem> {
    let declared = match serde_json::from_slice::<Declared>(bytes) {
        Ok(declared) => declared.media_type,
        // JSON of another shape: its media type is the answer's, if any.
        Err(error) if error.is_data() => None,
        Err(error) => return Err(ManifestProblem::NotJson(error)),
    };
    let answered = content_type
        .map(|value| value.split(';').next().unwrap_or_default().trim())
        .filter(|value| value.starts_with("application/vnd."));
    let media_type = answered
        .map(str::to_string)
        .or(declared)
        .ok_or(ManifestProblem::NoMediaType)?;
    let shape = |error| ManifestProblem::Shape {
        media_type: media_type.clone(),
        error,
    };
    let content = match media_type.as_str() {
        "application/vnd.oci.image.index.v1+json"
        | "application/vnd.docker.distribution.manifest.list.v2+json" => {
            let index: ImageIndex = serde_json::from_slice(bytes).map_err(shape)?;
            let children = index
                .manifests()
                .iter()
                .map(|child| {
                    let platform = child.platform().as_ref();
                    Ok(Child {
                        digest: checked_digest(child)?,
                        os: platform.map(|platform| platform.os().to_string()),
                        architecture: platform.map(|platform| platform.architecture().to_string()),
                    })
                })
                .collect::<Result<_, ManifestProblem>>()?;
            Content::Index(children)
        }
        "application/vnd.oci.image.manifest.v1+json"
        | "application/vnd.docker.distribution.manifest.v2+json" => {
            let manifest: ImageManifest = serde_json::from_slice(bytes).map_err(shape)?;
            let mut blobs = Vec::new();
            for descriptor in std::iter::once(manifest.config()).chain(manifest.layers()) {
                let digest = checked_digest(descriptor)?;
                // Foreign (non-distributable) layers live at their `urls`, not in registries.
                let blob_type = descriptor.media_type().to_string();
                if !blob_type.contains("foreign") && !blob_type.contains("nondistributable") {
                    blobs.push(Blob {
                        digest,
                        size: descriptor.size(),
                    });
                }
            }
            Content::Image(blobs)
        }
        other => {
            return Err(ManifestProblem::Unsupported {
                media_type: other.to_string(),
            });
        }
    };
    Ok((media_type, content))
}

/// A descriptor's digest, which must be a sha256 one (a registry's path
/// holds it).
fn checked_digest(descriptor: &Descriptor) -> Result<String, ManifestProblem> {
    let digest = descriptor.digest().to_string();
    check_digest(&digest)?;
    Ok(digest)
}

/// The child of an index to read for this machine: the first for
/// `linux/<arch>` (`arch` as Rust names it), else the first for a platform
/// that is not `unknown` (an attestation's), else the first.
pub(super) fn platform_child<'c>(children: &'c [Child], arch: &str) -> Option<&'c str> {
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

/// What berth reads of an image config.
#[derive(Debug, Default, PartialEq, Eq)]
pub(in crate::registry) struct ImageConfig {
    /// `config.Labels` (none is an empty map).
    pub(in crate::registry) labels: HashMap<String, String>,
    /// `created` (RFC 3339), when it has one.
    pub(in crate::registry) created: Option<String>,
}

/// Reads an image config. JSON that is not an image's config (an
/// artifact's) has no labels and no time.
pub(in crate::registry) fn read_config(bytes: &[u8]) -> Result<ImageConfig, ManifestProblem> {
    match serde_json::from_slice::<ImageConfiguration>(bytes) {
        Ok(config) => Ok(ImageConfig {
            labels: config
                .config()
                .as_ref()
                .and_then(|config| config.labels().clone())
                .unwrap_or_default(),
            created: config.created().clone(),
        }),
        Err(error) if error.is_data() => Ok(ImageConfig::default()),
        Err(error) => Err(ManifestProblem::ConfigNotJson(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "size": 3, "digest": digest('f')},
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
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 3, "digest": digest('f'), "platform": {"os": "unknown", "architecture": "unknown"}},
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
                Child {
                    digest: digest('f'),
                    os: Some("unknown".into()),
                    architecture: Some("unknown".into()),
                },
            ])
        );
    }

    #[test]
    fn manifests_berth_cannot_copy_say_why() {
        assert!(matches!(
            parse_manifest(b"not json", None),
            Err(ManifestProblem::NotJson(_))
        ));
        assert_eq!(
            parse_manifest(b"{}", None).unwrap_err().to_string(),
            "no media type, in the answer or the manifest"
        );
        let schema1 =
            br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert_eq!(
            parse_manifest(schema1, None).unwrap_err().to_string(),
            "berth does not copy application/vnd.docker.distribution.manifest.v1+prettyjws"
        );
        let bad_child = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": "sha256:../../evil"}],
        });
        let error = parse_manifest(&serde_json::to_vec(&bad_child).unwrap(), None).unwrap_err();
        assert!(matches!(error, ManifestProblem::Shape { .. }), "{error}");
        let sha512 = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": format!("sha512:{}", "0".repeat(128))}],
        });
        let error = parse_manifest(&serde_json::to_vec(&sha512).unwrap(), None).unwrap_err();
        assert!(error.to_string().contains("is not a sha256 digest"), "{error}");
        let no_layers = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 7, "digest": digest('a')},
        });
        let error = parse_manifest(&serde_json::to_vec(&no_layers).unwrap(), None).unwrap_err();
        assert!(
            error.to_string().starts_with(
                "not a valid application/vnd.oci.image.manifest.v1+json: missing field `layers`"
            ),
            "{error}"
        );
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
    fn an_image_configs_labels_and_time_are_read_and_none_is_empty() {
        let config = serde_json::json!({"architecture": "amd64", "os": "linux",
            "created": "2026-01-02T03:04:05Z",
            "config": {"Labels": {"dev.berth.source-digest": "abc"}},
            "rootfs": {"type": "layers", "diff_ids": []}});
        let read = read_config(&serde_json::to_vec(&config).unwrap()).unwrap();
        assert_eq!(read.labels["dev.berth.source-digest"], "abc");
        assert_eq!(read.created.as_deref(), Some("2026-01-02T03:04:05Z"));
        let no_labels = serde_json::json!({"architecture": "amd64", "os": "linux",
            "config": {"Labels": null}, "rootfs": {"type": "layers", "diff_ids": []}});
        let read = read_config(&serde_json::to_vec(&no_labels).unwrap()).unwrap();
        assert!(read.labels.is_empty() && read.created.is_none());
        // An artifact's config: JSON, but no image's.
        assert_eq!(
            read_config(br#"{"name":"chart"}"#).unwrap(),
            ImageConfig::default()
        );
        assert_eq!(
            read_config(b"{").unwrap_err().to_string(),
            "its config is not JSON: EOF while parsing an object at line 1 column 1"
        );
    }
}
