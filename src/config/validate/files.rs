//! Paths in the pipeline file and the files they name: a path inside the
//! repo (relative, without `..`), and a local file that must exist (an ssh
//! key that must be a private key, a `known_hosts` file).

use std::path::{Component, Path, PathBuf};

/// Why a path in the pipeline file is not one berth takes. Its message is
/// the sentence shown at the path's `file:line:column`; a file's content is
/// never part of it.
#[derive(Debug, thiserror::Error)]
pub enum PathProblem {
    /// A path inside the repo that is empty.
    #[error("the path is empty (use \".\" for the repo's root)")]
    Empty,
    /// A path inside the repo that is absolute.
    #[error("`{path}` is absolute; give a path relative to the repo's root")]
    Absolute { path: String },
    /// A path inside the repo that leaves it.
    #[error("`{path}` leaves the repo (`..`)")]
    LeavesRepo { path: String },
    /// A local file that is something else (a folder).
    #[error("{} is not a file", path.display())]
    NotAFile { path: PathBuf },
    /// A local file that does not exist.
    #[error("no such file: {}", path.display())]
    NoSuchFile { path: PathBuf },
    /// A local file that cannot be read.
    #[error("cannot read {}: {error}", path.display())]
    Unreadable { path: PathBuf, error: std::io::Error },
    /// An ssh key file that holds the public key.
    #[error("{} is a public key; give the private key file (the one without .pub)", path.display())]
    PublicKey { path: PathBuf },
    /// An ssh key file that holds no private key.
    #[error(
        "{} is not a private key file (expected PEM or OpenSSH format, as ssh-keygen writes)",
        path.display()
    )]
    NotPrivateKey { path: PathBuf },
}

/// A path from the file: `~/…` under `$HOME`, others relative to the file's folder.
pub(super) fn local_path(base: &Path, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    base.join(path)
}

/// The path names an existing file.
pub(super) fn check_file(path: &Path) -> Result<(), PathProblem> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => Ok(()),
        Ok(_) => Err(PathProblem::NotAFile {
            path: path.to_path_buf(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(PathProblem::NoSuchFile {
            path: path.to_path_buf(),
        }),
        Err(error) => Err(PathProblem::Unreadable {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// The file starts as a private key does (PEM or OpenSSH format). Its content is
/// never part of a message.
pub(super) fn check_private_key(path: &Path) -> Result<(), PathProblem> {
    use std::io::Read as _;
    let mut head = [0; 64];
    let read = std::fs::File::open(path)
        .and_then(|mut file| file.read(&mut head))
        .map_err(|error| PathProblem::Unreadable {
            path: path.to_path_buf(),
            error,
        })?;
    let head = String::from_utf8_lossy(&head[..read]);
    let first_line = head.lines().next().unwrap_or_default();
    let path = path.to_path_buf();
    if first_line.starts_with("-----BEGIN ") && first_line.contains("PRIVATE KEY") {
        Ok(())
    } else if first_line.starts_with("ssh-") || first_line.starts_with("ecdsa-") {
        Err(PathProblem::PublicKey { path })
    } else {
        Err(PathProblem::NotPrivateKey { path })
    }
}

/// A path inside the repo: relative, without `..`.
pub fn check_relative_path(path: &str) -> Result<(), PathProblem> {
    if path.is_empty() {
        return Err(PathProblem::Empty);
    }
    let parsed = Path::new(path);
    if parsed.is_absolute() || path.starts_with('\\') {
        return Err(PathProblem::Absolute {
            path: path.to_string(),
        });
    }
    if parsed
        .components()
        .any(|component| matches!(component, Component::ParentDir))
    {
        return Err(PathProblem::LeavesRepo {
            path: path.to_string(),
        });
    }
    Ok(())
}

/// A path inside the repo with `/` between its parts, `.` and empty parts
/// left out (`"."` for the root).
pub(super) fn normalise_path(path: &str) -> String {
    let parts: Vec<_> = Path::new(path)
        .components()
        .filter_map(|component| match component {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        assert!(check_relative_path("docs").is_ok());
        assert!(check_relative_path("./a/b").is_ok());
        assert!(matches!(
            check_relative_path("../x"),
            Err(PathProblem::LeavesRepo { .. })
        ));
        assert!(check_relative_path("a/../../x").is_err());
        assert!(matches!(
            check_relative_path("/etc"),
            Err(PathProblem::Absolute { .. })
        ));
        assert_eq!(
            check_relative_path("").unwrap_err().to_string(),
            "the path is empty (use \".\" for the repo's root)"
        );
        assert_eq!(normalise_path("./a//b/"), "a/b");
        assert_eq!(normalise_path("."), ".");
    }

    #[test]
    fn a_key_file_must_exist_and_hold_a_private_key() {
        let folder = tempfile::tempdir().unwrap();
        let missing = folder.path().join("id_missing");
        assert_eq!(
            check_file(&missing).unwrap_err().to_string(),
            format!("no such file: {}", missing.display())
        );
        assert!(matches!(
            check_file(folder.path()),
            Err(PathProblem::NotAFile { .. })
        ));
        let public = folder.path().join("id.pub");
        std::fs::write(&public, "ssh-ed25519 AAAA secret-free comment\n").unwrap();
        assert!(check_file(&public).is_ok());
        let error = check_private_key(&public).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("is a public key; give the private key file (the one without .pub)"),
            "{error}"
        );
        let private = folder.path().join("id");
        std::fs::write(&private, "-----BEGIN OPENSSH PRIVATE KEY-----\nhunter2\n").unwrap();
        assert!(check_private_key(&private).is_ok());
        std::fs::write(&private, "hunter2\n").unwrap();
        let error = check_private_key(&private).unwrap_err();
        assert!(matches!(error, PathProblem::NotPrivateKey { .. }));
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
