//! The pipeline file's checks: every table read with a `TableReader` that
//! knows its keys and types, then what crosses tables (names unique, sites
//! naming known repos and templates, image references, paths that stay
//! inside the repo, one site per Deployment container). Every problem is
//! reported, each at its `file:line:column` with the key it concerns; a
//! check's reason is a sentence for that report, never branched on.
//!
//! [`Checker`] holds what is reported and reads the whole file
//! ([`Checker::document`]); each table has its own file: [`environments`]
//! (`[[environment]]`, the cluster keys, `[notify]`), [`registry`]
//! (`[registry]` and its credentials), [`repos`] (`[[repo]]`, its URL and ssh
//! keys), [`sites`] (`[[site]]`, its Deployments and `helm`), [`serve`]
//! (`[serve]` and `[forge]`), and [`files`] (paths and the files they name).

mod environments;
mod files;
mod preview;
mod registry;
mod repos;
mod serve;
mod sites;

use std::collections::HashSet;
use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::DeTable;

use crate::config::table::{TableReader, line_column};
use crate::config::{Config, DEFAULT_TIMEOUT, Diagnostic, Kubernetes, Repo, Site};
use crate::reference;

pub use files::{PathProblem, check_relative_path};
pub use preview::{DEFAULT_MAX_PREVIEWS, DEFAULT_TTL as DEFAULT_PREVIEW_TTL};
use sites::{SiteContext, Taken};

/// Reads a pipeline file's text and collects every problem found in it.
pub(crate) struct Checker<'t> {
    pub(crate) text: &'t str,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    /// Reports `message` at `span`, about `key` if it concerns one.
    pub(crate) fn report(&mut self, span: Range<usize>, key: Option<String>, message: impl Display) {
        let (line, column) = line_column(self.text, span.start);
        self.diagnostics.push(Diagnostic {
            line,
            column,
            key,
            message: message.to_string(),
        });
    }

    /// The whole pipeline file at `path` (its text `self.text`), read and
    /// checked; `None` when anything is wrong (every problem reported).
    pub(crate) fn document(&mut self, path: &Path) -> Option<Config> {
        let (root, errors) = DeTable::parse_recoverable(self.text);
        if !errors.is_empty() {
            for error in errors {
                let span = error.span().unwrap_or(0..0);
                let message = error.message().trim().to_string();
                self.report(span, None, format!("invalid TOML: {message}"));
            }
            return None;
        }
        let base = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let root_span = root.span();
        let mut top = TableReader::new(root.get_ref(), root_span.start..root_span.start, String::new());

        let state_dir = top
            .string(self, "state_dir")
            .map_or_else(|| ".berth".to_string(), toml::Spanned::into_inner);
        let templates = top
            .string(self, "templates")
            .map_or_else(|| "templates".to_string(), toml::Spanned::into_inner);
        let registry_table = top.table(self, "registry", false);
        let registry_present = registry_table.is_some();
        let registry = registry_table.and_then(|table| self.registry(table));
        let kubernetes = self.kubernetes_table(&mut top);
        let default_namespace = kubernetes.namespace.clone();
        let notify = top
            .table(self, "notify", false)
            .and_then(|table| self.notify(table));
        let environments = self.environments(&mut top, registry.as_ref(), &kubernetes, notify.as_ref());
        let environments = self.registry_for_all(registry_present, root_span.start, environments);
        let default_environment = self.default_environment(&mut top, &environments);
        let (serve, forge) = self.serve_and_forge(&mut top);
        let preview = self.preview_table(&mut top);

        let mut repo_names = HashSet::new();
        let repos: Vec<Repo> = top
            .array_of_tables(self, "repo")
            .into_iter()
            .enumerate()
            .filter_map(|(index, table)| self.repo(index, table, &base, &mut repo_names))
            .collect();

        let templates_dir = base.join(&templates);
        let context = SiteContext {
            repos: &repos,
            repo_names: &repo_names,
            templates_dir: &templates_dir,
            registry: registry.as_ref(),
            default_namespace: &default_namespace,
            environments: &environments,
        };
        let mut taken = Taken::default();
        let sites: Vec<Site> = top
            .array_of_tables(self, "site")
            .into_iter()
            .enumerate()
            .filter_map(|(index, table)| self.site(index, table, &context, &mut taken))
            .collect();
        if sites.is_empty()
            && !self
                .diagnostics
                .iter()
                .any(|d| d.key.as_deref().is_some_and(|k| k.starts_with("site")))
        {
            self.report(root_span.start..root_span.start, None, "no [[site]] is declared");
        }
        top.finish(self);

        let registry = match (registry, environments.first()) {
            (Some(registry), _) => registry,
            (None, Some(first)) if !registry_present => first.registry.clone(),
            (None, _) => return None,
        };
        let config = Config {
            path: path.to_path_buf(),
            state_dir: base.join(state_dir),
            templates_dir,
            registry,
            kubernetes,
            repos,
            sites: sites.clone(),
            notify,
            environments,
            default_environment,
            environment: None,
            declared_sites: sites,
            serve,
            forge,
            preview,
        };
        // The file as the default environment sees it.
        config.in_environment(None).ok()
    }

    /// `[kubernetes]`, each key left out its default.
    fn kubernetes_table(&mut self, top: &mut TableReader<'_>) -> Kubernetes {
        let defaults = Kubernetes {
            context: None,
            namespace: "default".into(),
            rollout_timeout: DEFAULT_TIMEOUT,
            kubeconfig: None,
        };
        match top.table(self, "kubernetes", false) {
            Some(mut table) => {
                let kubernetes = self.cluster(&mut table, &defaults);
                table.finish(self);
                kubernetes
            }
            None => defaults,
        }
    }

    fn check_name(&mut self, name: &Spanned<String>, key: &str, what: &str) {
        if let Err(problem) = reference::check_dns_label(name.get_ref()) {
            self.report(
                name.span(),
                Some(key.to_string()),
                format!("{what} name {problem}"),
            );
        }
    }
}

fn check_env_name(checker: &mut Checker<'_>, name: &Spanned<String>, key: &str) {
    let valid = !name.get_ref().is_empty()
        && !name.get_ref().starts_with(|c: char| c.is_ascii_digit())
        && name
            .get_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        checker.report(
            name.span(),
            Some(key.to_string()),
            format!("`{}` is not an environment variable name", name.get_ref()),
        );
    }
}

/// `a`, `b`: names for a "known:" list, or `none`.
fn known_list<'n>(names: impl Iterator<Item = &'n str>) -> String {
    let mut names: Vec<String> = names.map(|name| format!("`{name}`")).collect();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::table::line_column;
    use crate::config::{HelmImageKeys, HelmValues};

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
    }

    /// A file beside the repo's `templates/`, so the `static` template exists.
    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.toml"), text)
    }

    const ENVIRONMENTS: &str = r#"
[registry]
address = "127.0.0.1:5000"
credentials = "none"

[[environment]]
name = "staging"
context = "stack"
namespace = "web-staging"

[[environment]]
name = "production"
context = "stack-production"
namespace = "web"
registry = { address = "registry.example.com", credentials = "docker-config" }
notify = { webhook_env = "PRODUCTION_WEBHOOK", on = "always" }

[[repo]]
name = "site"
url = "https://git.example.com/site.git"

[[site]]
name = "www"
repo = "site"
image = "sites/www"
deployment = { name = "www", container = "web" }

[site.environment.production]
deployment = { name = "www-live" }

[[site]]
name = "docs"
repo = "site"
image = "sites/docs"
environments = ["staging"]
deployment = { name = "docs", namespace = "docs", container = "web" }
"#;

    #[test]
    fn each_environment_has_its_cluster_registry_webhook_and_deployments() {
        let declared = parse(ENVIRONMENTS).unwrap();
        // Loaded as the default (first) environment sees it.
        assert_eq!(declared.environment.as_deref(), Some("staging"));
        assert_eq!(declared.default_environment.as_deref(), Some("staging"));
        let staging = declared.in_environment(Some("staging")).unwrap();
        assert_eq!(staging.kubernetes.context.as_deref(), Some("stack"));
        assert_eq!(staging.registry.address, "127.0.0.1:5000");
        assert!(staging.notify.is_none());
        let www = staging.site("www").unwrap();
        assert_eq!(
            (www.deployment.namespace.as_str(), www.deployment.name.as_str()),
            ("web-staging", "www")
        );
        assert_eq!(staging.site("docs").unwrap().deployment.namespace, "docs");

        let production = declared.in_environment(Some("production")).unwrap();
        assert_eq!(production.kubernetes.context.as_deref(), Some("stack-production"));
        assert_eq!(production.registry.address, "registry.example.com");
        assert_eq!(
            production.notify.as_ref().unwrap().webhook_env,
            "PRODUCTION_WEBHOOK"
        );
        let www = production.site("www").unwrap();
        assert_eq!(
            (www.deployment.namespace.as_str(), www.deployment.name.as_str()),
            ("web", "www-live")
        );
        assert!(production.site("docs").is_none(), "docs ships to staging only");
        assert_eq!(declared.promote_source("production"), Some("staging"));
        assert_eq!(declared.promote_source("staging"), None);
        assert!(matches!(
            declared.in_environment(Some("qa")),
            Err(crate::config::EnvironmentError::Unknown { .. })
        ));
    }

    /// [`ENVIRONMENTS`]' registry and site `www`, without environments.
    fn one_site() -> String {
        ENVIRONMENTS.split("[[environment]]").next().unwrap().to_string()
            + "[[repo]]\nname = \"site\"\nurl = \"https://git.example.com/site.git\"\n\n[[site]]\nname = \"www\"\nrepo = \"site\"\nimage = \"sites/www\"\ndeployment = { name = \"www\", container = \"web\" }\n"
    }

    #[test]
    fn cluster_options_replace_the_environments_keys_and_move_only_sites_that_name_no_namespace() {
        let declared = parse(ENVIRONMENTS).unwrap();
        let overrides = crate::config::ClusterOverrides {
            context: Some("other".into()),
            namespace: Some("web-preview".into()),
            kubeconfig: Some("/tmp/kubeconfig".into()),
            rollout_timeout: Some(std::time::Duration::from_secs(7)),
        };
        let staging = declared
            .in_environment(Some("staging"))
            .unwrap()
            .with_cluster(&overrides)
            .unwrap();
        assert_eq!(staging.kubernetes.context.as_deref(), Some("other"));
        assert_eq!(staging.kubernetes.namespace, "web-preview");
        assert_eq!(
            staging.kubernetes.kubeconfig.as_deref(),
            Some(Path::new("/tmp/kubeconfig"))
        );
        assert_eq!(
            staging.kubernetes.rollout_timeout,
            std::time::Duration::from_secs(7)
        );
        // www names no namespace: it moves; docs names its own: it stays.
        assert_eq!(staging.site("www").unwrap().deployment.namespace, "web-preview");
        assert_eq!(staging.site("docs").unwrap().deployment.namespace, "docs");
        // Without options, nothing changes.
        let untouched = declared
            .in_environment(Some("production"))
            .unwrap()
            .with_cluster(&crate::config::ClusterOverrides::default())
            .unwrap();
        assert_eq!(untouched.kubernetes.context.as_deref(), Some("stack-production"));
        assert_eq!(untouched.site("www").unwrap().deployment.namespace, "web");
        let bad = crate::config::ClusterOverrides {
            namespace: Some("Not_A_Name".into()),
            ..Default::default()
        };
        assert!(matches!(
            declared.in_environment(None).unwrap().with_cluster(&bad),
            Err(crate::config::OverrideError::Namespace { .. })
        ));
    }

    #[test]
    fn the_keep_policy_is_the_registrys_unless_the_site_says_and_is_checked() {
        let with = |registry: &str, site: &str| {
            ENVIRONMENTS
                .replacen(
                    "credentials = \"none\"\n",
                    &format!("credentials = \"none\"\n{registry}"),
                    1,
                )
                .replacen(
                    "image = \"sites/www\"\n",
                    &format!("image = \"sites/www\"\n{site}"),
                    1,
                )
        };
        let declared = parse(&with("keep_last = 3\n", "keep_days = 2\n")).unwrap();
        let staging = declared.in_environment(Some("staging")).unwrap();
        let www = staging.site("www").unwrap();
        assert_eq!(
            staging.retention(www),
            crate::config::Retention { last: 3, days: 2 }
        );
        // Production's own registry says nothing: the defaults, under the site's days.
        let production = declared.in_environment(Some("production")).unwrap();
        let www = production.site("www").unwrap();
        assert_eq!(
            production.retention(www),
            crate::config::Retention { last: 10, days: 2 }
        );
        for (registry, site, key, message) in [
            (
                "keep_last = 0\n",
                "",
                "registry.keep_last",
                "expected a whole number from 1",
            ),
            (
                "",
                "keep_days = -1\n",
                "site[0].keep_days",
                "expected a whole number from 0",
            ),
            (
                "",
                "keep_last = \"ten\"\n",
                "site[0].keep_last",
                "expected a whole number, found a string",
            ),
        ] {
            let error = parse(&with(registry, site)).unwrap_err();
            let diagnostic = &error.diagnostics()[0];
            assert_eq!(diagnostic.key.as_deref(), Some(key), "{error}");
            assert!(diagnostic.message.starts_with(message), "{error}");
        }
    }

    #[test]
    fn the_pipeline_file_is_found_here_or_in_the_nearest_parent() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(crate::config::find(&deep), None);
        std::fs::write(root.path().join("pipeline.toml"), "").unwrap();
        assert_eq!(
            crate::config::find(&deep),
            Some(Path::new("../../../pipeline.toml").to_path_buf())
        );
        std::fs::write(root.path().join("a/pipeline.toml"), "").unwrap();
        assert_eq!(
            crate::config::find(&deep),
            Some(Path::new("../../pipeline.toml").to_path_buf()),
            "the nearest one wins"
        );
        std::fs::write(deep.join("pipeline.toml"), "").unwrap();
        assert_eq!(
            crate::config::find(&deep),
            Some(Path::new("pipeline.toml").to_path_buf())
        );
        // A folder named pipeline.toml is not the file.
        let other = root.path().join("x/pipeline.toml");
        std::fs::create_dir_all(&other).unwrap();
        assert_eq!(
            crate::config::find(&root.path().join("x")),
            Some(Path::new("../pipeline.toml").to_path_buf())
        );
    }

    #[test]
    fn a_file_without_environments_is_read_as_before_and_refuses_env() {
        let config = parse(&one_site()).unwrap();
        assert!(config.environments.is_empty() && config.environment.is_none());
        assert_eq!(config.site("www").unwrap().deployment.namespace, "default");
        assert!(matches!(
            config.in_environment(Some("staging")),
            Err(crate::config::EnvironmentError::NoEnvironments { .. })
        ));
    }

    /// The problems of `text` as `line: key: message`.
    fn problems(text: &str) -> Vec<String> {
        let error = parse(text).unwrap_err();
        error
            .diagnostics()
            .iter()
            .map(|d| format!("{}: {}: {}", d.line, d.key.clone().unwrap_or_default(), d.message))
            .collect()
    }

    #[test]
    fn environment_mistakes_are_reported_where_they_are() {
        let text = ENVIRONMENTS
            .replace(
                "environments = [\"staging\"]",
                "environments = [\"staging\", \"qa\"]",
            )
            .replace(
                "name = \"production\"\n",
                "name = \"production\"\npromote_from = \"qa\"\n",
            )
            .replace("[site.environment.production]", "[site.environment.prod]")
            .replace("[registry]", "default_environment = \"live\"\n\n[registry]");
        assert_reported(
            &text,
            &[
                "2: default_environment: no [[environment]] is named `live`",
                "15: environment[1].promote_from: no [[environment]] is named `qa`",
                "site[0].environment.prod: the site does not ship to `prod`",
                "site[1].environments: no [[environment]] is named `qa`",
            ],
        );
    }

    /// Each of `expected` is in a problem of `text` (`line: key: message`).
    fn assert_reported(text: &str, expected: &[&str]) {
        let found = problems(text);
        for expected in expected {
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{expected:?} not in {found:#?}"
            );
        }
    }

    #[test]
    fn two_environments_of_one_cluster_cannot_share_a_deployment() {
        let text = ENVIRONMENTS
            .replace(
                "context = \"stack-production\"\nnamespace = \"web\"",
                "context = \"stack\"\nnamespace = \"web-staging\"",
            )
            .replace("deployment = { name = \"www-live\" }", "");
        let found = problems(&text);
        assert!(
            found.iter().any(|p| p.contains("another environment of this site already ships to container `web` of Deployment web-staging/www in environment `production`")),
            "{found:#?}"
        );
    }
    #[test]
    fn helm_values_keys_default_to_helm_creates_chart_and_are_read_as_written() {
        let config = parse(&one_site()).unwrap();
        assert_eq!(config.site("www").unwrap().helm, HelmValues::default());
        let text = format!(
            "{}helm = {{ chart = \"oci://charts.example.com/web\", registry = \"image.registry\", tag = \"web.image.tag\", digest = \"image.digest\" }}\n",
            one_site()
        );
        let helm = parse(&text).unwrap().site("www").unwrap().helm.clone();
        assert_eq!(helm.chart.as_deref(), Some("oci://charts.example.com/web"));
        assert_eq!(
            helm.keys,
            HelmImageKeys::Parts {
                registry: Some("image.registry".into()),
                repository: "image.repository".into(),
                tag: "web.image.tag".into(),
                digest: Some("image.digest".into()),
            }
        );
        let text = format!("{}helm = {{ reference = \"containers[0].image\" }}\n", one_site());
        assert_eq!(
            parse(&text).unwrap().site("www").unwrap().helm.keys,
            HelmImageKeys::Reference("containers[0].image".into())
        );
    }

    #[test]
    fn helm_values_mistakes_are_reported_where_they_are() {
        let text = format!(
            "{}helm = {{ chart = \"my chart\", tag = \"image..tag\", reference = \"image\", values = \"x\" }}\n",
            one_site()
        );
        assert_reported(
            &text,
            &[
                "15: site[0].helm.chart: a chart is one word",
                "15: site[0].helm.tag: `image..tag` is not a values key",
                "15: site[0].helm.tag: give either `reference`",
                "15: site[0].helm.values: ",
            ],
        );
    }
}
