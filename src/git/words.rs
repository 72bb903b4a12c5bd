//! What libgit2's words about a failed fetch mean. libgit2 hands transport
//! failures up as a class and a message, its codes saying little (a refused
//! redirect, a 404 and a silent server are all `GIT_ERROR` of class `Net` or
//! `Http`), so this is the one place berth reads a libgit2 error's words,
//! beside `registry::push::EngineWords` for the Docker Engine's. Each reading
//! is tested on the messages libgit2 (and libssh2 under it) writes.

/// How libgit2 words an HTTP status it did not expect: its own transport
/// (`transports/http.c`, the one berth uses), and Windows' (`transports/winhttp.c`).
const UNEXPECTED_STATUS: [&str; 2] = [
    "unexpected http status code: ",
    "request failed with status code: ",
];

/// What a failed fetch's libgit2 error says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Libgit2Words {
    /// libgit2 refused to follow a redirect (to another host, or from https
    /// to http): the next attempt meets the same one.
    RefusedRedirect,
    /// The server answered 401, 403 or 404, which no retry changes.
    RefusedStatus,
    /// The server answered with an error of its own (git daemon: no such
    /// repository, access denied).
    RemoteError,
    /// TLS found a certificate no CA bundle trusts (libgit2 does not always
    /// pass `GIT_ECERTIFICATE` up from its TLS stream).
    UntrustedCertificate,
    /// The server sent nothing for as long as berth lets it.
    Silent,
    /// No connection was opened in time.
    ConnectTimeout,
    /// libssh2 could not use the private key: "Unsupported private key
    /// format" is its word for a wrong passphrase too.
    PrivateKey,
    /// Anything else.
    Other,
}

impl Libgit2Words {
    /// What `error` says, by its words (and its class, for TLS).
    pub(crate) fn of(error: &git2::Error) -> Self {
        Self::read(error.class(), error.message())
    }

    fn read(class: git2::ErrorClass, message: &str) -> Self {
        if message.starts_with("cannot redirect from ") {
            Self::RefusedRedirect
        } else if refused_by_server(message) {
            Self::RefusedStatus
        } else if message.starts_with("remote error:") {
            Self::RemoteError
        } else if class == git2::ErrorClass::Ssl && message.contains("certificate") {
            Self::UntrustedCertificate
        } else if message.ends_with("socket: timed out") {
            Self::Silent
        } else if message.starts_with("failed to connect to ") && message.ends_with("Operation timed out") {
            Self::ConnectTimeout
        } else if message.contains("private key") {
            Self::PrivateKey
        } else {
            Self::Other
        }
    }

    /// Whether the next attempt meets the same answer: a refusal by the
    /// server, of a redirect or of a certificate.
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            Self::RefusedRedirect | Self::RefusedStatus | Self::RemoteError | Self::UntrustedCertificate
        )
    }
}

/// Whether an HTTP error says the server refused us (401, 403, 404). Only the
/// status code libgit2 names counts, not a port or path in the message that
/// happens to hold the same digits.
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

#[cfg(test)]
mod tests {
    use git2::ErrorClass;

    use super::*;

    fn net(message: &str) -> Libgit2Words {
        Libgit2Words::read(ErrorClass::Net, message)
    }

    #[test]
    fn only_a_refusing_status_code_stops_the_retries() {
        // A 503 from a server whose port holds "401" was taken for a refusal.
        assert_eq!(
            Libgit2Words::read(
                ErrorClass::Http,
                "unexpected http status code: 503 (from GET http://127.0.0.1:40155/git/x.git/info/refs)"
            ),
            Libgit2Words::Other
        );
        for refused in [
            "unexpected http status code: 404 (from GET http://h/x)",
            "Unexpected HTTP status code: 403",
            "request failed with status code: 401",
            "unexpected http status code: 401",
        ] {
            assert_eq!(
                Libgit2Words::read(ErrorClass::Http, refused),
                Libgit2Words::RefusedStatus,
                "{refused}"
            );
        }
        for other in [
            "unexpected http status code: 4040",
            "cannot connect to 127.0.0.1:4011: Connection refused",
            // Only libgit2's own words name the status: not a proxy's page quoted after them.
            "unexpected http status code: 502 (proxy said: status code: 404)",
            "remote: status code: 403",
        ] {
            assert_eq!(
                Libgit2Words::read(ErrorClass::Http, other),
                Libgit2Words::Other,
                "{other}"
            );
        }
    }

    #[test]
    fn refusals_are_final_and_a_silent_server_is_tried_again() {
        let samples = [
            (
                "cannot redirect from '127.0.0.1' to 'localhost'",
                Libgit2Words::RefusedRedirect,
            ),
            (
                "remote error: access denied or repository not exported: /x.git",
                Libgit2Words::RemoteError,
            ),
            ("could not read from socket: timed out", Libgit2Words::Silent),
            (
                "failed to connect to 10.255.255.1: Operation timed out",
                Libgit2Words::ConnectTimeout,
            ),
            ("early EOF", Libgit2Words::Other),
        ];
        for (message, words) in samples {
            assert_eq!(net(message), words, "{message}");
        }
        assert!(net("cannot redirect from 'a' to 'b'").is_final());
        assert!(!net("could not read from socket: timed out").is_final());
        assert!(!net("early EOF").is_final());
    }

    #[test]
    fn a_certificate_counts_in_tls_words_only() {
        let untrusted = Libgit2Words::read(
            ErrorClass::Ssl,
            "the SSL certificate is invalid: certificate verify failed",
        );
        assert_eq!(untrusted, Libgit2Words::UntrustedCertificate);
        assert!(untrusted.is_final());
        assert_eq!(
            net("certificate of 'h' has no name that matches"),
            Libgit2Words::Other
        );
    }

    #[test]
    fn libssh2s_key_words_are_about_the_private_key() {
        for message in [
            "Failed to authenticate SSH session: Unable to extract public key from private key file: Wrong passphrase or invalid/unrecognized private key file format",
            "Failed to authenticate SSH session: Unsupported private key file format",
        ] {
            assert_eq!(
                Libgit2Words::read(ErrorClass::Ssh, message),
                Libgit2Words::PrivateKey,
                "{message}"
            );
        }
    }
}
