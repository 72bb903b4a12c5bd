//! Registry credentials, from the source the pipeline file names: Docker's
//! `config.json` (`auths`, `credHelpers`, `credsStore`), environment
//! variables, or files. The secret stays in memory; `Debug` hides it.

use std::path::PathBuf;

use base64::Engine;
use bollard::auth::DockerCredentials;

use crate::config::CredentialSource;
use crate::registry::RegistryError;

/// Credentials for one registry, with where they came from (for messages).
#[derive(Clone)]
pub struct RegistryAuth {
    pub registry: String,
    pub credentials: Option<DockerCredentials>,
    pub source_description: String,
}

impl RegistryAuth {
    /// The registry refused these credentials (or their absence).
    pub(crate) fn refused(&self, message: String) -> RegistryError {
        RegistryError::Auth {
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
) -> Result<RegistryAuth, RegistryError> {
    let source_description = describe_source(source);
    let error = |message: String| RegistryError::Credentials {
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
        // Helpers write their error to stdout, as docker-credential-helpers do;
        // it never holds the secret.
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
}
