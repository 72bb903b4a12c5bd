//! The pipeline file (`pipeline.toml`): its model, and its reading.
//!
//! The file is parsed into a spanned document first, then walked by hand, so that
//! every problem is reported (not just the first) with `file:line:column` and the
//! key it concerns.
//!
//! 1. Parse the TOML into a spanned tree (syntax errors stop here, all of them).
//! 2. Read each table with a `table::TableReader` that knows its keys and types and
//!    reports unknown keys, missing keys and wrong types.
//! 3. Check what crosses tables ([`check`]): names unique, sites naming known repos and
//!    templates, image references, paths that stay inside the repo, durations.

pub mod table;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::validate::Checker;

/// How long a rollout may take unless `[kubernetes] rollout_timeout` says.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The whole pipeline: where images go, which cluster, which repos and sites.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// Folder that holds mirrors and berth's run log, relative paths resolved.
    pub state_dir: PathBuf,
    /// Folder holding one sub-folder (with a `Dockerfile`) per template.
    pub templates_dir: PathBuf,
    pub registry: Registry,
    pub kubernetes: Kubernetes,
    pub repos: Vec<Repo>,
    /// The sites of [`Self::environment`] (every site in a file without
    /// environments), their Deployments and webhooks that environment's.
    pub sites: Vec<Site>,
    /// `[notify]` (or the environment's): a webhook told about results.
    pub notify: Option<Notify>,
    /// `[[environment]]`, in file order; empty in a file that declares none.
    pub environments: Vec<Environment>,
    /// The environment `berth run` and `ship` target without `--env`:
    /// `default_environment`, else the first declared.
    pub default_environment: Option<String>,
    /// The environment this view of the file is for ([`Self::in_environment`]);
    /// `None` in a file without environments.
    pub environment: Option<String>,
    /// Every `[[site]]` declared, whichever environments it ships to.
    pub declared_sites: Vec<Site>,
    /// `[serve]`: what `berth serve` listens on, its webhooks' secrets, its poll.
    pub serve: Serve,
    /// `[forge]`: the REST API berth tells about commits; none without it.
    pub forge: Option<Forge>,
    /// `[preview]`: pull requests' previews.
    pub preview: Preview,
}

/// `[preview]`: how pull requests' previews are reached and kept.
#[derive(Debug, Clone)]
pub struct Preview {
    /// A host name template (`pr-{number}.{site}.preview.example.com`): with
    /// it, each preview gets an Ingress for that host.
    pub host: Option<String>,
    /// The Ingress's `ingressClassName`.
    pub ingress_class: Option<String>,
    /// `https` (default) or `http`: the host's URL.
    pub scheme: String,
    /// How long a preview with no push lives (default 7 days).
    pub ttl: std::time::Duration,
    /// How many previews one site may have at once (default 10).
    pub max_previews: u32,
    /// Whether a pull request from a fork is built.
    pub forks: ForkPolicy,
}

impl Default for Preview {
    fn default() -> Self {
        Self {
            host: None,
            ingress_class: None,
            scheme: "https".into(),
            ttl: validate::DEFAULT_PREVIEW_TTL,
            max_previews: validate::DEFAULT_MAX_PREVIEWS,
            forks: ForkPolicy::Never,
        }
    }
}

/// Whether a pull request from a fork is built: its generator would run
/// someone else's code with berth's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForkPolicy {
    /// Never (the default).
    Never,
    /// When a maintainer gave it this label.
    Label(String),
}

/// `[serve]`: `berth serve`'s settings. Secrets are named by the environment
/// variables that hold them.
#[derive(Debug, Clone, Default)]
pub struct Serve {
    /// The address and port to listen on (`--listen` wins).
    pub listen: Option<String>,
    /// The variable holding the webhooks' shared secret: GitHub's and Gitea's
    /// HMAC key, the generic endpoint's, and GitLab's token.
    pub webhook_secret_env: Option<String>,
    /// Per-endpoint variables, each instead of `webhook_secret_env`.
    pub github_secret_env: Option<String>,
    pub gitlab_token_env: Option<String>,
    pub generic_secret_env: Option<String>,
    /// How often every repo is asked for its branch head (default 3 minutes).
    pub poll_interval: std::time::Duration,
    /// The status page's public address, for the commit statuses' links.
    pub public_url: Option<String>,
}

/// `[forge]`: the forge's REST API, as GitHub and Gitea shape it.
#[derive(Debug, Clone)]
pub struct Forge {
    /// `https://api.github.com`, or Gitea's `https://HOST/api/v1`.
    pub api: String,
    /// The variable holding the API token (a secret: never in the file).
    pub token_env: String,
}

/// `[[environment]]`: a cluster (and optionally a registry and a webhook)
/// sites ship to, such as staging or production.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    /// Its kubeconfig context, default namespace and rollout timeout
    /// (`[kubernetes]`'s where it names none).
    pub kubernetes: Kubernetes,
    /// Its registry (`[registry]` where it names none).
    pub registry: Registry,
    /// Its webhook (`[notify]` where it names none).
    pub notify: Option<Notify>,
    /// Where `berth promote --to <this>` takes the image from without `--from`.
    pub promote_from: Option<String>,
}

/// A site in one environment: its Deployment there, and its webhook.
#[derive(Debug, Clone)]
pub struct SiteEnvironment {
    pub environment: String,
    pub deployment: DeploymentTarget,
    /// The Deployment's namespace is the environment's (the site names none).
    pub default_namespace: bool,
    /// `[site.environment.<name>] notify`: told about this site only.
    pub notify: Option<Notify>,
}

/// A `--env` the file cannot serve.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnvironmentError {
    /// The file declares environments, none of them this one.
    #[error("no environment named `{name}` in {config} (environments: {known})")]
    Unknown {
        name: String,
        config: String,
        known: String,
    },
    /// `--env` was given for a file that declares no `[[environment]]`.
    #[error("{config} declares no [[environment]]; leave out --env {name}, or declare the environment")]
    NoEnvironments { name: String, config: String },
}

impl EnvironmentError {
    /// A usage error: the command line names an environment the file lacks.
    pub fn kind(&self) -> crate::exit::Kind {
        crate::exit::Kind::Usage
    }
}

impl EnvironmentError {
    /// The pipeline file, as its path was given.
    pub fn config(&self) -> &str {
        match self {
            Self::Unknown { config, .. } | Self::NoEnvironments { config, .. } => config,
        }
    }
}

/// `[notify]`
#[derive(Debug, Clone)]
pub struct Notify {
    /// Environment variable holding the webhook URL (a secret: never in the file).
    pub webhook_env: String,
    pub on: NotifyOn,
}

/// Which results are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOn {
    Failure,
    Success,
    Always,
}

/// `[registry]`
#[derive(Debug, Clone)]
pub struct Registry {
    /// `host[:port]`, for example `registry.example.com` or `127.0.0.1:5000`.
    pub address: String,
    /// Where the credentials come from.
    pub credentials: CredentialSource,
    /// What `berth gc` keeps of each site's images here, unless a site says.
    pub keep: Retention,
}

/// `keep_last` and `keep_days`: what `berth gc` keeps of a site's images
/// besides those it must (running, in a revision, a branch head or tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest images per site, by when they were built; at least 1.
    pub last: u32,
    /// Images built less than this many days ago.
    pub days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self { last: 10, days: 14 }
    }
}

/// Where registry credentials come from. Secrets are read when needed and never stored here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Docker's `config.json` (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`):
    /// `auths` entries and credential helpers, as `docker login` leaves them.
    DockerConfig,
    /// A user name and a password, each from an environment variable.
    Environment {
        username_env: String,
        password_env: String,
    },
    /// A user name from the file, the password from a file (its first line).
    Files {
        username: String,
        password_file: PathBuf,
    },
    /// No credentials (an open registry).
    None,
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DockerConfig => write!(formatter, "Docker's config.json"),
            Self::Environment {
                username_env,
                password_env,
            } => {
                write!(
                    formatter,
                    "environment variables {username_env} and {password_env}"
                )
            }
            Self::Files {
                username,
                password_file,
            } => {
                write!(
                    formatter,
                    "user {username} with the password in {}",
                    password_file.display()
                )
            }
            Self::None => write!(formatter, "no credentials"),
        }
    }
}

/// `[kubernetes]`
#[derive(Debug, Clone)]
pub struct Kubernetes {
    /// Kubeconfig context; `None` means the current context.
    pub context: Option<String>,
    /// Namespace for Deployments that name none.
    pub namespace: String,
    /// How long berth waits for one rollout before it fails it.
    pub rollout_timeout: Duration,
    /// The kubeconfig file, from `--kubeconfig` only (a pipeline file is
    /// shared; where a kubeconfig lives is not); `None`: `KUBECONFIG`, then
    /// `~/.kube/config`, then the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
}

/// What `--context`, `--namespace`, `--kubeconfig` and `--timeout` put in
/// place of the pipeline file's cluster keys, in the one environment a
/// command works in.
#[derive(Debug, Clone, Default)]
pub struct ClusterOverrides {
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub rollout_timeout: Option<Duration>,
}

impl ClusterOverrides {
    /// The options given, as the command line spells them.
    pub fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if self.context.is_some() {
            given.push("--context");
        }
        if self.namespace.is_some() {
            given.push("--namespace");
        }
        if self.kubeconfig.is_some() {
            given.push("--kubeconfig");
        }
        given
    }
}

/// A cluster option the command cannot take as given.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OverrideError {
    /// `--context`, `--namespace` or `--kubeconfig` name one cluster, and the
    /// command would work in several environments.
    #[error(
        "{options} name one cluster, and {command} works in {environments}: add --env NAME to choose one"
    )]
    SeveralEnvironments {
        options: String,
        command: &'static str,
        environments: String,
    },
    /// `--context`, `--namespace` or `--kubeconfig` name one cluster, and
    /// `promote` works in two.
    #[error(
        "{options} name one cluster, and promote works in two: each takes its cluster from its [[environment]] in the pipeline file"
    )]
    Promote { options: String },
    /// `--context`, `--namespace` or `--kubeconfig` name one cluster, and
    /// `gc` reads every environment's (what any of them runs stays).
    #[error(
        "{options} name one cluster, and gc reads every environment's to keep what any of them runs: each takes its cluster from its [[environment]] in the pipeline file"
    )]
    Gc { options: String },
    /// `--namespace` is not a namespace name.
    #[error("--namespace `{namespace}`: {problem}")]
    Namespace {
        namespace: String,
        problem: crate::reference::NameError,
    },
}

impl OverrideError {
    /// A usage error: the cluster options do not fit the command.
    pub fn kind(&self) -> crate::exit::Kind {
        crate::exit::Kind::Usage
    }
}

/// `[[repo]]`
#[derive(Debug, Clone)]
pub struct Repo {
    pub name: String,
    /// Remote URL: https, http, ssh, git or a local path. Never holds credentials.
    pub url: String,
    pub branch: String,
    /// Environment variable that holds an access token for http(s) remotes.
    pub token_env: Option<String>,
    /// ssh remotes: the private key file (path resolved); `None` means the ssh-agent.
    pub ssh_key: Option<PathBuf>,
    /// Environment variable that holds the passphrase of `ssh_key`.
    pub ssh_key_passphrase_env: Option<String>,
    /// ssh remotes: the `known_hosts` file host keys are checked against (path
    /// resolved); `None` means `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`.
    pub known_hosts: Option<PathBuf>,
}

/// `[[site]]`
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub repo: String,
    /// Folder of the site inside the repo (`"."` is the root), normalised with `/`.
    pub path: String,
    /// Generator command run with `sh -c` in the exported site folder.
    pub build: Option<String>,
    /// Folder (relative to `path`) the generator writes; the site's content.
    pub output: Option<String>,
    /// How the image is built.
    pub image_source: ImageSource,
    pub build_args: BTreeMap<String, String>,
    /// The generator runs in a Git checkout with history (Hugo's `enableGitInfo`).
    pub git_history: bool,
    /// Variables the generator is given besides berth's own: a pull
    /// request's preview names its address here (`BERTH_BASE_URL`,
    /// `HUGO_BASEURL`). Never in the file; a build input (its source digest).
    pub generator_env: BTreeMap<String, String>,
    /// Repository under the registry, for example `sites/www`.
    pub image: String,
    /// Its Deployment in [`Config::environment`].
    pub deployment: DeploymentTarget,
    /// That Deployment's namespace is the environment's (the site names none),
    /// so `--namespace` moves it.
    pub default_namespace: bool,
    /// Its own webhook in [`Config::environment`], besides the environment's.
    pub notify: Option<Notify>,
    /// Its own `keep_last` / `keep_days`, each over its registry's.
    pub keep_last: Option<u32>,
    pub keep_days: Option<u32>,
    /// The environments it ships to, in the file's order of environments,
    /// with its Deployment in each; empty in a file without environments.
    pub environments: Vec<SiteEnvironment>,
    /// How the chart's values name the image, where a Helm release manages
    /// the Deployment (`helm`).
    pub helm: HelmValues,
}

impl Site {
    /// This site in environment `name`, if it ships there.
    pub fn environment(&self, name: &str) -> Option<&SiteEnvironment> {
        self.environments.iter().find(|e| e.environment == name)
    }
}

/// Where the site's Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `templates/<name>/Dockerfile`.
    Template(String),
    /// A Dockerfile inside the site's folder, relative to `path`.
    Dockerfile(String),
}

/// The values key of the image's repository in `helm create`'s chart.
pub const HELM_REPOSITORY_KEY: &str = "image.repository";
/// The values key of the image's tag in `helm create`'s chart.
pub const HELM_TAG_KEY: &str = "image.tag";

/// A site's `helm`: the chart and the values keys that name the image, for
/// the `helm upgrade` that keeps berth's image in a Helm release's values
/// (`deploy::helm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmValues {
    /// The chart as `helm upgrade` takes it (a path, `repo/name`, `oci://…`);
    /// `None` prints the placeholder `CHART`.
    pub chart: Option<String>,
    pub keys: HelmImageKeys,
}

impl Default for HelmValues {
    /// `helm create`'s chart: `image.repository` and `image.tag`.
    fn default() -> Self {
        Self {
            chart: None,
            keys: HelmImageKeys::Parts {
                registry: None,
                repository: HELM_REPOSITORY_KEY.into(),
                tag: HELM_TAG_KEY.into(),
                digest: None,
            },
        }
    }
}

/// The values keys of a chart that name a container's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelmImageKeys {
    /// One value holds the whole reference, `<repository>:<tag>@sha256:…`.
    Reference(String),
    /// A value for each part. Without `registry`, `repository` holds the
    /// registry's address too; without `digest`, the tag's value carries the
    /// digest (`<tag>@sha256:…`), which a chart writing
    /// `{{ .repository }}:{{ .tag }}` turns into the pinned reference.
    Parts {
        registry: Option<String>,
        repository: String,
        tag: String,
        digest: Option<String>,
    },
}

/// `[site.deployment]`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeploymentTarget {
    pub namespace: String,
    pub name: String,
    pub container: String,
}

/// One problem found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    /// The key the problem concerns, as a path (`site[2].path`), if any.
    pub key: Option<String>,
    pub message: String,
}

/// The pipeline file's name, looked for when `--config` is not given.
pub const FILE_NAME: &str = "pipeline.toml";

/// The pipeline file for a command started in `start` (an absolute folder):
/// [`FILE_NAME`] there or in the nearest folder above it, as cargo finds
/// `Cargo.toml`; the path is relative to `start` (`pipeline.toml`,
/// `../../pipeline.toml`), so messages stay short.
pub fn find(start: &Path) -> Option<PathBuf> {
    start.ancestors().enumerate().find_map(|(levels, folder)| {
        folder.join(FILE_NAME).is_file().then(|| {
            let mut path: PathBuf = std::iter::repeat_n("..", levels).collect();
            path.push(FILE_NAME);
            path
        })
    })
}

/// All problems found in one file, in file order.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `--config` was given, and no pipeline file is in the folder or above it.
    #[error("no {FILE_NAME} in {} or any folder above it; name the file with --config (or BERTH_CONFIG)", start.display())]
    NotFound { start: PathBuf },
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    /// The file was read and has problems; each says where.
    #[error("{}", render(path, diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// A usage error: the pipeline file cannot be used, so nothing ran.
    pub fn kind(&self) -> crate::exit::Kind {
        crate::exit::Kind::Usage
    }
}

fn render(path: &Path, diagnostics: &[Diagnostic]) -> String {
    let mut text = String::new();
    for (index, diagnostic) in diagnostics.iter().enumerate() {
        if index > 0 {
            text.push('\n');
        }
        text.push_str(&format!(
            "{}:{}:{}: error: ",
            path.display(),
            diagnostic.line,
            diagnostic.column
        ));
        if let Some(key) = &diagnostic.key {
            text.push_str(&format!("{key}: "));
        }
        text.push_str(&diagnostic.message);
    }
    let count = diagnostics.len();
    text.push_str(&format!(
        "\n{count} problem{} in {}; nothing was run",
        if count == 1 { "" } else { "s" },
        path.display()
    ));
    text
}

impl ConfigError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Read { .. } | Self::NotFound { .. } => &[],
            Self::Invalid { diagnostics, .. } => diagnostics,
        }
    }
}

/// A template's Dockerfile that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", .path.display())]
pub struct TemplateError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Config {
    /// The Dockerfile of the template `site` is built from, read from the
    /// templates folder; `None` for a site with a Dockerfile of its own.
    pub fn template_dockerfile(&self, site: &Site) -> Result<Option<Vec<u8>>, TemplateError> {
        match &site.image_source {
            ImageSource::Template(name) => {
                let path = self.templates_dir.join(name).join("Dockerfile");
                std::fs::read(&path)
                    .map(Some)
                    .map_err(|source| TemplateError { path, source })
            }
            ImageSource::Dockerfile(_) => Ok(None),
        }
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            error: source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (relative paths resolve against its folder).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut checker = Checker {
            text,
            diagnostics: Vec::new(),
        };
        let config = checker.document(path);
        let mut diagnostics = checker.diagnostics;
        diagnostics.sort_by_key(|diagnostic| (diagnostic.line, diagnostic.column));
        diagnostics.dedup();
        match config {
            Some(config) if diagnostics.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                diagnostics,
            }),
        }
    }

    /// This file as seen from environment `name` (the default environment
    /// when `None`): that environment's cluster, registry and webhook, its
    /// sites only, each with its Deployment there. A file without
    /// environments is returned as it is (`name` must then be `None`).
    pub fn in_environment(&self, name: Option<&str>) -> Result<Self, EnvironmentError> {
        if self.environments.is_empty() {
            return match name {
                None => Ok(self.clone()),
                Some(name) => Err(EnvironmentError::NoEnvironments {
                    name: name.to_string(),
                    config: self.path.display().to_string(),
                }),
            };
        }
        let name = name
            .or(self.default_environment.as_deref())
            .or_else(|| self.environments.first().map(|e| e.name.as_str()))
            .expect("the file has environments");
        let environment = self
            .environment_named(name)
            .ok_or_else(|| EnvironmentError::Unknown {
                name: name.to_string(),
                config: self.path.display().to_string(),
                known: self.environment_names().join(", "),
            })?;
        let mut view = self.clone();
        view.environment = Some(environment.name.clone());
        view.kubernetes = environment.kubernetes.clone();
        view.registry = environment.registry.clone();
        view.notify.clone_from(&environment.notify);
        view.sites = self
            .declared_sites
            .iter()
            .filter_map(|site| {
                let there = site.environment(name)?;
                let mut site = site.clone();
                site.deployment = there.deployment.clone();
                site.default_namespace = there.default_namespace;
                site.notify.clone_from(&there.notify);
                Some(site)
            })
            .collect();
        Ok(view)
    }

    /// This view with `overrides` in place of its cluster keys: `--namespace`
    /// moves the Deployments of sites that name no namespace.
    pub fn with_cluster(mut self, overrides: &ClusterOverrides) -> Result<Self, OverrideError> {
        if let Some(context) = &overrides.context {
            self.kubernetes.context = Some(context.clone());
        }
        if let Some(timeout) = overrides.rollout_timeout {
            self.kubernetes.rollout_timeout = timeout;
        }
        if let Some(kubeconfig) = &overrides.kubeconfig {
            self.kubernetes.kubeconfig = Some(kubeconfig.clone());
        }
        if let Some(namespace) = &overrides.namespace {
            crate::reference::check_dns_label(namespace).map_err(|problem| OverrideError::Namespace {
                namespace: namespace.clone(),
                problem,
            })?;
            self.kubernetes.namespace.clone_from(namespace);
            for site in self.sites.iter_mut().filter(|site| site.default_namespace) {
                site.deployment.namespace.clone_from(namespace);
            }
        }
        Ok(self)
    }

    /// The names of the environments, in file order.
    pub fn environment_names(&self) -> Vec<&str> {
        self.environments.iter().map(|e| e.name.as_str()).collect()
    }

    /// Where `berth promote --to <to>` takes the image from without `--from`:
    /// `to`'s `promote_from`, else the default environment (when `to` is
    /// another one).
    pub fn promote_source(&self, to: &str) -> Option<&str> {
        let environment = self.environment_named(to)?;
        environment
            .promote_from
            .as_deref()
            .or(self.default_environment.as_deref())
            .filter(|from| *from != to)
    }

    /// The declared environment `name`.
    pub fn environment_named(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|site| site.name == name)
    }

    /// The declared site `name`, whichever environments it ships to.
    pub fn declared_site(&self, name: &str) -> Option<&Site> {
        self.declared_sites.iter().find(|site| site.name == name)
    }

    pub fn repo(&self, name: &str) -> Option<&Repo> {
        self.repos.iter().find(|repo| repo.name == name)
    }

    /// What `berth gc` keeps of `site`'s images in this view's registry: the
    /// site's `keep_last` / `keep_days`, else the registry's.
    pub fn retention(&self, site: &Site) -> Retention {
        Retention {
            last: site.keep_last.unwrap_or(self.registry.keep.last),
            days: site.keep_days.unwrap_or(self.registry.keep.days),
        }
    }

    /// The full image repository of a site: `<registry>/<image>`.
    pub fn image_repository(&self, site: &Site) -> String {
        format!("{}/{}", self.registry.address, site.image)
    }
}

/// Is `url` an ssh remote: `ssh://…`, or scp-like `[user@]host:path`?
pub fn is_ssh_url(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return scheme == "ssh";
    }
    // scp-like: a colon before any slash, and something before it.
    match (url.find(':'), url.find('/')) {
        (Some(colon), slash) => colon > 0 && slash.is_none_or(|slash| colon < slash),
        (None, _) => false,
    }
}
