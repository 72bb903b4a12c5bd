//! `berth serve`'s HTTP side, on axum and hyper: webhooks in, the status
//! page, the sites' JSON, metrics and health out.
//!
//! - `POST /hooks/github`, `/hooks/gitlab`, `/hooks/generic`: a delivery is
//!   checked ([`webhook`]) and answered at once, before any work: 401 for a
//!   missing or wrong signature, 413 for a body over 1 MiB, 408 for a body
//!   that takes over 10 s, 200 for a ping, 202 `ignored` for an event berth
//!   does not act on or a repeated delivery id, 202 `queued` for a push
//!   handed to the pipeline ([`crate::pipeline::realtime`]).
//! - `GET /`: the page for people ([`page`]); `GET /api/v1/sites`: the same as
//!   JSON; `GET /metrics`; `GET /healthz` and `GET /readyz`.
//!
//! Headers must arrive within 10 s of a connection's start (a slow client
//! holds nothing for long). Nothing of a secret is in any answer or log.

pub mod page;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::Service as _;

use crate::pipeline::realtime::{Hinted, Realtime};
use crate::ui::Printer;
use webhook::{Endpoint, Event, Refusal, Secret, Seen};

/// The largest delivery berth reads (GitHub's own limit is 25 MB; a push
/// payload is a few kilobytes).
pub const BODY_LIMIT: usize = 1 << 20;
/// How long a client may take to send its headers, and then its body.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many delivery ids are remembered, to ignore redeliveries.
const SEEN_DELIVERIES: usize = 10_000;

/// The shared secrets of each endpoint, read from the environment at start.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub github: Option<Secret>,
    pub gitlab: Option<Secret>,
    pub generic: Option<Secret>,
}

impl Secrets {
    fn of(&self, endpoint: Endpoint) -> Option<&Secret> {
        match endpoint {
            Endpoint::GitHub => self.github.as_ref(),
            Endpoint::GitLab => self.gitlab.as_ref(),
            Endpoint::Generic => self.generic.as_ref(),
        }
    }
}

/// What every request is served from.
struct Shared {
    realtime: Arc<Realtime>,
    secrets: Secrets,
    seen: Mutex<Seen>,
    /// Set at SIGTERM: `/readyz` answers 503, deliveries are refused.
    stopping: AtomicBool,
    printer: Printer,
}

/// The server: its routes and what they share.
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    pub fn new(realtime: Arc<Realtime>, secrets: Secrets, printer: &Printer) -> Self {
        Self {
            shared: Arc::new(Shared {
                realtime,
                secrets,
                seen: Mutex::new(Seen::new(SEEN_DELIVERIES)),
                stopping: AtomicBool::new(false),
                printer: printer.clone(),
            }),
        }
    }

    /// The routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(status_page))
            .route("/api/v1/sites", get(sites_json))
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .route("/hooks/github", post(github))
            .route("/hooks/gitlab", post(gitlab))
            .route("/hooks/generic", post(generic))
            .with_state(Arc::clone(&self.shared))
    }

    /// Serves on `listener` until `stop` resolves, then stops taking
    /// connections and lets the requests in progress finish.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let router = self.router();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!("accepting a connection failed: {error}");
                            continue;
                        }
                    };
                    let router = router.clone();
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        router.clone().call(request)
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(CLIENT_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!("a connection ended: {error}");
                        }
                    });
                }
                () = &mut stop => {
                    self.shared.stopping.store(true, Ordering::SeqCst);
                    break;
                }
            }
        }
        drop(listener);
        // The requests in progress (each answered within seconds) finish.
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(CLIENT_TIMEOUT * 2) => {}
        }
        Ok(())
    }
}

/// Binds `address`, saying so.
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}

async fn status_page(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page::render(&shared.realtime.snapshot()),
    )
        .into_response()
}

async fn sites_json(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.realtime.snapshot()).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.realtime.metrics().text(),
    )
        .into_response()
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if shared.stopping.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn github(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    delivery(&shared, Endpoint::GitHub, &headers, body).await
}

async fn gitlab(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    delivery(&shared, Endpoint::GitLab, &headers, body).await
}

async fn generic(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    delivery(&shared, Endpoint::Generic, &headers, body).await
}

/// One delivery, answered: the answer's status and a line saying why.
async fn delivery(shared: &Shared, endpoint: Endpoint, headers: &HeaderMap, body: Body) -> Response {
    let arrived = Instant::now();
    let (status, result, text) = answer(shared, endpoint, headers, body, arrived).await;
    shared.realtime.metrics().delivery(endpoint.name(), result);
    if status.is_client_error() {
        shared
            .printer
            .warning(&format!("/hooks/{}: {} {text}", endpoint.name(), status.as_u16()));
    } else {
        tracing::info!("/hooks/{}: {} {text}", endpoint.name(), status.as_u16());
    }
    (status, format!("{text}\n")).into_response()
}

async fn answer(
    shared: &Shared,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
    arrived: Instant,
) -> (StatusCode, &'static str, String) {
    if shared.stopping.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "berth is stopping; deliver again to another replica".into(),
        );
    }
    let bytes = match tokio::time::timeout(CLIENT_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the body did not arrive within {}s", CLIENT_TIMEOUT.as_secs()),
            );
        }
        Ok(Err(_)) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("the body is over {BODY_LIMIT} bytes"),
            );
        }
        Ok(Ok(bytes)) => bytes,
    };
    let delivery = match webhook::read(endpoint, shared.secrets.of(endpoint), headers, &bytes) {
        Ok(delivery) => delivery,
        Err(refusal) => {
            let result = match refusal {
                Refusal::BadBody(..) => "bad-request",
                _ => "unauthorized",
            };
            return (refusal.status(), result, refusal.to_string());
        }
    };
    if let Some(id) = &delivery.id
        && shared.seen.lock().expect("not poisoned").repeated(id)
    {
        return (
            StatusCode::ACCEPTED,
            "duplicate",
            format!("ignored: delivery {id} was seen before"),
        );
    }
    match delivery.event {
        Event::Ping => (StatusCode::OK, "ping", "pong".into()),
        Event::Ignored(event) => (
            StatusCode::ACCEPTED,
            "ignored",
            format!("ignored: berth does not act on `{event}` events"),
        ),
        Event::PullRequest(pull) => pull_request_answer(shared, &pull, arrived),
        Event::Push(push) => {
            let hinted = shared.realtime.push(
                &push.repository_urls,
                &push.reference,
                push.after.as_deref(),
                arrived,
            );
            hinted_answer(hinted, |sites| sites.join(", "))
        }
    }
}

/// The answer to a push or pull request handed to the pipeline: what was
/// queued (`queued` names it), or why nothing was.
fn hinted_answer(
    hinted: Hinted,
    queued: impl FnOnce(&[String]) -> String,
) -> (StatusCode, &'static str, String) {
    match hinted {
        Hinted::Sites(sites) => (
            StatusCode::ACCEPTED,
            "queued",
            format!("queued: {}", queued(&sites)),
        ),
        Hinted::NoSite {
            repository,
            reference,
        } => (
            StatusCode::ACCEPTED,
            "ignored",
            format!("ignored: no site follows {reference} of {repository}"),
        ),
    }
}

/// A pull request event, handed to the pipeline: the answer.
fn pull_request_answer(
    shared: &Shared,
    pull: &webhook::PullRequest,
    arrived: Instant,
) -> (StatusCode, &'static str, String) {
    let close = match pull.action {
        webhook::PullAction::Updated => None,
        webhook::PullAction::Closed { merged } => Some(merged),
    };
    let event = crate::pipeline::realtime::PullRequestEvent {
        number: pull.number,
        repository_urls: &pull.repository_urls,
        base_branch: &pull.base_branch,
        head_commit: &pull.head_commit,
        from_fork: pull.from_fork,
        labels: &pull.labels,
        close,
    };
    hinted_answer(shared.realtime.pull_request(&event, arrived), |sites| {
        format!("the preview of #{} for {}", pull.number, sites.join(", "))
    })
}
