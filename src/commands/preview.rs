//! `berth preview`: a local build ([`super::build`]) run on a loopback port;
//! prints the URL, and removes the container on Ctrl-C.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions, StartContainerOptions};

use std::time::SystemTime;

use crate::commands::build::Built;
use crate::commands::json_document;
use crate::pipeline;
use crate::ui::Printer;

/// Runs `built` on a loopback port, prints the URL (with `json`, a document
/// with the site, tag and URL), waits for Ctrl-C, removes the container.
pub async fn preview(
    built: &Built,
    port: u16,
    json: bool,
    printer: &Printer,
    started: SystemTime,
) -> anyhow::Result<()> {
    let docker = pipeline::connect_docker().await?;
    let inspect = docker.inspect_image(&built.tag).await?;
    let container_port = inspect
        .config
        .and_then(|c| c.exposed_ports)
        .and_then(|ports| ports.into_iter().next())
        .map_or_else(|| "8080/tcp".to_string(), |port| port.clone());
    let port = if port == 0 {
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    } else {
        port
    };
    let name = format!("berth-preview-{}-{port}", std::process::id());
    let labels = [("dev.berth.preview", built.tag.as_str())];
    create_published(&docker, &built.image_id, &name, &container_port, port, &labels).await?;
    let result = async {
        docker
            .start_container(&name, None::<StartContainerOptions>)
            .await?;
        let url = format!("http://127.0.0.1:{port}/");
        if json {
            let body = serde_json::json!({"site": built.site, "tag": built.tag, "url": url});
            printer.result(&json_document("berth.preview/v1", "preview", started, &body)?);
        } else {
            printer.result(&url);
        }
        printer.note(&format!(
            "serving {} (container port {container_port}); Ctrl-C stops it",
            built.tag
        ));
        wait_for_stop().await;
        anyhow::Ok(())
    }
    .await;
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await?;
    printer.note("preview stopped; container removed");
    result
}

/// Creates (does not start) a container of `image` named `name`, its
/// `container_port` (say `8080/tcp`) published on 127.0.0.1:`host_port` only.
pub async fn create_published(
    docker: &bollard::Docker,
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

async fn wait_for_stop() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
    }
}
