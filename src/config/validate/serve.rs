//! `[serve]` (what `berth serve` listens on, the webhooks' secrets, the poll)
//! and `[forge]` (the REST API berth tells about commits: commit statuses,
//! and a preview's comment), checked at `file:line`. Secrets are named by
//! the environment variables that hold them, never written in the file.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use crate::config::table::TableReader;
use crate::config::validate::{Checker, check_env_name};
use crate::config::{Forge, Serve};

/// The poll's default interval, as Argo CD's.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(180);
/// The shortest poll interval: a shorter one would hammer the Git server.
const SHORTEST_POLL_INTERVAL: Duration = Duration::from_secs(5);

impl Checker<'_> {
    /// `[serve]` (its defaults when the file has none) and `[forge]`.
    pub(super) fn serve_and_forge(&mut self, top: &mut TableReader<'_>) -> (Serve, Option<Forge>) {
        let serve = match top.table(self, "serve", false) {
            Some(table) => self.serve(table),
            None => Serve {
                poll_interval: DEFAULT_POLL_INTERVAL,
                ..Serve::default()
            },
        };
        let forge = top
            .table(self, "forge", false)
            .and_then(|table| self.forge(table));
        (serve, forge)
    }

    /// `[serve]`.
    fn serve(&mut self, mut table: TableReader<'_>) -> Serve {
        let listen = table.string(self, "listen");
        if let Some(listen) = &listen
            && listen.get_ref().parse::<SocketAddr>().is_err()
        {
            self.report(
                listen.span(),
                Some(table.key_path("listen")),
                format!(
                    "`{}` is not an address and port to listen on (for example 127.0.0.1:8484)",
                    listen.get_ref()
                ),
            );
        }
        let env = |checker: &mut Self, table: &mut TableReader<'_>, key: &str| {
            let value = table.string(checker, key)?;
            check_env_name(checker, &value, &table.key_path(key));
            Some(value.into_inner())
        };
        let webhook_secret_env = env(self, &mut table, "webhook_secret_env");
        let github_secret_env = env(self, &mut table, "github_secret_env");
        let gitlab_token_env = env(self, &mut table, "gitlab_token_env");
        let generic_secret_env = env(self, &mut table, "generic_secret_env");
        let poll_interval = table.spanned_duration(self, "poll_interval");
        if let Some(interval) = &poll_interval
            && *interval.get_ref() < SHORTEST_POLL_INTERVAL
        {
            self.report(
                interval.span(),
                Some(table.key_path("poll_interval")),
                "poll_interval must be at least 5s",
            );
        }
        let public_url = table.string(self, "public_url");
        if let Some(url) = &public_url
            && !(url.get_ref().starts_with("http://") || url.get_ref().starts_with("https://"))
        {
            self.report(
                url.span(),
                Some(table.key_path("public_url")),
                format!("`{}` is not an http:// or https:// URL", url.get_ref()),
            );
        }
        table.finish(self);
        Serve {
            listen: listen.map(toml::Spanned::into_inner),
            webhook_secret_env,
            github_secret_env,
            gitlab_token_env,
            generic_secret_env,
            poll_interval: poll_interval.map_or(DEFAULT_POLL_INTERVAL, Spanned::into_inner),
            public_url: public_url.map(|url| url.into_inner().trim_end_matches('/').to_string()),
        }
    }

    /// `[forge]`.
    fn forge(&mut self, mut table: TableReader<'_>) -> Option<Forge> {
        let api = table.required_string(self, "api");
        if let Some(api) = &api
            && !(api.get_ref().starts_with("http://") || api.get_ref().starts_with("https://"))
        {
            self.report(
                api.span(),
                Some(table.key_path("api")),
                format!(
                    "`{}` is not an http:// or https:// URL (GitHub's is https://api.github.com, Gitea's ends in /api/v1)",
                    api.get_ref()
                ),
            );
        }
        let token_env = table.required_string(self, "token_env");
        if let Some(env) = &token_env {
            check_env_name(self, env, &table.key_path("token_env"));
        }
        table.finish(self);
        Some(Forge {
            api: api?.into_inner().trim_end_matches('/').to_string(),
            token_env: token_env?.into_inner(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const SITE: &str = r#"
[registry]
address = "127.0.0.1:5000"
credentials = "none"

[[repo]]
name = "www"
url = "http://127.0.0.1:8480/git/www.git"

[[site]]
name = "www"
repo = "www"
image = "sites/www"
deployment = { name = "www", container = "web" }
"#;

    fn parse(tables: &str) -> Result<Config, ConfigError> {
        let text = format!("{SITE}\n{tables}");
        Config::parse(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.toml"),
            &text,
        )
    }

    /// Each problem as `line:column key: message`.
    fn problems(tables: &str) -> Vec<String> {
        match parse(tables) {
            Err(ConfigError::Invalid { diagnostics, .. }) => diagnostics
                .iter()
                .map(|d| {
                    format!(
                        "{}:{} {}: {}",
                        d.line,
                        d.column,
                        d.key.as_deref().unwrap_or("-"),
                        d.message
                    )
                })
                .collect(),
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn serve_and_forge_are_read_and_default_without_them() {
        let config = parse("").unwrap();
        assert_eq!(config.serve.poll_interval, super::DEFAULT_POLL_INTERVAL);
        assert!(config.serve.webhook_secret_env.is_none() && config.forge.is_none());
        let config = parse(
            r#"
[serve]
listen = "0.0.0.0:8484"
webhook_secret_env = "WEBHOOK_SECRET"
gitlab_token_env = "GITLAB_TOKEN"
poll_interval = "1m"
public_url = "https://berth.example.com/"

[forge]
api = "https://gitea.example.com/api/v1/"
token_env = "FORGE_TOKEN"
"#,
        )
        .unwrap();
        assert_eq!(config.serve.listen.as_deref(), Some("0.0.0.0:8484"));
        assert_eq!(config.serve.gitlab_token_env.as_deref(), Some("GITLAB_TOKEN"));
        assert_eq!(config.serve.poll_interval, std::time::Duration::from_secs(60));
        assert_eq!(
            config.serve.public_url.as_deref(),
            Some("https://berth.example.com")
        );
        let forge = config.forge.unwrap();
        assert_eq!(forge.api, "https://gitea.example.com/api/v1");
        assert_eq!(forge.token_env, "FORGE_TOKEN");
    }

    #[test]
    fn each_bad_key_is_named_at_its_line() {
        let found = problems(
            r#"
[serve]
listen = "everywhere"
webhook_secret_env = "not a name"
poll_interval = "1s"
public_url = "berth.example.com"
secret = "in the file"

[forge]
api = "gitea.example.com"
"#,
        );
        let expected = [
            "18:10 serve.listen: `everywhere` is not an address and port to listen on (for example 127.0.0.1:8484)",
            "19:22 serve.webhook_secret_env: `not a name` is not an environment variable name",
            "20:17 serve.poll_interval: poll_interval must be at least 5s",
            "21:14 serve.public_url: `berth.example.com` is not an http:// or https:// URL",
        ];
        for line in expected {
            assert!(found.iter().any(|f| f == line), "{line} not in {found:#?}");
        }
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("22:1 serve.secret: unknown key")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("25:7 forge.api: `gitea.example.com` is not an http")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|f| f == "24:1 forge.token_env: missing key `token_env`"),
            "{found:#?}"
        );
    }
}
