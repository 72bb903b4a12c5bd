//! A local image run as a container whose port is published on loopback
//! only (`berth preview`), and removed again.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions, StartContainerOptions};

/// The port an image says it serves (its first `EXPOSE`, say `8080/tcp`),
/// else `8080/tcp`.
pub async fn served_port(docker: &Docker, image: &str) -> Result<String, bollard::errors::Error> {
    let inspect = docker.inspect_image(image).await?;
    Ok(inspect
        .config
        .and_then(|c| c.exposed_ports)
        .and_then(|ports| ports.into_iter().next())
        .unwrap_or_else(|| "8080/tcp".to_string()))
}

/// Creates (does not start) a container of `image` named `name`, its
/// `container_port` (say `8080/tcp`) published on 127.0.0.1:`host_port` only.
pub async fn create_published(
    docker: &Docker,
    image: &str,
    name: &str,
    container_port: &str,
    host_port: u16,
    labels: &[(&str, &str)],
) -> Result<(), bollard::errors::Error> {
    let binding = PortBinding {
        host_ip: Some("127.0.0.1".into()),
        host_port: Some(host_port.to_string()),
    };
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(container_port.to_string(), Some(vec![binding]))])),
            auto_remove: Some(false),
            ..Default::default()
        }),
        labels: Some(
            labels
                .iter()
                .map(|(key, value)| ((*key).to_string(), (*value).to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            }),
            body,
        )
        .await?;
    Ok(())
}

/// Starts the container `name`.
pub async fn start(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    docker.start_container(name, None::<StartContainerOptions>).await
}

/// Removes the container `name`, running or not.
pub async fn remove(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
}
