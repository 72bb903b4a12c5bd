//! Connections to the parts a run talks to: the Docker Engine, the cluster and
//! the registry's credentials. A part that cannot be reached is a
//! [`SetupError::Engine`] or [`SetupError::Cluster`] (exit 3) before any site starts.

use std::path::Path;
use std::time::Duration;

use bollard::Docker;

use crate::config::Config;
use crate::deploy::Deployer;
use crate::pipeline::SetupError;
use crate::registry::{self, RegistryAuth};

/// Connects to the cluster of the pipeline's `[kubernetes]` section.
pub async fn connect_cluster(config: &Config) -> Result<Deployer, SetupError> {
    Deployer::connect(
        config.kubernetes.context.as_deref(),
        config.kubernetes.kubeconfig.as_deref(),
        config.kubernetes.rollout_timeout,
    )
    .await
    .map_err(SetupError::Cluster)
}

/// The registry's credentials from their source, read off the runtime (a
/// credential helper is a process).
pub async fn registry_auth(config: &Config) -> anyhow::Result<RegistryAuth> {
    let registry = config.registry.address.clone();
    let source = config.registry.credentials.clone();
    let base = config.path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(
        tokio::task::spawn_blocking(move || registry::resolve_credentials(&registry, &source, &base))
            .await??,
    )
}

/// Connects to the Engine from `DOCKER_HOST` (or the default socket) and pings it.
pub async fn connect_docker() -> Result<Docker, SetupError> {
    // DOCKER_HOST may be unix://, tcp:// (with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH
    // for TLS) or https://. Builds of large sites can take long: one hour per request.
    let host = || std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let docker = Docker::connect_with_defaults()
        .map_err(|source| SetupError::Engine { host: host(), source })?
        .with_timeout(Duration::from_secs(3600));
    docker
        .ping()
        .await
        .map_err(|source| SetupError::Engine { host: host(), source })?;
    Ok(docker)
}
