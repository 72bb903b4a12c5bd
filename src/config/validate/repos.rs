//! `[[repo]]`: its name, URL (never with a secret in it), branch and token
//! variable, and for an ssh remote its key, passphrase variable and
//! `known_hosts`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::config::Repo;
use crate::config::table::TableReader;
use crate::config::validate::files::{check_file, check_private_key, local_path};
use crate::config::validate::{Checker, check_env_name};

impl Checker<'_> {
    /// One `[[repo]]`; its name is added to `names` (a duplicate is reported).
    pub(super) fn repo(
        &mut self,
        index: usize,
        mut table: TableReader<'_>,
        base: &Path,
        names: &mut HashSet<String>,
    ) -> Option<Repo> {
        let name = table.required_string(self, "name");
        let url = table.required_string(self, "url");
        let branch = table.string(self, "branch");
        let token_env = table.string(self, "token_env");
        if let Some(name) = &name {
            self.check_name(name, &table.key_path("name"), "repo");
            if !names.insert(name.get_ref().clone()) {
                self.report(
                    name.span(),
                    Some(format!("repo[{index}].name")),
                    format!("duplicate repo name `{}`", name.get_ref()),
                );
            }
        }
        if let Some(url) = &url
            && let Err(problem) = check_url(url.get_ref())
        {
            self.report(url.span(), Some(table.key_path("url")), problem);
        }
        if let Some(branch) = &branch
            && !git2::Reference::is_valid_name(&format!("refs/heads/{}", branch.get_ref()))
        {
            self.report(
                branch.span(),
                Some(table.key_path("branch")),
                format!("`{}` is not a valid branch name", branch.get_ref()),
            );
        }
        if let Some(token_env) = &token_env {
            check_env_name(self, token_env, &table.key_path("token_env"));
        }
        let ssh = self.repo_ssh(&mut table, url.as_ref(), base);
        table.finish(self);
        if let (Some(name), Some(url), Some(ssh)) = (name, url, ssh) {
            return Some(Repo {
                name: name.into_inner(),
                url: url.into_inner(),
                branch: branch.map_or_else(|| "main".into(), Spanned::into_inner),
                token_env: token_env.map(Spanned::into_inner),
                ssh_key: ssh.key,
                ssh_key_passphrase_env: ssh.passphrase_env,
                known_hosts: ssh.known_hosts,
            });
        }
        None
    }

    /// A repo's `ssh_key`, `ssh_key_passphrase_env` and `known_hosts`: only for ssh
    /// URLs, the files present (a key file that is a private key). `None` when
    /// something is wrong (reported).
    fn repo_ssh(
        &mut self,
        table: &mut TableReader<'_>,
        url: Option<&Spanned<String>>,
        base: &Path,
    ) -> Option<RepoSsh> {
        let key = table.string(self, "ssh_key");
        let passphrase_env = table.string(self, "ssh_key_passphrase_env");
        let known_hosts = table.string(self, "known_hosts");
        let mut valid = true;
        let keys = [
            ("ssh_key", &key),
            ("ssh_key_passphrase_env", &passphrase_env),
            ("known_hosts", &known_hosts),
        ];
        if let Some(url) = url
            && !crate::config::is_ssh_url(url.get_ref())
        {
            for (name, value) in keys {
                if let Some(value) = value {
                    self.report(
                        value.span(),
                        Some(table.key_path(name)),
                        format!(
                            "`{name}` is only read for ssh remotes (ssh://… or user@host:path), and `url` is `{}`",
                            url.get_ref()
                        ),
                    );
                    valid = false;
                }
            }
        }
        if let Some(env) = &passphrase_env {
            check_env_name(self, env, &table.key_path("ssh_key_passphrase_env"));
            if key.is_none() {
                self.report(
                    env.span(),
                    Some(table.key_path("ssh_key_passphrase_env")),
                    "`ssh_key_passphrase_env` needs `ssh_key` (keys in an ssh-agent are unlocked there)",
                );
                valid = false;
            }
        }
        let key = key.map(|key| {
            let path = local_path(base, key.get_ref());
            let problem = check_file(&path).err().or_else(|| check_private_key(&path).err());
            if let Some(problem) = problem {
                self.report(key.span(), Some(table.key_path("ssh_key")), problem);
                valid = false;
            }
            path
        });
        let known_hosts = known_hosts.map(|file| {
            let path = local_path(base, file.get_ref());
            if let Err(problem) = check_file(&path) {
                self.report(file.span(), Some(table.key_path("known_hosts")), problem);
                valid = false;
            }
            path
        });
        valid.then(|| RepoSsh {
            key,
            passphrase_env: passphrase_env.map(Spanned::into_inner),
            known_hosts,
        })
    }
}

/// The ssh keys of one `[[repo]]`, checked.
struct RepoSsh {
    key: Option<PathBuf>,
    passphrase_env: Option<String>,
    known_hosts: Option<PathBuf>,
}

/// Why a repo's `url` is not one berth fetches from.
#[derive(Debug, thiserror::Error)]
pub enum UrlProblem {
    /// The URL is empty.
    #[error("the URL is empty")]
    Empty,
    /// A scheme libgit2's transports do not speak.
    #[error("unsupported URL scheme `{scheme}` (use https, http, ssh, git, file or a local path)")]
    Scheme { scheme: String },
    /// A password or token in the URL: the file would hold a secret.
    #[error(
        "the URL holds a password or token; put the token in an environment variable and name it in `token_env`"
    )]
    Secret,
}

/// A repo's URL: a scheme berth fetches over (or a local path), without a
/// password or token in it.
fn check_url(url: &str) -> Result<(), UrlProblem> {
    if url.trim().is_empty() {
        return Err(UrlProblem::Empty);
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "http" | "https" | "ssh" | "git" | "file") {
            return Err(UrlProblem::Scheme {
                scheme: scheme.to_string(),
            });
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((user_info, _)) = authority.rsplit_once('@')
            && user_info.contains(':')
        {
            return Err(UrlProblem::Secret);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_carry_secrets() {
        assert!(check_url("https://git.example.com/a.git").is_ok());
        assert!(check_url("ssh://git@example.com/a.git").is_ok());
        assert!(matches!(
            check_url("https://user:token@example.com/a.git"),
            Err(UrlProblem::Secret)
        ));
        assert!(matches!(check_url("ftp://x"), Err(UrlProblem::Scheme { .. })));
        assert!(check_url("/srv/git/a.git").is_ok());
    }
}
