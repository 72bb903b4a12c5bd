//! Fetching a mirror: all branches and tags with pruning, retried on
//! transient failures, over libgit2's transports. A redirect is followed on
//! the remote's host only; a server silent for too long fails the attempt;
//! errors get a hint and never hold a secret. What libgit2's words mean is
//! read in [`crate::git::words`].

use std::path::PathBuf;
use std::time::Duration;

use git2::{
    AutotagOption, CertificateCheckStatus, FetchOptions, FetchPrune, RemoteCallbacks, RemoteRedirect,
};

use crate::config::Repo;
use crate::git::credentials::{Credentials, HostKeyRefusal, check_host_key};
use crate::git::words::Libgit2Words;
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

/// Whether a fetch that failed with `error` may pass on the next attempt: a
/// failure of the network, the OS, HTTP or TLS that no one refused.
fn is_transient(error: &git2::Error) -> bool {
    matches!(
        error.class(),
        git2::ErrorClass::Net | git2::ErrorClass::Os | git2::ErrorClass::Http | git2::ErrorClass::Ssl
    ) && error.code() != git2::ErrorCode::Auth
        // A certificate no CA bundle trusts stays untrusted.
        && error.code() != git2::ErrorCode::Certificate
        && !Libgit2Words::of(error).is_final()
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

/// Why a fetch failed, as the error says it: libgit2's words (its secrets
/// taken out) with what to do about them, or berth's refusal of an ssh
/// server's host key.
#[derive(Debug, thiserror::Error)]
pub enum FetchFailure {
    /// libgit2 failed the fetch; `words` are its message, the token and the
    /// key's passphrase replaced by `***`.
    #[error("{words}{}", hint.as_ref().map(ToString::to_string).unwrap_or_default())]
    Libgit2 { words: String, hint: Option<FetchHint> },
    /// berth refused the server's host key.
    #[error("{0}")]
    HostKey(Box<HostKeyRefusal>),
}

/// What to do about a failed fetch, where libgit2 does not say: it says
/// neither why it refused a redirect nor how long it waited, and libssh2 says
/// "Unsupported private key format" for a wrong passphrase too. Its text
/// follows libgit2's words.
#[derive(Debug, Clone)]
pub enum FetchHint {
    /// libgit2 refused a redirect.
    Redirect,
    /// The server sent nothing for `seconds`.
    Silent { seconds: u64 },
    /// No connection opened within `seconds`.
    ConnectTimeout { seconds: u64 },
    /// libssh2 could not use the key, whose passphrase comes from `variable`.
    Passphrase { variable: String },
    /// libssh2 could not use the key, and no passphrase variable is named.
    NoPassphrase,
}

impl std::fmt::Display for FetchHint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redirect => formatter.write_str(
                " (berth follows a redirect on the repo's host only, where its token may go, and never from https to http: \
                 write the URL the server redirects to in [[repo]])",
            ),
            Self::Silent { seconds } => write!(
                formatter,
                ": the server sent nothing for {seconds} s (BERTH_GIT_TIMEOUT sets how long to wait)"
            ),
            Self::ConnectTimeout { seconds } => write!(
                formatter,
                ": no connection within {seconds} s (BERTH_GIT_TIMEOUT sets how long to wait, up to 60 s)"
            ),
            Self::Passphrase { variable } => write!(formatter, " (is the passphrase in {variable} the key's?)"),
            Self::NoPassphrase => formatter
                .write_str(" (if the key has a passphrase, name its variable in ssh_key_passphrase_env)"),
        }
    }
}

/// Why one attempt to fetch failed.
enum AttemptError {
    /// libgit2 failed it.
    Git(git2::Error),
    /// berth refused the ssh server's host key (libgit2's error then says
    /// only that the check failed).
    HostKey(HostKeyRefusal),
}

/// libgit2's failure `error` as a [`FetchFailure`]: its words without the
/// repo's secrets, and a hint when libgit2's words call for one.
fn libgit2_failure(error: &git2::Error, repo: &Repo) -> FetchFailure {
    FetchFailure::Libgit2 {
        words: redact(error.message(), repo),
        hint: hint(Libgit2Words::of(error), repo),
    }
}

/// What to do about a failure libgit2 words as `words` says.
fn hint(words: Libgit2Words, repo: &Repo) -> Option<FetchHint> {
    match words {
        Libgit2Words::RefusedRedirect => Some(FetchHint::Redirect),
        Libgit2Words::Silent => Some(FetchHint::Silent {
            seconds: silence().as_secs(),
        }),
        Libgit2Words::ConnectTimeout => Some(FetchHint::ConnectTimeout {
            seconds: connect_limit().as_secs(),
        }),
        Libgit2Words::PrivateKey if repo.ssh_key.is_some() => Some(match &repo.ssh_key_passphrase_env {
            Some(variable) => FetchHint::Passphrase {
                variable: variable.clone(),
            },
            None => FetchHint::NoPassphrase,
        }),
        _ => None,
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

/// The commit `branch` names on `repo`'s remote, asked without fetching, as
/// `git ls-remote` asks (one connection, no objects); `None` when the remote
/// has no such branch. With the repo's credentials and host key checks, and
/// no retry: a poll asks again at its next round.
pub fn remote_branch_head(repo: &Repo, branch: &str) -> Result<Option<String>, MirrorError> {
    if repo.url.starts_with("https://") {
        load_ca_bundle();
    }
    let failed = |failure: FetchFailure| MirrorError::Fetch {
        repo: repo.name.clone(),
        url: repo.url.clone(),
        attempts: 1,
        failure,
    };
    let mut remote = git2::Remote::create_detached(repo.url.as_str())
        .map_err(|error| failed(libgit2_failure(&error, repo)))?;
    let host_key_refusal = std::cell::RefCell::new(None::<HostKeyRefusal>);
    let mut callbacks = RemoteCallbacks::new();
    let mut credentials = Credentials::new(repo);
    callbacks.credentials(move |_url, username, allowed| credentials.next(username, allowed));
    callbacks.certificate_check(|certificate, host| {
        let Some(host_key) = certificate.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        match check_host_key(repo, host_key, host) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(refusal) => {
                let error = git2::Error::new(
                    git2::ErrorCode::Certificate,
                    git2::ErrorClass::Ssh,
                    refusal.to_string(),
                );
                *host_key_refusal.borrow_mut() = Some(refusal);
                Err(error)
            }
        }
    });
    let connected = remote.connect_auth(git2::Direction::Fetch, Some(callbacks), None);
    let connection = match (connected, host_key_refusal.take()) {
        (Ok(connection), _) => connection,
        (Err(_), Some(refusal)) => return Err(failed(FetchFailure::HostKey(Box::new(refusal)))),
        (Err(error), None) => return Err(failed(libgit2_failure(&error, repo))),
    };
    let wanted = format!("refs/heads/{branch}");
    let heads = connection
        .list()
        .map_err(|error| failed(libgit2_failure(&error, repo)))?;
    Ok(heads
        .iter()
        .find(|head| head.name() == wanted)
        .map(|head| head.oid().to_string()))
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
        let mut last_failure = None;
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
                Err(AttemptError::HostKey(refusal)) => {
                    return Err(self.fetch_error(attempt, FetchFailure::HostKey(Box::new(refusal))));
                }
                Err(AttemptError::Git(error)) if is_corruption(&error) => {
                    on_warning(format!(
                        "mirror of repo `{}` is damaged ({}); cloning it again",
                        self.repo.name,
                        error.message()
                    ));
                    self.git =
                        recreate(self.git.path(), &self.repo.url).map_err(|problem| MirrorError::Local {
                            repo: self.repo.name.clone(),
                            problem,
                        })?;
                }
                Err(AttemptError::Git(error)) => {
                    let failure = libgit2_failure(&error, &self.repo);
                    if !is_transient(&error) {
                        return Err(self.fetch_error(attempt, failure));
                    }
                    if attempt < FETCH_ATTEMPTS {
                        tracing::debug!(repo = %self.repo.name, attempt, "fetch failed, retrying: {failure}");
                        std::thread::sleep(Duration::from_millis(500 * u64::from(attempt * attempt)));
                    }
                    last_failure = Some(failure);
                }
            }
        }
        let failure = last_failure.unwrap_or(FetchFailure::Libgit2 {
            words: String::new(),
            hint: None,
        });
        Err(self.fetch_error(FETCH_ATTEMPTS, failure))
    }

    fn fetch_error(&self, attempts: u32, failure: FetchFailure) -> MirrorError {
        MirrorError::Fetch {
            repo: self.repo.name.clone(),
            url: self.repo.url.clone(),
            attempts,
            failure,
        }
    }

    /// One fetch from the repo's URL. With it, the host of the https:// server
    /// an `http://` remote redirected libgit2 to (on the same host), if it did.
    fn fetch_once(&self, on_progress: &dyn Fn(String)) -> (Result<(), AttemptError>, Option<String>) {
        self.fetch_refspecs(
            &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            true,
            on_progress,
        )
    }

    /// Fetches pull (or merge) request `number`'s head, as the forge keeps
    /// it (`refs/pull/N/head` on GitHub and Gitea, `refs/merge-requests/N/head`
    /// on GitLab), into the same refs here: a fork's commits are only there.
    /// A remote without such refs (a plain Git server) fetches nothing.
    pub fn fetch_change(&self, number: u64) -> Result<(), MirrorError> {
        if self.repo.url.starts_with("https://") {
            load_ca_bundle();
        }
        let refspecs = [
            format!("+refs/pull/{number}/head:refs/pull/{number}/head"),
            format!("+refs/merge-requests/{number}/head:refs/merge-requests/{number}/head"),
        ];
        let refspecs: Vec<&str> = refspecs.iter().map(String::as_str).collect();
        match self.fetch_refspecs(&refspecs, false, &|_| {}).0 {
            Ok(()) => Ok(()),
            Err(AttemptError::HostKey(refusal)) => {
                Err(self.fetch_error(1, FetchFailure::HostKey(Box::new(refusal))))
            }
            Err(AttemptError::Git(error)) => Err(self.fetch_error(1, libgit2_failure(&error, &self.repo))),
        }
    }

    /// One fetch of `refspecs` from the repo's URL (pruning what they cover
    /// when `prune`). With it, the host of the https:// server an `http://`
    /// remote redirected libgit2 to (on the same host), if it did.
    fn fetch_refspecs(
        &self,
        refspecs: &[&str],
        prune: bool,
        on_progress: &dyn Fn(String),
    ) -> (Result<(), AttemptError>, Option<String>) {
        let mut remote = match self.git.find_remote("origin") {
            Ok(remote) => remote,
            Err(error) => return (Err(AttemptError::Git(error)), None),
        };
        // libgit2 replaces a refused host key's message by its own; ours is kept here.
        let host_key_refusal = std::cell::RefCell::new(None::<HostKeyRefusal>);
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
                Err(refusal) => {
                    // libgit2 takes its callbacks' errors as a message.
                    let error = git2::Error::new(
                        git2::ErrorCode::Certificate,
                        git2::ErrorClass::Ssh,
                        refusal.to_string(),
                    );
                    *host_key_refusal.borrow_mut() = Some(refusal);
                    Err(error)
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
        options.prune(if prune { FetchPrune::On } else { FetchPrune::Off });
        options.download_tags(AutotagOption::All);
        // Redirects are followed on the remote's host only (libgit2 checks the
        // host, not the port or scheme): the repo's token is for that host alone.
        options.follow_redirects(RemoteRedirect::None);
        let fetched = remote.fetch(refspecs, Some(&mut options), None);
        drop(options);
        let fetched = match (fetched, host_key_refusal.into_inner()) {
            (Err(_), Some(refusal)) => Err(AttemptError::HostKey(refusal)),
            (fetched, _) => fetched.map_err(AttemptError::Git),
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
        let said = libgit2_failure(&refused, &repo).to_string();
        assert!(
            said.starts_with("cannot redirect from '127.0.0.1' to 'localhost' (berth follows")
                && said.ends_with("write the URL the server redirects to in [[repo]])"),
            "{said}"
        );
        let silent = git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Net,
            "could not read from socket: timed out",
        );
        assert!(is_transient(&silent));
        let said = libgit2_failure(&silent, &repo).to_string();
        assert!(
            said.contains("socket: timed out: the server sent nothing for "),
            "{said}"
        );
        let eof = git2::Error::new(git2::ErrorCode::GenericError, git2::ErrorClass::Net, "early EOF");
        assert_eq!(libgit2_failure(&eof, &repo).to_string(), "early EOF");
    }

    #[test]
    fn a_key_libssh2_cannot_use_asks_for_its_passphrase_and_no_secret_is_said() {
        let mut repo = Repo {
            name: "site".into(),
            url: "git@git.example:site.git".into(),
            branch: "main".into(),
            token_env: None,
            ssh_key: Some("/keys/id".into()),
            ssh_key_passphrase_env: Some("BERTH_TEST_UNSET_PASSPHRASE".into()),
            known_hosts: None,
        };
        let unusable = git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Ssh,
            "Failed to authenticate SSH session: Unsupported private key file format",
        );
        assert!(
            libgit2_failure(&unusable, &repo)
                .to_string()
                .ends_with("format (is the passphrase in BERTH_TEST_UNSET_PASSPHRASE the key's?)")
        );
        repo.ssh_key_passphrase_env = None;
        assert!(
            libgit2_failure(&unusable, &repo)
                .to_string()
                .ends_with("(if the key has a passphrase, name its variable in ssh_key_passphrase_env)")
        );
        repo.ssh_key = None;
        assert_eq!(
            libgit2_failure(&unusable, &repo).to_string(),
            unusable.message(),
            "the agent's keys: no hint"
        );
    }
}
