//! ssh remotes: the port an ssh URL names, and whether a server's host key is
//! listed in OpenSSH `known_hosts` files (which URLs are ssh is
//! [`crate::config::is_ssh_url`]'s to say).
//!
//! berth checks host keys itself rather than leaving it to libgit2, which reads
//! only `~/.ssh/known_hosts` and reports any failure as "invalid or unknown remote
//! ssh hostkey". The key the server presents must be listed for the host (`host`
//! on port 22, `[host]:port` elsewhere):
//!
//! 1. Read each file in turn (a missing file lists nothing).
//! 2. A line whose key is the server's and is marked `@revoked` refuses it, for
//!    every host.
//! 3. A line whose host pattern matches (plain, with `*`/`?` wildcards and `!`
//!    negation, or hashed as `|1|salt|hash`) with the server's key accepts it; one
//!    with another key of the same type means the key changed (refused).
//! 4. Otherwise the host is unknown (refused). `@cert-authority` lines are skipped:
//!    libssh2 has no host certificates.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use sha2::Digest as _;

/// What can go wrong while reading `known_hosts` files.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    /// A file exists but cannot be read.
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
}

/// What the `known_hosts` files say about a host's key.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The key is listed for the host.
    Known,
    /// The key is on a `@revoked` line.
    Revoked { file: PathBuf, line: usize },
    /// The host is listed with another key of the same type: the server's key
    /// changed, or someone is in between.
    Changed { file: PathBuf, line: usize },
    /// The host is not listed with a key of this type; `other_types` are the key
    /// types it is listed with, if any.
    Unknown { other_types: Vec<String> },
}

/// The files OpenSSH reads by default: the user's, then the system's.
pub fn default_known_hosts() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(home) = std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        files.push(Path::new(&home).join(".ssh/known_hosts"));
    }
    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    files
}

/// The port of an ssh URL: the one `ssh://host:port/…` names, else 22.
pub fn port_of(url: &str) -> u16 {
    let Some(rest) = url.strip_prefix("ssh://") else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let port = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split_once("]:").map(|(_, port)| port)
    } else {
        host_port.rsplit_once(':').map(|(_, port)| port)
    };
    port.and_then(|port| port.parse().ok()).unwrap_or(22)
}

/// How a host appears in `known_hosts`: `host` on port 22, `[host]:port` elsewhere.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

/// The key type a key blob starts with (`ssh-ed25519`, `ssh-rsa`, …).
pub fn key_type(key: &[u8]) -> Option<&str> {
    let length = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
    let end = 4 + usize::try_from(length).ok()?;
    std::str::from_utf8(key.get(4..end)?).ok()
}

/// OpenSSH's fingerprint of a key blob: `SHA256:` and unpadded base64.
pub fn fingerprint(key: &[u8]) -> String {
    let digest = sha2::Sha256::digest(key);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Looks `key` (the blob the server presented) up for `host` and `port` in `files`.
pub fn check(files: &[PathBuf], host: &str, port: u16, key: &[u8]) -> Result<Verdict, KnownHostsError> {
    let name = known_hosts_name(host, port);
    let presented_type = key_type(key);
    let mut known = false;
    let mut changed = None;
    let mut other_types: Vec<String> = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(KnownHostsError::Read {
                    path: file.clone(),
                    error: source,
                });
            }
        };
        for (index, line) in text.lines().enumerate() {
            let Some(entry) = Entry::parse(line) else {
                continue;
            };
            let same_key = entry.key == key;
            match entry.marker {
                Some("@revoked") if same_key => {
                    return Ok(Verdict::Revoked {
                        file: file.clone(),
                        line: index + 1,
                    });
                }
                Some(_) => continue,
                None => {}
            }
            if !hosts_match(entry.hosts, &name) {
                continue;
            }
            let entry_type = key_type(&entry.key);
            if same_key {
                known = true;
            } else if entry_type.is_some() && entry_type == presented_type {
                changed.get_or_insert((file.clone(), index + 1));
            } else if let Some(other) = entry_type
                && !other_types.iter().any(|known_type| known_type == other)
            {
                other_types.push(other.to_string());
            }
        }
    }
    Ok(if known {
        Verdict::Known
    } else if let Some((file, line)) = changed {
        Verdict::Changed { file, line }
    } else {
        Verdict::Unknown { other_types }
    })
}

/// One line of a `known_hosts` file.
struct Entry<'l> {
    marker: Option<&'l str>,
    hosts: &'l str,
    key: Vec<u8>,
}

impl<'l> Entry<'l> {
    /// A line's fields; `None` for comments, blank and malformed lines.
    fn parse(line: &'l str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next()?;
        let marker = if first.starts_with('@') {
            let marker = first;
            first = fields.next()?;
            Some(marker)
        } else {
            None
        };
        let _key_type = fields.next()?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(fields.next()?)
            .ok()?;
        Some(Self {
            marker,
            hosts: first,
            key,
        })
    }
}

/// Does the host field of a line (`a,b,!c`, `*.example.com`, `|1|salt|hash`) name `name`?
fn hosts_match(field: &str, name: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let mut matched = false;
    for pattern in field.split(',') {
        let pattern = pattern.to_ascii_lowercase();
        if let Some(negated) = pattern.strip_prefix('!') {
            if crate::git::wildcard::matches(negated, name) {
                return false;
            }
        } else if crate::git::wildcard::matches(&pattern, name) {
            matched = true;
        }
    }
    matched
}

/// `salt|hash`, both base64: HMAC-SHA1 of `name` keyed by the salt.
fn hashed_match(hashed: &str, name: &str) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key blob of `kind` with `body` (not a real key; only compared).
    fn blob(kind: &str, body: &[u8]) -> Vec<u8> {
        let mut blob = u32::try_from(kind.len()).unwrap().to_be_bytes().to_vec();
        blob.extend_from_slice(kind.as_bytes());
        blob.extend_from_slice(body);
        blob
    }

    fn line(hosts: &str, key: &[u8]) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        format!("{hosts} {} {encoded}\n", key_type(key).unwrap())
    }

    fn hashed(name: &str, salt: &[u8]) -> String {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        format!(
            "|1|{}|{}",
            engine.encode(salt),
            engine.encode(mac.finalize().into_bytes())
        )
    }

    fn verdict(text: &str, host: &str, port: u16, key: &[u8]) -> Verdict {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, text).unwrap();
        let missing = dir.path().join("missing");
        check(&[missing, file], host, port, key).unwrap()
    }

    #[test]
    fn ssh_urls_and_their_ports() {
        use crate::config::is_ssh_url;
        assert!(is_ssh_url("ssh://git@example.com/a.git"));
        assert!(is_ssh_url("git@example.com:team/a.git"));
        assert!(is_ssh_url("example.com:a.git"));
        assert!(!is_ssh_url("https://example.com/a.git"));
        assert!(!is_ssh_url("/srv/git/a.git"));
        assert!(!is_ssh_url("./a:b"));
        assert_eq!(port_of("ssh://git@127.0.0.1:2222/srv/a.git"), 2222);
        assert_eq!(port_of("ssh://[::1]:2200/a.git"), 2200);
        assert_eq!(port_of("ssh://example.com/a.git"), 22);
        assert_eq!(port_of("git@example.com:a.git"), 22);
        assert_eq!(known_hosts_name("Example.com", 22), "example.com");
        assert_eq!(known_hosts_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }

    #[test]
    fn plain_hashed_and_wildcard_names_are_found() {
        let key = blob("ssh-ed25519", b"one");
        let text = line("[127.0.0.1]:2222", &key);
        assert_eq!(verdict(&text, "127.0.0.1", 2222, &key), Verdict::Known);
        // The same name on port 22 is another host.
        assert!(matches!(
            verdict(&text, "127.0.0.1", 22, &key),
            Verdict::Unknown { .. }
        ));
        let text = line(&hashed("[127.0.0.1]:2222", b"0123456789abcdefghij"), &key);
        assert_eq!(verdict(&text, "127.0.0.1", 2222, &key), Verdict::Known);
        let text = line("git.example.com,*.example.org,!evil.example.org", &key);
        assert_eq!(verdict(&text, "GIT.example.com", 22, &key), Verdict::Known);
        assert_eq!(verdict(&text, "a.example.org", 22, &key), Verdict::Known);
        assert!(matches!(
            verdict(&text, "evil.example.org", 22, &key),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn changed_revoked_and_other_types_are_told_apart() {
        let key = blob("ssh-ed25519", b"one");
        let other = blob("ssh-ed25519", b"two");
        let rsa = blob("ssh-rsa", b"three");
        let text = format!("# comment\n\n{}", line("example.com", &other));
        assert!(matches!(
            verdict(&text, "example.com", 22, &key),
            Verdict::Changed { line: 3, .. }
        ));
        let text = line("example.com", &rsa);
        assert_eq!(
            verdict(&text, "example.com", 22, &key),
            Verdict::Unknown {
                other_types: vec!["ssh-rsa".into()]
            }
        );
        let text = format!("{}@revoked {}", line("example.com", &key), line("*", &key));
        assert!(matches!(
            verdict(&text, "example.com", 22, &key),
            Verdict::Revoked { line: 2, .. }
        ));
        assert!(matches!(
            verdict(
                "garbage\n@cert-authority * ssh-ed25519 AAAA\n",
                "example.com",
                22,
                &key
            ),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn fingerprints_are_openssh_style() {
        let key = blob("ssh-ed25519", b"one");
        let print = fingerprint(&key);
        assert!(print.starts_with("SHA256:") && !print.ends_with('='), "{print}");
    }
}
