//! The image build through the Engine's `/build` (`BuildKit`): the request,
//! its streamed output, and the Engine's errors as the Engine words them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bollard::Docker;
use bollard::models::BuildInfoAux;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use futures_util::StreamExt;

use crate::image::context::CHUNK;
use crate::image::generator::Tail;
use crate::image::{BuildError, BuildFailure};
use crate::ui::Printer;

/// Where the Engine reads a build context from.
pub enum ContextBody {
    /// A tar file on disk.
    File(PathBuf),
    /// A tar being written (see [`crate::image::stream_site_context`]).
    Stream(tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>),
}

/// An image build request.
pub struct ImageBuild<'a> {
    pub context: ContextBody,
    /// Path of the Dockerfile inside the context.
    pub dockerfile: &'a str,
    pub tag: &'a str,
    pub build_args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub credentials: HashMap<String, bollard::auth::DockerCredentials>,
}

/// Builds the image through the Engine API and returns its id.
pub async fn build_image(
    docker: &Docker,
    request: ImageBuild<'_>,
    printer: &Printer,
) -> Result<String, BuildError> {
    let options = options(&request);
    let body = match request.context {
        ContextBody::File(path) => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|source| BuildError::context(path, source))?;
            bollard::body_try_stream(tokio_util::io::ReaderStream::with_capacity(file, CHUNK))
        }
        ContextBody::Stream(receiver) => bollard::body_try_stream(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
        )),
    };
    let credentials = if request.credentials.is_empty() {
        None
    } else {
        Some(request.credentials)
    };
    let mut stream = docker.build_image(options, credentials, Some(body));
    let mut tail = Tail::new(30);
    let mut image_id = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    let message = detail.message.unwrap_or_else(|| "unknown error".into());
                    return Err(BuildError::Engine {
                        cause: BuildFailure::Said(message.trim().to_string()),
                        tail: tail.text(),
                    });
                }
                if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                    for line in text.lines().filter(|line| !line.trim().is_empty()) {
                        printer.detail(line);
                        tail.push(line);
                    }
                }
                match info.aux {
                    Some(BuildInfoAux::Default(image)) => image_id = image.id.or(image_id),
                    Some(BuildInfoAux::BuildKit(status)) => show_buildkit(&status, &mut tail, printer),
                    None => {}
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Err(BuildError::Engine {
                    cause: BuildFailure::Said(message.trim().to_string()),
                    tail: tail.text(),
                });
            }
            Err(error) => return Err(engine_error(error, &tail)),
        }
    }
    if let Some(id) = image_id {
        Ok(id)
    } else {
        // Some Engines send no id record: ask for the tag instead.
        let inspect = docker
            .inspect_image(request.tag)
            .await
            .map_err(|error| engine_error(error, &tail))?;
        inspect
            .id
            .ok_or_else(|| BuildError::NoImageId { tail: tail.text() })
    }
}

/// The `/build` query of a request: `BuildKit`, with a session.
fn options(request: &ImageBuild<'_>) -> BuildImageOptions {
    BuildImageOptions {
        dockerfile: request.dockerfile.to_string(),
        t: Some(request.tag.to_string()),
        rm: true,
        forcerm: true,
        buildargs: Some(request.build_args.clone().into_iter().collect()),
        labels: Some(request.labels.clone().into_iter().collect()),
        version: BuilderVersion::BuilderBuildKit,
        // BuildKit through the Engine needs a session; it also carries the
        // registry credentials for private base images.
        session: Some(session_id()),
        ..Default::default()
    }
}

/// A `BuildKit` status record: failed steps and the steps' logs go to the
/// tail (and with `-v` to the screen); each finished step's times to the
/// debug log.
fn show_buildkit(status: &bollard::moby::buildkit::v1::StatusResponse, tail: &mut Tail, printer: &Printer) {
    for vertex in &status.vertexes {
        if !vertex.error.is_empty() {
            tail.push(&format!("{}: {}", vertex.name, vertex.error));
        } else if let Some(completed) = &vertex.completed {
            if let Some(started) = &vertex.started {
                tracing::debug!(
                    vertex = %vertex.name,
                    cached = vertex.cached,
                    started = format!("{}.{:09}", started.seconds, started.nanos),
                    completed = format!("{}.{:09}", completed.seconds, completed.nanos),
                    "build step done"
                );
            }
            printer.detail(&format!("done {}", vertex.name));
        }
    }
    for log in &status.logs {
        for line in String::from_utf8_lossy(&log.msg)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            printer.detail(line);
            tail.push(line);
        }
    }
}

pub(crate) fn session_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("berth-{}-{nanos:x}", std::process::id())
}

/// A failure of berth's Engine client during a build: the Engine
/// unreachable, or its answer unreadable.
pub(crate) fn engine_error(error: bollard::errors::Error, tail: &Tail) -> BuildError {
    use bollard::errors::Error;
    match error {
        Error::HyperResponseError { .. }
        | Error::IOError { .. }
        | Error::SocketNotFoundError(_)
        | Error::RequestTimeoutError => BuildError::Unreachable(error),
        _ => BuildError::Engine {
            cause: BuildFailure::Client(error),
            tail: tail.text(),
        },
    }
}
