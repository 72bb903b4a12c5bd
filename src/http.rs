//! The HTTP client of berth's own requests (copies between registries,
//! webhooks): HTTPS with the system's root certificates, or plain HTTP; the
//! user agent they send; and a connection failure in words that never hold
//! the URL (a webhook's URL is a secret).

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// What berth's requests say they are.
pub const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

/// A client whose requests have bodies of type `B`.
pub type HttpClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// Why berth's HTTP client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The system's root certificates could not be loaded.
    #[error("no TLS root certificates: {0}")]
    NoRoots(std::io::Error),
}

/// An HTTPS-or-HTTP client, connecting within `connect_timeout`.
pub fn client<B>(connect_timeout: Duration) -> Result<HttpClient<B>, ClientError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    // Each write goes out at once, as curl's and Go's do: with Nagle's
    // algorithm a request written in two parts (its headers, then its body)
    // can wait for the server's delayed acknowledgement, 40 ms on Linux.
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(ClientError::NoRoots)?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// The innermost cause of a connection failure, without the URL.
pub fn connection_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut text = "connection failed".to_string();
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    text
}
