//! The push through the Engine API, with retries; the pull of an image by
//! digest (when the Engine does not have it); and the registry's digest for a
//! tag. The Engine's words about a failure are read in one place
//! (`EngineWords`), as libgit2's are in `git::words`.

use std::time::Duration;

use bollard::Docker;
use bollard::models::ImageInspect;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use futures_util::StreamExt;

use crate::reference;
use crate::registry::{RegistryAuth, RegistryError};

/// The manifest digest the registry holds for `reference`, or `None` when it has none.
pub async fn registry_digest(
    docker: &Docker,
    reference: &str,
    auth: &RegistryAuth,
) -> Result<Option<String>, RegistryError> {
    match docker
        .inspect_registry_image(reference, auth.credentials.clone())
        .await
    {
        Ok(inspect) => Ok(inspect.descriptor.digest),
        Err(bollard::errors::Error::DockerResponseServerError { status_code, message }) => {
            if status_code == 401 || EngineWords::of(&message) == EngineWords::Refused {
                Err(auth.refused(EngineFailure::Said(message)))
            } else {
                // 404 and "manifest unknown": the tag does not exist yet.
                Ok(None)
            }
        }
        Err(error) => Err(RegistryError::Unreachable(error)),
    }
}

/// Whether the Engine speaks to `registry` over plain HTTP: it is an
/// insecure registry of the Engine's (`insecure-registries` in daemon.json),
/// which berth's own requests to it then follow. An Engine that does not say
/// is taken to speak HTTPS.
pub async fn plain_http(docker: &Docker, registry: &str) -> bool {
    match docker.info().await {
        Ok(info) => info
            .registry_config
            .is_some_and(|config| insecure(&config, registry)),
        Err(error) => {
            tracing::debug!("cannot read the Engine's registry settings: {error}");
            false
        }
    }
}

/// Whether the Engine's registry settings call `registry` (`host[:port]`)
/// insecure: by name (`IndexConfigs`, `Secure: false`), or an IP address of
/// it within `InsecureRegistryCIDRs` (a name is not resolved).
fn insecure(config: &bollard::models::RegistryServiceConfig, registry: &str) -> bool {
    let by_name = config
        .index_configs
        .as_ref()
        .and_then(|configs| configs.get(registry))
        .and_then(|index| index.secure)
        == Some(false);
    let host = registry.strip_prefix('[').map_or_else(
        || registry.rsplit_once(':').map_or(registry, |(host, _)| host),
        |rest| rest.split(']').next().unwrap_or_default(),
    );
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return by_name;
    };
    by_name
        || config
            .insecure_registry_cidrs
            .iter()
            .flatten()
            .any(|cidr| in_cidr(ip, cidr))
}

/// Whether `ip` is within `cidr` (`10.0.0.0/8`, `::1/128`).
fn in_cidr(ip: std::net::IpAddr, cidr: &str) -> bool {
    use std::net::IpAddr;
    let Some((network, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(network), Ok(bits)) = (network.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    let (ip, network, width) = match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) => {
            (u128::from(ip.to_bits()), u128::from(network.to_bits()), 32)
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) => (ip.to_bits(), network.to_bits(), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    shift >= 128 || ip >> shift == network >> shift
}

/// What the Engine said about a failure (a push, a pull, a build): its
/// words, or why berth's Engine client failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineFailure {
    /// The Engine's (or the registry's) own words: a progress stream's
    /// `errorDetail.message`, or the message of an error answer.
    #[error("{0}")]
    Said(String),
    /// bollard, berth's Engine client, failed: the connection to the
    /// Engine, or an answer it could not read.
    #[error("{0}")]
    Client(bollard::errors::Error),
}

impl EngineFailure {
    /// What the failure's words mean ([`EngineWords`]).
    fn words(&self) -> EngineWords {
        match self {
            Self::Said(message) => EngineWords::of(message),
            // As berth has always read them: a connection refused or reset is
            // the registry's end being unreachable.
            Self::Client(error) => EngineWords::of(&error.to_string()),
        }
    }
}

/// What the Engine's words about a registry failure mean. The Engine hands
/// registry errors to its client as text only (a progress stream's
/// `errorDetail.message`), so this is the one place berth reads an error's
/// words; its own errors are typed and never read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineWords {
    /// The registry refused the credentials (or their absence).
    Refused,
    /// The Engine could not connect to the registry.
    Unreachable,
    /// Anything else: may pass on a retry.
    Other,
}

impl EngineWords {
    fn of(message: &str) -> Self {
        if is_auth_message(message) {
            Self::Refused
        } else if is_network_message(message) {
            Self::Unreachable
        } else {
            Self::Other
        }
    }
}

fn is_network_message(message: &str) -> bool {
    [
        "connection refused",
        "no such host",
        "i/o timeout",
        "connection reset",
        "dial tcp",
        "EOF",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

fn is_auth_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "incorrect username or password",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

const PUSH_ATTEMPTS: u32 = 3;

/// Tags `image_id` as `repository:tag`, pushes it and returns the manifest digest.
pub async fn push(
    docker: &Docker,
    image_id: &str,
    repository: &str,
    tag: &str,
    auth: &RegistryAuth,
) -> Result<String, RegistryError> {
    let reference = format!("{repository}:{tag}");
    docker
        .tag_image(
            image_id,
            Some(TagImageOptions {
                repo: Some(repository.to_string()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .map_err(RegistryError::Unreachable)?;
    let mut last = EngineFailure::Said(String::new());
    for attempt in 1..=PUSH_ATTEMPTS {
        match push_once(docker, repository, tag, auth).await {
            Ok(()) => return pushed_digest(docker, repository, &reference).await,
            Err(PushAttempt::Auth(failure)) => {
                return Err(auth.refused(failure));
            }
            Err(PushAttempt::Transient(failure)) => {
                tracing::debug!(%reference, attempt, "push failed: {failure}");
                last = failure;
                if attempt < PUSH_ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt * attempt))).await;
                }
            }
        }
    }
    Err(if last.words() == EngineWords::Unreachable {
        RegistryError::RegistryUnreachable {
            image: reference,
            attempts: PUSH_ATTEMPTS,
            cause: last,
        }
    } else {
        RegistryError::Failed {
            image: reference,
            attempts: PUSH_ATTEMPTS,
            cause: last,
        }
    })
}

/// Why one push failed.
enum PushAttempt {
    /// The registry refused the credentials: not retried.
    Auth(EngineFailure),
    /// Anything else: may pass on a retry.
    Transient(EngineFailure),
}

async fn push_once(
    docker: &Docker,
    repository: &str,
    tag: &str,
    auth: &RegistryAuth,
) -> Result<(), PushAttempt> {
    let options = PushImageOptions {
        tag: Some(tag.to_string()),
        ..Default::default()
    };
    let stream = docker.push_image(repository, Some(options), auth.credentials.clone());
    let Some(failure) = first_error(stream, |info| info.error_detail.and_then(|detail| detail.message)).await
    else {
        return Ok(());
    };
    Err(match failure.words() {
        EngineWords::Refused => PushAttempt::Auth(failure),
        EngineWords::Unreachable | EngineWords::Other => PushAttempt::Transient(failure),
    })
}

/// Drains `stream` (of a push or pull) and returns its first error, if any.
async fn first_error<T>(
    stream: impl futures_util::Stream<Item = Result<T, bollard::errors::Error>>,
    detail: impl Fn(T) -> Option<String>,
) -> Option<EngineFailure> {
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(message) = detail(info) {
                    return Some(EngineFailure::Said(message));
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Some(EngineFailure::Said(message));
            }
            Err(error) => return Some(EngineFailure::Client(error)),
        }
    }
    None
}

/// Pulls `reference` (by digest) into the local Engine.
pub async fn pull(docker: &Docker, reference: &str, auth: &RegistryAuth) -> Result<(), RegistryError> {
    let options = bollard::query_parameters::CreateImageOptions {
        from_image: Some(reference.to_string()),
        ..Default::default()
    };
    let stream = docker.create_image(Some(options), None, auth.credentials.clone());
    let failure = match first_error(stream, |info| info.error_detail.and_then(|detail| detail.message)).await
    {
        None => return Ok(()),
        Some(EngineFailure::Client(error)) => return Err(RegistryError::Unreachable(error)),
        Some(failure) => failure,
    };
    let image = reference.to_string();
    Err(match failure.words() {
        EngineWords::Refused => auth.refused(failure),
        EngineWords::Unreachable => RegistryError::RegistryUnreachable {
            image,
            attempts: 1,
            cause: failure,
        },
        EngineWords::Other => RegistryError::Failed {
            image,
            attempts: 1,
            cause: failure,
        },
    })
}

/// The Engine's view of `reference`, pulled into it first when this machine
/// does not have it (a fresh CronJob pod); a first answer is kept, not asked again.
pub async fn inspect_or_pull(
    docker: &Docker,
    reference: &str,
    auth: &RegistryAuth,
) -> Result<ImageInspect, RegistryError> {
    if let Ok(inspect) = docker.inspect_image(reference).await {
        return Ok(inspect);
    }
    pull(docker, reference, auth).await?;
    docker
        .inspect_image(reference)
        .await
        .map_err(RegistryError::Unreachable)
}

/// The digest the registry holds, read back from the image's `RepoDigests`
/// (the push stream does not carry it reliably).
async fn pushed_digest(docker: &Docker, repository: &str, reference: &str) -> Result<String, RegistryError> {
    let inspect = docker
        .inspect_image(reference)
        .await
        .map_err(RegistryError::Unreachable)?;
    digest_in(&inspect.repo_digests.unwrap_or_default(), repository)
        .ok_or_else(|| RegistryError::NoDigest(reference.to_string()))
}

/// The digest of `repository` among an image's `RepoDigests`
/// (`<repository>@sha256:…`), which name a Docker Hub repository by its
/// familiar name (`user/img`, `nginx`: [`reference::familiar`]).
fn digest_in(repo_digests: &[String], repository: &str) -> Option<String> {
    let wanted = reference::familiar(repository);
    repo_digests.iter().find_map(|entry| {
        let (named, digest) = entry.rsplit_once('@')?;
        (reference::familiar(named) == wanted).then(|| digest.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pushed_digest_is_found_under_docker_hubs_familiar_name() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let other = format!("sha256:{}", "b".repeat(64));
        let digests = |entries: &[&str]| entries.iter().map(ToString::to_string).collect::<Vec<_>>();
        let hub = digests(&[&format!("other/img@{other}"), &format!("user/img@{digest}")]);
        assert_eq!(digest_in(&hub, "docker.io/user/img"), Some(digest.clone()));
        assert_eq!(digest_in(&hub, "index.docker.io/user/img"), Some(digest.clone()));
        let official = digests(&[&format!("nginx@{digest}")]);
        assert_eq!(
            digest_in(&official, "docker.io/library/nginx"),
            Some(digest.clone())
        );
        let local = digests(&[
            &format!("127.0.0.1:5000/sites/www-de@{other}"),
            &format!("127.0.0.1:5000/sites/www@{digest}"),
        ]);
        assert_eq!(digest_in(&local, "127.0.0.1:5000/sites/www"), Some(digest));
        assert_eq!(digest_in(&hub, "docker.io/user/none"), None);
        assert_eq!(digest_in(&local, "127.0.0.1:5000/sites"), None);
    }

    #[test]
    fn the_engines_words_tell_refused_from_unreachable() {
        assert_eq!(
            EngineWords::of("unauthorized: authentication required"),
            EngineWords::Refused
        );
        assert_eq!(EngineWords::of("no basic auth credentials"), EngineWords::Refused);
        assert_eq!(
            EngineWords::of("denied: requested access to the resource is denied"),
            EngineWords::Refused
        );
        assert_eq!(
            EngineWords::of(
                "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"
            ),
            EngineWords::Unreachable
        );
        assert_eq!(EngineWords::of("unexpected EOF"), EngineWords::Unreachable);
        assert_eq!(
            EngineWords::of("blob upload invalid: digest mismatch"),
            EngineWords::Other
        );
    }

    #[test]
    fn an_insecure_registry_is_named_or_within_an_insecure_cidr() {
        let config: bollard::models::RegistryServiceConfig = serde_json::from_value(serde_json::json!({
            "InsecureRegistryCIDRs": ["::1/128", "127.0.0.0/8", "10.20.0.0/16"],
            "IndexConfigs": {
                "docker.io": {"Name": "docker.io", "Secure": true, "Official": true},
                "registry.lan:5000": {"Name": "registry.lan:5000", "Secure": false},
            },
        }))
        .unwrap();
        for registry in [
            "registry.lan:5000",
            "127.0.0.1:5000",
            "10.20.3.4:5000",
            "10.20.3.4",
            "[::1]:5000",
        ] {
            assert!(insecure(&config, registry), "{registry}");
        }
        for registry in [
            "registry.lan",
            "docker.io",
            "10.21.0.1:5000",
            "ghcr.io",
            "[::2]:5000",
        ] {
            assert!(!insecure(&config, registry), "{registry}");
        }
        assert!(in_cidr("192.168.1.9".parse().unwrap(), "0.0.0.0/0"));
        assert!(!in_cidr("192.168.1.9".parse().unwrap(), "192.168.1.0/33"));
        assert!(!in_cidr("192.168.1.9".parse().unwrap(), "not a cidr"));
    }
}
