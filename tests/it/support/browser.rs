//! A real browser: Debian's Chromium, headless, driven through its
//! ChromeDriver over WebDriver (the W3C protocol Selenium speaks), for the
//! tests of pages people look at (`berth serve`'s status page, a preview, the
//! forge's pull request page). WebDriver rather than `chromium --dump-dom`
//! because a page may open an `alert()`: the stack's Gitea is built from its
//! Go module without its front-end assets, and each of its pages alerts that
//! they failed to load, which blocks `--dump-dom` for ever. Here each alert is
//! dismissed and kept, and the DOM read once the page has loaded. The flags
//! are the ones this machine needs: no sandbox as root, a new empty profile.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::support::free_port;

/// One ChromeDriver and one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Client<HttpConnector, Full<Bytes>>,
    profile: tempfile::TempDir,
}

/// A page as the browser rendered it.
pub struct Page {
    /// The DOM once loaded.
    pub dom: String,
    /// The text of each `alert()` the page opened, dismissed.
    pub alerts: Vec<String>,
}

impl Browser {
    pub async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running chromedriver (scripts/stack installs Debian's chromium-driver)");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            profile,
        };
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", browser.profile.path().display()),
                ],
            },
        }}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let answer = loop {
            match browser
                .try_call(Method::POST, "/session", Some(&capabilities))
                .await
            {
                Ok(answer) => break answer,
                // ChromeDriver is still starting.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("chromedriver did not start a session: {error}"),
            }
        };
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer:#}"))
            .to_string();
        browser
    }

    /// Loads `url` and gives its DOM once loaded, each alert dismissed.
    pub async fn rendered(&self, url: &str) -> Page {
        let session = format!("/session/{}", self.session);
        let mut alerts = Vec::new();
        // Navigation returns once the page has loaded, or at once with an
        // error while an alert is open.
        let navigated = self
            .try_call(
                Method::POST,
                &format!("{session}/url"),
                Some(&json!({"url": url})),
            )
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alert = self
                .try_call(Method::GET, &format!("{session}/alert/text"), None)
                .await;
            let Ok(alert) = alert else { break };
            alerts.push(alert["value"].as_str().unwrap_or_default().to_string());
            self.call(
                Method::POST,
                &format!("{session}/alert/dismiss"),
                Some(&json!({})),
            )
            .await;
            assert!(
                Instant::now() < deadline,
                "{url} keeps opening alerts: {alerts:#?}"
            );
        }
        if let Err(error) = navigated {
            assert!(error.contains("alert"), "loading {url}: {error}");
        }
        let source = self.call(Method::GET, &format!("{session}/source"), None).await;
        let dom = source["value"].as_str().unwrap_or_default().to_string();
        assert!(!dom.trim().is_empty(), "{url} rendered nothing");
        Page { dom, alerts }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        self.try_call(method.clone(), path, body)
            .await
            .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"))
    }

    /// One WebDriver command; its answer, or its error as WebDriver words it.
    async fn try_call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .body(Full::new(
                body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string())),
            ))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(60), self.client.request(request))
            .await
            .map_err(|_| "no answer within 60 s".to_string())?
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(|error| error.to_string())?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "{status} {}: {}",
                value["value"]["error"].as_str().unwrap_or_default(),
                value["value"]["message"].as_str().unwrap_or_default()
            ))
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Ends Chromium; the runtime may be gone, so a plain request.
            let port = self.base.rsplit(':').next().and_then(|port| port.parse().ok());
            if let Some(port) = port {
                let _ = delete(port, &format!("/session/{}", self.session));
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A blocking DELETE on loopback, for drop.
fn delete(port: u16, path: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "DELETE {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(())
}

/// The `href` of the first link in `dom` whose text holds `text`.
pub fn link(dom: &str, text: &str) -> Option<String> {
    dom.split("<a ").skip(1).find_map(|anchor| {
        let (attributes, rest) = anchor.split_once('>')?;
        let (inner, _) = rest.split_once("</a>")?;
        if !inner.contains(text) {
            return None;
        }
        let start = attributes.find("href=\"")? + "href=\"".len();
        let end = attributes[start..].find('"')? + start;
        Some(attributes[start..end].replace("&amp;", "&"))
    })
}
