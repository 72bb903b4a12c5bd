//! The pipeline file's checks: every table read with a `TableReader` that
//! knows its keys and types, then what crosses tables (names unique, sites
//! naming known repos and templates, image references, paths that stay
//! inside the repo, one site per Deployment container). Every problem is
//! reported, each at its `file:line:column` with the key it concerns; a
//! check's reason is a sentence for that report, never branched on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;
use toml::de::DeTable;

use crate::config::table::{TableReader, line_column};
use crate::config::{
    Config, CredentialSource, DEFAULT_TIMEOUT, DeploymentTarget, Diagnostic, Environment,
    HELM_REPOSITORY_KEY, HELM_TAG_KEY, HelmImageKeys, HelmValues, ImageSource, Kubernetes, Notify, NotifyOn,
    Registry, Repo, Retention, Site, SiteEnvironment,
};
use crate::reference;

pub(crate) struct Checker<'t> {
    pub(crate) text: &'t str,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

/// What a site is checked against: the tables read before the sites.
struct SiteContext<'a> {
    repos: &'a [Repo],
    /// Every repo name given, valid repo or not (a site naming one is not
    /// reported twice).
    repo_names: &'a HashSet<String>,
    templates_dir: &'a Path,
    registry: Option<&'a Registry>,
    default_namespace: &'a str,
    /// The environments declared (sites ship to all of them unless they say).
    environments: &'a [Environment],
}

/// What the sites read so far have taken: names, and Deployment containers
/// (per kubeconfig context: two environments may share a cluster).
#[derive(Default)]
struct Taken {
    names: HashSet<String>,
    /// Per container: the index and name of the site that ships to it.
    targets: HashMap<(Option<String>, DeploymentTarget), (usize, String)>,
}

/// A `deployment` table's keys as written (each may be left out).
#[derive(Default)]
struct DeploymentKeys {
    namespace: Option<String>,
    name: Option<String>,
    container: Option<String>,
}

/// One `[site.environment.<name>]` as written.
struct SiteOverride {
    name: Spanned<String>,
    deployment: DeploymentKeys,
    notify: Option<Notify>,
}

impl Checker<'_> {
    pub(crate) fn report(&mut self, span: Range<usize>, key: Option<String>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.diagnostics.push(Diagnostic {
            line,
            column,
            key,
            message: message.into(),
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
        let defaults = Kubernetes {
            context: None,
            namespace: "default".into(),
            rollout_timeout: DEFAULT_TIMEOUT,
            kubeconfig: None,
        };
        let kubernetes = match top.table(self, "kubernetes", false) {
            Some(mut table) => {
                let kubernetes = self.cluster(&mut table, &defaults);
                table.finish(self);
                kubernetes
            }
            None => defaults,
        };
        let default_namespace = kubernetes.namespace.clone();
        let notify = top
            .table(self, "notify", false)
            .and_then(|table| self.notify(table));
        let environments = self.environments(&mut top, registry.as_ref(), &kubernetes, notify.as_ref());
        let environments = self.registry_for_all(registry_present, root_span.start, environments);
        let default_environment = self.default_environment(&mut top, &environments);

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
        };
        // The file as the default environment sees it.
        config.in_environment(None).ok()
    }

    /// Every `[[environment]]`, each with whether it names its own registry.
    fn environments(
        &mut self,
        top: &mut TableReader<'_>,
        registry: Option<&Registry>,
        kubernetes: &Kubernetes,
        notify: Option<&Notify>,
    ) -> Vec<(Environment, bool)> {
        let mut names = HashSet::new();
        let mut promote_sources = Vec::new();
        let mut environments = Vec::new();
        for (index, mut table) in top.array_of_tables(self, "environment").into_iter().enumerate() {
            let name = table.required_string(self, "name");
            if let Some(name) = &name {
                self.check_name(name, &table.key_path("name"), "environment");
                if !names.insert(name.get_ref().clone()) {
                    self.report(
                        name.span(),
                        Some(format!("environment[{index}].name")),
                        format!("duplicate environment name `{}`", name.get_ref()),
                    );
                }
            }
            let cluster = self.cluster(&mut table, kubernetes);
            let own_registry = table.table(self, "registry", false);
            let has_registry = own_registry.is_some();
            let own_registry = own_registry.and_then(|t| self.registry(t));
            let own_notify = table.table(self, "notify", false).and_then(|t| self.notify(t));
            let promote_from = table.string(self, "promote_from");
            table.finish(self);
            let Some(name) = name else { continue };
            if let Some(source) = &promote_from {
                promote_sources.push((index, name.get_ref().clone(), source.clone()));
            }
            let Some(registry) = own_registry.or_else(|| registry.cloned()).or_else(|| {
                // Reported once, with [registry].
                (!has_registry).then(|| Registry {
                    address: String::new(),
                    credentials: CredentialSource::None,
                    keep: Retention::default(),
                })
            }) else {
                continue;
            };
            environments.push((
                Environment {
                    name: name.into_inner(),
                    kubernetes: cluster,
                    registry,
                    notify: own_notify.or_else(|| notify.cloned()),
                    promote_from: promote_from.map(Spanned::into_inner),
                },
                has_registry,
            ));
        }
        for (index, name, source) in promote_sources {
            let key = Some(format!("environment[{index}].promote_from"));
            if source.get_ref() == &name {
                self.report(
                    source.span(),
                    key,
                    "an environment cannot be promoted from itself",
                );
            } else if !names.contains(source.get_ref()) {
                self.report(
                    source.span(),
                    key,
                    format!(
                        "no [[environment]] is named `{}` (known: {})",
                        source.get_ref(),
                        known_list(names.iter().map(String::as_str))
                    ),
                );
            }
        }
        environments
    }

    /// The environments; `[registry]` is missing unless each names its own.
    fn registry_for_all(
        &mut self,
        registry_present: bool,
        at: usize,
        environments: Vec<(Environment, bool)>,
    ) -> Vec<Environment> {
        if !registry_present
            && (environments.is_empty() || environments.iter().any(|(_, has_registry)| !has_registry))
        {
            self.report(
                at..at,
                Some("registry".into()),
                if environments.is_empty() {
                    "missing table [registry]"
                } else {
                    "missing table [registry] (an [[environment]] without its own `registry` uses it)"
                },
            );
        }
        environments
            .into_iter()
            .map(|(environment, _)| environment)
            .collect()
    }

    /// `default_environment`: one of the environments (the first without it).
    fn default_environment(
        &mut self,
        top: &mut TableReader<'_>,
        environments: &[Environment],
    ) -> Option<String> {
        let named = top.string(self, "default_environment");
        match named {
            None => environments.first().map(|e| e.name.clone()),
            Some(named) if environments.iter().any(|e| &e.name == named.get_ref()) => {
                Some(named.into_inner())
            }
            Some(named) => {
                let message = if environments.is_empty() {
                    "no [[environment]] is declared".to_string()
                } else {
                    format!(
                        "no [[environment]] is named `{}` (known: {})",
                        named.get_ref(),
                        known_list(environments.iter().map(|e| e.name.as_str()))
                    )
                };
                self.report(named.span(), Some("default_environment".into()), message);
                None
            }
        }
    }

    /// `[registry]`.
    fn registry(&mut self, mut table: TableReader<'_>) -> Option<Registry> {
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

    /// The cluster keys of `[kubernetes]` or an `[[environment]]`
    /// (`context`, `namespace`, `rollout_timeout`), each left out taken from
    /// `defaults`.
    fn cluster(&mut self, table: &mut TableReader<'_>, defaults: &Kubernetes) -> Kubernetes {
        let context = table.string(self, "context").map(Spanned::into_inner);
        let namespace = table.string(self, "namespace");
        if let Some(namespace) = &namespace
            && let Err(problem) = reference::check_dns_label(namespace.get_ref())
        {
            self.report(namespace.span(), Some(table.key_path("namespace")), problem);
        }
        let rollout_timeout = table.duration(self, "rollout_timeout");
        Kubernetes {
            context: context.or_else(|| defaults.context.clone()),
            namespace: namespace.map_or_else(|| defaults.namespace.clone(), Spanned::into_inner),
            rollout_timeout: rollout_timeout.unwrap_or(defaults.rollout_timeout),
            kubeconfig: None,
        }
    }

    /// One `[[repo]]`; its name is added to `names` (a duplicate is reported).
    fn repo(
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

    /// One `[[site]]`; its name and Deployment are added to `taken` (a
    /// duplicate is reported).
    fn site(
        &mut self,
        index: usize,
        mut table: TableReader<'_>,
        context: &SiteContext<'_>,
        taken: &mut Taken,
    ) -> Option<Site> {
        let name = table.required_string(self, "name");
        if let Some(name) = &name {
            self.check_name(name, &table.key_path("name"), "site");
            if !taken.names.insert(name.get_ref().clone()) {
                self.report(
                    name.span(),
                    Some(format!("site[{index}].name")),
                    format!("duplicate site name `{}`", name.get_ref()),
                );
            }
        }
        let repo = self.site_repo(&mut table, context);
        let site_path = self.relative_path(&mut table, "path");
        let git_history = table.boolean(self, "git_history").unwrap_or(false);
        let keep_last = table.count(self, "keep_last", 1);
        let keep_days = table.count(self, "keep_days", 0);
        let build = table.string(self, "build");
        if let Some(build) = &build
            && build.get_ref().trim().is_empty()
        {
            self.report(
                build.span(),
                Some(table.key_path("build")),
                "the build command is empty; leave the key out to ship the folder as it is",
            );
        }
        let output = self.relative_path(&mut table, "output");
        let image_source = self.image_source(&mut table, context.templates_dir);
        let build_args = table.string_map(self, "build_args");
        let image = table.required_string(self, "image");
        if let Some(image) = &image {
            let full = context
                .registry
                .map(|r| format!("{}/{}", r.address, image.get_ref()));
            if let Err(problem) = reference::check_repository(image.get_ref(), full.as_deref()) {
                self.report(image.span(), Some(table.key_path("image")), problem);
            }
        }
        let deployment = table
            .table(self, "deployment", true)
            .map(|deployment| self.deployment(deployment, true));
        let listed = self.site_environments(&mut table, context);
        let overrides = self.site_overrides(&mut table, listed.as_deref());
        let helm = table
            .table(self, "helm", false)
            .map(|helm| self.helm(helm))
            .unwrap_or_default();
        table.finish(self);
        // Who ships where is checked whenever the name and Deployment were
        // read, whatever else is wrong with the site.
        let (Some(name), Some((keys, span))) = (name, deployment) else {
            return None;
        };
        let (Some(deployment_name), Some(container)) = (keys.name.clone(), keys.container.clone()) else {
            return None;
        };
        let default_target = DeploymentTarget {
            namespace: keys
                .namespace
                .clone()
                .unwrap_or_else(|| context.default_namespace.to_string()),
            name: deployment_name,
            container,
        };
        let environments = resolve_environments(
            listed.as_deref().unwrap_or_default(),
            &overrides,
            &keys,
            &default_target,
            context,
        );
        self.take_targets(
            index,
            name.get_ref(),
            &span,
            &default_target,
            &environments,
            context,
            taken,
        );
        let (Some(repo), Some(image_source), Some(image)) = (repo, image_source, image) else {
            return None;
        };
        Some(Site {
            name: name.into_inner(),
            repo: repo.into_inner(),
            path: normalise_path(site_path.as_ref().map_or(".", |p| p.get_ref())),
            build: build.map(Spanned::into_inner),
            output: output.map(|o| normalise_path(o.get_ref())),
            image_source,
            build_args: build_args.unwrap_or_default(),
            git_history,
            image: image.into_inner(),
            deployment: default_target,
            default_namespace: keys.namespace.is_none(),
            notify: None,
            keep_last,
            keep_days,
            environments,
            helm,
        })
    }

    /// A site's `helm = { chart, registry, repository, tag, digest }` or
    /// `{ chart, reference }`: each values key as `helm --set` takes it; the
    /// keys left out are `helm create`'s (`image.repository`, `image.tag`).
    fn helm(&mut self, mut table: TableReader<'_>) -> HelmValues {
        let chart = table.string(self, "chart");
        if let Some(chart) = &chart
            && (chart.get_ref().is_empty() || chart.get_ref().contains(char::is_whitespace))
        {
            self.report(
                chart.span(),
                Some(table.key_path("chart")),
                "a chart is one word for `helm upgrade` (a path, `repo/name` or `oci://…`)",
            );
        }
        let mut keys = BTreeMap::new();
        for key in ["reference", "registry", "repository", "tag", "digest"] {
            if let Some(value) = table.string(self, key) {
                if let Err(problem) = check_values_key(value.get_ref()) {
                    self.report(value.span(), Some(table.key_path(key)), problem);
                }
                keys.insert(key, value);
            }
        }
        let keys = if let Some(reference) = keys.remove("reference") {
            if let Some((key, value)) = keys.iter().next() {
                self.report(
                    value.span(),
                    Some(table.key_path(key)),
                    "give either `reference` (one value holds the whole image) or the parts (`registry`, `repository`, `tag`, `digest`), not both",
                );
            }
            HelmImageKeys::Reference(reference.into_inner())
        } else {
            let mut part = |key: &str| keys.remove(key).map(Spanned::into_inner);
            HelmImageKeys::Parts {
                registry: part("registry"),
                repository: part("repository").unwrap_or_else(|| HELM_REPOSITORY_KEY.into()),
                tag: part("tag").unwrap_or_else(|| HELM_TAG_KEY.into()),
                digest: part("digest"),
            }
        };
        table.finish(self);
        HelmValues {
            chart: chart.map(Spanned::into_inner),
            keys,
        }
    }

    /// Records the site's Deployment containers in `taken` (per kubeconfig
    /// context), reporting one another site (or environment) already ships to.
    #[expect(clippy::too_many_arguments, reason = "the site's parts, read by its caller")]
    fn take_targets(
        &mut self,
        index: usize,
        name: &str,
        span: &Range<usize>,
        default_target: &DeploymentTarget,
        environments: &[SiteEnvironment],
        context: &SiteContext<'_>,
        taken: &mut Taken,
    ) {
        let targets: Vec<(Option<String>, DeploymentTarget, String)> = if context.environments.is_empty() {
            vec![(None, default_target.clone(), String::new())]
        } else {
            environments
                .iter()
                .map(|there| {
                    let declared = context.environments.iter().find(|e| e.name == there.environment);
                    let context_name = declared.and_then(|e| e.kubernetes.context.clone());
                    (
                        context_name,
                        there.deployment.clone(),
                        format!(" in environment `{}`", there.environment),
                    )
                })
                .collect()
        };
        for (context_name, target, where_) in targets {
            if let Some(other) = taken
                .targets
                .insert((context_name, target.clone()), (index, name.to_string()))
            {
                let (other_index, other) = other;
                let other = if other_index == index {
                    "another environment of this site".to_string()
                } else {
                    format!("site `{other}`")
                };
                self.report(
                    span.clone(),
                    Some(format!("site[{index}].deployment")),
                    format!(
                        "{other} already ships to container `{}` of Deployment {}/{}{where_}",
                        target.container, target.namespace, target.name
                    ),
                );
            }
        }
    }

    /// A site's `environments`: each a declared environment, none twice; all
    /// of them when the key is left out. `None` when something is wrong.
    fn site_environments(
        &mut self,
        table: &mut TableReader<'_>,
        context: &SiteContext<'_>,
    ) -> Option<Vec<String>> {
        let key = table.key_path("environments");
        let Some(listed) = table.string_array(self, "environments") else {
            return Some(context.environments.iter().map(|e| e.name.clone()).collect());
        };
        let mut names: Vec<String> = Vec::new();
        let mut valid = true;
        for name in listed {
            let problem = if context.environments.is_empty() {
                Some("no [[environment]] is declared".to_string())
            } else if !context.environments.iter().any(|e| &e.name == name.get_ref()) {
                Some(format!(
                    "no [[environment]] is named `{}` (known: {})",
                    name.get_ref(),
                    known_list(context.environments.iter().map(|e| e.name.as_str()))
                ))
            } else if names.contains(name.get_ref()) {
                Some(format!("`{}` is listed twice", name.get_ref()))
            } else {
                None
            };
            if let Some(problem) = problem {
                self.report(name.span(), Some(key.clone()), problem);
                valid = false;
            } else {
                names.push(name.into_inner());
            }
        }
        if valid && names.is_empty() {
            self.report(
                table.span.clone(),
                Some(key),
                "the site ships to no environment; list at least one",
            );
            valid = false;
        }
        // In the file's order of environments.
        names.sort_by_key(|name| context.environments.iter().position(|e| &e.name == name));
        valid.then_some(names)
    }

    /// `[site.environment.<name>]`: the site's Deployment and webhook in one
    /// of the environments it ships to.
    fn site_overrides(
        &mut self,
        table: &mut TableReader<'_>,
        listed: Option<&[String]>,
    ) -> Vec<SiteOverride> {
        let mut overrides = Vec::new();
        for (name, mut reader) in table.named_tables(self, "environment") {
            if let Some(listed) = listed
                && !listed.contains(name.get_ref())
            {
                self.report(
                    name.span(),
                    Some(reader.key_path("")).map(|k| k.trim_end_matches('.').to_string()),
                    if listed.is_empty() {
                        "no [[environment]] is declared".to_string()
                    } else {
                        format!(
                            "the site does not ship to `{}` (its environments: {})",
                            name.get_ref(),
                            listed.join(", ")
                        )
                    },
                );
            }
            let deployment = reader
                .table(self, "deployment", false)
                .map(|t| self.deployment(t, false).0)
                .unwrap_or_default();
            let notify = reader.table(self, "notify", false).and_then(|t| self.notify(t));
            reader.finish(self);
            overrides.push(SiteOverride {
                name,
                deployment,
                notify,
            });
        }
        overrides
    }

    /// A site's `repo`, which a `[[repo]]` must name.
    fn site_repo(
        &mut self,
        table: &mut TableReader<'_>,
        context: &SiteContext<'_>,
    ) -> Option<Spanned<String>> {
        let repo = table.required_string(self, "repo");
        if let Some(repo) = &repo
            && !context.repo_names.contains(repo.get_ref())
        {
            let mut known: Vec<_> = context.repos.iter().map(|r| format!("`{}`", r.name)).collect();
            known.dedup();
            self.report(
                repo.span(),
                Some(table.key_path("repo")),
                format!(
                    "no [[repo]] is named `{}` (known: {})",
                    repo.get_ref(),
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        repo
    }

    /// A path `key` that must stay inside the repo (or the site's folder).
    fn relative_path(&mut self, table: &mut TableReader<'_>, key: &str) -> Option<Spanned<String>> {
        let path = table.string(self, key);
        if let Some(path) = &path
            && let Err(problem) = check_relative_path(path.get_ref())
        {
            self.report(path.span(), Some(table.key_path(key)), problem);
        }
        path
    }

    /// A site's `template` (default `static`) or `dockerfile`, never both.
    fn image_source(&mut self, table: &mut TableReader<'_>, templates_dir: &Path) -> Option<ImageSource> {
        let template = table.string(self, "template");
        let dockerfile = table.string(self, "dockerfile");
        match (template, dockerfile) {
            (Some(template), Some(dockerfile)) => {
                self.report(
                    dockerfile.span(),
                    Some(table.key_path("dockerfile")),
                    "give either `template` or `dockerfile`, not both",
                );
                let _ = template;
                None
            }
            (None, Some(dockerfile)) => match check_relative_path(dockerfile.get_ref()) {
                Ok(()) => Some(ImageSource::Dockerfile(dockerfile.into_inner())),
                Err(problem) => {
                    self.report(dockerfile.span(), Some(table.key_path("dockerfile")), problem);
                    None
                }
            },
            (template, None) => {
                let template =
                    template.unwrap_or_else(|| Spanned::new(table.span.clone(), "static".to_string()));
                let folder = templates_dir.join(template.get_ref());
                if template.get_ref().contains(['/', '\\']) || template.get_ref().starts_with('.') {
                    self.report(
                        template.span(),
                        Some(table.key_path("template")),
                        format!(
                            "`{}` is not a template name (a folder name under {})",
                            template.get_ref(),
                            templates_dir.display()
                        ),
                    );
                    None
                } else if !folder.join("Dockerfile").is_file() {
                    let known = list_templates(templates_dir);
                    self.report(
                        template.span(),
                        Some(table.key_path("template")),
                        format!(
                            "no template `{}`: {} does not exist (known: {})",
                            template.get_ref(),
                            folder.join("Dockerfile").display(),
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    None
                } else {
                    Some(ImageSource::Template(template.into_inner()))
                }
            }
        }
    }

    /// A `deployment = { namespace, name, container }` as written, and its
    /// span; `name` and `container` must be there when `required`.
    fn deployment(
        &mut self,
        mut deployment: TableReader<'_>,
        required: bool,
    ) -> (DeploymentKeys, Range<usize>) {
        let namespace = deployment.string(self, "namespace");
        let (name, container) = if required {
            (
                deployment.required_string(self, "name"),
                deployment.required_string(self, "container"),
            )
        } else {
            (
                deployment.string(self, "name"),
                deployment.string(self, "container"),
            )
        };
        let mut keys = DeploymentKeys::default();
        for (key, value, slot) in [
            ("namespace", namespace, &mut keys.namespace),
            ("name", name, &mut keys.name),
            ("container", container, &mut keys.container),
        ] {
            if let Some(value) = value {
                let check = if key == "name" {
                    reference::check_dns_subdomain(value.get_ref())
                } else {
                    reference::check_dns_label(value.get_ref())
                };
                match check {
                    Ok(()) => *slot = Some(value.into_inner()),
                    Err(problem) => self.report(value.span(), Some(deployment.key_path(key)), problem),
                }
            }
        }
        let span = deployment.span.clone();
        deployment.finish(self);
        (keys, span)
    }

    /// `[notify]`.
    fn notify(&mut self, mut table: TableReader<'_>) -> Option<Notify> {
        let webhook_env = table.required_string(self, "webhook_env");
        if let Some(env) = &webhook_env {
            check_env_name(self, env, &table.key_path("webhook_env"));
        }
        let on = match table.string(self, "on") {
            None => Some(NotifyOn::Failure),
            Some(on) => match on.get_ref().as_str() {
                "failure" => Some(NotifyOn::Failure),
                "success" => Some(NotifyOn::Success),
                "always" => Some(NotifyOn::Always),
                other => {
                    self.report(
                        on.span(),
                        Some(table.key_path("on")),
                        format!("`{other}` is not one of \"failure\", \"success\", \"always\""),
                    );
                    None
                }
            },
        };
        table.finish(self);
        Some(Notify {
            webhook_env: webhook_env?.into_inner(),
            on: on?,
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

/// The ssh keys of one `[[repo]]`, checked.
struct RepoSsh {
    key: Option<PathBuf>,
    passphrase_env: Option<String>,
    known_hosts: Option<PathBuf>,
}

/// A path from the file: `~/…` under `$HOME`, others relative to the file's folder.
fn local_path(base: &Path, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    base.join(path)
}

/// The path names an existing file.
fn check_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => Ok(()),
        Ok(_) => Err(format!("{} is not a file", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("no such file: {}", path.display()))
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// The file starts as a private key does (PEM or OpenSSH format). Its content is
/// never part of a message.
fn check_private_key(path: &Path) -> Result<(), String> {
    use std::io::Read as _;
    let mut head = [0; 64];
    let read = std::fs::File::open(path)
        .and_then(|mut file| file.read(&mut head))
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let head = String::from_utf8_lossy(&head[..read]);
    let first_line = head.lines().next().unwrap_or_default();
    if first_line.starts_with("-----BEGIN ") && first_line.contains("PRIVATE KEY") {
        Ok(())
    } else if first_line.starts_with("ssh-") || first_line.starts_with("ecdsa-") {
        Err(format!(
            "{} is a public key; give the private key file (the one without .pub)",
            path.display()
        ))
    } else {
        Err(format!(
            "{} is not a private key file (expected PEM or OpenSSH format, as ssh-keygen writes)",
            path.display()
        ))
    }
}

/// A values key as `helm --set` takes it: names (letters, digits, `_`,
/// `-`) joined by `.`, each with list indexes if any (`containers[0]`).
fn check_values_key(key: &str) -> Result<(), String> {
    let name_ok = |segment: &str| {
        let (name, indexes) = segment
            .split_once('[')
            .map_or((segment, ""), |(n, rest)| (n, rest));
        let indexes_ok = indexes.is_empty()
            || indexes.strip_suffix(']').is_some_and(|inner| {
                inner
                    .split("][")
                    .all(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
            });
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && indexes_ok
    };
    if key.split('.').all(name_ok) {
        Ok(())
    } else {
        Err(format!(
            "`{key}` is not a values key as `helm --set` takes it: names of letters, digits, `_` and `-` joined by `.` (`image.tag`, `containers[0].image`)"
        ))
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

/// A site's Deployment in each environment it ships to: the keys of its
/// `[site.environment.<name>] deployment`, else its `deployment`'s, else the
/// environment's namespace.
fn resolve_environments(
    listed: &[String],
    overrides: &[SiteOverride],
    keys: &DeploymentKeys,
    default_target: &DeploymentTarget,
    context: &SiteContext<'_>,
) -> Vec<SiteEnvironment> {
    listed
        .iter()
        .filter_map(|environment| {
            let declared = context.environments.iter().find(|e| &e.name == environment)?;
            let override_ = overrides.iter().find(|o| o.name.get_ref() == environment);
            let written = override_.map(|o| &o.deployment);
            let pick = |key: fn(&DeploymentKeys) -> &Option<String>| written.and_then(|w| key(w).clone());
            let namespace = pick(|k| &k.namespace).or_else(|| keys.namespace.clone());
            Some(SiteEnvironment {
                environment: environment.clone(),
                default_namespace: namespace.is_none(),
                deployment: DeploymentTarget {
                    namespace: namespace.unwrap_or_else(|| declared.kubernetes.namespace.clone()),
                    name: pick(|k| &k.name).unwrap_or_else(|| default_target.name.clone()),
                    container: pick(|k| &k.container).unwrap_or_else(|| default_target.container.clone()),
                },
                notify: override_.and_then(|o| o.notify.clone()),
            })
        })
        .collect()
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

fn list_templates(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("Dockerfile").is_file())
        .map(|entry| format!("`{}`", entry.file_name().to_string_lossy()))
        .collect();
    names.sort();
    names
}

/// A path inside the repo: relative, without `..`.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty (use \".\" for the repo's root)".into());
    }
    let parsed = Path::new(path);
    if parsed.is_absolute() || path.starts_with('\\') {
        return Err(format!(
            "`{path}` is absolute; give a path relative to the repo's root"
        ));
    }
    if parsed
        .components()
        .any(|component| matches!(component, Component::ParentDir))
    {
        return Err(format!("`{path}` leaves the repo (`..`)"));
    }
    Ok(())
}

fn normalise_path(path: &str) -> String {
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

fn check_url(url: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        return Err("the URL is empty".into());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "http" | "https" | "ssh" | "git" | "file") {
            return Err(format!(
                "unsupported URL scheme `{scheme}` (use https, http, ssh, git, file or a local path)"
            ));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((user_info, _)) = authority.rsplit_once('@')
            && user_info.contains(':')
        {
            return Err("the URL holds a password or token; put the token in an environment variable and name it in `token_env`".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::table::line_column;

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert!(check_relative_path("docs").is_ok());
        assert!(check_relative_path("./a/b").is_ok());
        assert!(check_relative_path("../x").is_err());
        assert!(check_relative_path("a/../../x").is_err());
        assert!(check_relative_path("/etc").is_err());
        assert_eq!(normalise_path("./a//b/"), "a/b");
        assert_eq!(normalise_path("."), ".");
    }

    #[test]
    fn urls_never_carry_secrets() {
        assert!(check_url("https://git.example.com/a.git").is_ok());
        assert!(check_url("ssh://git@example.com/a.git").is_ok());
        assert!(check_url("https://user:token@example.com/a.git").is_err());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("/srv/git/a.git").is_ok());
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

    #[test]
    fn values_keys_are_what_helm_set_takes() {
        for key in [
            "image.tag",
            "image",
            "web-app.image_tag",
            "containers[0].image",
            "a[1][2].b",
        ] {
            assert!(check_values_key(key).is_ok(), "{key}");
        }
        for key in [
            "",
            "image.",
            ".tag",
            "image..tag",
            "image tag",
            "a[x]",
            "a[]",
            "a[0",
            "image=tag",
        ] {
            assert!(check_values_key(key).is_err(), "{key}");
        }
    }
}
