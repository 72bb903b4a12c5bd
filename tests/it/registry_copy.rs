//! The copy of an image by digest between the stack's two real registries
//! (`registry::copy`): the target then answers the tag with the source's very
//! manifest bytes; what it holds already is not sent again; wrong or missing
//! credentials, and a digest the source does not hold, are errors a caller can
//! tell apart.

use std::io::{Read, Write};

use base64::Engine as _;
use sha2::Digest as _;

use crate::support::{
    ApiError, ContextBody, Copied, CopyError, CredentialSource, Endpoint, ImageBuild, Printer, RegistryAuth,
    Stack, Verbosity, build_image, copy_by_digest, docker, push_image, resolve_credentials, unique,
};

/// An answer of a registry: status, headers (names lowercase), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// One HTTP/1.0 request to a loopback registry, written by hand (not through
/// berth's client, which is what is under test).
fn registry_request(
    address: &str,
    method: &str,
    path: &str,
    basic: Option<(&str, &str)>,
    content: Option<(&str, &[u8])>,
) -> Answer {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {address}\r\nAccept: {MANIFEST_TYPES}\r\n");
    if let Some((username, password)) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    let body = content.map_or(&[][..], |(_, body)| body);
    if let Some((content_type, body)) = content {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: response[split + 4..].to_vec(),
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Credentials for the auth registry from files, as a pipeline file names them;
/// `password` is written to a file in `dir`.
fn auth_registry_credentials(stack: &Stack, dir: &std::path::Path, password: &str) -> RegistryAuth {
    let password_file = dir.join(unique("password"));
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let source = CredentialSource::Files {
        username: stack.auth_username.clone(),
        password_file,
    };
    resolve_credentials(&stack.auth_registry, &source, dir).unwrap()
}

fn anonymous(registry: &str) -> RegistryAuth {
    resolve_credentials(registry, &CredentialSource::None, std::path::Path::new("/")).unwrap()
}

/// Builds an image of its own (a layer of 512 KiB no other image has) on the
/// stack's base, pushes it to the open registry as `<repository>:1`, and
/// returns its manifest digest.
async fn push_unique_image(stack: &Stack, repository: &str) -> String {
    let docker = docker().await;
    let dockerfile = format!("FROM {}\nCOPY noise.bin /noise.bin\n", stack.base_image);
    let mut state = u64::from(std::process::id()) | 1;
    let noise: Vec<u8> = (0..512 * 1024)
        .map(|_| {
            // xorshift: bytes gzip cannot shrink, so the layer is as large as its file.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    let mut tar = tar::Builder::new(Vec::new());
    for (name, content) in [("Dockerfile", dockerfile.as_bytes()), ("noise.bin", &noise[..])] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, content).unwrap();
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender
        .send(Ok(bytes::Bytes::from(tar.into_inner().unwrap())))
        .await
        .unwrap();
    drop(sender);
    let tag = format!("{repository}:build");
    let request = ImageBuild {
        context: ContextBody::Stream(receiver),
        dockerfile: "Dockerfile",
        tag: &tag,
        build_args: &std::collections::BTreeMap::new(),
        labels: &std::collections::BTreeMap::new(),
        credentials: std::collections::HashMap::new(),
    };
    let image = build_image(&docker, request, &Printer::new(Verbosity::Quiet, false, false))
        .await
        .expect("the image builds");
    push_image(&docker, &image, repository, "1", &anonymous(&stack.registry))
        .await
        .expect("the push to the open registry")
}

/// The digest of the stack's seeded busybox base in the open registry.
fn busybox_digest(stack: &Stack) -> String {
    let answer = registry_request(
        &stack.registry,
        "HEAD",
        "/v2/berth/base/manifests/busybox",
        None,
        None,
    );
    assert_eq!(answer.status, 200);
    answer.header("docker-content-digest").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_copied_by_digest_is_byte_identical_and_a_second_copy_sends_no_blob() {
    let stack = Stack::from_env();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("copy");
    let repository = format!("copy/{name}");
    let digest = push_unique_image(&stack, &format!("{}/{repository}", stack.registry)).await;
    let source_auth = anonymous(&stack.registry);
    let target_auth = auth_registry_credentials(&stack, dir.path(), &stack.auth_password);
    let from = Endpoint {
        auth: &source_auth,
        repository: &repository,
    };
    let to = Endpoint {
        auth: &target_auth,
        repository: &format!("promoted/{name}"),
    };

    let copied = copy_by_digest(from, &digest, to, "production")
        .await
        .expect("the copy");
    assert_eq!(copied.digest, digest);
    // Config, the base's layer(s) and the layer of noise: a new repository holds none of them.
    assert!(copied.blobs_copied >= 3, "{copied:?}");
    assert_eq!((copied.blobs_present, copied.blobs_mounted), (0, 0), "{copied:?}");
    assert!(copied.bytes_copied > 512 * 1024, "{copied:?}");
    assert_eq!(copied.manifests, 1);

    let source = registry_request(
        &stack.registry,
        "GET",
        &format!("/v2/{repository}/manifests/{digest}"),
        None,
        None,
    );
    let basic = Some((stack.auth_username.as_str(), stack.auth_password.as_str()));
    let target = registry_request(
        &stack.auth_registry,
        "GET",
        &format!("/v2/promoted/{name}/manifests/production"),
        basic,
        None,
    );
    assert_eq!((source.status, target.status), (200, 200));
    assert_eq!(target.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(sha256(&target.body), digest);
    assert!(
        target.body == source.body,
        "the target holds the source's very bytes"
    );
    assert_eq!(target.header("content-type"), source.header("content-type"));

    let again = copy_by_digest(from, &digest, to, "production")
        .await
        .expect("the second copy");
    assert_eq!(
        again,
        Copied {
            digest: digest.clone(),
            blobs_copied: 0,
            blobs_present: copied.blobs_copied,
            blobs_mounted: 0,
            bytes_copied: 0,
            manifests: 1,
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_is_copied_with_its_child_and_within_one_registry_blobs_are_mounted() {
    let stack = Stack::from_env();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("copy-index");
    let repository = format!("copy/{name}");
    let child = push_unique_image(&stack, &format!("{}/{repository}", stack.registry)).await;
    let child_manifest = registry_request(
        &stack.registry,
        "GET",
        &format!("/v2/{repository}/manifests/{child}"),
        None,
        None,
    );
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": child_manifest.header("content-type").unwrap(),
            "digest": child,
            "size": child_manifest.body.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }))
    .unwrap();
    let put = registry_request(
        &stack.registry,
        "PUT",
        &format!("/v2/{repository}/manifests/index"),
        None,
        Some(("application/vnd.oci.image.index.v1+json", &index)),
    );
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    let index_digest = sha256(&index);

    // Within the open registry: every blob is mounted, none sent.
    let open = anonymous(&stack.registry);
    let from = Endpoint {
        auth: &open,
        repository: &repository,
    };
    let sibling = format!("copy/{name}-sibling");
    let to = Endpoint {
        auth: &open,
        repository: &sibling,
    };
    let copied = copy_by_digest(from, &index_digest, to, "1")
        .await
        .expect("the copy in one registry");
    assert_eq!(copied.manifests, 2);
    assert!(copied.blobs_mounted >= 3, "{copied:?}");
    assert_eq!((copied.blobs_copied, copied.bytes_copied), (0, 0), "{copied:?}");

    // To the auth registry: the child first (by digest), then the index under the tag.
    let auth = auth_registry_credentials(&stack, dir.path(), &stack.auth_password);
    let to = Endpoint {
        auth: &auth,
        repository: &sibling,
    };
    let copied = copy_by_digest(from, &index_digest, to, "1")
        .await
        .expect("the copy to the auth registry");
    assert_eq!(
        (copied.digest.as_str(), copied.manifests),
        (index_digest.as_str(), 2)
    );
    let basic = Some((stack.auth_username.as_str(), stack.auth_password.as_str()));
    for (reference, digest, bytes) in [
        ("1", &index_digest, &index),
        (&child, &child, &child_manifest.body),
    ] {
        let answer = registry_request(
            &stack.auth_registry,
            "GET",
            &format!("/v2/{sibling}/manifests/{reference}"),
            basic,
            None,
        );
        assert_eq!(answer.status, 200, "{reference}");
        assert_eq!(answer.header("docker-content-digest"), Some(digest.as_str()));
        assert!(&answer.body == bytes, "{reference} holds the source's bytes");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_auth_registry_refuses_a_copy_without_or_with_wrong_credentials_and_no_secret_shows() {
    let stack = Stack::from_env();
    let dir = tempfile::tempdir().unwrap();
    let digest = busybox_digest(&stack);
    let source_auth = anonymous(&stack.registry);
    let from = Endpoint {
        auth: &source_auth,
        repository: "berth/base",
    };
    let repository = format!("refused/{}", unique("copy"));
    let wrong_password = "not-the-password-42";
    let wrong = auth_registry_credentials(&stack, dir.path(), wrong_password);
    let none = anonymous(&stack.auth_registry);
    for auth in [&none, &wrong] {
        let to = Endpoint {
            auth,
            repository: &repository,
        };
        let error = copy_by_digest(from, &digest, to, "1").await.expect_err("refused");
        let CopyError::Api(ApiError::Refused { registry, status, .. }) = &error else {
            panic!("not Refused: {error:?}");
        };
        assert_eq!((registry.as_str(), *status), (stack.auth_registry.as_str(), 401));
        let text = error.to_string();
        assert!(text.contains(&stack.auth_registry), "{text}");
        assert!(text.contains(&auth.source_description), "{text}");
        for secret in [wrong_password, stack.auth_password.as_str()] {
            assert!(!text.contains(secret), "no secret in {text}");
            assert!(!format!("{error:?}").contains(secret), "no secret in {error:?}");
        }
    }
    // Nothing was stored in the refused repository.
    let basic = Some((stack.auth_username.as_str(), stack.auth_password.as_str()));
    let answer = registry_request(
        &stack.auth_registry,
        "HEAD",
        &format!("/v2/{repository}/manifests/1"),
        basic,
        None,
    );
    assert_eq!(answer.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_digest_the_source_does_not_hold_is_not_found() {
    let stack = Stack::from_env();
    let source_auth = anonymous(&stack.registry);
    let missing = sha256(unique("missing").as_bytes());
    let to_repository = format!("copy/{}", unique("missing"));
    let to = Endpoint {
        auth: &source_auth,
        repository: &to_repository,
    };
    for repository in ["berth/base", "berth/no-such-repository"] {
        let from = Endpoint {
            auth: &source_auth,
            repository,
        };
        let error = copy_by_digest(from, &missing, to, "1")
            .await
            .expect_err("not found");
        let CopyError::Api(ApiError::NotFound {
            registry,
            repository: named,
            digest,
        }) = &error
        else {
            panic!("not NotFound: {error:?}");
        };
        assert_eq!(
            (registry.as_str(), named.as_str(), digest.as_str()),
            (stack.registry.as_str(), repository, missing.as_str())
        );
        assert!(error.to_string().contains(&missing), "{error}");
    }
    // A digest that is not one is refused before any request.
    let from = Endpoint {
        auth: &source_auth,
        repository: "berth/base",
    };
    let error = copy_by_digest(from, "sha256:nope", to, "1")
        .await
        .expect_err("invalid");
    assert!(
        matches!(error, CopyError::Api(ApiError::InvalidReference(_))),
        "{error:?}"
    );
}
