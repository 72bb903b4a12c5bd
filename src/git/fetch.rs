//! Fetching a mirror: all branches and tags with pruning, retried on
//! transient failures, over libgit2's transports. A redirect is followed on
//! the remote's host only; a server silent for too long fails the attempt;
//! errors get a hint and never hold a secret.

use std::path::PathBuf;
use std::time::Duration;

use git2::{
    AutotagOption, CertificateCheckStatus, FetchOptions, FetchPrune, RemoteCallbacks, RemoteRedirect,
};

use crate::config::Repo;
use crate::git::credentials::{Credentials, check_host_key};
use crate::git::{Mirror, MirrorError, ffi, is_corruption, recreate};

const FETCH_ATTEMPTS: u32 = 3;

/// Loads the system's CA bundle into libgit2 for https remotes, once: berth
/// starts libgit2 without it ([`ffi::start_without_ca_bundle`]).
/// `SSL_CERT_FILE` names it, or it is where OpenSSL keeps it on this system.
/// An `http://` remote that redirects to `https://` loads it when its first
/// attempt meets the certificate (see [`Mirror::fetch`]).
fn load_ca_bundle() {
    ffi::load_ca_bundle_once(|| {
        std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .or_else(|| openssl_probe::probe().cert_file)
    });
}

/// How long a server may stay silent before a fetch's attempt fails (and is
/// retried): 600 s, or `BERTH_GIT_TIMEOUT` seconds. Without a limit, a server
/// that accepts and never answers would hold a nightly run forever; git itself
/// has none. The limit is long because a server may say nothing while it packs
/// a large repo: behind a proxy that buffers whole responses (lighttpd's
/// default), the stack's server sent a 1 GB repo's first byte after 2 minutes.
fn silence() -> Duration {
    let seconds = std::env::var("BERTH_GIT_TIMEOUT")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .unwrap_or(600);
    Duration::from_secs(seconds)
}

/// How long a connection may take to open (or less, if the silence allowed is).
fn connect_limit() -> Duration {
    silence().min(Duration::from_secs(60))
}

/// Sets libgit2's limits on a server's silence and on opening a connection,
/// once, before the first fetch.
fn limit_silence() {
    ffi::limit_silence_once(connect_limit(), silence());
}

fn is_transient(error: &git2::Error) -> bool {
    matches!(
        error.class(),
        git2::ErrorClass::Net | git2::ErrorClass::Os | git2::ErrorClass::Http | git2::ErrorClass::Ssl
    ) && error.code() != git2::ErrorCode::Auth
        // A certificate no CA bundle trusts stays untrusted (libgit2 does not
        // always pass GIT_ECERTIFICATE up from its TLS stream).
        && error.code() != git2::ErrorCode::Certificate
        && !(error.class() == git2::ErrorClass::Ssl && error.message().contains("certificate"))
        && !refused_by_server(error.message())
        // The server answered (git daemon: no such repository, access denied).
        && !error.message().starts_with("remote error:")
        // A redirect to another host: the next attempt meets the same one.
        && !is_refused_redirect(error.message())
}

/// libgit2's refusal of a redirect (to another host, or from https to http).
fn is_refused_redirect(message: &str) -> bool {
    message.starts_with("cannot redirect from ")
}

/// The progress line of a fetch. libgit2's indexer counts objects as they
/// arrive; a new mirror's first pack goes to [`crate::git::pack_index`], which knows
/// only the total until the pack is complete, so its line counts bytes.
fn transfer_line(total: usize, received: usize, indexed: usize, bytes: usize) -> String {
    let mebibytes = bytes / 1_048_576;
    match (total, received) {
        (0, _) => format!("receiving, {mebibytes} MiB"),
        (total, 0) => format!("receiving {total} objects, {mebibytes} MiB"),
        (total, received) => {
            format!("receiving objects {received}/{total}, {mebibytes} MiB; indexed {indexed}")
        }
    }
}

/// How libgit2 words an HTTP status it did not expect: its own transport
/// (`transports/http.c`, the one berth uses), and Windows' (`transports/winhttp.c`).
const UNEXPECTED_STATUS: [&str; 2] = [
    "unexpected http status code: ",
    "request failed with status code: ",
];

/// Whether an HTTP error says the server refused us (401, 403, 404), which no
/// retry changes. Only the status code libgit2 names counts, not a port or path
/// in the message that happens to hold the same digits.
fn refused_by_server(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    UNEXPECTED_STATUS
        .iter()
        .filter_map(|prefix| lower.strip_prefix(prefix))
        .any(|rest| {
            let code = &rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())];
            matches!(code, "401" | "403" | "404")
        })
}

/// A failed fetch's message with what to do about it: libgit2 says neither why
/// it refused a redirect nor how long it waited, and libssh2 says "Unsupported
/// private key format" for a wrong passphrase too.
fn with_hint(message: &str, repo: &Repo) -> String {
    if is_refused_redirect(message) {
        return format!(
            "{message} (berth follows a redirect on the repo's host only, where its token may go, and never from https to http: \
             write the URL the server redirects to in [[repo]])"
        );
    }
    if message.ends_with("socket: timed out") {
        return format!(
            "{message}: the server sent nothing for {} s (BERTH_GIT_TIMEOUT sets how long to wait)",
            silence().as_secs()
        );
    }
    if message.starts_with("failed to connect to ") && message.ends_with("Operation timed out") {
        return format!(
            "{message}: no connection within {} s (BERTH_GIT_TIMEOUT sets how long to wait, up to 60 s)",
            connect_limit().as_secs()
        );
    }
    if repo.ssh_key.is_none() || !message.contains("private key") {
        return message.to_string();
    }
    match &repo.ssh_key_passphrase_env {
        Some(name) => format!("{message} (is the passphrase in {name} the key's?)"),
        None => {
            format!("{message} (if the key has a passphrase, name its variable in ssh_key_passphrase_env)")
        }
    }
}

/// Removes the token and the key's passphrase (if any) from a message, so no
/// secret reaches an error.
fn redact(message: &str, repo: &Repo) -> String {
    let mut message = message.to_string();
    for name in [&repo.token_env, &repo.ssh_key_passphrase_env]
        .into_iter()
        .flatten()
    {
        if let Ok(secret) = std::env::var(name)
            && !secret.is_empty()
        {
            message = message.replace(&secret, "***");
        }
    }
    message
}

/// "1 time", "3 times".
pub(super) fn times(count: u32) -> String {
    if count == 1 {
        "1 time".into()
    } else {
        format!("{count} times")
    }
}

impl Mirror {
    /// Fetches every branch and tag, pruning deleted ones; retries transient failures.
    pub fn fetch(
        &mut self,
        on_warning: &dyn Fn(String),
        on_progress: &dyn Fn(String),
    ) -> Result<(), MirrorError> {
        if self.repo.url.starts_with("https://") {
            load_ca_bundle();
        }
        limit_silence();
        let mut last_error = String::new();
        // Whether the redirect of an http:// remote to https:// was warned about.
        let mut warned_https = false;
        for attempt in 1..=FETCH_ATTEMPTS {
            let bundle_loaded = ffi::ca_bundle_loaded();
            let (mut fetched, mut https_host) = self.fetch_once(on_progress);
            if fetched.is_err() && https_host.is_some() && !bundle_loaded {
                // libgit2 followed the redirect before any CA bundle was loaded,
                // so the certificate could not be checked: again, with it.
                load_ca_bundle();
                (fetched, https_host) = self.fetch_once(on_progress);
            }
            if let Some(host) = https_host.filter(|_| !warned_https) {
                warned_https = true;
                on_warning(format!(
                    "repo `{}`: {} redirects to https:// on {host}; fetching from there (write the https:// URL in [[repo]] to save the redirect)",
                    self.repo.name, self.repo.url
                ));
            }
            match fetched {
                Ok(()) => return Ok(()),
                Err(error) if is_corruption(&error) => {
                    on_warning(format!(
                        "mirror of repo `{}` is damaged ({}); cloning it again",
                        self.repo.name,
                        error.message()
                    ));
                    self.git =
                        recreate(self.git.path(), &self.repo.url).map_err(|message| MirrorError::Local {
                            repo: self.repo.name.clone(),
                            message,
                        })?;
                }
                Err(error) => {
                    last_error = redact(&with_hint(error.message(), &self.repo), &self.repo);
                    if !is_transient(&error) {
                        return Err(self.fetch_error(attempt, last_error));
                    }
                    if attempt < FETCH_ATTEMPTS {
                        tracing::debug!(repo = %self.repo.name, attempt, "fetch failed, retrying: {last_error}");
                        std::thread::sleep(Duration::from_millis(500 * u64::from(attempt * attempt)));
                    }
                }
            }
        }
        Err(self.fetch_error(FETCH_ATTEMPTS, last_error))
    }

    fn fetch_error(&self, attempts: u32, message: String) -> MirrorError {
        MirrorError::Fetch {
            repo: self.repo.name.clone(),
            url: self.repo.url.clone(),
            attempts,
            message,
        }
    }

    /// One fetch from the repo's URL. With it, the host of the https:// server
    /// an `http://` remote redirected libgit2 to (on the same host), if it did.
    fn fetch_once(&self, on_progress: &dyn Fn(String)) -> (Result<(), git2::Error>, Option<String>) {
        let mut remote = match self.git.find_remote("origin") {
            Ok(remote) => remote,
            Err(error) => return (Err(error), None),
        };
        // libgit2 replaces a refused host key's message by its own; ours is kept here.
        let host_key_refusal = std::cell::RefCell::new(None::<String>);
        // A certificate on a fetch from an http:// URL: libgit2 followed a redirect to https://.
        let https_host = std::cell::RefCell::new(None::<String>);
        let plain_http = self.repo.url.starts_with("http://");
        let mut callbacks = RemoteCallbacks::new();
        let mut credentials = Credentials::new(&self.repo);
        callbacks.credentials(move |_url, username, allowed| credentials.next(username, allowed));
        callbacks.certificate_check(|certificate, host| {
            // X.509 (https) is checked by libgit2 and OpenSSL as usual.
            let Some(host_key) = certificate.as_hostkey() else {
                if plain_http {
                    *https_host.borrow_mut() = Some(host.to_string());
                }
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            match check_host_key(&self.repo, host_key, host) {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(message) => {
                    *host_key_refusal.borrow_mut() = Some(message.clone());
                    Err(git2::Error::new(
                        git2::ErrorCode::Certificate,
                        git2::ErrorClass::Ssh,
                        message,
                    ))
                }
            }
        });
        let mut options = FetchOptions::new();
        // Objects and bytes while they arrive, a few times a second (a terminal shows
        // them live; elsewhere only `-v` prints them).
        let mut last = std::time::Instant::now();
        callbacks.transfer_progress(move |progress| {
            if last.elapsed() >= Duration::from_millis(250) {
                last = std::time::Instant::now();
                on_progress(transfer_line(
                    progress.total_objects(),
                    progress.received_objects(),
                    progress.indexed_objects(),
                    progress.received_bytes(),
                ));
            }
            true
        });
        options.remote_callbacks(callbacks);
        options.prune(FetchPrune::On);
        options.download_tags(AutotagOption::All);
        // Redirects are followed on the remote's host only (libgit2 checks the
        // host, not the port or scheme): the repo's token is for that host alone.
        options.follow_redirects(RemoteRedirect::None);
        let fetched = remote.fetch(
            &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            Some(&mut options),
            None,
        );
        drop(options);
        let fetched = match (fetched, host_key_refusal.into_inner()) {
            (Err(_), Some(refusal)) => Err(git2::Error::new(
                git2::ErrorCode::Certificate,
                git2::ErrorClass::Ssh,
                refusal,
            )),
            (fetched, _) => fetched,
        };
        (fetched, https_host.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_counts_objects_when_they_are_counted_and_bytes_always() {
        assert_eq!(transfer_line(0, 0, 0, 10), "receiving, 0 MiB");
        assert_eq!(
            transfer_line(59_379, 0, 0, 3 * 1_048_576),
            "receiving 59379 objects, 3 MiB"
        );
        assert_eq!(
            transfer_line(100, 40, 30, 2_097_152),
            "receiving objects 40/100, 2 MiB; indexed 30"
        );
    }

    #[test]
    fn only_a_refusing_status_code_stops_the_retries() {
        // A 503 from a server whose port holds "401" was taken for a refusal.
        assert!(!refused_by_server(
            "unexpected http status code: 503 (from GET http://127.0.0.1:40155/git/x.git/info/refs)"
        ));
        assert!(refused_by_server(
            "unexpected http status code: 404 (from GET http://h/x)"
        ));
        assert!(refused_by_server("Unexpected HTTP status code: 403"));
        assert!(refused_by_server("request failed with status code: 401"));
        assert!(!refused_by_server("unexpected http status code: 4040"));
        assert!(!refused_by_server(
            "cannot connect to 127.0.0.1:4011: Connection refused"
        ));
        assert!(refused_by_server("unexpected http status code: 401"));
        // Only libgit2's own words name the status: not a proxy's page quoted after them.
        assert!(!refused_by_server(
            "unexpected http status code: 502 (proxy said: status code: 404)"
        ));
        assert!(!refused_by_server("remote: status code: 403"));
    }

    #[test]
    fn a_refused_redirect_and_a_silent_server_say_what_to_do() {
        let repo = Repo {
            name: "site".into(),
            url: "http://127.0.0.1/git/site.git".into(),
            branch: "main".into(),
            token_env: None,
            ssh_key: None,
            ssh_key_passphrase_env: None,
            known_hosts: None,
        };
        let refused = git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Net,
            "cannot redirect from '127.0.0.1' to 'localhost'",
        );
        assert!(!is_transient(&refused), "the same redirect comes back");
        assert!(
            with_hint(refused.message(), &repo)
                .ends_with("write the URL the server redirects to in [[repo]])"),
            "{}",
            with_hint(refused.message(), &repo)
        );
        let silent = git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Net,
            "could not read from socket: timed out",
        );
        assert!(is_transient(&silent));
        assert!(
            with_hint(silent.message(), &repo).contains(": the server sent nothing for "),
            "{}",
            with_hint(silent.message(), &repo)
        );
        assert_eq!(with_hint("early EOF", &repo), "early EOF");
    }
}
