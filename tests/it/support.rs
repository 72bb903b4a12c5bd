//! Test support: the stack from the environment, a per-test world (temp dir,
//! namespace, repo copies, image names), the one runner of the real `berth`
//! binary ([`Berth`]), typed pipeline files ([`Pipeline`]) and Deployments
//! ([`DeploymentBuilder`]), registries of a test's own, and a load for the
//! zero-downtime tests.

pub mod browser;
mod deployment;
pub mod forge;
pub mod in_cluster;
mod load;
mod registry;
mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

// What the tests use of berth's library, in one place: these module paths
// follow src/'s layout.
pub use berth::config::CredentialSource;
pub use berth::deploy::rollout::{RolloutState, pod_problem, rollout_state};
/// The exit codes berth documents; tests name them, never their numbers.
pub use berth::exit;
use berth::image::container::create_published;
pub use berth::image::{BuildError, ContextBody, ImageBuild, build_image};
pub use berth::registry::push as push_image;
pub use berth::registry::{
    ApiError, Copied, CopyError, Endpoint, RegistryAuth, copy_by_digest, resolve_credentials,
};
pub use berth::ui::{Printer, Verbosity};
pub use deployment::{DeploymentBuilder, IntOrString, Probe, Strategy};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, Toleration};
use kube::api::{Api, PostParams};
pub use load::{Load, LoadPlan, LoadResult};
pub use registry::{FlakyRegistry, OwnRegistry};
pub use run::{Berth, Ran, Running, SPAWN_DEADLINE};
use serde::Serialize;
use serde_json::json;

/// The local stack, as `scripts/stack env` describes it.
pub struct Stack {
    pub registry: String,
    pub auth_registry: String,
    pub auth_username: String,
    pub auth_password: String,
    pub git_url: String,
    pub git_root: PathBuf,
    /// The same repos over ssh (`ssh://user@127.0.0.1:port/<git_root>`).
    pub git_ssh_url: String,
    /// The client key the stack's sshd accepts (git-shell only).
    pub ssh_key: PathBuf,
    /// A known_hosts file listing the stack's sshd.
    pub ssh_known_hosts: PathBuf,
    /// The same repos over git:// (`git://127.0.0.1:port`).
    pub git_daemon_url: String,
    pub base_image: String,
    /// The real node (kubelet, containerd): pods there pull, run, probe and serve.
    pub real_node: String,
    /// `key=value` of the label that selects the real node.
    pub real_node_label: String,
    /// `key=value:effect` of the taint that keeps pods off the real node unless they tolerate it.
    pub real_node_taint: String,
    /// An image in the open registry that serves a page on 8080 (its probe on / passes).
    pub placeholder_image: String,
    /// A base image (in the Engine) whose server exits at SIGTERM, as nginx does.
    pub stopping_base_image: String,
    /// A server that finishes its requests at SIGTERM; `/cgi-bin/slow?N` takes N seconds.
    pub draining_base_image: String,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the local stack. Run them with scripts/test, \
             or `scripts/stack up && eval \"$(scripts/stack env)\"` first."
        )
    })
}

impl Stack {
    /// The open registry's port.
    pub fn registry_port(&self) -> u16 {
        self.registry
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("the registry address has a port")
    }

    pub fn from_env() -> Self {
        let read = |name: &str| {
            let path = env(name);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{name}={path}: {e}"))
                .trim()
                .to_string()
        };
        Self {
            registry: env("BERTH_STACK_REGISTRY"),
            auth_registry: env("BERTH_STACK_AUTH_REGISTRY"),
            auth_username: read("BERTH_STACK_AUTH_REGISTRY_USERNAME_FILE"),
            auth_password: read("BERTH_STACK_AUTH_REGISTRY_PASSWORD_FILE"),
            git_url: env("BERTH_STACK_GIT_URL"),
            git_root: env("BERTH_STACK_GIT_ROOT").into(),
            git_ssh_url: env("BERTH_STACK_GIT_SSH_URL"),
            ssh_key: env("BERTH_STACK_SSH_KEY").into(),
            ssh_known_hosts: env("BERTH_STACK_SSH_KNOWN_HOSTS").into(),
            git_daemon_url: env("BERTH_STACK_GIT_DAEMON_URL"),
            base_image: env("BERTH_STACK_BASE_IMAGE"),
            real_node: env("BERTH_STACK_REAL_NODE"),
            real_node_label: env("BERTH_STACK_REAL_NODE_LABEL"),
            real_node_taint: env("BERTH_STACK_REAL_NODE_TAINT"),
            placeholder_image: env("BERTH_STACK_PLACEHOLDER_IMAGE"),
            stopping_base_image: env("BERTH_STACK_STOPPING_BASE_IMAGE"),
            draining_base_image: env("BERTH_STACK_DRAINING_BASE_IMAGE"),
        }
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process and call: lowercase, DNS-safe.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id() % 100_000)
}

pub async fn kube_client() -> kube::Client {
    kube::Client::try_default()
        .await
        .expect("a kube client from KUBECONFIG")
}

pub async fn docker() -> bollard::Docker {
    let docker = bollard::Docker::connect_with_defaults().expect("DOCKER_HOST");
    docker.ping().await.expect("the stack's Docker Engine answers");
    docker
}

/// A test's own world on the stack.
pub struct World {
    pub stack: Stack,
    pub dir: tempfile::TempDir,
    pub namespace: String,
    pub prefix: String,
    /// Seeded repo name → the URL of this world's copy ([`World::copy_repo`]).
    copies: Mutex<BTreeMap<String, String>>,
}

impl World {
    pub async fn new(name: &str) -> Self {
        let stack = Stack::from_env();
        let prefix = unique(name);
        let namespace = prefix.clone();
        let client = kube_client().await;
        let namespaces: Api<Namespace> = Api::all(client);
        let namespace_object: Namespace = serde_json::from_value(
            json!({"metadata": {"name": namespace, "labels": {"berth.dev/test": "true"}}}),
        )
        .unwrap();
        namespaces
            .create(&PostParams::default(), &namespace_object)
            .await
            .expect("create namespace");
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            stack,
            dir,
            namespace,
            prefix,
            copies: Mutex::default(),
        }
    }

    /// A world with the four example sites of the bundled pipeline (see [`SITES`]):
    /// copies of repos `website`, `product` and `landing`, a Deployment of 2
    /// replicas on the busybox base per site, and [`World::example_pipeline`] written.
    pub async fn example(name: &str) -> Self {
        let world = Self::new(name).await;
        for repo in ["website", "product", "landing"] {
            world.copy_repo(repo);
        }
        for (site, _) in SITES {
            world
                .kwok_deployment(site, &world.busybox())
                .replicas(2)
                .create()
                .await;
        }
        world.write_pipeline(&world.example_pipeline());
        world
    }

    /// The URL of this world's copy of the seeded repo `name` ([`World::copy_repo`]).
    pub fn url(&self, name: &str) -> String {
        self.copies
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("repo `{name}` was not copied into this world (World::copy_repo)"))
    }

    /// `[[repo]]` `name` at this world's copy of it.
    pub fn repo(&self, name: &str) -> Repo {
        Repo::new(name, &self.url(name))
    }

    /// The head commit of `main` of this world's copy of the seeded repo `name`.
    pub fn repo_head(&self, name: &str) -> String {
        self.head(&self.url(name), "main")
    }

    /// The image repository (under the registry) of this world's image `name`: `<prefix>/<name>`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// The stack's busybox base in the open registry: what Deployments start on.
    pub fn busybox(&self) -> String {
        format!("{}/berth/base:busybox", self.stack.registry)
    }

    /// A pipeline of no repos and no sites yet: the repo's `templates/`, the
    /// stack's open registry, this world's namespace, a rollout timeout of 2 minutes.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline {
            state_dir: None,
            templates: Some(repo_root().join("templates").display().to_string()),
            registry: Registry {
                address: self.stack.registry.clone(),
                credentials: Credentials::None,
                keep_last: None,
                keep_days: None,
            },
            kubernetes: Some(Kubernetes {
                context: None,
                namespace: Some(self.namespace.clone()),
                rollout_timeout: Some("2m".into()),
            }),
            repos: Vec::new(),
            sites: Vec::new(),
            notify: None,
            environments: Vec::new(),
            default_environment: None,
            serve: None,
            forge: None,
            preview: None,
        }
    }

    /// [`World::pipeline`] with `repo` and one site of the same name at its root,
    /// shipped as image `<prefix>/<name>` to container `web` of Deployment `web`.
    pub fn one_site_pipeline(&self, repo: Repo) -> Pipeline {
        let site = SiteSpec::new(&repo.name, &repo.name, &self.image(&repo.name), "web");
        let mut pipeline = self.pipeline();
        pipeline.repos.push(repo);
        pipeline.sites.push(site);
        pipeline
    }

    /// The `landing` example site of this world's copy of `landing`
    /// ([`World::one_site_pipeline`]).
    pub fn landing_pipeline(&self) -> Pipeline {
        self.one_site_pipeline(self.repo("landing"))
    }

    /// The bundled example pipeline on this world's copies, namespace and image
    /// names: the Hugo site in two languages, the docs of a monorepo, a plain page.
    pub fn example_pipeline(&self) -> Pipeline {
        let mut pipeline = self.pipeline();
        pipeline.repos = ["website", "product", "landing"]
            .into_iter()
            .map(|name| self.repo(name))
            .collect();
        for (site, repo) in SITES {
            let mut spec = SiteSpec::new(site, repo, &self.image(site), site);
            match site {
                "www-en" | "www-de" => {
                    spec.build = Some("hugo --minify".into());
                    spec.output = Some(format!("public/{}", &site[4..]));
                }
                "docs" => spec.path = Some("docs".into()),
                _ => {}
            }
            pipeline.sites.push(spec);
        }
        pipeline
    }

    /// [`snapshot_settings`] for this world's output: its prefix (names,
    /// namespace, images) as `[TEST]`, the open registry as `[REGISTRY]`, and
    /// runs of spaces squeezed (column widths follow the replaced lengths).
    pub fn snapshot_settings(&self) -> insta::Settings {
        let literal = |text: &str, replacement: &str| (regex::escape(text), replacement.to_string());
        let mut settings = snapshot_settings(&[
            literal(&self.prefix, "[TEST]"),
            literal(&self.stack.registry, "[REGISTRY]"),
        ]);
        settings.add_filter(r"(?m)^[ \t]+|[ \t]+$", "");
        settings.add_filter(r"[ \t]{2,}", " ");
        settings
    }

    /// Writes `pipeline` as `pipeline.toml` into the test's dir and returns its path.
    pub fn write_pipeline(&self, pipeline: &Pipeline) -> PathBuf {
        let path = self.dir.path().join("pipeline.toml");
        std::fs::write(&path, pipeline.to_toml()).unwrap();
        path
    }

    /// Copies the seeded bare repo `name` to a repo of this test's own; returns its URL.
    pub fn copy_repo(&self, name: &str) -> String {
        let copy = format!("{}-{name}.git", self.prefix);
        let status = Command::new("cp")
            .arg("-a")
            .arg(self.stack.git_root.join(format!("{name}.git")))
            .arg(self.stack.git_root.join(&copy))
            .status()
            .unwrap();
        assert!(status.success());
        let url = format!("{}/{copy}", self.stack.git_url);
        self.copies.lock().unwrap().insert(name.to_string(), url.clone());
        url
    }

    /// The bare repo behind a URL made by [`World::copy_repo`].
    pub fn repo_path(&self, url: &str) -> PathBuf {
        self.stack.git_root.join(url.rsplit('/').next().unwrap())
    }

    /// A working copy of the bare repo behind a URL made by [`World::copy_repo`],
    /// in a fresh folder of this world.
    pub fn clone_of(&self, url: &str) -> PathBuf {
        let work = self.dir.path().join(unique("work"));
        git(
            self.dir.path(),
            &[
                "clone",
                "-q",
                self.repo_path(url).to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        work
    }

    /// Commits `files` (path, content) on `branch` of the bare repo and returns the new commit id.
    pub fn commit(&self, url: &str, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        let work = self.dir.path().join(unique("work"));
        git(
            self.dir.path(),
            &[
                "clone",
                "-q",
                "--branch",
                branch,
                self.repo_path(url).to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        for (path, content) in files {
            let target = work.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, content).unwrap();
        }
        git(&work, &["add", "-A"]);
        git_commit(&work, &["-q", "-m", message]);
        git(&work, &["push", "-q", "origin", branch]);
        git(&work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// The head commit of `branch` in the bare repo.
    pub fn head(&self, url: &str, branch: &str) -> String {
        git(
            &self.repo_path(url),
            &["rev-parse", &format!("refs/heads/{branch}")],
        )
        .trim()
        .to_string()
    }

    /// A Deployment `name` of `image` on kwok's node, in this world's
    /// namespace, to change and [`DeploymentBuilder::create`]: 1 replica,
    /// port 8080 (`http`) probed on / every 5 s, one pod at a time, a
    /// progress deadline of 120 s.
    pub fn kwok_deployment(&self, name: &str, image: &str) -> DeploymentBuilder {
        DeploymentBuilder::kwok(&self.namespace, name, image)
    }

    /// The same on the real node (its nodeSelector and toleration), probed
    /// every second, a grace period of 5 s.
    pub fn real_node_deployment(&self, name: &str, image: &str) -> DeploymentBuilder {
        DeploymentBuilder::real_node(
            &self.namespace,
            name,
            image,
            self.real_node_selector(),
            self.real_node_tolerations(),
        )
    }

    /// The nodeSelector that asks for the real node.
    pub fn real_node_selector(&self) -> BTreeMap<String, String> {
        let (key, value) = self.stack.real_node_label.split_once('=').unwrap();
        BTreeMap::from([(key.to_string(), value.to_string())])
    }

    /// The tolerations of the real node's taint.
    pub fn real_node_tolerations(&self) -> Vec<Toleration> {
        let (key, rest) = self.stack.real_node_taint.split_once('=').unwrap();
        let (value, effect) = rest.split_once(':').unwrap();
        vec![Toleration {
            key: Some(key.into()),
            value: Some(value.into()),
            effect: Some(effect.into()),
            ..Toleration::default()
        }]
    }

    /// Waits (at most `within`) until Deployment `name` is in a rollout
    /// state `done` accepts, by `kubectl rollout status`'s rule; returns it.
    pub async fn wait_for_rollout(
        &self,
        name: &str,
        within: std::time::Duration,
        done: impl Fn(&RolloutState) -> bool,
    ) -> RolloutState {
        let started = std::time::Instant::now();
        loop {
            let state = rollout_state(&self.deployment(name).await);
            if done(&state) {
                return state;
            }
            assert!(
                started.elapsed() < within,
                "Deployment {name} is still {state:?} after {within:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// Waits (at most 2 minutes) until Deployment `name` has rolled out.
    pub async fn wait_until_rolled_out(&self, name: &str) {
        self.wait_for_rollout(name, std::time::Duration::from_secs(120), |state| {
            *state == RolloutState::Complete
        })
        .await;
    }

    /// Creates a ClusterIP Service `name` selecting `app=<app>`, port 80 (`web`)
    /// to `target_port` (a port name or number).
    pub async fn create_service(&self, name: &str, app: &str, target_port: serde_json::Value) -> Service {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"selector": {"app": app}, "ports": [{"name": "web", "port": 80, "targetPort": target_port}]}
        }))
        .unwrap();
        let api: Api<Service> = Api::namespaced(kube_client().await, &self.namespace);
        api.create(&PostParams::default(), &service)
            .await
            .expect("create service")
    }

    pub async fn deployment(&self, name: &str) -> Deployment {
        let api: Api<Deployment> = Api::namespaced(kube_client().await, &self.namespace);
        api.get(name).await.expect("deployment exists")
    }

    /// Sets the image of container `web` of Deployment `name`, as `kubectl set image` does.
    pub async fn set_image(&self, name: &str, image: &str) {
        let api: Api<Deployment> = Api::namespaced(kube_client().await, &self.namespace);
        let patch =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}});
        api.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(patch),
        )
        .await
        .expect("set the image");
    }

    /// The image of container `web` of Deployment `name`.
    pub async fn image_of(&self, name: &str) -> String {
        image_of(&self.deployment(name).await)
    }

    /// The generation of Deployment `name`: every change of its spec adds one.
    pub async fn generation(&self, name: &str) -> i64 {
        self.deployment(name).await.metadata.generation.unwrap()
    }

    /// `berth run --strict` refuses Deployment `web` with every one of
    /// `needles` in its output, and writes nothing to it.
    pub async fn assert_strict_refuses(&self, needles: &[&str]) {
        let generation = self.generation("web").await;
        self.berth(["run", "--strict"])
            .fails_with(exit::SITE_FAILED)
            .has_all(needles);
        assert_eq!(
            self.generation("web").await,
            generation,
            "--strict touched nothing"
        );
    }

    /// Makes `holder` hold the lease of Deployment `web`, last renewed
    /// `renewed_seconds_ago` by the holder's clock (negative: a clock ahead of
    /// this one). berth decides expiry by its own clock: a record that does not
    /// change for 30 s while berth watches is expired, whatever it says.
    /// Written over whatever holds it (read again on a conflict with berth's
    /// renewal).
    pub async fn hold_lease(&self, holder: &str, renewed_seconds_ago: i64) {
        let renew = k8s_openapi::jiff::Timestamp::now()
            - k8s_openapi::jiff::SignedDuration::from_secs(renewed_seconds_ago);
        self.write_lease(json!({"holderIdentity": holder, "leaseDurationSeconds": 30, "acquireTime": renew.to_string(), "renewTime": renew.to_string()}))
            .await;
    }

    /// Frees the lease of Deployment `web` as berth's release does (no holder).
    pub async fn free_lease(&self) {
        self.write_lease(json!({"leaseDurationSeconds": 30})).await;
    }

    async fn write_lease(&self, spec: serde_json::Value) {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(kube_client().await, &self.namespace);
        for _ in 0..10 {
            let mut lease: k8s_openapi::api::coordination::v1::Lease =
                serde_json::from_value(json!({"metadata": {"name": "berth-web"}, "spec": spec.clone()}))
                    .unwrap();
            let written = match api.get_opt("berth-web").await.unwrap() {
                Some(existing) => {
                    lease.metadata.resource_version = existing.metadata.resource_version;
                    api.replace("berth-web", &PostParams::default(), &lease).await
                }
                None => api.create(&PostParams::default(), &lease).await,
            };
            match written {
                Ok(_) => return,
                Err(kube::Error::Api(response)) if response.code == 409 => {}
                Err(error) => panic!("cannot write lease berth-web: {error}"),
            }
        }
        panic!("lease berth-web kept changing");
    }

    /// Who holds the lease of Deployment `web` (empty: nobody).
    pub async fn lease_holder(&self) -> String {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(kube_client().await, &self.namespace);
        api.get("berth-web")
            .await
            .unwrap()
            .spec
            .and_then(|spec| spec.holder_identity)
            .unwrap_or_default()
    }

    /// How many leases in this world's namespace have a holder.
    pub async fn leases_held(&self) -> usize {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(kube_client().await, &self.namespace);
        let leases = api.list(&kube::api::ListParams::default()).await.unwrap();
        leases
            .items
            .iter()
            .filter(|l| l.spec.as_ref().and_then(|s| s.holder_identity.as_ref()).is_some())
            .count()
    }

    /// `berth ARGS...` in the test's dir ([`Berth`]: set more, then run it).
    pub fn berth<I, S>(&self, args: I) -> Berth
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Berth::new(args).in_dir(self.dir.path())
    }

    /// Runs the stack's kubectl in this test's namespace.
    /// A kubeconfig that is service account `account` of the namespace (a
    /// token valid 10 minutes), on the stack's cluster.
    pub fn token_kubeconfig(&self, account: &str) -> std::path::PathBuf {
        let token = self.kubectl(&["create", "token", account, "--duration", "10m"]);
        assert!(token.status.success(), "{}", text(&token));
        let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
        let admin = std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap()).unwrap();
        let server = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap()
            .to_string();
        let ca = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
            .unwrap()
            .to_string();
        let path = self.dir.path().join(format!("{account}.kubeconfig"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
            ),
        )
        .unwrap();
        path
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(std::env::var("BERTH_STACK_KUBECTL").expect("BERTH_STACK_KUBECTL"))
            .arg("-n")
            .arg(&self.namespace)
            .args(args)
            .output()
            .expect("run kubectl")
    }
}

impl Drop for World {
    /// Deletes the test's namespace (in the background), so pods do not pile up.
    fn drop(&mut self) {
        if let Ok(kubectl) = std::env::var("BERTH_STACK_KUBECTL") {
            let _ = Command::new(kubectl)
                .args(["delete", "namespace", &self.namespace, "--wait=false"])
                .output();
        }
    }
}

/// The example sites of the bundled pipeline and their repos ([`World::example`]).
pub const SITES: [(&str, &str); 4] = [
    ("www-en", "website"),
    ("www-de", "website"),
    ("docs", "product"),
    ("landing", "landing"),
];

/// A `pipeline.toml` as typed values, written with the `toml` crate (the keys
/// and tables src/config.rs reads). `None`, empty and `false` fields are left
/// out of the file, so berth's defaults apply. Tests start from
/// [`World::pipeline`] and its siblings, change fields, and write it with
/// [`World::write_pipeline`]. Broken files (syntax errors, unknown keys) cannot
/// be written this way: those are the fixtures of `tests/fixtures/configs`.
#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templates: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_environment: Option<String>,
    pub registry: Registry,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes>,
    #[serde(rename = "repo", skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<Repo>,
    #[serde(rename = "site", skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    #[serde(rename = "environment", skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<EnvironmentSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forge: Option<ForgeSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewSpec>,
}

/// `[preview]`
#[derive(Debug, Clone, Default, Serialize)]
pub struct PreviewSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_previews: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forks: Option<String>,
}

/// `[serve]`
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServeSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitlab_token_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

/// `[forge]`
#[derive(Debug, Clone, Serialize)]
pub struct ForgeSpec {
    pub api: String,
    pub token_env: String,
}

/// `[[environment]]`
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnvironmentSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promote_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<Registry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

/// `[site.environment.<name>]`: a site's Deployment (any key left out is
/// the site's) and webhook in one environment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SiteEnvironmentSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<TargetOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

/// `[site.environment.<name>.deployment]`
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl Pipeline {
    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a pipeline serialises to TOML")
    }

    /// The same with `[kubernetes]`'s `rollout_timeout` (a duration, "90s").
    pub fn with_rollout_timeout(mut self, timeout: &str) -> Self {
        self.kubernetes
            .get_or_insert_with(Kubernetes::default)
            .rollout_timeout = Some(timeout.into());
        self
    }

    /// The `[[site]]` named `name`.
    pub fn site_mut(&mut self, name: &str) -> &mut SiteSpec {
        self.sites
            .iter_mut()
            .find(|site| site.name == name)
            .unwrap_or_else(|| panic!("the pipeline has no site `{name}`"))
    }
}

/// `[registry]`
#[derive(Debug, Clone, Serialize)]
pub struct Registry {
    pub address: String,
    #[serde(flatten)]
    pub credentials: Credentials,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
}

/// `[registry]`'s `credentials` and the keys each kind reads.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "credentials", rename_all = "kebab-case")]
pub enum Credentials {
    None,
    DockerConfig,
    Env {
        username_env: String,
        password_env: String,
    },
}

/// `[kubernetes]`
#[derive(Debug, Clone, Default, Serialize)]
pub struct Kubernetes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_timeout: Option<String>,
}

/// `[[repo]]`
#[derive(Debug, Clone, Serialize)]
pub struct Repo {
    pub name: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_key_passphrase_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
}

impl Repo {
    /// Repo `name` at `url`, its `main` branch, no credentials.
    pub fn new(name: &str, url: &str) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            branch: None,
            token_env: None,
            ssh_key: None,
            ssh_key_passphrase_env: None,
            known_hosts: None,
        }
    }
}

/// `[[site]]`
#[derive(Debug, Clone, Serialize)]
pub struct SiteSpec {
    pub name: String,
    pub repo: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub git_history: bool,
    pub image: String,
    pub deployment: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<String>>,
    #[serde(rename = "environment", skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, SiteEnvironmentSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
}

/// A site's `helm`: the chart and the values keys naming the image (each
/// left out is berth's default).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HelmSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl SiteSpec {
    /// Site `name` at the root of repo `repo`, no generator, the default
    /// template, shipped as `image` to container `web` of Deployment
    /// `deployment` (in the pipeline's namespace).
    pub fn new(name: &str, repo: &str, image: &str, deployment: &str) -> Self {
        Self {
            name: name.into(),
            repo: repo.into(),
            path: None,
            build: None,
            output: None,
            template: None,
            dockerfile: None,
            build_args: BTreeMap::new(),
            git_history: false,
            image: image.into(),
            deployment: Target {
                namespace: None,
                name: deployment.into(),
                container: "web".into(),
            },
            environments: None,
            environment: BTreeMap::new(),
            helm: None,
            keep_last: None,
            keep_days: None,
        }
    }

    /// Adds the build arg `key` = `value`.
    pub fn build_arg(&mut self, key: &str, value: &str) -> &mut Self {
        self.build_args.insert(key.into(), value.into());
        self
    }
}

/// `[site.deployment]`: the container berth sets.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub container: String,
}

/// `[notify]`
#[derive(Debug, Clone, Serialize)]
pub struct Notify {
    pub webhook_env: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
}

/// insta filters (regex, replacement) for what changes from run to run in
/// berth's output: digests, commits, short commits, times, and the clock of
/// plain (CI) lines. [`World::snapshot_settings`] adds this world's names.
pub fn snapshot_filters() -> Vec<(String, String)> {
    [
        (r"[0-9a-f]{64}\b", "[DIGEST]"),
        (r"[0-9a-f]{40}\b", "[COMMIT]"),
        (r"\b[0-9a-f]{12}\b", "[SHORT]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]"),
        (r"(?m)^\d\d:\d\d:\d\d ", "[TIME] "),
    ]
    .into_iter()
    .map(|(regex, replacement)| (regex.to_string(), replacement.to_string()))
    .collect()
}

/// insta settings with [`snapshot_filters`]; bind them for a test's snapshots
/// with `let _filters = snapshot_settings(&[]).bind_to_scope();`. `first` are
/// filters applied before the shared ones.
pub fn snapshot_settings(first: &[(String, String)]) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    for (regex, replacement) in first.iter().chain(&snapshot_filters()) {
        settings.add_filter(regex, replacement.as_str());
    }
    settings
}

/// berth's own image (`scripts/berth-image`, docs/cronjob/Dockerfile), tagged
/// `tag`, from the binary under test.
pub fn build_berth_image(tag: &str) {
    let output = Command::new(repo_root().join("scripts/berth-image"))
        .arg(tag)
        .env("BERTH_BINARY", env!("CARGO_BIN_EXE_berth"))
        .output()
        .expect("run scripts/berth-image");
    assert!(output.status.success(), "{}", text(&output));
}

/// `git commit` in `work` as the tests' author, with `args` (`-q`, `-m MESSAGE`...).
pub fn git_commit(work: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "-c",
        "user.name=Test",
        "-c",
        "user.email=test@example.test",
        "commit",
    ];
    all.extend_from_slice(args);
    git(work, &all)
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Checks `document` against a schema of `docs/schema/`, listing every violation.
pub fn validate_against(schema_file: &str, document: &serde_json::Value) {
    let path = repo_root().join("docs/schema").join(schema_file);
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_file}: {errors:#?}\n{document:#}");
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether `path` exists in `image` (busybox's `test -e` in a container of it).
pub fn image_has(image: &str, path: &str) -> bool {
    Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/busybox",
            image,
            "test",
            "-e",
            path,
        ])
        .status()
        .expect("run docker")
        .success()
}

/// The image of container `web` of a Deployment.
pub fn image_of(deployment: &Deployment) -> String {
    deployment.spec.template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

/// A plain HTTP/1.0 GET on loopback; returns (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_at(
        ([127, 0, 0, 1], port).into(),
        path,
        std::time::Duration::from_secs(5),
    )
}

/// A plain HTTP/1.0 GET on a new connection to `address` (a ClusterIP from the
/// host, say), each step within `timeout`; returns (status code, body).
pub fn http_get_at(
    address: std::net::SocketAddr,
    path: &str,
    timeout: std::time::Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", address.ip())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Runs `image` with its port 8080 on a free loopback port; returns the container's
/// name and the port once something answers there.
pub async fn serve(docker: &bollard::Docker, image: &str) -> (String, u16) {
    use bollard::query_parameters::StartContainerOptions;
    let port = free_port();
    let name = unique("berth-serve");
    create_published(docker, image, &name, "8080/tcp", port, &[])
        .await
        .unwrap();
    docker
        .start_container(&name, None::<StartContainerOptions>)
        .await
        .unwrap();
    for _ in 0..50 {
        if http_get(port, "/").is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (name, port)
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request an [`http_receiver`] got: its line, headers and body, byte
/// for byte.
pub struct Request {
    /// `GET /path HTTP/1.1`
    pub line: String,
    /// Each header's name (lowercase) and value, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When its last byte arrived.
    pub arrived: std::time::Instant,
}

impl Request {
    /// The value of header `name` (any case), if it was sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("the request's body is JSON")
    }
}

/// An HTTP server on loopback for `answers` requests, each answered with
/// `response` (a whole HTTP response); returns its port and the requests it got.
pub fn http_receiver(answers: usize, response: &'static [u8]) -> (u16, std::sync::mpsc::Receiver<Request>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(answers) {
            let mut stream = stream.unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut headers = Vec::new();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').expect("a header line has a colon");
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
            let length: usize = headers
                .iter()
                .find(|(name, _)| name == "content-length")
                .map_or(0, |(_, value)| value.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let arrived = std::time::Instant::now();
            stream.write_all(response).unwrap();
            let request = Request {
                line: line.trim().to_string(),
                headers,
                body: String::from_utf8(body).unwrap(),
                arrived,
            };
            if sender.send(request).is_err() {
                break;
            }
        }
    });
    (port, receiver)
}

/// Waits up to 10 s until something accepts connections on a loopback port.
pub fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("nothing answers on 127.0.0.1:{port}");
}

/// A process a test started (an ssh-agent, a git daemon); killed when dropped,
/// so a failing test leaves nothing running.
pub struct Background(pub std::process::Child);

impl Background {
    pub fn start(command: &mut Command) -> Self {
        Self(
            command
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {command:?}: {e}")),
        )
    }

    /// Kills the process and waits until it has exited.
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes a container made by [`serve`].
pub async fn remove_container(docker: &bollard::Docker, name: &str) {
    let options = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    docker.remove_container(name, Some(options)).await.unwrap();
}
