//! Faults berth survives, injected on the real stack: afterwards the
//! Deployment is on its old or its new image, rolled out completely, no
//! lease is left held, and the next run finishes the job
//! (docs/reliability.md lists them all).

use std::time::{Duration, Instant};

use crate::support::{RolloutState, World, rollout_state, text};

#[tokio::test(flavor = "multi_thread")]
async fn berth_killed_mid_rollout_leaves_a_rollout_the_next_run_sees_through() {
    let world = World::new("fault-sigkill").await;
    world.copy_repo("landing");
    let base = world.busybox();
    // Pods of the new image never get ready; the progress deadline is 40 s.
    world.create_deployment_with_deadline("web", 2, &base, 40).await;
    let mut pipeline = world.landing_pipeline();
    pipeline.site_mut("landing").image = world.image("notready-web");
    world.write_pipeline(&pipeline);
    let head = world.repo_head("landing");
    let mut child = world.spawn_berth(&["run"]);
    // SIGKILL once berth has set the image: no rollback, no release.
    let mut set = false;
    for _ in 0..480 {
        if world.image_of("web").await.contains(&head) {
            set = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(set, "berth set the image");
    std::process::Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    assert_eq!(
        world.leases_held().await,
        1,
        "the killed run's lease is left held"
    );

    // The next run waits the lease out, sees the Deployment runs this source
    // without having rolled it out, waits for it, and rolls it back.
    let started = Instant::now();
    let output = world.berth(&["run"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("has not finished rolling it out"), "{all}");
    assert!(all.contains("rolled back"), "{all}");
    assert!(
        started.elapsed() < Duration::from_secs(150),
        "{:?}",
        started.elapsed()
    );
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
