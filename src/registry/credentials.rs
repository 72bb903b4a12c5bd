//! Registry credentials, from the source the pipeline file names: Docker's
//! `config.json` (`auths`, `credHelpers`, `credsStore`), environment
//! variables, or files. The secret stays in memory; `Debug` hides it.
//!
//! `config.json` is read by docker's rules (docker/cli's `configfile` and
//! `credentials` packages): a key names a registry by its host and port, its
//! scheme and path dropped ([`config_key`]), Docker Hub by
//! `https://index.docker.io/v1/`; a registry's `credHelpers` entry wins over
//! `credsStore`, which wins over `auths`; a helper that answers "credentials
//! not found in native keychain" means no credentials (anonymous), anything
//! else it says is an error in its words. A build gets every registry's
//! credentials `config.json` knows ([`build_credentials`], docker's
//! `GetAllCredentials`), for the base images its Dockerfile pulls.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use base64::Engine;
use bollard::auth::DockerCredentials;

use crate::config::CredentialSource;
use crate::registry::RegistryError;

/// Why credentials could not be read from their source: a sentence that
/// never holds a secret (serde's and the decoders' own words may quote one,
/// so they are left out).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// An environment variable the source names is not set.
    #[error("{variable} is not set")]
    NotSet { variable: String },
    /// A file (the password file, Docker's `config.json`) cannot be read.
    #[error("{}: {error}", path.display())]
    File { path: PathBuf, error: std::io::Error },
    /// Docker's `config.json` is not as docker writes it.
    #[error("{}: {}", path.display(), json_complaint(error))]
    ConfigJson { path: PathBuf, error: serde_json::Error },
    /// An `auths` entry's `auth` is not base64.
    #[error("the `auth` entry for {key} is not base64")]
    AuthNotBase64 { key: String },
    /// An `auths` entry's `auth` is not UTF-8 once decoded.
    #[error("the `auth` entry for {key} is not UTF-8")]
    AuthNotUtf8 { key: String },
    /// An `auths` entry's `auth` is not `user:password` once decoded.
    #[error("the `auth` entry for {key} is not user:password")]
    AuthNotPair { key: String },
    /// A credential helper failed; `words` are what it wrote (helpers write
    /// their error to stdout, and it never holds the secret).
    #[error("credential helper {program} failed for {key}: {words}")]
    Helper {
        program: String,
        key: String,
        words: String,
    },
    /// A credential helper answered `get` with something else than JSON.
    #[error("credential helper {program} did not answer JSON for {key}")]
    HelperAnswer { program: String, key: String },
    /// A credential helper failed to list its registries, in its words.
    #[error("credential helper {program} cannot list its registries: {words}")]
    HelperList { program: String, words: String },
    /// A credential helper answered `list` with something else than JSON.
    #[error("credential helper {program} did not answer `list` with JSON")]
    HelperListAnswer { program: String },
    /// A credential helper could not be started.
    #[error("cannot run credential helper {program}: {error}")]
    HelperStart { program: String, error: std::io::Error },
    /// Talking to a running credential helper failed.
    #[error("{program}: {error}")]
    HelperPipe { program: String, error: std::io::Error },
}

/// Credentials for one registry, with where they came from (for messages).
#[derive(Clone)]
pub struct RegistryAuth {
    pub registry: String,
    pub credentials: Option<DockerCredentials>,
    pub source_description: String,
}

impl RegistryAuth {
    /// The registry refused these credentials (or their absence), as the
    /// Engine says in `cause`.
    pub(crate) fn refused(&self, cause: crate::registry::EngineFailure) -> RegistryError {
        RegistryError::Auth {
            registry: self.registry.clone(),
            cause,
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
    let error = |problem: CredentialError| RegistryError::Credentials {
        source_description: source_description.clone(),
        problem,
    };
    let variable = |name: &str| {
        std::env::var(name).map_err(|_| {
            error(CredentialError::NotSet {
                variable: name.to_string(),
            })
        })
    };
    let credentials = match source {
        CredentialSource::None => None,
        CredentialSource::Environment {
            username_env,
            password_env,
        } => {
            let username = variable(username_env)?;
            let password = variable(password_env)?;
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
            let text = std::fs::read_to_string(&path).map_err(|io_error| {
                error(CredentialError::File {
                    path,
                    error: io_error,
                })
            })?;
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

/// Docker Hub's key in `config.json`, and the address its credential
/// helpers are asked for (docker's `registry.IndexServer`).
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The name under which docker keeps a registry's credentials in
/// `config.json`, and asks its helpers for them: the host and port of an
/// address or key, its scheme, user and path dropped (docker's
/// `ConvertToHostname`: `http://127.0.0.1:5001/v1/` is `127.0.0.1:5001`);
/// Docker Hub (`docker.io`, `index.docker.io`, `registry-1.docker.io`) is
/// [`DOCKER_HUB_KEY`].
pub fn config_key(address: &str) -> String {
    let address = address.trim();
    let host = match address.split_once("://") {
        Some((_, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            authority.rsplit_once('@').map_or(authority, |(_, host)| host)
        }
        None => address.split('/').next().unwrap_or_default(),
    };
    let hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    if hub.iter().any(|name| host.eq_ignore_ascii_case(name)) {
        DOCKER_HUB_KEY.to_string()
    } else {
        host.to_string()
    }
}

/// The name BuildKit asks a build's session for a registry's credentials
/// by, for a [`config_key`]: its host, Docker Hub's `registry-1.docker.io`
/// (bollard's session looks Docker Hub up under that name).
fn build_key(key: &str) -> String {
    if key == DOCKER_HUB_KEY {
        "registry-1.docker.io".to_string()
    } else {
        key.to_string()
    }
}

/// The part of Docker's `config.json` that holds credentials. Not `Debug`:
/// `auths` holds secrets.
#[derive(Default, serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

/// One entry of `auths`: `auth` (base64 of `user:password`), or the user
/// name and password apart, and an identity token (an OAuth2 refresh token).
#[derive(Default, serde::Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Where docker reads one registry's credentials from.
#[derive(Debug, PartialEq, Eq)]
enum Store<'a> {
    /// The `auths` entries of `config.json`.
    File,
    /// The credential helper `docker-credential-<name>`.
    Helper(&'a str),
}

impl DockerConfig {
    /// Where the credentials of the registry docker calls `key` are: its
    /// `credHelpers` entry, else `credsStore`, else `auths` (an empty helper
    /// name means `auths`, as in docker).
    fn store_for(&self, key: &str) -> Store<'_> {
        let helper = self
            .cred_helpers
            .iter()
            .find(|(registry, _)| config_key(registry) == key)
            .map(|(_, helper)| helper.as_str())
            .or(self.creds_store.as_deref());
        match helper {
            Some(helper) if !helper.is_empty() => Store::Helper(helper),
            _ => Store::File,
        }
    }

    /// The `auths` entry for `key`: the one under that very key, else the
    /// first whose key names the same registry (`https://host/v1/`).
    fn entry_for(&self, key: &str) -> Option<&AuthEntry> {
        self.auths.get(key).or_else(|| {
            self.auths
                .iter()
                .find(|(entry_key, _)| config_key(entry_key) == key)
                .map(|(_, entry)| entry)
        })
    }
}

/// The credentials in an `auths` entry; `None` for an empty one (docker
/// leaves `{}` entries beside a `credsStore`).
fn entry_credentials(key: &str, entry: &AuthEntry) -> Result<Option<DockerCredentials>, CredentialError> {
    let (username, password) = match entry.auth.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        Some(auth) => {
            // The decoders' errors quote what they read: the secret.
            let entry_key = || key.to_string();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .map_err(|_| CredentialError::AuthNotBase64 { key: entry_key() })?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| CredentialError::AuthNotUtf8 { key: entry_key() })?;
            let (username, password) = decoded
                .split_once(':')
                .filter(|(username, _)| !username.is_empty())
                .ok_or_else(|| CredentialError::AuthNotPair { key: entry_key() })?;
            (
                Some(username.to_string()),
                Some(password.trim_end_matches('\0').to_string()),
            )
        }
        None => (
            entry.username.clone().filter(|u| !u.is_empty()),
            entry.password.clone(),
        ),
    };
    let identitytoken = entry.identitytoken.clone().filter(|token| !token.is_empty());
    if username.is_none() && identitytoken.is_none() {
        return Ok(None);
    }
    Ok(Some(DockerCredentials {
        username,
        password,
        identitytoken,
        serveraddress: Some(key.to_string()),
        ..Default::default()
    }))
}

/// Reads Docker's `config.json`; an absent file is an empty one.
fn read_docker_config() -> Result<DockerConfig, CredentialError> {
    let path = docker_config_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(DockerConfig::default()),
        Err(error) => return Err(CredentialError::File { path, error }),
    };
    serde_json::from_str(&text).map_err(|error| CredentialError::ConfigJson { path, error })
}

/// What is wrong with a `config.json`, where, without its text: serde's own
/// words for a value of the wrong type quote the value, which may be a secret.
fn json_complaint(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Data => "a value of the wrong type (not as docker writes config.json)",
        serde_json::error::Category::Io
        | serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof => "not valid JSON",
    };
    format!("{what} at line {}, column {}", error.line(), error.column())
}

/// The credentials for `registry` as docker finds them (`GetAuthConfig`):
/// its helper's, or its `auths` entry; none when the helper has none.
fn from_docker_config(registry: &str) -> Result<Option<DockerCredentials>, CredentialError> {
    let config = read_docker_config()?;
    credentials_in(&config, &config_key(registry))
}

fn credentials_in(config: &DockerConfig, key: &str) -> Result<Option<DockerCredentials>, CredentialError> {
    match config.store_for(key) {
        Store::Helper(helper) => helper_get(helper, key),
        Store::File => config
            .entry_for(key)
            .map_or(Ok(None), |entry| entry_credentials(key, entry)),
    }
}

/// What docker-credential-helpers answer when a store has no entry: docker
/// then goes on without credentials.
const NOT_FOUND: &str = "credentials not found in native keychain";

/// Runs `docker-credential-<helper> get` with the registry on stdin.
fn helper_get(helper: &str, key: &str) -> Result<Option<DockerCredentials>, CredentialError> {
    let (success, stdout) = run_helper(helper, "get", key)?;
    helper_answer(helper, key, success, &stdout)
}

/// A helper's answer to `get`: its credentials; none when it says it has
/// none ([`NOT_FOUND`], or an empty user name and secret); an error in the
/// helper's words otherwise (helpers write their error to stdout, and it
/// never holds the secret).
fn helper_answer(
    helper: &str,
    key: &str,
    success: bool,
    stdout: &[u8],
) -> Result<Option<DockerCredentials>, CredentialError> {
    let program = format!("docker-credential-{helper}");
    if !success {
        let words = String::from_utf8_lossy(stdout).trim().to_string();
        if words == NOT_FOUND {
            return Ok(None);
        }
        return Err(CredentialError::Helper {
            program,
            key: key.to_string(),
            words,
        });
    }
    // serde's error would quote the answer, which holds the secret.
    let reply: HelperReply = serde_json::from_slice(stdout).map_err(|_| CredentialError::HelperAnswer {
        program,
        key: key.to_string(),
    })?;
    if reply.secret.is_empty() && reply.username.is_empty() {
        return Ok(None);
    }
    if reply.username == "<token>" {
        return Ok(Some(DockerCredentials {
            identitytoken: Some(reply.secret),
            serveraddress: Some(key.to_string()),
            ..Default::default()
        }));
    }
    Ok(Some(basic(key, reply.username, reply.secret)))
}

/// A helper's answer to `get` (its `ServerURL` is not read). Not `Debug`:
/// `Secret` is one.
#[derive(serde::Deserialize)]
struct HelperReply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The registries a helper holds credentials for (`list`: a JSON object of
/// server URL to user name).
fn helper_list(helper: &str) -> Result<Vec<String>, CredentialError> {
    let program = format!("docker-credential-{helper}");
    let (success, stdout) = run_helper(helper, "list", "")?;
    if !success {
        let words = String::from_utf8_lossy(&stdout).trim().to_string();
        return Err(CredentialError::HelperList { program, words });
    }
    let listed: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&stdout).map_err(|_| CredentialError::HelperListAnswer { program })?;
    Ok(listed.into_keys().collect())
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin: whether
/// it succeeded, and its stdout.
fn run_helper(helper: &str, action: &str, input: &str) -> Result<(bool, Vec<u8>), CredentialError> {
    use std::io::Write;
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg(action)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| CredentialError::HelperStart {
            program: program.clone(),
            error,
        })?;
    let pipe = |error| CredentialError::HelperPipe {
        program: program.clone(),
        error,
    };
    let written = child.stdin.take().expect("piped").write_all(input.as_bytes());
    // A helper that answers without reading its input (one that only says
    // it failed) may have closed the pipe first: its answer and exit status
    // still say what happened, as they do to docker (Go's os/exec ignores
    // that EPIPE).
    if let Err(error) = written
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(pipe(error));
    }
    let output = child.wait_with_output().map_err(pipe)?;
    Ok((output.status.success(), output.stdout))
}

/// What a build gets: every registry's credentials, by the name BuildKit
/// asks for them, and what could not be read (per registry, never a
/// secret): the build then pulls from there anonymously.
#[derive(Default)]
pub struct BuildCredentials {
    pub credentials: HashMap<String, DockerCredentials>,
    pub unreadable: Vec<CredentialError>,
}

impl std::fmt::Debug for BuildCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BuildCredentials")
            .field("registries", &self.credentials.keys().collect::<Vec<_>>())
            .field("unreadable", &self.unreadable)
            .finish()
    }
}

/// [`build_credentials`] off the runtime (a credential helper is a process),
/// each registry whose credentials cannot be read a warning on `site`'s
/// build line (the build then pulls from there without them).
pub async fn credentials_for_build(
    site: &str,
    auth: &RegistryAuth,
    source: &CredentialSource,
    printer: &crate::ui::Printer,
) -> Result<HashMap<String, DockerCredentials>, tokio::task::JoinError> {
    let (auth, source) = (auth.clone(), source.clone());
    let build = tokio::task::spawn_blocking(move || build_credentials(&auth, &source)).await?;
    for problem in &build.unreadable {
        printer.stage(
            site,
            "build",
            crate::ui::Status::Warning,
            &format!("{problem}; the build pulls from there without credentials"),
        );
    }
    Ok(build.credentials)
}

/// The credentials a build passes to BuildKit, for the base images its
/// Dockerfile pulls: with Docker's `config.json` as the source, every
/// registry it knows (docker's `GetAllCredentials`: the `auths` entries, or
/// the `credsStore`'s list, then each `credHelpers` registry's); and, from
/// whatever source, `auth`'s, berth's own registry's.
pub fn build_credentials(auth: &RegistryAuth, source: &CredentialSource) -> BuildCredentials {
    let mut build = BuildCredentials::default();
    if matches!(source, CredentialSource::DockerConfig) {
        match read_docker_config() {
            Ok(config) => all_credentials(&config, &mut build),
            Err(problem) => build.unreadable.push(problem),
        }
    }
    if let Some(credentials) = &auth.credentials {
        build
            .credentials
            .insert(build_key(&config_key(&auth.registry)), credentials.clone());
    }
    build
}

/// Every registry's credentials in `config`, as docker's `GetAllCredentials`
/// finds them; a registry whose credentials cannot be read is said, and left out.
fn all_credentials(config: &DockerConfig, build: &mut BuildCredentials) {
    let mut keys: Vec<String> = match config.creds_store.as_deref().filter(|s| !s.is_empty()) {
        Some(helper) => match helper_list(helper) {
            Ok(keys) => keys,
            Err(problem) => {
                build.unreadable.push(problem);
                Vec::new()
            }
        },
        None => config.auths.keys().cloned().collect(),
    };
    keys.extend(config.cred_helpers.keys().cloned());
    let mut seen = std::collections::BTreeSet::new();
    for key in keys.iter().map(|key| config_key(key)) {
        if !seen.insert(key.clone()) {
            continue;
        }
        match credentials_in(config, &key) {
            Ok(Some(credentials)) => {
                build.credentials.insert(build_key(&key), credentials);
            }
            Ok(None) => {}
            Err(problem) => build.unreadable.push(problem),
        }
    }
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

    fn config(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_key_is_the_registrys_host_and_port_as_docker_converts_it() {
        for (key, expected) in [
            ("127.0.0.1:5001", "127.0.0.1:5001"),
            ("http://127.0.0.1:5001/v1/", "127.0.0.1:5001"),
            ("https://127.0.0.1:5001", "127.0.0.1:5001"),
            ("https://registry.example/v2/", "registry.example"),
            ("registry.example:5000/v1/", "registry.example:5000"),
            ("https://user@ghcr.io/", "ghcr.io"),
            ("[::1]:5000", "[::1]:5000"),
            ("https://[::1]:5000/v1/", "[::1]:5000"),
        ] {
            assert_eq!(config_key(key), expected, "{key}");
        }
        for hub in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
            "https://index.docker.io/v1",
            "https://docker.io",
            "Docker.IO",
        ] {
            assert_eq!(config_key(hub), DOCKER_HUB_KEY, "{hub}");
        }
        assert_eq!(config_key("docker.io.example"), "docker.io.example");
        assert_eq!(build_key(DOCKER_HUB_KEY), "registry-1.docker.io");
        assert_eq!(build_key("127.0.0.1:5001"), "127.0.0.1:5001");
    }

    #[test]
    fn cred_helpers_win_over_creds_store_over_auths() {
        let both = config(
            r#"{"credsStore":"desktop","credHelpers":{"https://ghcr.io":"gh","registry.example":""},"auths":{"ghcr.io":{}}}"#,
        );
        assert_eq!(both.store_for("ghcr.io"), Store::Helper("gh"));
        assert_eq!(both.store_for("127.0.0.1:5001"), Store::Helper("desktop"));
        // An empty helper name means `auths`, even beside a credsStore.
        assert_eq!(both.store_for("registry.example"), Store::File);
        let file = config(r#"{"credsStore":"","auths":{}}"#);
        assert_eq!(file.store_for("ghcr.io"), Store::File);
        assert_eq!(config("{}").store_for(DOCKER_HUB_KEY), Store::File);
    }

    #[test]
    fn auths_entries_are_found_under_a_scheme_a_path_or_docker_hubs_key() {
        let auth = base64::engine::general_purpose::STANDARD.encode("user:pa:ss");
        let file = config(&format!(
            r#"{{"auths":{{
                "http://127.0.0.1:5001/v1/":{{"auth":"{auth}"}},
                "https://index.docker.io/v1/":{{"auth":"{auth}"}},
                "ghcr.io":{{"identitytoken":"refresh"}},
                "quay.io":{{"username":"robot","password":"pw"}},
                "empty.example":{{}}
            }}}}"#
        ));
        let found = credentials_in(&file, "127.0.0.1:5001").unwrap().unwrap();
        assert_eq!(found.username.as_deref(), Some("user"));
        assert_eq!(found.password.as_deref(), Some("pa:ss"));
        assert!(credentials_in(&file, &config_key("docker.io")).unwrap().is_some());
        let token = credentials_in(&file, "ghcr.io").unwrap().unwrap();
        assert_eq!(token.identitytoken.as_deref(), Some("refresh"));
        assert_eq!(token.username, None);
        let fields = credentials_in(&file, "quay.io").unwrap().unwrap();
        assert_eq!(
            (fields.username.as_deref(), fields.password.as_deref()),
            (Some("robot"), Some("pw"))
        );
        assert!(credentials_in(&file, "empty.example").unwrap().is_none());
        assert!(credentials_in(&file, "127.0.0.1:5000").unwrap().is_none());
    }

    #[test]
    fn an_exact_key_wins_over_one_that_names_the_same_registry() {
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let file = config(&format!(
            r#"{{"auths":{{"http://h:1/v1/":{{"auth":"{}"}},"h:1":{{"auth":"{}"}}}}}}"#,
            encode("old:1"),
            encode("new:2")
        ));
        let found = credentials_in(&file, "h:1").unwrap().unwrap();
        assert_eq!(found.username.as_deref(), Some("new"));
    }

    #[test]
    fn a_broken_auth_entry_says_which_registry_and_never_the_secret() {
        let not_pair = base64::engine::general_purpose::STANDARD.encode("hunter2");
        let file = config(&format!(r#"{{"auths":{{"h:1":{{"auth":"{not_pair}"}}}}}}"#));
        let error = credentials_in(&file, "h:1").unwrap_err().to_string();
        assert!(
            error.contains("h:1") && error.contains("user:password"),
            "{error}"
        );
        assert!(
            !error.contains("hunter2") && !error.contains(&not_pair),
            "{error}"
        );
        let file = config(r#"{"auths":{"h:1":{"auth":"%%%"}}}"#);
        assert!(matches!(
            credentials_in(&file, "h:1"),
            Err(CredentialError::AuthNotBase64 { .. })
        ));
    }

    #[test]
    fn a_helper_without_an_entry_means_anonymous_and_its_other_errors_are_its_words() {
        let not_found = b"credentials not found in native keychain\n";
        assert!(helper_answer("s", "h:1", false, not_found).unwrap().is_none());
        let error = helper_answer("s", "h:1", false, b"the keychain is locked").unwrap_err();
        assert_eq!(
            error.to_string(),
            "credential helper docker-credential-s failed for h:1: the keychain is locked"
        );
        let found = helper_answer(
            "s",
            "h:1",
            true,
            br#"{"ServerURL":"h:1","Username":"u","Secret":"hunter2"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (found.username.as_deref(), found.password.as_deref()),
            (Some("u"), Some("hunter2"))
        );
        let token = helper_answer("s", "h:1", true, br#"{"Username":"<token>","Secret":"t"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            (token.username, token.identitytoken.as_deref()),
            (None, Some("t"))
        );
        assert!(
            helper_answer("s", "h:1", true, br#"{"Username":"","Secret":""}"#)
                .unwrap()
                .is_none()
        );
        let error = helper_answer("s", "h:1", true, b"Secret: hunter2").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn build_credentials_hold_berths_own_registry_by_the_name_buildkit_asks() {
        let auth = RegistryAuth {
            registry: "docker.io".into(),
            credentials: Some(basic("docker.io", "user".into(), "hunter2".into())),
            source_description: "test".into(),
        };
        let build = build_credentials(&auth, &CredentialSource::None);
        assert_eq!(
            build.credentials.keys().collect::<Vec<_>>(),
            ["registry-1.docker.io"]
        );
        assert!(!format!("{build:?}").contains("hunter2"));
    }

    #[test]
    fn a_config_json_of_the_wrong_shape_is_said_without_its_values() {
        let error = serde_json::from_str::<DockerConfig>(r#"{"auths":{"h:1":"aHVudGVyMg=="}}"#)
            .err()
            .unwrap();
        let complaint = json_complaint(&error);
        assert!(complaint.starts_with("a value of the wrong type"), "{complaint}");
        assert!(!complaint.contains("aHVudGVyMg"), "{complaint}");
        let error = serde_json::from_str::<DockerConfig>("{\"auths\":").err().unwrap();
        assert_eq!(json_complaint(&error), "not valid JSON at line 1, column 9");
    }
}
