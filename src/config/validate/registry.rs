//! `[registry]`: its address, its keep policy, and where its credentials
//! come from (`credentials` and the keys each source reads).

use std::path::PathBuf;

use toml::Spanned;

use crate::config::table::TableReader;
use crate::config::validate::{Checker, check_env_name};
use crate::config::{CredentialSource, Registry, Retention};
use crate::reference;

impl Checker<'_> {
    /// `[registry]`.
    pub(super) fn registry(&mut self, mut table: TableReader<'_>) -> Option<Registry> {
        let address = table.required_string(self, "address");
        if let Some(address) = &address
            && let Err(problem) = reference::check_registry(address.get_ref())
        {
            self.report(address.span(), Some(table.key_path("address")), problem);
        }
        let credentials = self.credentials(&mut table);
        let defaults = Retention::default();
        let keep = Retention {
            last: table.count(self, "keep_last", 1).unwrap_or(defaults.last),
            days: table.count(self, "keep_days", 0).unwrap_or(defaults.days),
        };
        table.finish(self);
        Some(Registry {
            address: address?.into_inner(),
            credentials: credentials?,
            keep,
        })
    }

    fn credentials(&mut self, table: &mut TableReader<'_>) -> Option<CredentialSource> {
        let kind = table.string(self, "credentials");
        let username_env = table.string(self, "username_env");
        let password_env = table.string(self, "password_env");
        let username = table.string(self, "username");
        let password_file = table.string(self, "password_file");
        for env in [&username_env, &password_env].into_iter().flatten() {
            check_env_name(self, env, &table.key_path("*_env"));
        }
        let kind_name = kind.as_ref().map_or("docker-config", |k| k.get_ref().as_str());
        let kind_span = kind.as_ref().map_or_else(|| table.span.clone(), Spanned::span);
        match kind_name {
            "docker-config" | "none" => {
                for (key, value) in [
                    ("username_env", &username_env),
                    ("password_env", &password_env),
                    ("username", &username),
                    ("password_file", &password_file),
                ] {
                    if let Some(value) = value {
                        self.report(
                            value.span(),
                            Some(table.key_path(key)),
                            format!("`{key}` is only read with credentials = \"env\" or \"files\""),
                        );
                    }
                }
                Some(if kind_name == "none" {
                    CredentialSource::None
                } else {
                    CredentialSource::DockerConfig
                })
            }
            "env" => {
                if let (Some(username_env), Some(password_env)) = (username_env, password_env) {
                    Some(CredentialSource::Environment {
                        username_env: username_env.into_inner(),
                        password_env: password_env.into_inner(),
                    })
                } else {
                    self.report(
                        kind_span,
                        Some(table.key_path("credentials")),
                        "credentials = \"env\" needs `username_env` and `password_env`",
                    );
                    None
                }
            }
            "files" => {
                if let (Some(username), Some(password_file)) = (username, password_file) {
                    Some(CredentialSource::Files {
                        username: username.into_inner(),
                        password_file: PathBuf::from(password_file.into_inner()),
                    })
                } else {
                    self.report(
                        kind_span,
                        Some(table.key_path("credentials")),
                        "credentials = \"files\" needs `username` and `password_file`",
                    );
                    None
                }
            }
            other => {
                self.report(kind_span, Some(table.key_path("credentials")), format!("unknown credential source `{other}` (expected \"docker-config\", \"env\", \"files\" or \"none\")"));
                None
            }
        }
    }
}
