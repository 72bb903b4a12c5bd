//! Smoke tests of the local stack itself: each part answers and behaves as the
//! real thing does.

use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptions, BuilderVersion, CreateImageOptions, PushImageOptions, RemoveImageOptions,
    TagImageOptions,
};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::support::{RolloutState, Stack, World, docker, http_get, kube_client, pod_problem, unique};

fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, content.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

async fn build(docker: &bollard::Docker, tag: &str, files: &[(&str, &str)]) {
    let options = BuildImageOptions {
        t: Some(tag.to_string()),
        dockerfile: "Dockerfile".into(),
        rm: true,
        version: BuilderVersion::BuilderBuildKit,
        session: Some(unique("smoke-session")),
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar_of(files).into())));
    while let Some(item) = stream.next().await {
        let info = item.expect("build stream");
        assert!(
            info.error_detail.is_none(),
            "build failed: {:?}",
            info.error_detail
        );
    }
}

async fn push(
    docker: &bollard::Docker,
    repository: &str,
    tag: &str,
    credentials: Option<DockerCredentials>,
) -> Result<(), String> {
    let mut stream = docker.push_image(
        repository,
        Some(PushImageOptions {
            tag: Some(tag.into()),
            ..Default::default()
        }),
        credentials,
    );
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    return Err(detail.message.unwrap_or_default());
                }
            }
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(())
}

async fn pull(
    docker: &bollard::Docker,
    image: &str,
    tag: &str,
    credentials: Option<DockerCredentials>,
) -> Result<(), String> {
    let options = CreateImageOptions {
        from_image: Some(image.into()),
        tag: Some(tag.into()),
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(options), None, credentials);
    while let Some(item) = stream.next().await {
        if let Err(error) = item {
            return Err(error.to_string());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_builds_an_image_from_the_seeded_base_that_serves_its_file() {
    let stack = Stack::from_env();
    let docker = docker().await;
    let tag = format!("berth-smoke/{}:1", unique("serve"));
    let dockerfile = format!("FROM {}\nCOPY index.html /www/index.html\n", stack.base_image);
    build(
        &docker,
        &tag,
        &[
            ("Dockerfile", &dockerfile),
            ("index.html", "<h1>hello from the stack</h1>\n"),
        ],
    )
    .await;

    let (name, port) = crate::support::serve(&docker, &tag).await;
    let response = http_get(port, "/index.html");
    crate::support::remove_container(&docker, &name).await;
    let (status, body) = response.expect("the container answers on loopback");
    assert_eq!(status, 200);
    assert!(body.contains("hello from the stack"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn both_registries_take_pushes_and_pulls_and_the_auth_one_refuses_anonymous_pushes() {
    let stack = Stack::from_env();
    let docker = docker().await;
    let name = unique("smoke");
    for registry in [&stack.registry, &stack.auth_registry] {
        let repository = format!("{registry}/smoke/{name}");
        docker
            .tag_image(
                &stack.base_image,
                Some(TagImageOptions {
                    repo: Some(repository.clone()),
                    tag: Some("1".into()),
                }),
            )
            .await
            .unwrap();
    }

    // Open registry: push, drop the local tag, pull it back.
    let open = format!("{}/smoke/{name}", stack.registry);
    push(&docker, &open, "1", None)
        .await
        .expect("push to the open registry");
    docker
        .remove_image(&format!("{open}:1"), None::<RemoveImageOptions>, None)
        .await
        .unwrap();
    pull(&docker, &open, "1", None)
        .await
        .expect("pull from the open registry");

    // Auth registry: anonymous push refused, with credentials accepted.
    let auth = format!("{}/smoke/{name}", stack.auth_registry);
    let refused = push(&docker, &auth, "1", None)
        .await
        .expect_err("anonymous push must be refused");
    assert!(
        refused.contains("no basic auth credentials") || refused.contains("unauthorized"),
        "{refused}"
    );
    let credentials = DockerCredentials {
        username: Some(stack.auth_username.clone()),
        password: Some(stack.auth_password.clone()),
        serveraddress: Some(stack.auth_registry.clone()),
        ..Default::default()
    };
    push(&docker, &auth, "1", Some(credentials.clone()))
        .await
        .expect("push with credentials");
    docker
        .remove_image(&format!("{auth}:1"), None::<RemoveImageOptions>, None)
        .await
        .unwrap();
    pull(&docker, &auth, "1", Some(credentials))
        .await
        .expect("pull with credentials");
}

/// An ssh command that trusts the stack's sshd only and offers the stack's key only.
fn stack_ssh_command(stack: &Stack) -> String {
    format!(
        "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
        stack.ssh_key.display(),
        stack.ssh_known_hosts.display()
    )
}

#[test]
fn git_server_answers_ls_remote_over_smart_http_ssh_and_git_daemon() {
    let stack = Stack::from_env();
    for base in [&stack.git_url, &stack.git_ssh_url, &stack.git_daemon_url] {
        let output = std::process::Command::new("git")
            .args(["ls-remote", &format!("{base}/website.git")])
            .env("GIT_SSH_COMMAND", stack_ssh_command(&stack))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{base}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let refs = String::from_utf8(output.stdout).unwrap();
        assert!(refs.contains("refs/heads/main"), "{base}: {refs}");
    }
    // The seeded history has several commits.
    let count = crate::support::git(
        &stack.git_root.join("website.git"),
        &["rev-list", "--count", "main"],
    );
    assert!(count.trim().parse::<u32>().unwrap() >= 3, "{count}");
}

#[test]
fn the_stack_ssh_key_runs_git_shell_only() {
    let stack = Stack::from_env();
    let ssh = stack_ssh_command(&stack);
    // The key runs git-shell: no shell, no other command. `ssh://user@host:port`
    // is the URL up to its path.
    let path_start = "ssh://".len() + stack.git_ssh_url["ssh://".len()..].find('/').unwrap();
    let destination = &stack.git_ssh_url[..path_start];
    let shell = std::process::Command::new("sh")
        .args(["-c", &format!("{ssh} {destination} id")])
        .output()
        .unwrap();
    assert!(!shell.status.success());
    assert!(
        String::from_utf8_lossy(&shell.stderr).contains("unrecognized command"),
        "{}",
        String::from_utf8_lossy(&shell.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_of_three_replicas_rolls_out_by_kubectls_rule() {
    let world = World::new("smoke-rollout").await;
    world
        .kwok_deployment("web", "127.0.0.1:5000/smoke/web:good")
        .replicas(3)
        .create()
        .await;
    let state = world
        .wait_for_rollout("web", Duration::from_secs(60), |s| {
            !matches!(s, RolloutState::Progressing(_))
        })
        .await;
    assert_eq!(state, RolloutState::Complete);
    let deployment = world.deployment("web").await;
    assert_eq!(deployment.status.unwrap().available_replicas, Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_image_sits_in_image_pull_back_off_and_exceeds_the_progress_deadline() {
    let world = World::new("smoke-broken").await;
    world
        .kwok_deployment("web", "127.0.0.1:5000/smoke/web:broken-1")
        .replicas(2)
        .progress_deadline(15)
        .create()
        .await;
    let state = world
        .wait_for_rollout("web", Duration::from_secs(90), |s| {
            !matches!(s, RolloutState::Progressing(_))
        })
        .await;
    assert!(matches!(state, RolloutState::Failed(_)), "{state:?}");
    let pods: Api<Pod> = Api::namespaced(kube_client().await, &world.namespace);
    let pods = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert!(!pods.items.is_empty());
    for pod in &pods.items {
        let problem = pod_problem(pod, "web").expect("the pod has a problem");
        assert_eq!(problem.reason, "ImagePullBackOff");
        assert!(problem.message.contains("broken-1"), "{}", problem.message);
    }
}
