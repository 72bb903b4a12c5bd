//! berth's own client for Git's smart HTTP protocol on `http://` remotes,
//! registered with libgit2 in place of its built-in one.
//!
//! libgit2 writes each request's header and body with two separate writes on a
//! socket without `TCP_NODELAY`: Nagle's algorithm holds the body back until the
//! server acknowledges the header, and the server delays that acknowledgement
//! (40 ms on Linux). A fetch makes two such requests, so every fetch lost about
//! 80 ms waiting (docs/benchmarks.md, workload 4). This client sends each
//! request in one write on a socket with `TCP_NODELAY`, keeps the connection
//! alive between requests, and otherwise speaks what libgit2 spoke: protocol v0,
//! stateless RPC, redirects followed on the first request only, the token of the
//! repo (see [`crate::mirror`]) when the server asks for credentials.
//!
//! `https://` remotes keep libgit2's own transport (OpenSSL); an `http://`
//! remote that redirects to `https://` on the same host is fetched from there
//! (see [`take_https_redirect`]).

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use git2::{Error, ErrorClass, ErrorCode};

thread_local! {
    /// Where the token comes from, for the fetch running on this thread.
    static TOKEN_ENV: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The `https://` repository URL the last fetch on this thread was
    /// redirected to, by the same host.
    static HTTPS_REDIRECT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The `https://` repository URL that an `http://` remote redirected the last
/// fetch on this thread to, if it did. This client speaks plain HTTP only, so
/// the fetch failed; the caller fetches again from the URL given, through
/// libgit2's https transport. Only a redirect to the same host counts, so the
/// repo's token goes nowhere it would not have gone.
pub fn take_https_redirect() -> Option<String> {
    HTTPS_REDIRECT.with(|slot| slot.borrow_mut().take())
}

/// Runs `fetch` with `token_env` as the source of credentials for any `http://`
/// request it makes on this thread (libgit2 fetches on the calling thread).
pub fn with_token_env<T>(token_env: Option<&str>, fetch: impl FnOnce() -> T) -> T {
    TOKEN_ENV.with(|slot| *slot.borrow_mut() = token_env.map(str::to_string));
    let result = fetch();
    TOKEN_ENV.with(|slot| *slot.borrow_mut() = None);
    result
}

/// Registers this client for `http://` URLs. Call it once at start, before any
/// thread creates a libgit2 transport (libgit2's registry has no lock).
#[expect(
    unsafe_code,
    reason = "libgit2's transport registry is set through an unsafe function"
)]
pub(crate) fn register() -> Result<(), Error> {
    // SAFETY: called at start, while no other thread uses libgit2.
    unsafe {
        git2::transport::register("http", |remote| {
            let token_env = TOKEN_ENV.with(|slot| slot.borrow().clone());
            Transport::smart(
                remote,
                true,
                Client {
                    token_env,
                    state: Arc::new(Mutex::new(State::default())),
                },
            )
        })
    }
}

/// The most redirects followed on the first request (libgit2 and git follow a few).
const REDIRECTS: usize = 5;
const USER_AGENT: &str = "git/2.0 (berth)";

/// How long a server may stay silent before the request fails (and the fetch is
/// retried): 600 s, or `BERTH_GIT_TIMEOUT` seconds. Without a limit, a server
/// that accepts and never answers would hold a nightly run forever; git itself
/// has none. The limit is long because a server may say nothing while it packs
/// a large repo: behind a proxy that buffers whole responses (lighttpd's
/// default), the stack's server sent a 1 GB repo's first byte after 2 minutes.
fn silence() -> std::time::Duration {
    let seconds = std::env::var("BERTH_GIT_TIMEOUT")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .unwrap_or(600);
    std::time::Duration::from_secs(seconds)
}

/// How long a connection may take to open (or less, if the silence allowed is).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Says what a socket's read timeout means, in place of "Resource temporarily
/// unavailable".
fn name_silence(error: std::io::Error) -> std::io::Error {
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the server sent nothing for {} s (BERTH_GIT_TIMEOUT sets how long to wait)",
                silence().as_secs()
            ),
        ),
        _ => error,
    }
}

struct Client {
    token_env: Option<String>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The repository URL after redirects (without `/info/refs...`).
    base: Option<String>,
    /// An idle kept-alive connection, with the `host:port` it is connected to.
    idle: Option<(String, Connection)>,
    /// The `Authorization` header once the server asked for credentials.
    authorization: Option<String>,
}

impl SmartSubtransport for Client {
    fn action(&self, url: &str, action: Service) -> Result<Box<dyn SmartSubtransportStream>, Error> {
        match action {
            Service::UploadPackLs => {
                let response = self.advertisement(url)?;
                Ok(Box::new(Exchange {
                    client: self.state.clone(),
                    token_env: self.token_env.clone(),
                    url: String::new(),
                    request: Vec::new(),
                    response: Some(response),
                }))
            }
            Service::UploadPack => {
                let base = lock(&self.state).base.clone().unwrap_or_else(|| url.to_string());
                Ok(Box::new(Exchange {
                    client: self.state.clone(),
                    token_env: self.token_env.clone(),
                    url: format!("{}/git-upload-pack", base.trim_end_matches('/')),
                    request: Vec::new(),
                    response: None,
                }))
            }
            Service::ReceivePackLs | Service::ReceivePack => Err(Error::new(
                ErrorCode::GenericError,
                ErrorClass::Http,
                "berth's http client only fetches",
            )),
        }
    }

    fn close(&self) -> Result<(), Error> {
        lock(&self.state).idle = None;
        Ok(())
    }
}

impl Client {
    /// `GET <url>/info/refs?service=git-upload-pack`, following redirects and
    /// answering a request for credentials.
    fn advertisement(&self, url: &str) -> Result<Response, Error> {
        let mut target = format!("{}{SUFFIX}", url.trim_end_matches('/'));
        for _ in 0..=REDIRECTS {
            let response = send(&self.state, self.token_env.as_deref(), "GET", &target, None)?;
            if let Some(location) = response.redirect.clone() {
                let next = resolve_location(&target, &location)?;
                if !next.ends_with(SUFFIX) {
                    return Err(unfollowed(format!(
                        "the server redirected to {next}, not a Git repository"
                    )));
                }
                if authority(&next) != authority(&target) {
                    // Credentials given to one server never go to another.
                    lock(&self.state).authorization = None;
                }
                target = next;
                continue;
            }
            expect_type(&response, "application/x-git-upload-pack-advertisement", &target)?;
            lock(&self.state).base = Some(target.trim_end_matches(SUFFIX).to_string());
            return Ok(response);
        }
        Err(unfollowed(format!("too many redirects from {url}")))
    }
}

/// One request and its response: written by libgit2, sent on the first read.
struct Exchange {
    client: Arc<Mutex<State>>,
    token_env: Option<String>,
    url: String,
    request: Vec<u8>,
    response: Option<Response>,
}

impl Read for Exchange {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.response.is_none() {
            let response = send(
                &self.client,
                self.token_env.as_deref(),
                "POST",
                &self.url,
                Some(&self.request),
            )
            .map_err(|error| std::io::Error::other(error.message().to_string()))?;
            if response.redirect.is_some() {
                return Err(std::io::Error::other(format!(
                    "unexpected redirect from {}",
                    self.url
                )));
            }
            expect_type(&response, "application/x-git-upload-pack-result", &self.url)
                .map_err(|error| std::io::Error::other(error.message().to_string()))?;
            self.response = Some(response);
        }
        let response = self.response.as_mut().expect("just sent");
        let count = response.read(buffer)?;
        if response.finished()
            && let Some(idle) = response.take_connection()
        {
            lock(&self.client).idle = Some(idle);
        }
        Ok(count)
    }
}

impl Write for Exchange {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.response.is_some() {
            return Err(std::io::Error::other("the request was already sent"));
        }
        self.request.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn http_error(message: String) -> Error {
    Error::new(ErrorCode::GenericError, ErrorClass::Http, message)
}

/// A redirect berth does not follow: the URL in `[[repo]]` is to change, and a
/// retry would only meet the same answer (so not `Http`, which is retried).
fn unfollowed(message: String) -> Error {
    Error::new(ErrorCode::GenericError, ErrorClass::Invalid, message)
}

fn net_error(message: String) -> Error {
    Error::new(ErrorCode::GenericError, ErrorClass::Net, message)
}

fn expect_type(response: &Response, expected: &str, url: &str) -> Result<(), Error> {
    if response.content_type.as_deref() == Some(expected) {
        return Ok(());
    }
    Err(http_error(format!(
        "{url} is not a Git smart HTTP endpoint (content type {}, expected {expected})",
        response.content_type.as_deref().unwrap_or("none")
    )))
}

/// The `host[:port]` of an http URL.
fn authority(url: &str) -> Option<String> {
    url.parse::<hyper::Uri>()
        .ok()
        .and_then(|uri| uri.authority().map(|authority| authority.as_str().to_string()))
}

/// The host of a URL, without its port.
fn host(url: &str) -> Option<String> {
    url.parse::<hyper::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_string))
}

/// What follows a repository's URL in the first request.
const SUFFIX: &str = "/info/refs?service=git-upload-pack";

/// A `Location` header resolved against the URL that answered with it. A
/// redirect to a repository over `https://` on the same host is left for the
/// caller to fetch again from (see [`take_https_redirect`]); to another host,
/// it is refused, as the repo's token is not for it.
fn resolve_location(from: &str, location: &str) -> Result<String, Error> {
    if location.starts_with("http://") {
        return Ok(location.to_string());
    }
    if location.starts_with("https://") {
        if let Some(repository) = location.strip_suffix(SUFFIX)
            && host(location) == host(from)
        {
            HTTPS_REDIRECT.with(|slot| *slot.borrow_mut() = Some(repository.to_string()));
            return Err(unfollowed(format!("the server redirects to {repository}")));
        }
        return Err(unfollowed(format!(
            "the server redirects to {location}: write the https:// URL in [[repo]]"
        )));
    }
    if location.starts_with('/')
        && let Some(authority) = authority(from)
    {
        return Ok(format!("http://{authority}{location}"));
    }
    Err(unfollowed(format!(
        "the server redirects to {location}, which berth cannot follow"
    )))
}

/// Sends one request (on the idle connection if there is one, else on a new one),
/// with credentials when the server asks for them, and reads the response head.
fn send(
    state: &Mutex<State>,
    token_env: Option<&str>,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
) -> Result<Response, Error> {
    let uri: hyper::Uri = url.parse().map_err(|_| http_error(format!("bad URL {url}")))?;
    let host = uri.host().unwrap_or_default().to_string();
    let address = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let host_header = uri
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or_default().to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut asked_for_credentials = false;
    loop {
        let authorization = lock(state).authorization.clone();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n",
            host_header.as_deref().unwrap_or(&host)
        );
        if let Some(authorization) = &authorization {
            head.push_str(&format!("Authorization: {authorization}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/x-git-upload-pack-request\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut message = head.into_bytes();
        message.extend_from_slice(body.unwrap_or_default());
        let mut response = exchange(state, &address, &message)?;
        if response.status != 200
            && let Some(idle) = response.take_connection()
        {
            lock(state).idle = Some(idle);
        }
        if response.status == 401 {
            if asked_for_credentials || authorization.is_some() {
                return Err(Error::new(
                    ErrorCode::Auth,
                    ErrorClass::Http,
                    "authentication failed (credentials were rejected)",
                ));
            }
            asked_for_credentials = true;
            let token = crate::mirror::token(token_env)?;
            let user = uri
                .authority()
                .and_then(|a| a.as_str().split_once('@'))
                .map_or("berth", |(user, _)| user.split(':').next().unwrap_or("berth"));
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
            lock(state).authorization = Some(format!("Basic {encoded}"));
            continue;
        }
        if matches!(response.status, 301 | 302 | 303 | 307 | 308) && response.redirect.is_some() {
            return Ok(response);
        }
        if response.status != 200 {
            return Err(http_error(format!(
                "unexpected http status code: {} (from {method} {url})",
                response.status
            )));
        }
        return Ok(response);
    }
}

/// Writes `message` and reads the response head; an idle connection that the
/// server closed meanwhile is replaced by a new one, once.
fn exchange(state: &Mutex<State>, address: &str, message: &[u8]) -> Result<Response, Error> {
    let idle = lock(state).idle.take().filter(|(to, _)| to == address);
    if let Some((_, connection)) = idle
        && let Ok(response) = connection.request(message, address)
    {
        return Ok(response);
    }
    let silence = silence();
    let stream = connect(address, silence.min(CONNECT_TIMEOUT))
        .map_err(|error| net_error(format!("cannot connect to {address}: {error}")))?;
    stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(silence)))
        .and_then(|()| stream.set_write_timeout(Some(silence)))
        .map_err(|error| net_error(format!("cannot set up the connection to {address}: {error}")))?;
    let connection = Connection {
        reader: BufReader::with_capacity(
            64 * 1024,
            stream.try_clone().map_err(|e| net_error(e.to_string()))?,
        ),
        writer: stream,
    };
    connection
        .request(message, address)
        .map_err(|error| net_error(format!("request to {address} failed: {error}")))
}

/// Connects to the first of `address`'s addresses that answers within `timeout`.
fn connect(address: &str, timeout: std::time::Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address");
    for resolved in std::net::ToSocketAddrs::to_socket_addrs(address)? {
        match TcpStream::connect_timeout(&resolved, timeout) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// A TCP connection to the server.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn request(self, message: &[u8], address: &str) -> std::io::Result<Response> {
        self.send_request(message, address).map_err(name_silence)
    }

    fn send_request(mut self, message: &[u8], address: &str) -> std::io::Result<Response> {
        self.writer.write_all(message)?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        let mut parts = line.split_whitespace();
        let version = parts.next().unwrap_or_default().to_string();
        let status: u16 = parts
            .next()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {}", line.trim())))?;
        let mut body = Body::UntilClose;
        let mut keep_alive = version == "HTTP/1.1";
        let (mut content_type, mut redirect) = (None, None);
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the response ended in its head",
                ));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    if let Ok(length) = value.parse() {
                        body = Body::Length(length);
                    }
                }
                "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => body = Body::Chunked(0),
                "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
                "content-type" => content_type = Some(value.to_string()),
                "location" => redirect = Some(value.to_string()),
                _ => {}
            }
        }
        if matches!(body, Body::UntilClose) {
            keep_alive = false;
        }
        let mut response = Response {
            status,
            content_type,
            redirect: redirect.filter(|_| (300..400).contains(&status)),
            body,
            connection: Some(self),
            keep_alive,
            address: address.to_string(),
        };
        if status != 200 {
            // Read the (short) body of an error or redirect so the connection can be reused.
            let mut rest = Vec::new();
            let _ = response.by_ref().take(1 << 20).read_to_end(&mut rest);
        }
        Ok(response)
    }
}

/// How the response body ends.
enum Body {
    /// This many bytes remain.
    Length(u64),
    /// Chunked; this many bytes remain of the current chunk (0: read the next size).
    Chunked(u64),
    /// At the end of the connection.
    UntilClose,
    Done,
}

/// A response head and its body, read on demand.
struct Response {
    status: u16,
    content_type: Option<String>,
    redirect: Option<String>,
    body: Body,
    connection: Option<Connection>,
    keep_alive: bool,
    address: String,
}

impl Response {
    fn finished(&self) -> bool {
        matches!(self.body, Body::Done)
    }

    /// The connection, for the next request, once the body was read to its end.
    fn take_connection(&mut self) -> Option<(String, Connection)> {
        if !(self.finished() && self.keep_alive) {
            return None;
        }
        self.connection
            .take()
            .map(|connection| (self.address.clone(), connection))
    }

    /// Reads the body as its head said it ends.
    fn read_body(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(0);
        };
        let reader = &mut connection.reader;
        loop {
            match &mut self.body {
                Body::Done => return Ok(0),
                Body::UntilClose => return reader.read(buffer),
                Body::Length(remaining) => {
                    if *remaining == 0 {
                        self.body = Body::Done;
                        return Ok(0);
                    }
                    let count = read_part(reader, buffer, remaining)?;
                    if *remaining == 0 {
                        self.body = Body::Done;
                    }
                    return Ok(count);
                }
                Body::Chunked(remaining) => {
                    if *remaining == 0 {
                        let mut line = String::new();
                        reader.read_line(&mut line)?;
                        let size = line.trim().split(';').next().unwrap_or_default();
                        let size = u64::from_str_radix(size, 16).map_err(|_| {
                            std::io::Error::other(format!("bad chunk size `{}`", line.trim()))
                        })?;
                        if size == 0 {
                            // Trailers, up to the empty line.
                            loop {
                                line.clear();
                                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                                    break;
                                }
                            }
                            self.body = Body::Done;
                            return Ok(0);
                        }
                        *remaining = size;
                        continue;
                    }
                    let count = read_part(reader, buffer, remaining)?;
                    if *remaining == 0 {
                        let mut end = [0u8; 2];
                        reader.read_exact(&mut end)?;
                    }
                    return Ok(count);
                }
            }
        }
    }
}

impl Read for Response {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.read_body(buffer).map_err(name_silence)
    }
}

/// Reads at most `remaining` bytes of a body whose length is known, and counts
/// them off; the connection ending first is an error.
fn read_part(reader: &mut impl Read, buffer: &mut [u8], remaining: &mut u64) -> std::io::Result<usize> {
    let wanted = buffer
        .len()
        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
    let count = reader.read(&mut buffer[..wanted])?;
    if count == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection in the middle of a response",
        ));
    }
    *remaining -= count as u64;
    Ok(count)
}
