//! Credentials for a fetch, from the environment at fetch time and never
//! stored: a token for http(s), a key file or the ssh-agent for ssh; and the
//! check of an ssh server's host key against `known_hosts`.

use std::path::PathBuf;

use crate::config::Repo;
use crate::git::known_hosts;

/// Answers libgit2's credential requests for one fetch: a token for https, a key
/// file or the ssh-agent for ssh. A request repeated after a refusal fails with
/// what was refused (libgit2 would ask forever).
pub(super) struct Credentials<'r> {
    repo: &'r Repo,
    attempts: u32,
}

impl<'r> Credentials<'r> {
    pub(super) fn new(repo: &'r Repo) -> Self {
        Self { repo, attempts: 0 }
    }

    pub(super) fn next(
        &mut self,
        username: Option<&str>,
        allowed: git2::CredentialType,
    ) -> Result<git2::Cred, git2::Error> {
        use git2::CredentialType;
        // An ssh URL without a user: libgit2 asks for the name first.
        if allowed == CredentialType::USERNAME {
            return git2::Cred::username(username.unwrap_or("git"));
        }
        self.attempts += 1;
        let refused = |message: String| git2::Error::from_str(&message);
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let token = token(self.repo.token_env.as_deref())?;
            if self.attempts > 3 {
                return Err(refused(
                    "authentication failed (credentials were rejected)".into(),
                ));
            }
            return git2::Cred::userpass_plaintext(username.unwrap_or("berth"), &token);
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = username.unwrap_or("git");
            if let Some(key) = &self.repo.ssh_key {
                if self.attempts > 1 {
                    return Err(refused(format!(
                        "ssh authentication as `{user}` failed: the server refused the key in {}",
                        key.display()
                    )));
                }
                let passphrase = match &self.repo.ssh_key_passphrase_env {
                    Some(name) => Some(std::env::var(name).map_err(|_| {
                        refused(format!("ssh_key_passphrase_env names `{name}`, which is not set"))
                    })?),
                    None => None,
                };
                // The public key beside it, as OpenSSH reads it; libssh2 derives it otherwise.
                let mut public = key.as_os_str().to_owned();
                public.push(".pub");
                let public = Some(PathBuf::from(public)).filter(|public| public.is_file());
                return git2::Cred::ssh_key(user, public.as_deref(), key, passphrase.as_deref());
            }
            if std::env::var_os("SSH_AUTH_SOCK").is_none_or(|socket| socket.is_empty()) {
                return Err(refused(
                    "the ssh remote needs a key: set ssh_key in [[repo]], or run an ssh-agent with the key (SSH_AUTH_SOCK is not set)"
                        .into(),
                ));
            }
            if self.attempts > 1 {
                return Err(refused(format!(
                    "ssh authentication as `{user}` failed: the server refused every key of the ssh-agent (SSH_AUTH_SOCK)"
                )));
            }
            return git2::Cred::ssh_key_from_agent(user);
        }
        git2::Cred::default()
    }
}

/// The token for an http(s) remote that asks for credentials, from the variable
/// `token_env` names.
fn token(token_env: Option<&str>) -> Result<String, git2::Error> {
    token_env
        .and_then(|name| std::env::var(name).ok())
        .ok_or_else(|| {
            git2::Error::from_str(
                "the remote asks for credentials and no token is configured (set token_env in [[repo]])",
            )
        })
}

/// Why berth refuses an ssh server's host key: the sentence libgit2 is
/// handed (its callbacks take a message) and the fetch's error says.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyRefusal {
    /// The server sent no key, or one of a type berth cannot read.
    #[error("the ssh server {host} sent no host key berth can check")]
    NoKey { host: String },
    /// A `known_hosts` file could not be read.
    #[error(transparent)]
    Unreadable(#[from] known_hosts::KnownHostsError),
    /// The key is on a `@revoked` line.
    #[error("the host key of {name} ({presented}) is revoked ({}:{line}); refusing to connect", file.display())]
    Revoked {
        name: String,
        presented: String,
        file: PathBuf,
        line: usize,
    },
    /// The host is listed with another key of the same type.
    #[error(
        "the host key of {name} has CHANGED: the server presents {presented}, but {}:{line} lists another key; \
         the key was replaced or someone is in between, so berth refuses to connect (if the change is expected, replace that line)",
        file.display()
    )]
    Changed {
        name: String,
        presented: String,
        file: PathBuf,
        line: usize,
    },
    /// The host is not listed with a key of this type.
    #[error(
        "unknown ssh host {name}: its key {presented} is not in {listed}{}; berth refuses unknown hosts. \
         Check the fingerprint with the server's owner, then add the host's line to the file \
         (`ssh-keyscan{} {host}` prints it), or name a file with known_hosts in [[repo]]",
        others(other_types),
        if *port == 22 { String::new() } else { format!(" -p {port}") }
    )]
    Unknown {
        name: String,
        presented: String,
        /// The files looked in, `a or b`.
        listed: String,
        /// The key types the host is listed with.
        other_types: Vec<String>,
        host: String,
        port: u16,
    },
}

/// ` (it lists only A, B keys for that host)`, or nothing.
fn others(other_types: &[String]) -> String {
    if other_types.is_empty() {
        String::new()
    } else {
        format!(" (it lists only {} keys for that host)", other_types.join(", "))
    }
}

/// Looks the server's host key up in the repo's `known_hosts` file, or in the
/// user's and the system's; `Err` says why it is refused.
pub(super) fn check_host_key(
    repo: &Repo,
    host_key: &git2::cert::CertHostkey<'_>,
    host: &str,
) -> Result<(), HostKeyRefusal> {
    let Some(key) = host_key.hostkey() else {
        return Err(HostKeyRefusal::NoKey {
            host: host.to_string(),
        });
    };
    let port = known_hosts::port_of(&repo.url);
    let files = repo
        .known_hosts
        .clone()
        .map_or_else(known_hosts::default_known_hosts, |file| vec![file]);
    let name = known_hosts::known_hosts_name(host, port);
    let presented = format!(
        "{} {}",
        known_hosts::key_type(key).unwrap_or("unknown type"),
        known_hosts::fingerprint(key)
    );
    match known_hosts::check(&files, host, port, key)? {
        known_hosts::Verdict::Known => Ok(()),
        known_hosts::Verdict::Revoked { file, line } => Err(HostKeyRefusal::Revoked {
            name,
            presented,
            file,
            line,
        }),
        known_hosts::Verdict::Changed { file, line } => Err(HostKeyRefusal::Changed {
            name,
            presented,
            file,
            line,
        }),
        known_hosts::Verdict::Unknown { other_types } => Err(HostKeyRefusal::Unknown {
            name,
            presented,
            listed: files
                .iter()
                .map(|file| file.display().to_string())
                .collect::<Vec<_>>()
                .join(" or "),
            other_types,
            host: host.to_string(),
            port,
        }),
    }
}
