//! The deploy stage on the stack's real node (kubelet, containerd): pods pull
//! berth's images, run them, probe them and serve. Failures here are the real
//! ones kwok only fakes, and berth's verification of what is served runs against real
//! Services through the API server's Service proxy.

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use crate::support::in_cluster::InCluster;
use crate::support::{
    DeploymentBuilder, Load, LoadPlan, LoadResult, Probe, Ran, World, exit, http_get_at, image_of,
    kube_client, text, validate_against,
};

/// The `landing` example site shipped to Deployment `web` on the real node,
/// which starts on the stack's placeholder image.
struct RealSite {
    world: World,
    url: String,
}

/// How the site's image is made: the static template, or a Dockerfile the
/// test commits to the site's repo.
enum Image<'a> {
    Template,
    /// The static template on this base image (its `BASE_IMAGE` build arg).
    TemplateOn(&'a str),
    Dockerfile(&'a str),
}

impl RealSite {
    /// `change` shapes the Deployment (2 replicas, a progress deadline of
    /// 20 s) before it is created.
    async fn new(
        test: &str,
        image: &Image<'_>,
        change: impl FnOnce(DeploymentBuilder) -> DeploymentBuilder,
    ) -> Self {
        let world = World::new(test).await;
        let url = world.copy_repo("landing");
        let web = world
            .real_node_deployment("web", &world.stack.placeholder_image)
            .replicas(2)
            .progress_deadline(20);
        change(web).create().await;
        let mut pipeline = world.landing_pipeline().with_rollout_timeout("90s");
        let landing = pipeline.site_mut("landing");
        match image {
            Image::Template => landing.template = Some("static".into()),
            Image::TemplateOn(base) => {
                landing.template = Some("static".into());
                landing.build_arg("BASE_IMAGE", base);
            }
            Image::Dockerfile(text) => {
                world.commit(&url, "main", &[("Dockerfile", text)], "Serve it our own way");
                landing.dockerfile = Some("Dockerfile".into());
            }
        }
        world.write_pipeline(&pipeline);
        Self { world, url }
    }

    async fn image(&self) -> String {
        image_of(&self.world.deployment("web").await)
    }

    /// `kubectl rollout status`, as a user would ask it afterwards.
    fn kubectl_agrees(&self) {
        let output = self
            .world
            .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(
            output.status.success(),
            "kubectl rollout status: {}",
            text(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("successfully rolled out"),
            "{}",
            text(&output)
        );
    }

    /// Until no pod of Deployment `web` is being deleted (at most a minute).
    async fn settle(&self) {
        let api: Api<Pod> = Api::namespaced(kube_client().await, &self.world.namespace);
        for _ in 0..120 {
            let pods = api
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items;
            if pods.iter().all(|pod| pod.metadata.deletion_timestamp.is_none()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        panic!("the old pods of web did not stop within a minute");
    }

    /// The pods of Deployment `web` that are not being deleted.
    async fn pods(&self) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(kube_client().await, &self.world.namespace);
        api.list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_runs_on_the_real_node_and_berth_checks_it_is_served_through_its_service() {
    let site = RealSite::new("real-served", &Image::Template, |web| web).await;
    let service = site.world.create_service("web", "web", json!("http")).await;

    let report = site.world.berth(["run", "--json"]).json();
    validate_against("report.schema.json", &report);
    let landing = &report["sites"][0];
    assert_eq!(landing["action"], "deployed", "{report:#}");
    let digest = landing["digest"].as_str().unwrap().to_string();
    let head = site.world.head(&site.url, "main");
    assert!(site.image().await.contains(&format!(":{head}@{digest}")));

    // What berth says it checked...
    let verification = &landing["verification"];
    assert_eq!(verification["digest"], digest.as_str(), "{verification:#}");
    let pods = verification["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 2, "{verification:#}");
    assert!(pods.iter().all(|pod| pod["matches"] == true), "{verification:#}");
    let check = &verification["services"][0];
    assert_eq!(
        (
            check["service"].as_str(),
            check["outcome"].as_str(),
            check["status"].as_u64()
        ),
        (Some("web"), Some("passed"), Some(200)),
        "{verification:#}"
    );
    assert_eq!(
        check["endpoints"].as_array().unwrap().len(),
        2,
        "{verification:#}"
    );

    // ...is what the cluster says: the node runs the pushed digest...
    for pod in site.pods().await {
        let status = &pod.status.unwrap().container_statuses.unwrap()[0];
        assert!(
            status.image_id.ends_with(&format!("@{digest}")),
            "{}",
            status.image_id
        );
        let name = pod.metadata.name.unwrap();
        assert!(
            pods.iter().any(|p| p["pod"] == name.as_str()),
            "berth checked pod {name}: {verification:#}"
        );
    }
    // ...and the Service serves the shipped page, from the host through
    // kube-proxy. Its rules follow the EndpointSlices a moment later than the
    // API server's proxy that berth asked (at most a second or two here), so the
    // old page may still answer right after berth returns.
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
    let shipped =
        std::fs::read_to_string(crate::support::repo_root().join("sites/landing/index.html")).unwrap();
    let returned = Instant::now();
    let address = (cluster_ip.parse::<std::net::IpAddr>().unwrap(), 80).into();
    let get = || http_get_at(address, "/", std::time::Duration::from_secs(5)).unwrap_or_default();
    let mut answer = get();
    while answer.1.trim() != shipped.trim() && returned.elapsed().as_secs() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        answer = get();
    }
    assert_eq!((answer.0, answer.1.trim()), (200, shipped.trim()));
    eprintln!(
        "{}: the ClusterIP served the new page {:.1}s after berth returned",
        site.world.prefix,
        returned.elapsed().as_secs_f64()
    );
    site.kubectl_agrees();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_reaches_no_server_fails_the_check_and_the_site_is_rolled_back() {
    // The container declares a metrics port nothing listens on; the Service sends there.
    let site = RealSite::new("real-noserver", &Image::Template, |web| {
        web.ports(&[(8080, "http"), (9090, "metrics")])
    })
    .await;
    site.world.create_service("web", "web", json!("metrics")).await;
    let before = site.image().await;

    let report = site
        .world
        .berth(["run", "--json"])
        .fails_with(exit::SITE_FAILED)
        .has("Kubernetes calls it complete, but berth's verification failed")
        .has("a request through Service web (port web, /)")
        // The proxy's own answer, at once (not kube's retries of a 503 until a timeout).
        .has("answered 503: error trying to reach service")
        .has("connect: connection refused")
        .has("rolled back: the previous version")
        .json();
    validate_against("report.schema.json", &report);
    let check = &report["sites"][0]["verification"]["services"][0];
    assert_eq!(check["outcome"], "failed", "{report:#}");
    assert_ne!(check["status"], 200, "{report:#}");
    assert_eq!(site.image().await, before, "the previous image runs again");
    site.kubectl_agrees();
}

/// Runs berth, expects the site to fail, be rolled back to what ran before,
/// and kubectl to agree; returns the JSON report and the run.
async fn fails_and_rolls_back(site: &RealSite, args: &[&str], expected: &[&str]) -> (Value, Ran) {
    let before = site.image().await;
    let started = Instant::now();
    let ran = site
        .world
        .berth(args)
        .fails_with(exit::SITE_FAILED)
        .has_all(expected)
        .has("rolled back: the previous version");
    assert_eq!(
        site.image().await,
        before,
        "the Deployment runs its previous image again"
    );
    site.kubectl_agrees();
    let report = ran.json();
    validate_against("report.schema.json", &report);
    let landing = &report["sites"][0];
    assert_eq!(landing["action"], "failed");
    assert_eq!(landing["verification"], Value::Null, "{report:#}");
    eprintln!(
        "{}: berth took {:.1}s from the patch to the end of the rollback ({:.1}s in all)",
        site.world.prefix,
        landing["durations"]["deploy"].as_f64().unwrap_or(0.0),
        started.elapsed().as_secs_f64()
    );
    (report, ran)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_the_registry_lost_is_a_real_pull_failure_and_is_rolled_back() {
    // Pulled on every start, as a cluster with `imagePullPolicy: Always` does.
    let site = RealSite::new("real-pull", &Image::Template, |web| web.pull_policy("Always")).await;
    let first = site.world.head(&site.url, "main");
    site.world.berth(["run"]).succeeds();
    let first_image = site.image().await;
    let second = site
        .world
        .commit(&site.url, "main", &[("news.html", "<p>News</p>\n")], "Add news");
    site.world
        .berth(["ship", "landing", "--commit", &second])
        .succeeds();

    // The registry loses the first image (a retention policy, a clean-up by hand).
    let digest = first_image.rsplit_once('@').unwrap().1;
    let repository = format!("{}/landing", site.world.prefix);
    let deleted = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE"])
        .arg(format!(
            "http://{}/v2/{repository}/manifests/{digest}",
            site.world.stack.registry
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&deleted.stdout),
        "202",
        "{}",
        text(&deleted)
    );

    let (report, _) = fails_and_rolls_back(
        &site,
        &["rollback", "landing", "--json"],
        &["ErrImagePull", &format!("{repository}:{first}"), "not found"],
    )
    .await;
    assert!(
        report["sites"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_exits_at_start_is_a_real_crash_loop_with_its_last_log_lines() {
    let dockerfile = r#"FROM berth-base:busybox
COPY . /www/
ENTRYPOINT ["/bin/sh", "-c", "echo 'landing: reading /etc/landing.conf'; echo 'landing: /etc/landing.conf: no such file' >&2; exit 3"]
"#;
    // The crash loop shows after the kubelet's first 10 s back-off, and berth
    // calls it after its own 8 s grace: with the usual 20 s progress deadline
    // the deadline could win the race on a loaded node (a clean clone's CI saw
    // it), and then this test would not be about berth's fail-fast at all.
    let site = RealSite::new("real-crash", &Image::Dockerfile(dockerfile), |web| {
        web.progress_deadline(120)
    })
    .await;
    let (report, _) = fails_and_rolls_back(
        &site,
        &["run", "--json"],
        &[
            "CrashLoopBackOff",
            "last exit code 3",
            "landing: /etc/landing.conf: no such file",
        ],
    )
    .await;
    let error = report["sites"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("its last log lines") && error.contains("landing: reading /etc/landing.conf"),
        "the JSON report carries the log lines: {error}"
    );
    assert!(
        !error.contains("progress deadline"),
        "berth called the crash loop itself, before Kubernetes' deadline: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_readiness_probe_that_gets_404_is_named_and_rolled_back() {
    // The placeholder serves /healthz; the site has no such page.
    let site = RealSite::new("real-404", &Image::Template, |web| {
        web.readiness(Probe::http("/healthz").every(1))
    })
    .await;
    fails_and_rolls_back(
        &site,
        &["run", "--json"],
        &[
            "exceeded its progress deadline",
            "NotReady",
            "HTTP probe failed with statuscode: 404",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_readiness_probe_on_a_port_nothing_listens_on_is_named_and_rolled_back() {
    // The new image serves on 8081; the probe still asks 8080.
    let dockerfile = r#"FROM berth-base:busybox
COPY . /www/
ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "8081", "-h", "/www"]
"#;
    let site = RealSite::new("real-port", &Image::Dockerfile(dockerfile), |web| web).await;
    fails_and_rolls_back(
        &site,
        &["run", "--json"],
        &[
            "exceeded its progress deadline",
            "NotReady",
            ":8080: connect: connection refused",
        ],
    )
    .await;
}

/// Which node a pod lands on is explicit: kwok's, unless it asks for the real one.
#[tokio::test(flavor = "multi_thread")]
async fn the_real_node_is_apart_from_kwok_by_its_taint_and_label() {
    let world = World::new("real-apart").await;
    let node: k8s_openapi::api::core::v1::Node = Api::all(kube_client().await)
        .get(&world.stack.real_node)
        .await
        .expect("the real node is registered");
    let (key, value) = world.stack.real_node_label.split_once('=').unwrap();
    assert_eq!(
        node.metadata.labels.unwrap().get(key).map(String::as_str),
        Some(value)
    );
    let taints = node.spec.unwrap().taints.unwrap_or_default();
    assert!(
        taints.iter().any(|t| t.key == key && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    // A Deployment that does not ask for the real node lands on kwok's.
    world
        .kwok_deployment("plain", &world.stack.placeholder_image)
        .create()
        .await;
    let pods: Api<Pod> = Api::namespaced(kube_client().await, &world.namespace);
    let mut node_name = None;
    for _ in 0..60 {
        node_name = pods
            .list(&ListParams::default().labels("app=plain"))
            .await
            .unwrap()
            .items
            .first()
            .and_then(|pod| pod.spec.as_ref()?.node_name.clone());
        if node_name.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(node_name.as_deref(), Some("kwok-node-0"));
}

/// The documented nightly CronJob (`docs/cronjob/berth.yaml` with
/// `docs/rbac.yaml`), as a Job made from its template, twice: berth's own image
/// runs as a pod on the real node, reaches the stack's Git server, registry
/// and Engine (hostNetwork: the node's loopback) and the API server (the
/// kubernetes Service, with the service account's token), and ships the site.
/// Its state folder is the claim `berth-state`, here on a hostPath volume, so
/// the second night finds the first night's mirror.
#[tokio::test(flavor = "multi_thread")]
#[expect(
    clippy::too_many_lines,
    reason = "two nights of the documented CronJob, each step checked in the order it happens"
)]
async fn the_documented_cronjob_runs_on_the_real_node_and_ships_the_site_two_nights() {
    let site = RealSite::new("real-cronjob", &Image::Template, |web| web).await;
    let world = &site.world;
    world.create_service("web", "web", json!("http")).await;
    let kubectl = |args: &[&str]| world.kubectl_ok(args);
    // What the manifests expect to find: berth's image, the Role, the
    // Engine's client certificates, the secrets named in env (unused by this
    // pipeline), a volume for the claim; and the documented manifests.
    let InCluster {
        image,
        state,
        volume,
        persistent_volume,
        mut manifests,
    } = world.in_cluster("docs/cronjob/berth.yaml", &[]);
    let node_selector = serde_json::to_value(world.real_node_selector()).unwrap();
    let tolerations = serde_json::to_value(world.real_node_tolerations()).unwrap();
    for item in manifests["items"].as_array_mut().unwrap() {
        match item["kind"].as_str().unwrap() {
            "ConfigMap" => {
                // Paths in berth's image and on its volume.
                let mut pipeline = world.landing_pipeline().with_rollout_timeout("90s");
                pipeline.state_dir = Some("/var/cache/berth".into());
                pipeline.templates = Some("/etc/berth/templates".into());
                pipeline
                    .site_mut("landing")
                    .build_arg("BASE_IMAGE", &world.stack.base_image)
                    .build_arg("WEB_ROOT", "/www");
                item["data"]["pipeline.toml"] = json!(pipeline.to_toml());
            }
            "PersistentVolumeClaim" => {
                item["spec"]["storageClassName"] = json!(volume);
                item["spec"]["volumeName"] = json!(volume);
            }
            "CronJob" => {
                let pod = &mut item["spec"]["jobTemplate"]["spec"]["template"]["spec"];
                pod["hostNetwork"] = json!(true);
                pod["dnsPolicy"] = json!("ClusterFirstWithHostNet");
                pod["nodeSelector"] = node_selector.clone();
                pod["tolerations"] = tolerations.clone();
                let container = &mut pod["containers"][0];
                container["image"] = json!(image);
                for variable in container["env"].as_array_mut().unwrap() {
                    if variable["name"] == "DOCKER_HOST" {
                        variable["value"] = json!(std::env::var("BERTH_STACK_DOCKER_TLS_HOST").unwrap());
                    }
                }
            }
            other => panic!("docs/cronjob/berth.yaml has a {other} the test does not know"),
        }
    }
    manifests["items"].as_array_mut().unwrap().push(persistent_volume);
    let file = world.dir.path().join("cronjob.json");
    std::fs::write(&file, manifests.to_string()).unwrap();
    kubectl(&["create", "-f", file.to_str().unwrap()]);

    let night = |name: &str| {
        let started = Instant::now();
        kubectl(&["create", "job", name, "--from=cronjob/berth-nightly"]);
        let waited = world.kubectl(&[
            "wait",
            "--for=condition=complete",
            &format!("job/{name}"),
            "--timeout=240s",
        ]);
        let logs = world.kubectl(&[
            "logs",
            "--prefix",
            "--all-containers",
            "-l",
            &format!("job-name={name}"),
        ]);
        assert!(
            waited.status.success(),
            "job {name} did not complete: {}\n{}\n{}",
            text(&waited),
            text(&logs),
            text(&world.kubectl(&["describe", &format!("job/{name}")]))
        );
        eprintln!(
            "{}: {name} took {:.1}s",
            world.prefix,
            started.elapsed().as_secs_f64()
        );
        text(&logs)
    };
    let logs = night("night-1");
    let head = world.head(&site.url, "main");
    assert!(site.image().await.contains(&format!(":{head}@sha256:")), "{logs}");
    assert!(logs.contains("rolled out"), "{logs}");
    // Through the documented Role: the Service check ran, it was not skipped.
    assert!(logs.contains("Service web answered 200 on /"), "{logs}");
    let mirrors = state.join("mirrors");
    assert!(mirrors.is_dir(), "the state folder is on the node's volume");
    // A mark in night 1's mirror: a state folder that is not kept (an emptyDir),
    // or a mirror cloned anew, would not have it on night 2.
    let mirror = std::fs::read_dir(&mirrors)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.is_dir() && path.extension().is_some_and(|e| e == "git"))
        .expect("night 1 left a mirror on the volume");
    let mark = mirror.join("berth-test-night-1");
    std::fs::write(&mark, "").unwrap();

    let second = world.commit(&site.url, "main", &[("news.html", "<p>News</p>\n")], "Add news");
    let logs = night("night-2");
    assert!(
        site.image().await.contains(&format!(":{second}@sha256:")),
        "{logs}"
    );
    assert!(mark.exists(), "the second night used the first night's mirror");
    crate::support::git(&mirror, &["cat-file", "-e", &format!("{second}^{{commit}}")]);
    site.kubectl_agrees();
    let _ = std::process::Command::new(std::env::var("BERTH_STACK_KUBECTL").unwrap())
        .args(["delete", "pv", &volume, "--wait=false"])
        .output();
}

/// Ships a new commit of the site on `base` (the template's `BASE_IMAGE`), on
/// a Deployment `change` shapes, under `plan`'s load through its Service.
/// The load starts before berth and stops only once berth has returned, at
/// least `after` has passed (the old pods' preStop delay and drain), and no
/// old pod is left: it outlasts the whole rollout, or the test fails
/// ([`Load::stop`]). Returns berth's run and what the load saw.
async fn ship_under_load(
    test: &str,
    base: &str,
    change: impl FnOnce(DeploymentBuilder) -> DeploymentBuilder,
    plan: &LoadPlan,
    after: std::time::Duration,
) -> (Ran, LoadResult) {
    let site = RealSite::new(test, &Image::TemplateOn(base), change).await;
    let service = site.world.create_service("web", "web", json!("http")).await;
    // First the site on the base (the placeholder ignores SIGTERM).
    site.world.berth(["run"]).succeeds();
    // The placeholder's pods answer no slow request: the load starts without them.
    site.settle().await;
    let commit = site
        .world
        .commit(&site.url, "main", &[("news.html", "<p>News</p>\n")], "Add news");
    let ip: std::net::IpAddr = service.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    let load = Load::start((ip, 80).into(), plan);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let shipping = Instant::now();
    let ran = site.world.berth(["ship", "landing", "--commit", &commit]).run();
    let shipped = shipping.elapsed();
    tokio::time::sleep(after).await;
    site.settle().await;
    let result = load.stop();
    eprintln!(
        "{}: berth shipped in {:.1}s; the load ran {:.1}s, from before berth started until the old pods were gone \
         ({:.1}s after berth returned): {} of {} requests failed{}",
        site.world.prefix,
        shipped.as_secs_f64(),
        result.ran_for.as_secs_f64(),
        (result.ran_for.saturating_sub(shipped)).as_secs_f64() - 0.5,
        result.failures.len(),
        result.requests,
        result.failure_kinds()
    );
    if ran.exit_is(exit::OK) {
        assert!(site.image().await.contains(&commit), "{ran}");
    }
    (ran, result)
}

/// A server that exits at SIGTERM (its pods), with `pre_stop` seconds of
/// preStop delay (or none) and a grace period of 15 s.
fn stopping(pre_stop: Option<i64>) -> impl FnOnce(DeploymentBuilder) -> DeploymentBuilder {
    move |web| {
        let web = web.grace(15);
        match pre_stop {
            Some(seconds) => web.pre_stop(seconds),
            None => web,
        }
    }
}

/// A rollout of pages, on the server that exits at SIGTERM: the old pods stop
/// within their preStop delay and grace after berth returns.
async fn ship_pages(
    test: &str,
    change: impl FnOnce(DeploymentBuilder) -> DeploymentBuilder,
) -> (Ran, LoadResult) {
    let base = crate::support::Stack::from_env().stopping_base_image;
    let after = std::time::Duration::from_secs(8);
    ship_under_load(test, &base, change, &LoadPlan::pages(), after).await
}

/// A shape preflight flags: berth's output names every one of `findings`, and
/// the load lost requests in that rollout (else the test shows nothing).
fn assert_flagged_and_lost(ran: Ran, findings: &[&str], load: &LoadResult) {
    ran.has_all(findings);
    assert!(
        !load.failures.is_empty(),
        "no request failed in {}: the test shows nothing",
        load.requests
    );
}

/// The fixed shape: berth shipped, preflight said nothing, and not one of at
/// least `least` requests failed.
fn assert_silent_and_lossless(ran: Ran, load: &LoadResult, least: usize) {
    ran.exited(exit::OK).lacks("preflight");
    assert!(load.requests > least, "{load:?}");
    assert_eq!(
        load.failures,
        Vec::<String>::new(),
        "of {} requests",
        load.requests
    );
}

/// The endpoints race on the real node: without a preStop delay, old pods exit
/// at SIGTERM while kube-proxy still sends them connections, and preflight
/// names the fix.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_prestop_delay_a_rollout_loses_requests_and_preflight_says_so() {
    let (ran, load) = ship_pages("real-nostop", stopping(None)).await;
    assert_flagged_and_lost(
        ran.exited(exit::OK),
        &[
            "preflight warn",
            "has no preStop delay",
            "lifecycle: {preStop: {sleep: {seconds: 5}}}",
        ],
        &load,
    );
}

/// The same rollout with the preStop delay preflight recommends, and a
/// liveness probe on the served port, loses nothing, and preflight is silent
/// about it.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_recommended_prestop_delay_a_rollout_loses_no_request() {
    let (ran, load) = ship_pages("real-stop", |web| {
        stopping(Some(5))(web).liveness(Probe::http("/").every(1))
    })
    .await;
    assert_silent_and_lossless(ran, &load, 1000);
}

/// A liveness probe on a port the image does not serve passes no check the
/// rollout waits for (readiness does), then the kubelet kills each pod while
/// Services still send it requests. Preflight names it after the build; the
/// fixed probe is the test above.
#[tokio::test(flavor = "multi_thread")]
async fn a_liveness_probe_on_a_port_the_image_does_not_serve_loses_requests_and_preflight_says_so() {
    let (ran, load) = ship_pages("real-liveness", |web| {
        stopping(Some(5))(web).liveness(Probe::http("/").on_port(80).every(1))
    })
    .await;
    assert_flagged_and_lost(
        ran,
        &["the livenessProbe of container `web` asks port 80, but the image serves 8080"],
        &load,
    );
}

/// Slow requests (a large file to a slow client) on a server that finishes
/// its requests at SIGTERM, as nginx does at its graceful stop: 12 clients,
/// each asking one that takes 6 s, started half a second apart so that at any
/// moment some answers have just begun. A request fails after 15 s without
/// a byte (its answer trickles in for 6 s).
fn slow_requests() -> LoadPlan {
    LoadPlan {
        path: "/cgi-bin/slow?6",
        clients: 12,
        stagger: std::time::Duration::from_millis(500),
        interval: std::time::Duration::from_millis(100),
        timeout: std::time::Duration::from_secs(15),
        limit: std::time::Duration::from_secs(300),
    }
}

/// A rollout under slow requests, on a server that drains at SIGTERM, with a
/// preStop delay of 2 s and `grace` seconds of grace.
async fn ship_slow(test: &str, grace: i64) -> (Ran, LoadResult) {
    let base = crate::support::Stack::from_env().draining_base_image;
    let change = move |web: DeploymentBuilder| web.grace(grace).pre_stop(2);
    // The last old pod is deleted as berth returns: its grace, and the last
    // slow answer it owes, after that.
    let after = std::time::Duration::from_secs(u64::try_from(grace).unwrap() + 8);
    ship_under_load(test, &base, change, &slow_requests(), after).await
}

/// A grace period that covers the preStop delay but not the drain: the kubelet
/// kills the old pods while they still send slow answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_grace_period_without_room_to_drain_cuts_requests_and_preflight_says_so() {
    let (ran, load) = ship_slow("real-short-grace", 4).await;
    assert_flagged_and_lost(
        ran.exited(exit::OK),
        &["terminationGracePeriodSeconds 4 is shorter than the preStop delay (2 s) plus 5 s"],
        &load,
    );
    // Cut mid-answer: no status line at all, never an answer of the server's.
    assert!(
        load.failures
            .iter()
            .all(|failure| !failure.starts_with("answered ") || failure == "answered 0"),
        "{:?}",
        load.failures
    );
}

/// The grace period preflight asks for lets every slow answer finish.
#[tokio::test(flavor = "multi_thread")]
async fn a_grace_period_with_room_to_drain_cuts_no_request() {
    let (ran, load) = ship_slow("real-long-grace", 10).await;
    assert_silent_and_lossless(ran, &load, 20);
}

/// A probe on a port the image does not serve is known once the image is
/// built (its EXPOSE): with --strict nothing is pushed or deployed.
#[tokio::test(flavor = "multi_thread")]
async fn a_probe_on_a_port_the_image_does_not_serve_is_found_after_the_build_and_strict_pushes_nothing() {
    let site = RealSite::new("real-probe-port", &Image::Template, |web| {
        web.ports(&[(80, "http")]).pre_stop(5).grace(15)
    })
    .await;
    let before = site.image().await;
    site.world
        .berth(["run", "--strict"])
        .fails_with(exit::SITE_FAILED)
        .has("the readinessProbe of container `web` asks port 80, but the image serves 8080");
    assert_eq!(site.image().await, before, "--strict deployed nothing");
    // Nothing was pushed: the registry does not know the repository at all.
    let tags = std::process::Command::new("curl")
        .args([
            "-s",
            &format!(
                "http://{}/v2/{}/landing/tags/list",
                site.world.stack.registry, site.world.prefix
            ),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tags.stdout).contains("NAME_UNKNOWN"),
        "nothing was pushed: {}",
        text(&tags)
    );
}
