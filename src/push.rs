//! Push stage: registry credentials, the push itself, the pushed digest.
//!
//! 1. Resolve credentials for the registry from the source pipeline.toml names:
//!    Docker's `config.json` (`auths`, `credHelpers`, `credsStore`), environment
//!    variables, or files. The secret stays in memory and is never printed.
//! 2. Ask the registry (through the Engine) whether the tag exists, and its digest.
//! 3. Push through the Engine API, retrying transient failures with backoff; an
//!    authentication failure is not retried and names the registry and the
//!    credential source (never the secret).
//! 4. Read back the manifest digest the registry now holds for the tag.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use futures_util::StreamExt;

use crate::config::CredentialSource;

/// What can go wrong while pushing.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The registry refused our credentials (or we had none). Not retried.
    #[error("registry {registry} refused the push: {message} (credentials from {source_description})")]
    Auth {
        registry: String,
        message: String,
        source_description: String,
    },
    /// Credentials could not be read from their source.
    #[error("cannot read registry credentials from {source_description}: {message}")]
    Credentials {
        source_description: String,
        message: String,
    },
    /// The push failed after retries.
    #[error("pushing {image} failed after {attempts} attempts: {message}")]
    Failed {
        image: String,
        attempts: u32,
        message: String,
    },
    /// The Engine could not reach the registry (down, wrong address), after
    /// retries: an environment error, like an unreachable Engine or cluster.
    #[error("cannot reach the registry of {image}: failed after {attempts} attempts: {message}")]
    RegistryUnreachable {
        image: String,
        attempts: u32,
        message: String,
    },
    /// The registry holds no digest for what we pushed.
    #[error("the registry reported no digest for {0}")]
    NoDigest(String),
    /// The Engine could not be reached.
    #[error("cannot reach the Docker Engine: {0}")]
    Unreachable(String),
}

/// Credentials for one registry, with where they came from (for messages).
#[derive(Clone)]
pub struct RegistryAuth {
    pub registry: String,
    pub credentials: Option<DockerCredentials>,
    pub source_description: String,
}

impl RegistryAuth {
    /// The registry refused these credentials (or their absence).
    fn refused(&self, message: String) -> PushError {
        PushError::Auth {
            registry: self.registry.clone(),
            message,
            source_description: self.source_description.clone(),
        }
    }
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RegistryAuth")
            .field("registry", &self.registry)
            .field("credentials", &self.credentials.as_ref().map(|_| "<redacted>"))
            .field("source", &self.source_description)
            .finish()
    }
}

/// Reads the credentials for `registry` from `source`.
pub fn resolve_credentials(
    registry: &str,
    source: &CredentialSource,
    config_dir: &std::path::Path,
) -> Result<RegistryAuth, PushError> {
    let source_description = describe_source(source);
    let error = |message: String| PushError::Credentials {
        source_description: source_description.clone(),
        message,
    };
    let credentials = match source {
        CredentialSource::None => None,
        CredentialSource::Environment {
            username_env,
            password_env,
        } => {
            let username =
                std::env::var(username_env).map_err(|_| error(format!("{username_env} is not set")))?;
            let password =
                std::env::var(password_env).map_err(|_| error(format!("{password_env} is not set")))?;
            Some(basic(registry, username, password))
        }
        CredentialSource::Files {
            username,
            password_file,
        } => {
            let path = if password_file.is_absolute() {
                password_file.clone()
            } else {
                config_dir.join(password_file)
            };
            let text =
                std::fs::read_to_string(&path).map_err(|e| error(format!("{}: {e}", path.display())))?;
            let password = text.lines().next().unwrap_or_default().to_string();
            Some(basic(registry, username.clone(), password))
        }
        CredentialSource::DockerConfig => from_docker_config(registry).map_err(error)?,
    };
    Ok(RegistryAuth {
        registry: registry.to_string(),
        credentials,
        source_description,
    })
}

fn describe_source(source: &CredentialSource) -> String {
    match source {
        CredentialSource::DockerConfig => {
            format!("Docker's config.json ({})", docker_config_path().display())
        }
        other => other.to_string(),
    }
}

fn basic(registry: &str, username: String, password: String) -> DockerCredentials {
    DockerCredentials {
        username: Some(username),
        password: Some(password),
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    }
}

fn docker_config_path() -> PathBuf {
    std::env::var_os("DOCKER_CONFIG")
        .map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".docker"),
            PathBuf::from,
        )
        .join("config.json")
}

/// Reads `auths`, `credHelpers` and `credsStore` as `docker login` leaves them.
fn from_docker_config(registry: &str) -> Result<Option<DockerCredentials>, String> {
    let path = docker_config_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{}: {error}", path.display())),
    };
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let helper = config
        .get("credHelpers")
        .and_then(|helpers| helpers.get(registry))
        .or_else(|| config.get("credsStore"))
        .and_then(serde_json::Value::as_str);
    if let Some(helper) = helper {
        return credential_helper(helper, registry).map(Some);
    }
    let Some(entry) = config.get("auths").and_then(|auths| {
        auths
            .get(registry)
            .or_else(|| auths.get(format!("http://{registry}")))
            .or_else(|| auths.get(format!("https://{registry}")))
    }) else {
        return Ok(None);
    };
    if let Some(auth) = entry.get("auth").and_then(serde_json::Value::as_str) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| format!("the `auth` entry for {registry} is not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| format!("the `auth` entry for {registry} is not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("the `auth` entry for {registry} is not user:password"))?;
        return Ok(Some(basic(registry, username.to_string(), password.to_string())));
    }
    if let Some(token) = entry.get("identitytoken").and_then(serde_json::Value::as_str) {
        return Ok(Some(DockerCredentials {
            identitytoken: Some(token.to_string()),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        }));
    }
    Ok(None)
}

/// Runs `docker-credential-<helper> get` with the registry on stdin.
fn credential_helper(helper: &str, registry: &str) -> Result<DockerCredentials, String> {
    use std::io::Write;
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run credential helper {program}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(registry.as_bytes())
        .map_err(|e| format!("{program}: {e}"))?;
    let output = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if !output.status.success() {
        // The helper's stderr names the problem; it never holds the secret.
        let message = String::from_utf8_lossy(&output.stdout).trim().to_string();
        return Err(format!(
            "credential helper {program} failed for {registry}: {message}"
        ));
    }
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|_| format!("credential helper {program} did not answer JSON"))?;
    let username = reply
        .get("Username")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let secret = reply
        .get("Secret")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    if username == "<token>" {
        return Ok(DockerCredentials {
            identitytoken: Some(secret),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        });
    }
    Ok(basic(registry, username, secret))
}

/// The manifest digest the registry holds for `reference`, or `None` when it has none.
pub async fn registry_digest(
    docker: &Docker,
    reference: &str,
    auth: &RegistryAuth,
) -> Result<Option<String>, PushError> {
    match docker
        .inspect_registry_image(reference, auth.credentials.clone())
        .await
    {
        Ok(inspect) => Ok(inspect.descriptor.digest),
        Err(bollard::errors::Error::DockerResponseServerError { status_code, message }) => {
            if status_code == 401 || EngineWords::of(&message) == EngineWords::Refused {
                Err(auth.refused(message))
            } else {
                // 404 and "manifest unknown": the tag does not exist yet.
                Ok(None)
            }
        }
        Err(error) => Err(PushError::Unreachable(error.to_string())),
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
) -> Result<String, PushError> {
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
        .map_err(|error| PushError::Unreachable(error.to_string()))?;
    let mut last = String::new();
    for attempt in 1..=PUSH_ATTEMPTS {
        match push_once(docker, repository, tag, auth).await {
            Ok(()) => return pushed_digest(docker, repository, &reference).await,
            Err(PushAttempt::Auth(message)) => {
                return Err(auth.refused(message));
            }
            Err(PushAttempt::Transient(message)) => {
                tracing::debug!(%reference, attempt, "push failed: {message}");
                last = message;
                if attempt < PUSH_ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt * attempt))).await;
                }
            }
        }
    }
    Err(if EngineWords::of(&last) == EngineWords::Unreachable {
        PushError::RegistryUnreachable {
            image: reference,
            attempts: PUSH_ATTEMPTS,
            message: last,
        }
    } else {
        PushError::Failed {
            image: reference,
            attempts: PUSH_ATTEMPTS,
            message: last,
        }
    })
}

enum PushAttempt {
    Auth(String),
    Transient(String),
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
    let message = match first_error(stream, |info| info.error_detail.and_then(|detail| detail.message)).await
    {
        None => return Ok(()),
        Some(EngineError::Said(message) | EngineError::Transport(message)) => message,
    };
    Err(match EngineWords::of(&message) {
        EngineWords::Refused => PushAttempt::Auth(message),
        EngineWords::Unreachable | EngineWords::Other => PushAttempt::Transient(message),
    })
}

/// An error from an Engine progress stream (push, pull).
enum EngineError {
    /// The Engine's (or the registry's) own words.
    Said(String),
    /// The connection to the Engine failed.
    Transport(String),
}

/// Drains `stream` and returns its first error, if any.
async fn first_error<T>(
    stream: impl futures_util::Stream<Item = Result<T, bollard::errors::Error>>,
    detail: impl Fn(T) -> Option<String>,
) -> Option<EngineError> {
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(message) = detail(info) {
                    return Some(EngineError::Said(message));
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Some(EngineError::Said(message));
            }
            Err(error) => return Some(EngineError::Transport(error.to_string())),
        }
    }
    None
}

/// Pulls `reference` (by digest) into the local Engine.
pub async fn pull(docker: &Docker, reference: &str, auth: &RegistryAuth) -> Result<(), PushError> {
    let options = bollard::query_parameters::CreateImageOptions {
        from_image: Some(reference.to_string()),
        ..Default::default()
    };
    let stream = docker.create_image(Some(options), None, auth.credentials.clone());
    let message = match first_error(stream, |info| info.error_detail.and_then(|detail| detail.message)).await
    {
        None => return Ok(()),
        Some(EngineError::Transport(message)) => return Err(PushError::Unreachable(message)),
        Some(EngineError::Said(message)) => message,
    };
    let image = reference.to_string();
    Err(match EngineWords::of(&message) {
        EngineWords::Refused => auth.refused(message),
        EngineWords::Unreachable => PushError::RegistryUnreachable {
            image,
            attempts: 1,
            message,
        },
        EngineWords::Other => PushError::Failed {
            image,
            attempts: 1,
            message,
        },
    })
}

/// The digest the registry holds, read back from the image's `RepoDigests`
/// (the push stream does not carry it reliably).
async fn pushed_digest(docker: &Docker, repository: &str, reference: &str) -> Result<String, PushError> {
    let inspect = docker
        .inspect_image(reference)
        .await
        .map_err(|error| PushError::Unreachable(error.to_string()))?;
    inspect
        .repo_digests
        .unwrap_or_default()
        .iter()
        .find_map(|entry| entry.strip_prefix(&format!("{repository}@")).map(str::to_string))
        .ok_or_else(|| PushError::NoDigest(reference.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_secret() {
        let auth = RegistryAuth {
            registry: "r".into(),
            credentials: Some(basic("r", "user".into(), "hunter2".into())),
            source_description: "test".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn auth_messages_are_recognised() {
        assert!(is_auth_message("unauthorized: authentication required"));
        assert!(is_auth_message("no basic auth credentials"));
        assert!(!is_auth_message("connection refused"));
    }
}
