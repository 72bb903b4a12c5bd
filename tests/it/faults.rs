//! Faults berth survives, injected on the real stack: afterwards the
//! Deployment is on its old or its new image, rolled out completely, no
//! lease is left held, and the next run finishes the job
//! (docs/reliability.md lists them all).

use std::time::{Duration, Instant};

use crate::support::{FlakyRegistry, RolloutState, World, exit, rollout_state, text};

#[tokio::test(flavor = "multi_thread")]
async fn berth_killed_mid_rollout_leaves_a_rollout_the_next_run_sees_through() {
    let world = World::new("fault-sigkill").await;
    world.copy_repo("landing");
    let base = world.busybox();
    // Pods of the new image never get ready; the progress deadline is 40 s.
    world
        .kwok_deployment("web", &base)
        .replicas(2)
        .progress_deadline(40)
        .create()
        .await;
    let mut pipeline = world.landing_pipeline();
    pipeline.site_mut("landing").image = world.image("notready-web");
    world.write_pipeline(&pipeline);
    let head = world.repo_head("landing");
    let run = world.berth(["run"]).spawn();
    // SIGKILL once berth has set the image: no rollback, no release.
    let mut set = false;
    for _ in 0..480 {
        if world.image_of("web").await.contains(&head) {
            set = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(set, "berth set the image:\n{}", run.so_far());
    run.kill();
    let killed = run.wait();
    assert_eq!(killed.code(), None, "ended by SIGKILL:\n{killed}");
    assert_eq!(
        world.leases_held().await,
        1,
        "the killed run's lease is left held"
    );

    // The next run waits the lease out, sees the Deployment runs this source
    // without having rolled it out, waits for it, and rolls it back.
    let started = Instant::now();
    let ran = world
        .berth(["run"])
        .fails_with(exit::SITE_FAILED)
        .has("has not finished rolling it out")
        .has("rolled back");
    assert!(started.elapsed() < Duration::from_secs(150), "{ran}");
    assert_eq!(world.image_of("web").await, base, "on its old image");
    assert_eq!(
        rollout_state(&world.deployment("web").await),
        RolloutState::Complete
    );
    assert_eq!(world.leases_held().await, 0, "no lease left held");
    // Nothing half-written in the state folder.
    let leftovers: Vec<String> = walkdir::WalkDir::new(world.dir.path().join(".berth"))
        .into_iter()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| {
            name.starts_with(".tmp")
                || std::path::Path::new(name)
                    .extension()
                    .is_some_and(|extension| extension.eq_ignore_ascii_case("tmp"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A tmpfs of `megabytes` mounted on a fresh folder, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs (the tests run as root)");
        Self { path, _dir: dir }
    }

    /// Fills the disk but for `left` bytes, with one file.
    fn fill(&self, left: u64) -> std::path::PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0_u8; 64 << 10];
        loop {
            let free = fs_free(&self.path);
            if free <= left {
                break;
            }
            let size = usize::try_from((free - left).min(chunk.len() as u64)).unwrap();
            if std::io::Write::write_all(&mut file, &chunk[..size]).is_err() {
                break;
            }
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Free bytes of the file system holding `path` (`df`'s view).
fn fs_free(path: &std::path::Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_folder_is_a_clear_error_and_the_next_run_works_once_there_is_room() {
    let disk = SmallDisk::mount(16);
    let world = World::new("fault-disk").await;
    world.copy_repo("landing");
    let base = world.busybox();
    world.kwok_deployment("web", &base).create().await;
    let mut pipeline = world.landing_pipeline();
    pipeline.state_dir = Some(disk.path.display().to_string());
    world.write_pipeline(&pipeline);
    let filler = disk.fill(4096);
    let ran = world
        .berth(["run"])
        .fails_with(exit::SITE_FAILED)
        // Names the folder...
        .has(&disk.path.display().to_string());
    // ...and says why.
    assert!(ran.all().to_lowercase().contains("no space left"), "{ran}");
    assert_eq!(
        world.image_of("web").await,
        base,
        "the Deployment was not touched"
    );
    assert_eq!(world.leases_held().await, 0);
    // Room again: the next run ships, from whatever the full disk left.
    std::fs::remove_file(filler).unwrap();
    world.berth(["run"]).succeeds();
    assert!(world.image_of("web").await.contains(&world.repo_head("landing")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_answering_500_is_retried_and_never_leaves_a_deployment_on_a_digest_it_lacks() {
    let world = World::new("fault-registry-500").await;
    let url = world.copy_repo("landing");
    let base = world.busybox();
    world.kwok_deployment("web", &base).create().await;
    let path = world.image("landing");
    let status_of = |tag: &str| {
        let port = world.stack.registry_port();
        crate::support::http_get(port, &format!("/v2/{path}/manifests/{tag}"))
            .unwrap()
            .0
    };

    // Two 500s on the manifest's PUT: berth's third push goes through.
    let flaky = FlakyRegistry::failing_manifest_puts(&world.stack.registry, 2);
    let mut pipeline = world.landing_pipeline();
    pipeline.registry.address.clone_from(&flaky.address);
    world.write_pipeline(&pipeline);
    world.berth(["run"]).succeeds();
    let head = world.repo_head("landing");
    let image = world.image_of("web").await;
    assert!(image.contains(&head), "{image}");
    let digest = image.split_once('@').unwrap().1.to_string();
    assert_eq!(
        status_of(&digest),
        200,
        "the registry holds the digest the Deployment runs"
    );
    drop(flaky);

    // Every manifest PUT fails: the site fails after its retries, the
    // Deployment stays, and no tag of the commit is in the registry.
    let flaky = FlakyRegistry::failing_manifest_puts(&world.stack.registry, -1);
    pipeline.registry.address.clone_from(&flaky.address);
    world.write_pipeline(&pipeline);
    let second = world.commit(&url, "main", &[("index.html", "<h1>again</h1>\n")], "Again");
    world
        .berth(["run"])
        .fails_with(exit::SITE_FAILED)
        .has("failed after 3 attempts");
    assert_eq!(world.image_of("web").await, image, "the Deployment stays");
    assert_eq!(status_of(&second), 404, "no tag of the commit");
    assert_eq!(world.leases_held().await, 0);
}

/// Kills the stack's `part` (its pid file under `$BERTH_STACK_DIR/pids`)
/// and waits until it is gone; [`stack_up`] brings it back.
fn kill_part(part: &str) {
    let pids =
        std::path::PathBuf::from(std::env::var("BERTH_STACK_DIR").expect("BERTH_STACK_DIR")).join("pids");
    let pid = std::fs::read_to_string(pids.join(format!("{part}.pid")))
        .unwrap()
        .trim()
        .to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{part} (pid {pid}) is still running after SIGKILL");
}

/// `scripts/stack up`: starts what is stopped, leaves the rest.
fn stack_up() {
    let output = std::process::Command::new(crate::support::repo_root().join("scripts/stack"))
        .arg("up")
        .output()
        .expect("run scripts/stack up");
    assert!(output.status.success(), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "restarts the stack's Docker Engine: scripts/test runs it alone, after the others"]
async fn an_engine_restarted_during_a_build_is_a_clear_error_with_nothing_pushed() {
    let world = World::new("fault-engine").await;
    let url = world.copy_repo("landing");
    // A build that takes a while inside the Engine (its own step, so no
    // cache from an earlier run skips it).
    let dockerfile = format!(
        "FROM berth-base:busybox\nRUN echo {} && sleep 15\nCOPY . /www/\n",
        world.prefix
    );
    world.commit(
        &url,
        "main",
        &[("Dockerfile", dockerfile.as_str())],
        "A slow build",
    );
    let base = world.busybox();
    world.kwok_deployment("web", &base).create().await;
    let mut pipeline = world.landing_pipeline();
    pipeline.site_mut("landing").dockerfile = Some("Dockerfile".into());
    world.write_pipeline(&pipeline);
    let run = world.berth(["-v", "run"]).spawn_until("building the image");
    std::thread::sleep(Duration::from_secs(3));
    kill_part("dockerd");
    let ran = run.wait();
    stack_up();
    // An Engine gone is an environment error (exit.rs), not a site's failure.
    ran.exited(exit::ENVIRONMENT).stderr_has("FAIL");
    assert_eq!(
        world.image_of("web").await,
        base,
        "the Deployment was not touched"
    );
    let head = world.repo_head("landing");
    let port = world.stack.registry_port();
    let path = world.image("landing");
    let (pushed, _) = crate::support::http_get(port, &format!("/v2/{path}/manifests/{head}")).unwrap();
    assert_eq!(pushed, 404, "nothing pushed");
    assert_eq!(world.leases_held().await, 0);
    // The Engine back, the next run ships.
    world.berth(["run"]).succeeds();
    assert!(world.image_of("web").await.contains(&head));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "restarts the stack's API server: scripts/test runs it alone, after the others"]
async fn an_api_server_restarted_during_the_rollout_watch_is_reconnected_and_the_real_end_reported() {
    let world = World::new("fault-apiserver").await;
    world.copy_repo("landing");
    let base = world.busybox();
    // Pods that never get ready: the rollout really ends at its 30 s deadline.
    world
        .kwok_deployment("web", &base)
        .progress_deadline(30)
        .create()
        .await;
    let mut pipeline = world.landing_pipeline();
    pipeline.site_mut("landing").image = world.image("notready-web");
    world.write_pipeline(&pipeline);
    let run = world.berth(["-v", "run"]).spawn_until("rollout to finish");
    std::thread::sleep(Duration::from_secs(3));
    let down = Instant::now();
    kill_part("kube-apiserver");
    stack_up();
    // Back before berth's lease renewals run out (20 s), or the run below
    // would be about a lost lock, not a reconnected watch.
    assert!(
        down.elapsed() < Duration::from_secs(17),
        "the API server took {:?} to come back",
        down.elapsed()
    );
    run.wait()
        .exited(exit::SITE_FAILED)
        .stderr_has("exceeded its progress deadline")
        .stderr_has("rolled back");
    assert_eq!(world.image_of("web").await, base, "on its old image");
    assert_eq!(
        rollout_state(&world.deployment("web").await),
        RolloutState::Complete
    );
    assert_eq!(world.leases_held().await, 0);
}
